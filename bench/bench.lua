-- make bench: what waithandles costs, next to the floor of DESIGN.md ("a C
-- call that returns a new userdata with __gc, plus a method call"). Every
-- figure is the median of several interleaved rounds of CPU time, and every
-- ratio the median of the rounds' ratios to the same round's floor, so the
-- ratios come from one run on one machine. Last, the command-line tool's whole
-- process next to flock(1)'s.

local wh = require "waithandles"
local floor = require "whfloor"
local whtest = require "whtest"

local N = tonumber(os.getenv("BENCH_N")) or 200000
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 9
local clock = os.clock

local dir = whtest.mkdtemp()

local function median(t)
  table.sort(t)
  return t[math.ceil(#t / 2)]
end

-- Runs every case ROUNDS times, interleaved; returns ns per iteration (median)
-- and, in .ratio, each case's median over the rounds of its cost divided by the
-- same round's floor (the first case), which cancels the machine's drift.
local function measure(cases)
  local samples = {}
  for _, c in ipairs(cases) do samples[c[1]] = {} end
  for _ = 1, ROUNDS do
    for _, c in ipairs(cases) do
      collectgarbage()
      collectgarbage()
      local t = clock()
      c[2](N)
      samples[c[1]][#samples[c[1]] + 1] = (clock() - t) / N * 1e9
    end
  end
  local out, base = { ratio = {} }, samples[cases[1][1]]
  for _, c in ipairs(cases) do
    local s, ratios = samples[c[1]], {}
    for i = 1, #s do ratios[i] = s[i] / base[i] end
    out.ratio[c[1]] = median(ratios)
    out[c[1]] = median(s)
  end
  return out
end

local function row(name, ns, ratio, note)
  print(("  %-46s %9.1f ns   %5.2fx floor%s"):format(name, ns, ratio, note or ""))
end

print(("waithandles benchmark (%s, %s), %d iterations x %d rounds, median CPU time")
  :format(wh._VERSION, _VERSION, N, ROUNDS))

local lock = wh.lock("bench-lock", { dir = dir })
local sem = wh.semaphore("bench-sem", 2147483647, { dir = dir })
local rw = wh.rwlock("bench-rw", { dir = dir })
local new = floor.new
-- Every measure() starts with the floor, which its ratios divide by.
local FLOOR = { "floor", function(n) for _ = 1, n do local u = new() u:release() end end }

local r = measure({
  FLOOR,
  { "lock", function(n) for _ = 1, n do local h = lock:try_acquire() h:release() end end },
  { "semaphore", function(n) for _ = 1, n do local h = sem:try_acquire() h:release() end end },
  { "read", function(n) for _ = 1, n do local h = rw:try_acquire_read() h:release() end end },
  { "write", function(n) for _ = 1, n do local h = rw:try_acquire_write() h:release() end end },
  { "upgradeable", function(n)
    for _ = 1, n do local h = rw:try_acquire_upgradeable_read() h:release() end
  end },
})
print("\nuncontended try_acquire() + release(), one process (target: <= 2x floor)")
row("floor: new userdata with __gc + method call", r.floor, r.ratio.floor)
row("lock:try_acquire() + h:release()", r.lock, r.ratio.lock, r.ratio.lock <= 2 and "  ok" or "  ABOVE TARGET")
row("semaphore:try_acquire() + h:release()", r.semaphore, r.ratio.semaphore)
row("rwlock:try_acquire_read() + h:release()", r.read, r.ratio.read)
row("rwlock:try_acquire_write() + h:release()", r.write, r.ratio.write)
row("rwlock:try_acquire_upgradeable_read() + release()", r.upgradeable, r.ratio.upgradeable)
local lock_ratio = r.ratio.lock

-- Held tickets do not make a semaphore slower: O(1) per operation.
local held = {}
local one = wh.semaphore("bench-sem-1", 2147483647, { dir = dir })
local many = wh.semaphore("bench-sem-4096", 2147483647, { dir = dir })
held[#held + 1] = one:try_acquire()
for _ = 1, 4096 do held[#held + 1] = many:try_acquire() end
r = measure({
  FLOOR,
  { "one", function(n) for _ = 1, n do local h = one:try_acquire() h:release() end end },
  { "many", function(n) for _ = 1, n do local h = many:try_acquire() h:release() end end },
})
print("\nsemaphore with tickets already held (target: about equal)")
row("1 ticket held: try_acquire() + release()", r.one, r.ratio.one)
row("4096 tickets held: try_acquire() + release()", r.many, r.ratio.many,
  ("  (%.2fx the 1-ticket cost)"):format(r.many / r.one))
for _, h in ipairs(held) do h:release() end

-- Readers already holding do not make reads slower.
held = {}
for _ = 1, 1000 do held[#held + 1] = rw:try_acquire_read() end
r = measure({
  FLOOR,
  { "read", function(n) for _ = 1, n do local h = rw:try_acquire_read() h:release() end end },
})
row("rwlock read with 1000 readers holding", r.read, r.ratio.read)
for _, h in ipairs(held) do h:release() end

-- The command-line tool next to flock(1): the wall time of a whole process that acquires, runs
-- `true` and releases, as a shell sees it; interleaved runs, the median of each, and the median
-- of the runs' ratios to the same run's flock.
local proc = require "waithandles.proc"
local CLI_RUNS = math.max(20, tonumber(os.getenv("BENCH_CLI_RUNS")) or 41)
local lua = arg and arg[-1] or "lua5.4"
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local commands = {
  { "true", { "true" } },
  { "interpreter", { lua, "-e", "" } },
  { "flock", { "flock", dir .. "/flock-file", "true" } },
  { "waithandle", { lua, here .. "/../bin/waithandle", "--dir", dir, "bench-cli", "--", "true" } },
}
local walls, cli_ratios = {}, {}
for _, c in ipairs(commands) do walls[c[1]] = {} end
for run = 1, CLI_RUNS do
  for _, c in ipairs(commands) do
    local t = proc.now()
    local how, status = proc.run(c[2])
    if how ~= "exit" or status ~= 0 then
      error(("%s: %s %s"):format(table.concat(c[2], " "), tostring(how), tostring(status)))
    end
    walls[c[1]][run] = proc.now() - t
  end
  cli_ratios[run] = walls.waithandle[run] / walls.flock[run]
end
local cli_ratio = median(cli_ratios)
print(("\nwhole process, wall time, median of %d interleaved runs"):format(CLI_RUNS))
local function wall_row(name, key, note)
  print(("  %-46s %9.2f ms%s"):format(name, median(walls[key]) * 1e3, note or ""))
end
wall_row("true (a process start)", "true")
wall_row(lua .. " -e '' (the interpreter's start)", "interpreter")
wall_row("flock FILE true", "flock")
wall_row("waithandle NAME -- true", "waithandle", ("   %5.2fx flock"):format(cli_ratio))

print(("\nlock:try_acquire()+release() costs %.2fx the floor (DESIGN.md target: <= 2x)")
  :format(lock_ratio))
print(("waithandle NAME -- true takes %.2fx the time of flock FILE true (whole processes)")
  :format(cli_ratio))
lock, sem, rw, one, many = nil, nil, nil, nil, nil
collectgarbage()
os.execute("rm -rf '" .. dir .. "'")
