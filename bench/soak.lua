-- wrk script for `make soak` (scripts/soak.sh): POSTs one training-log row to /predict.
-- SOAK_BODY names the file holding the JSON body; SOAK_DELAY_MS (optional) is the pause each
-- connection takes between requests, which is how the soak holds a rate below the peak
-- (Debian's wrk has no --rate option).
local file = assert(io.open(os.getenv("SOAK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

local pause = tonumber(os.getenv("SOAK_DELAY_MS") or "0")

function delay()
  return pause
end
