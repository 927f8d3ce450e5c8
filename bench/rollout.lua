-- wrk script for bench/rollout.py: single-row POSTs of $BODY_FILE to $PREDICT_PATH, each with
-- its own x-ferrum-routing-key (so the split decides, not one sticky key), paced by $DELAY_MS
-- per connection; counts the answers per second and x-ferrum-version, and the non-2xx ones.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
local body = f:read("*a")
f:close()
local path = os.getenv("PREDICT_PATH")
local delay_ms = tonumber(os.getenv("DELAY_MS") or "0")
local sent = 0
counts = {}
non2xx = 0

function request()
  sent = sent + 1
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/json",
    ["x-ferrum-routing-key"] = "rollout-" .. sent,
  }, body)
end

function delay()
  return delay_ms
end

function response(status, headers, _)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  local key = os.time() .. " " .. (headers["x-ferrum-version"] or "none")
  counts[key] = (counts[key] or 0) + 1
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, _)
  for _, thread in ipairs(threads) do
    for key, n in pairs(thread:get("counts")) do
      io.write(string.format("COUNT %s %d\n", key, n))
    end
    io.write(string.format("NON2XX %d\n", thread:get("non2xx")))
  end
  local e = summary.errors
  io.write(string.format("SOCKET_ERRORS %d\n", e.connect + e.read + e.write + e.timeout))
  io.write(string.format("REQUESTS %d %d\n", summary.requests, summary.duration))
  io.write(string.format("P99_MS %.3f\n", latency:percentile(99) / 1000))
end
