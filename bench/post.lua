-- wrk script: POST one fixed body read from $BODY_FILE, with $CONTENT_TYPE and, for V2 binary
-- tensor bodies, $HEADER_LENGTH as Inference-Header-Content-Length.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
local header_length = os.getenv("HEADER_LENGTH")
if header_length and header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end
