-- Adds ROUNDS (default 100) to the number in the file COUNTER_FILE, one at a time, each
-- under the machine-wide lock "embed-counter". Run it in several processes at once (the
-- C host, the lua interpreter): no increment is lost.
local waithandles = require "waithandles"
local file = assert(os.getenv("COUNTER_FILE"), "set COUNTER_FILE")
local rounds = tonumber(os.getenv("ROUNDS") or "100")
local lock = waithandles.lock("embed-counter")
for _ = 1, rounds do
  local h = lock:acquire(30)
  local f = io.open(file, "r")
  local n = f and tonumber(f:read("*a")) or 0
  if f then f:close() end
  f = assert(io.open(file, "w"))
  f:write(tostring(n + 1))
  f:close()
  h:release()
end
print(("counter: %d increments by %s"):format(rounds, _VERSION))
