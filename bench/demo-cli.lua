-- make demo: the command-line tool. Six jobs are started at once, each as
--   waithandle -s 2 demo-jobs -- sh -c '<log start>; sleep 1; <log end>'
-- so at most two run at any time. One of them is killed with SIGKILL (its
-- whole process group: waithandle, sh and sleep) while it holds its ticket;
-- a waiting job starts within abandonment_check. The timeline comes from
-- the jobs' own log lines; the verdict is whether the limit held.

local wh = require "waithandles"
local proc = require "waithandles.proc"

local LUA = os.getenv("LUA") or (arg and arg[-1]) or "lua5.4"
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local TOOL = here .. "/../bin/waithandle"
local JOBS, LIMIT, HOLD = 6, 2, 1.0
local NAME = "demo-jobs"

local sh = dofile(here .. "/sh.lua")

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function read(path)
  local f = io.open(path, "r")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

-- The jobs' log: { kind = "start"|"end", job = n, t = realtime seconds }, in file order.
local function events(log)
  local out = {}
  for kind, job, t in read(log):gmatch("(%a+) (%d+) ([%d.]+)\n") do
    out[#out + 1] = { kind = kind, job = tonumber(job), t = tonumber(t) }
  end
  return out
end

local function count(evs, kind)
  local n = 0
  for _, e in ipairs(evs) do if e.kind == kind then n = n + 1 end end
  return n
end

-- Polls until cond(events) holds; false after `limit` seconds.
local function await(log, cond, limit)
  local deadline = proc.now() + limit
  while proc.now() < deadline do
    local evs = events(log)
    if cond(evs) then return evs end
    proc.sleep(0.005)
  end
  return false
end

local dir = sh("mktemp -d /tmp/waithandles-demo.XXXXXX"):gsub("%s+$", "")
local locks, log = dir .. "/locks", dir .. "/log"
print(("waithandle demo: %d jobs started at once under `waithandle -s %d %s`, %g s each")
  :format(JOBS, LIMIT, NAME, HOLD))
print("  lock directory: " .. locks .. "  (" .. wh._VERSION .. ")")

-- Each job in its own process group (setsid), so that one kill -9 ends all of it.
local stamp = 'echo "%s $1 $(date +%%s.%%N)" >>"$2"'
local job = (stamp .. "; sleep %g; " .. stamp):format("start", HOLD, "end")
local starter = ("for i in $(seq %d); do setsid %s %s -s %d --dir %s %s -- sh -c %s job $i %s "
  .. ">%s/out-$i 2>&1 & echo $!; done"):format(JOBS, q(LUA), q(TOOL), LIMIT, q(locks), NAME, q(job),
  q(log), q(dir))
local pids = {}
for pid in sh(starter):gmatch("%d+") do pids[#pids + 1] = pid end
print(("  started jobs 1-%d, process groups %s"):format(JOBS, table.concat(pids, " ")))

-- Once two jobs run, let the first one work a while, then kill it.
local evs = await(log, function(e) return count(e, "start") >= LIMIT end, 30)
if not evs then
  print("  the jobs never started; see " .. dir)
  os.exit(1)
end
local victim = evs[1].job
proc.sleep(0.3)
print("  `waithandle list` now says:")
io.write((sh(("%s %s --dir %s list"):format(q(LUA), q(TOOL), q(locks))):gsub("[^\n]+", "    %0")))
local killed_at = tonumber(sh(("kill -9 -%s; date +%%s.%%N"):format(pids[victim])))
print(("  killed job %d with SIGKILL (its waithandle, sh and sleep) while it held its ticket")
  :format(victim))

local others = JOBS - 1
evs = await(log, function(e) return count(e, "end") >= others end, HOLD * JOBS + 30) or events(log)
evs[#evs + 1] = { kind = "killed", job = victim, t = killed_at }
table.sort(evs, function(a, b)
  if a.t ~= b.t then return a.t < b.t end
  return a.kind ~= "start" and b.kind == "start" -- an end before a start at the same instant
end)

print("\n   time  event                       running")
local t0, running, most, takeover = evs[1].t, 0, 0, nil
for _, e in ipairs(evs) do
  running = running + (e.kind == "start" and 1 or -1)
  if running > most then most = running end
  if e.kind == "start" and e.t > killed_at and not takeover then takeover = e.t - killed_at end
  local what = ("job %d %s"):format(e.job, e.kind == "start" and "starts" or e.kind == "end"
    and "ends" or "is killed (kill -9)")
  print(("  %5.2f  %-26s  %d %s"):format(e.t - t0, what, running, ("#"):rep(running)))
end

local finished = count(evs, "end")
print()
if takeover then
  print(("  the killed job's ticket went to a waiting job %.3f s later (abandonment_check = 0.1 s)")
    :format(takeover))
end
local ok = most <= LIMIT and most == LIMIT and finished == others and takeover ~= nil
if ok then
  print(("verdict: LIMIT HELD - never more than %d of %d jobs ran at once, and the ticket of the "
    .. "job killed with SIGKILL came back"):format(LIMIT, JOBS))
else
  print(("verdict: FAILED - at most %d running (limit %d), %d of %d jobs finished, %s")
    :format(most, LIMIT, finished, others,
      takeover and "the ticket came back" or "the ticket never came back"))
  print("  see " .. dir)
  os.exit(1)
end
os.execute("rm -rf " .. q(dir))
