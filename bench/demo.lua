-- make demo: several real processes increment one counter file under one
-- waithandles lock. One of them is killed with SIGKILL while it holds the
-- lock; the others notice within abandonment_check and carry on. The verdict
-- is whether the final count is exact.
--
-- Plain Lua plus a POSIX shell: workers are started with `sh -c '... & echo $!'`.

local wh = require "waithandles"

local LUA = os.getenv("LUA") or (arg and arg[-1]) or "lua5.4"
local WORKERS, ROUNDS = 6, 400
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

local sh = dofile(here .. "/sh.lua")

local function now()
  return tonumber(sh("date +%s.%N")) or os.time()
end

local function read_number(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local n = tonumber(f:read("*a"))
  f:close()
  return n
end

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

local function alive(pid)
  local r = os.execute("kill -0 " .. pid .. " 2>/dev/null")
  return r == true or r == 0 -- Lua 5.2+ or 5.1
end

-- The worker: ROUNDS times, take the lock, read the counter, write it + 1.
-- The victim takes the lock once, says so, and waits to be killed.
local WORKER = [[
local wh = require "waithandles"
local dir, id, rounds, victim = arg[1], tonumber(arg[2]), tonumber(arg[3]), arg[4] == "victim"
local lock = wh.lock("counter", { dir = dir })
local path = dir .. "/counter.txt"
if victim then
  local h = lock:acquire(30)
  local f = io.open(dir .. "/victim-holds", "w") f:write("yes") f:close()
  while true do end -- holds the lock until SIGKILL
end
for _ = 1, rounds do
  local h = lock:acquire(30)
  local f = io.open(path, "r")
  local n = tonumber(f:read("*a"))
  f:close()
  f = io.open(path, "w")
  f:write(tostring(n + 1))
  f:close()
  h:release()
end
local f = io.open(dir .. "/done-" .. id, "w") f:write("done") f:close()
]]

local dir = sh("mktemp -d /tmp/waithandles-demo.XXXXXX"):gsub("%s+$", "")
local worker = dir .. "/worker.lua"
local f = assert(io.open(worker, "w"))
f:write(WORKER)
f:close()
f = assert(io.open(dir .. "/counter.txt", "w"))
f:write("0")
f:close()

print(("waithandles demo: %d processes x %d increments of one counter file under one lock")
  :format(WORKERS, ROUNDS))
print("  lock directory: " .. dir .. "  (" .. wh._VERSION .. ")")

local function start(id, rounds, role)
  return sh(("%s %q %q %d %d %s >%q 2>&1 & echo $!"):format(LUA, worker, dir, id, rounds,
    role or "", dir .. "/log-" .. id)):gsub("%s+$", "")
end

-- The victim first, so that it holds the lock when the others start.
local victim = start(0, 0, "victim")
local t0 = now()
while not exists(dir .. "/victim-holds") do
  if now() - t0 > 20 then error("the victim never got the lock; see " .. dir .. "/log-0") end
end
print(("  process %s holds the lock and will be killed with SIGKILL while holding it"):format(victim))

local pids = {}
local start_time = now()
for i = 1, WORKERS do pids[i] = start(i, ROUNDS) end
print(("  started %d workers: %s"):format(WORKERS, table.concat(pids, " ")))

-- The workers are blocked on the victim's lock; kill it.
local lock = wh.lock("counter", { dir = dir })
local info = lock:info()
print(("  lock held by pid %s, %d waiting"):format(info.holders[1] and info.holders[1].pid or "?",
  info.waiting))
local killed_at = now()
os.execute("kill -9 " .. victim)
print(("  killed %s (SIGKILL) while it held the lock"):format(victim))

-- The counter moves again once a worker has taken over the dead holder's lock.
local recovered
while true do
  local n = read_number(dir .. "/counter.txt")
  if n and n > 0 then
    recovered = now() - killed_at
    break
  end
  if now() - killed_at > 30 then break end
end
if recovered then
  print(("  a waiting worker took the lock over %.2f s later (abandonment_check = 0.1 s)")
    :format(recovered))
end

local deadline = now() + 120
for i = 1, WORKERS do
  while not exists(dir .. "/done-" .. i) and alive(pids[i]) and now() < deadline do end
end
local elapsed = now() - start_time
local count, expected = read_number(dir .. "/counter.txt"), WORKERS * ROUNDS
print(("  all workers finished in %.2f s (%.0f lock hand-overs per second)")
  :format(elapsed, expected / elapsed))
info = lock:info()
print(("  lock now: held=%d, waiting=%d"):format(info.held, info.waiting))
local exact = count == expected and info.held == 0
print(("  counter = %s, expected %d: %s"):format(tostring(count), expected,
  exact and "EXACT - no lost update, no stuck lock" or "WRONG"))
lock = nil
collectgarbage()
os.execute("rm -rf '" .. dir .. "'")
os.exit(exact and 0 or 1)
