-- make bench-pg: the postgres backend next to the local one, on this machine. Rows:
--   uncontended pair   try_acquire() + release() of a free lock, one process (µs per pair)
--   handoff            a holder releases while another process waits in acquire(): from the
--                      release call to the waiter's return (median and 90th percentile, ms)
--   async handoff      the same with acquire_async and a sleep function (T.sleep)
-- The server is reached over its Unix socket (WH_PG_CONNINFO; make bench-pg starts a
-- throwaway cluster). Timestamps are CLOCK_MONOTONIC, shared by the processes.
local wh = require "waithandles"
local T = require "whtest"

local CONNINFO = assert(os.getenv("WH_PG_CONNINFO"), "WH_PG_CONNINFO unset (run make bench-pg)")
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "41")
local now, sleep = T.now, T.sleep
local work = T.mkdtemp()
local run = T.getpid() -- one namespace per run, the same in the forked waiter

local function provider(backend, tag)
  if backend == "local" then return wh.provider{ dir = work .. "/locks" } end
  return wh.provider{ backend = "postgres", conninfo = CONNINFO, namespace = "bench-" .. run .. "-" .. tag }
end

local function exists(p) local f = io.open(p) if f then f:close() return true end return false end
local function touch(p) assert(io.open(p, "w")):close() end

local function median(t, q)
  table.sort(t)
  return t[math.max(1, math.ceil(#t * (q or 0.5)))]
end

local function uncontended(backend)
  local p = provider(backend, "u")
  local l = p:lock("u")
  local n = backend == "local" and 200000 or 3000
  for _ = 1, 100 do l:try_acquire():release() end
  local t0 = now()
  for _ = 1, n do l:try_acquire():release() end
  return (now() - t0) / n * 1e6
end

local serial = 0
local function handoff(backend, async)
  serial = serial + 1
  local tag = "h" .. serial
  local dir = work .. "/" .. tag
  os.execute("mkdir -p " .. dir)
  local pid = T.fork()
  if pid == 0 then
    local ok, err = pcall(function()
      local l = provider(backend, tag):lock("h")
      local out = {}
      for i = 1, ROUNDS do
        local deadline = now() + 60 -- never outlive a parent that failed
        while not exists(dir .. "/go-" .. i) do
          assert(now() < deadline, "no go from the holder")
          sleep(0.0005)
        end
        local h = async and l:acquire_async(30, { sleep = sleep }) or l:acquire(30)
        out[i] = string.format("%.9f", now())
        h:release()
        touch(dir .. "/done-" .. i)
      end
      local f = assert(io.open(dir .. "/times", "w"))
      f:write(table.concat(out, "\n"), "\n")
      f:close()
    end)
    if not ok then io.stderr:write(tostring(err), "\n") end
    T.exit(ok and 0 or 1)
  end
  local l = provider(backend, tag):lock("h")
  local t0 = {}
  local ok, err = pcall(function()
    for i = 1, ROUNDS do
      local h = l:acquire(30)
      touch(dir .. "/go-" .. i)
      -- Release only once the other process waits (info() sees its request), plus a moment
      -- for it to block.
      local deadline = now() + 30
      while l:info().waiting < 1 do
        assert(now() < deadline, "the waiter never waited")
        sleep(0.001)
      end
      sleep(0.003)
      t0[i] = now()
      h:release()
      while not exists(dir .. "/done-" .. i) do
        assert(now() < deadline + 30, "the waiter never took the lock")
        sleep(0.0005)
      end
    end
  end)
  if not ok then
    T.kill(pid)
    T.waitpid(pid, 5)
    error(err, 0)
  end
  local st = T.waitpid(pid, 60)
  assert(st and st.code == 0, "the waiting process failed")
  local lat, i = {}, 0
  for line in io.lines(dir .. "/times") do
    i = i + 1
    lat[i] = (tonumber(line) - t0[i]) * 1e3
  end
  return median(lat), median(lat, 0.9)
end

print(("waithandles %s, %s; PostgreSQL over its Unix socket; %d rounds per handoff row"):format(
  wh._VERSION:match("%S+$"), _VERSION .. (rawget(_G, "jit") and " (" .. jit.version .. ")" or ""), ROUNDS))
print()
print("| measurement | local | postgres |")
print("|---|---|---|")
print(("| uncontended try_acquire() + release() | %.2f µs | %.1f µs |"):format(uncontended("local"),
  uncontended("postgres")))
local lm, l9 = handoff("local", false)
local pm, p9 = handoff("postgres", false)
print(("| handoff to a process blocked in acquire(), median / p90 | %.3f / %.3f ms | %.3f / %.3f ms |")
  :format(lm, l9, pm, p9))
lm, l9 = handoff("local", true)
pm, p9 = handoff("postgres", true)
print(("| handoff to a process in acquire_async (sleep = T.sleep), median / p90 | %.3f / %.3f ms | %.3f / %.3f ms |")
  :format(lm, l9, pm, p9))
os.execute("rm -rf '" .. work .. "'")
