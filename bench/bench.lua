-- make bench: what waithandles costs, next to the floor and its peers, as ONE
-- table. Every figure is a median over rounds or trials, and every comparison
-- a ratio to a baseline measured in the same run (this 2-core VM drifts
-- +-20 % within the hour, so only same-run ratios mean anything).
--
--   make bench          the whole table (a few minutes)
--   make bench-quick    short settings; checks that every row produced a number, judges nothing
--   make bench-results  the whole table, also written to bench/RESULTS.md (or BENCH_WRITE=1)
--
-- Sections: 1 uncontended pairs (Lua 5.4 and LuaJIT, and the peers in C),
-- 2 hand-over latency, 3 contention, 4 crash recovery, 5 scale, 6 async busy
-- fraction (issue 21), 7 the command line. bench/RESULTS.md describes each.

local P = require "procs"
local U = require "benchutil"
local T = require "whtest"

local MODE = os.getenv("BENCH_MODE") or "bench"
local QUICK = MODE == "bench-quick"
local WRITE = MODE == "bench-results" or os.getenv("BENCH_WRITE") == "1"
local BUILD = os.getenv("BENCH_BUILD") or "build/5.4"
local LUAJIT = os.getenv("BENCH_LUAJIT") or ""
local LUA = arg[-1] or "lua5.4"

-- Settings: the full run, then the quick one.
local S = QUICK and {
  pairs_n = 20000, pairs_rounds = 3, c_n = 100000, c_rounds = 3,
  handover_rounds = 6, rounds = 2, contention_s = 0.1, recovery_trials = 3, stop_trials = 3, waiter_s = 0.15,
  opens = 20, objects = 100, many = 1000, procs = 10, proc_objects = 10,
  busy_s = 0.2, cli_runs = 3, wake_rounds = 5,
} or {
  pairs_n = 200000, pairs_rounds = 9, c_n = 1000000, c_rounds = 9,
  handover_rounds = 100, rounds = 5, contention_s = 0.4, recovery_trials = 20, stop_trials = 50, waiter_s = 0.6,
  opens = 200, objects = 1000, many = 10000, procs = 100, proc_objects = 100,
  busy_s = 0.8, cli_runs = 21, wake_rounds = 100,
}
S.pairs_n = tonumber(os.getenv("BENCH_N")) or S.pairs_n
S.pairs_rounds = tonumber(os.getenv("BENCH_ROUNDS")) or S.pairs_rounds
local HOLD_LO, HOLD_HI = 0.02, 0.05 -- hand-over: the holder keeps the lock 20-50 ms
local BUSY_HOLD = 0.005             -- busy fraction: each hold is 5 ms
local CONTENDERS = { 1, 2, 4, 8, 16 }
local WAKE_N = 8 -- processes woken by one set of an event
local BUSY_N = { 2, 6, 16 }
local POLL_CAPS = { 0.001, 0.002, 0.005, 0.01, 0.02 }
local started = T.now()

local dir = U.sh("d=/dev/shm; [ -d $d ] || d=/tmp; mktemp -d $d/wh-bench.XXXXXX")
assert(dir ~= "", "mktemp failed")

-- ---- the table ------------------------------------------------------------------------

local rows, targets = {}, {}
local section, index = "", 0

local function heading(title)
  section = title
  index = 0
  rows[#rows + 1] = { heading = title }
  io.stderr:write(("[%3.0f s] %s\n"):format(T.now() - started, title))
end

local function si(seconds)
  if seconds == nil or seconds ~= seconds then return "?" end
  local a = math.abs(seconds)
  if a >= 1 then return ("%.2f s"):format(seconds) end
  if a >= 1e-3 then return ("%.2f ms"):format(seconds * 1e3) end
  if a >= 1e-6 then return ("%.1f µs"):format(seconds * 1e6) end
  return ("%.0f ns"):format(seconds * 1e9)
end

local function ns(x) return si(x and x / 1e9) end
local function x(r) return r and ("%.2f×"):format(r) or "?" end
local function pct(f) return ("%.1f %%"):format(f * 100) end

local function finite(v) return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge end

-- Runs fn(kind) S.rounds times for every kind, interleaved (so that the machine's drift hits
-- every kind alike); returns, per kind, the list of what fn returned.
local function interleaved(kinds, fn)
  local out = {}
  for _, k in ipairs(kinds) do out[k] = {} end
  for _ = 1, S.rounds do
    for _, k in ipairs(kinds) do table.insert(out[k], fn(k)) end
  end
  return out
end

-- The median over rounds of field f, or of f divided by the same round's field f of base.
local function med(list, f, base)
  local t = {}
  for i, r in ipairs(list) do t[i] = base and r[f] / base[i][f] or r[f] end
  return U.median(t)
end

-- A row: what, result (text), base (the same-run baseline, text), ratio (number),
-- value (the row's primary number; every row needs one unless it is skipped).
local function row(r)
  index = index + 1
  r.id = ("%s.%d"):format(section:match("^(%d+)"), index)
  rows[#rows + 1] = r
  return r
end

local function skip(what, why) return row({ what = what, skip = why, result = "skipped: " .. why }) end

-- Records a DESIGN.md / issue target on a row: ok is whether it holds, text says how much.
local function target(r, ok, goal, text)
  r.target = ("%s: %s"):format(goal, ok and "holds" or "**FAILS**")
  targets[#targets + 1] = ("- %s **%s** — %s: %s (row %s)"):format(ok and "✅" or "❌",
    ok and "holds" or "fails", goal, text, r.id)
end

-- ---- 1. uncontended pairs --------------------------------------------------------------

-- Runs bench/uncontended.lua under one interpreter; returns { case = { ns, ratio } }, skips.
local function pairs_under(interp, cpath)
  local sub = dir .. "/pairs-" .. interp:gsub("%W", "")
  os.execute("mkdir " .. sub)
  local env = cpath and ("LUA_CPATH='%s' "):format(cpath) or ""
  local out = U.sh(("%s%s bench/uncontended.lua %s %d %d"):format(env, interp, sub, S.pairs_n,
    S.pairs_rounds))
  local r, skips = {}, {}
  for line in out:gmatch("[^\n]+") do
    local k, a, b = line:match("^(%S+) (%S+) ?(%S*)$")
    if k == "version" then r.version = a:gsub("_", " ")
    elseif k == "skip" then skips[a] = b:gsub("_", " ")
    elseif k then r[k] = { tonumber(a), tonumber(b) } end
  end
  assert(r.floor, "uncontended.lua printed no floor under " .. interp .. ":\n" .. out)
  return r, skips
end

local function pair_rows(r, skips, main)
  local v = r.version
  local floor = r.floor[1]
  local function pair(case, what)
    local c = r[case]
    return row({ what = ("%s: %s"):format(v, what), result = ns(c[1]), base = "floor " .. ns(floor),
      ratio = c[2], value = c[1] })
  end
  row({ what = v .. ": floor — new userdata with `__gc` + a method call", result = ns(floor),
    ratio = 1, value = floor })
  local try = pair("lock_try", "`lock:try_acquire()` + `h:release()`")
  if main then
    target(try, try.ratio <= 1.3, "uncontended lock pair ≤ 1.3× the floor (Lua 5.4)",
      ("%s = %s the floor (%s)"):format(ns(r.lock_try[1]), x(try.ratio), ns(floor)))
  end
  pair("lock_acquire", "`lock:acquire()` + release")
  local a5 = pair("lock_acquire5", "`lock:acquire(5)` + release")
  local vs = r.lock_acquire5[1] / r.lock_acquire[1]
  a5.base = ("floor; `acquire()` %s"):format(ns(r.lock_acquire[1]))
  a5.result = ("%s (%s `acquire()`)"):format(ns(r.lock_acquire5[1]), x(vs))
  if main then
    target(a5, vs <= 1.1, "`acquire(5)` costs what `acquire()` costs (≤ 1.1×)",
      ("%s vs %s: %s"):format(ns(r.lock_acquire5[1]), ns(r.lock_acquire[1]), x(vs)))
  end
  pair("semaphore", "`semaphore:try_acquire()` + release (a ticket)")
  pair("read", "`rwlock:try_acquire_read()` + release")
  pair("write", "`rwlock:try_acquire_write()` + release")
  pair("upgradeable", "`rwlock:try_acquire_upgradeable_read()` + release")
  local up = pair("upgrade", "upgradeable read + `h:try_upgrade()` + release")
  up.result = ("%s (the upgrade: %s)"):format(ns(r.upgrade[1]), ns(r.upgrade[1] - r.upgradeable[1]))
  if r.lfs then
    local l = pair("lfs", "`lfs.lock(f, \"w\")` + `lfs.unlock(f)` (fcntl F_SETLK)")
    l.result = ("%s (lock pair is %s of it)"):format(ns(r.lfs[1]), x(r.lock_try[1] / r.lfs[1]))
  else
    skip(v .. ": `lfs.lock` + `lfs.unlock`", skips.lfs or "lua-filesystem not installed")
  end
  local fl = pair("c_flock", "C module: `flock(LOCK_EX|LOCK_NB)` + `flock(LOCK_UN)`")
  fl.result = ("%s (lock pair is %s of it)"):format(ns(r.c_flock[1]), x(r.lock_try[1] / r.c_flock[1]))
  pair("c_ofd", "C module: `F_OFD_SETLK` lock + unlock")
  pair("c_cas", "C module: compare-and-swap + store (raw CAS pair)")
  return r
end

local function c_pairs()
  local out = U.sh(("%s/whcpair %s %d %d"):format(BUILD, dir, S.c_n, S.c_rounds))
  local r = {}
  for k, v in out:gmatch("(%S+) (%S+)") do r[k] = tonumber(v) end
  assert(r.cas, "whcpair printed nothing")
  return r
end

-- ---- run every section ----------------------------------------------------------------

local function run()
  heading("1. Uncontended acquire + release (median CPU time per pair)")
  local main, main_skips = pairs_under(LUA)
  local r54 = pair_rows(main, main_skips, true)
  if LUAJIT ~= "" then
    pair_rows(pairs_under(LUAJIT, "build/luajit/?.so;;"))
  else
    skip("LuaJIT: every pair above", "LuaJIT or its headers are not installed")
  end
  local c = c_pairs()
  for _, k in ipairs({ { "cas", "CAS pair" }, { "flock", "flock pair" }, { "ofd", "OFD pair" } }) do
    row({ what = "C, no Lua: " .. k[2], result = ns(c[k[1]]), base = "C CAS pair " .. ns(c.cas),
      ratio = c[k[1]] / c.cas, value = c[k[1]] })
  end

  heading("2. Hand-over latency: release in A → return from acquire in B (holder keeps 20–50 ms)")
  local function handover(what, make, base)
    local h = P.handover(dir, make, S.handover_rounds, HOLD_LO, HOLD_HI)
    local l = h.lat
    local r = row({ what = what, value = U.median(l),
      result = ("p50 %s · p90 %s · p99 %s · max %s; waiter CPU %s of a core%s"):format(
        si(U.median(l)), si(U.quantile(l, 0.9)), si(U.quantile(l, 0.99)), si(U.max(l)), pct(h.cpu),
        h.polls > 0 and (", %.0f polls/s"):format(h.polls) or "") })
    r.p50, r.p99, r.cpu = U.median(l), U.quantile(l, 0.99), h.cpu
    if base then
      r.base, r.ratio = "futex p50 " .. si(base.p50), r.p50 / base.p50
    end
    return r
  end
  local futex = handover("raw C futex mutex (FUTEX_WAIT/WAKE on a shared word)", P.peer("futex"))
  futex.ratio, futex.base = 1, "itself"
  handover("raw C `F_OFD_SETLKW`", P.peer("ofd"), futex)
  handover("raw C `flock(LOCK_EX)`", P.peer("flock"), futex)
  local blocked = handover("waithandles `acquire()` (blocked waiter)", P.wh_lock(), futex)
  target(blocked, blocked.ratio <= 1.3, "blocked hand-over p50 ≤ 1.3× the raw futex ping-pong",
    ("%s vs %s: %s"):format(si(blocked.p50), si(futex.p50), x(blocked.ratio)))
  local async = handover("waithandles `acquire_async` (today's back-off, real sleep)",
    P.wh_lock({ async = P.counting() }), futex)
  target(async, async.p50 <= 0.002 and async.p99 <= 0.010 and async.cpu <= 0.01,
    "async hand-over p50 ≤ 2 ms, p99 ≤ 10 ms, ≤ 1 % of a core per waiter",
    ("p50 %s, p99 %s, %s of a core"):format(si(async.p50), si(async.p99), pct(async.cpu)))
  for _, cap in ipairs(POLL_CAPS) do
    handover(("`acquire_async`, each sleep capped at %g ms (the poll-cost curve)"):format(cap * 1e3),
      P.wh_lock({ async = P.counting(cap) }), futex)
  end

  for _, how in ipairs({ { "`wait()` (blocked)" }, { "`wait_async` (today's back-off, real sleep)",
    P.counting() } }) do
    local l = P.wake_all(dir, WAKE_N, S.wake_rounds, how[2])
    row({ what = ("manual-reset event: `set()` → the last of %d processes in %s returns"):format(
      WAKE_N, how[1]), value = U.median(l),
      result = ("p50 %s · p99 %s · max %s"):format(si(U.median(l)), si(U.quantile(l, 0.99)),
        si(U.max(l))),
      base = "lock hand-over p50 " .. si(blocked.p50), ratio = U.median(l) / blocked.p50 })
  end

  heading(("3. Contention: N processes loop acquire → release (nothing held between); "
    .. "medians of %d rounds"):format(S.rounds))
  local contenders = {
    flock = { "C-module `flock` from Lua", P.peer("flock") },
    lock = { "waithandles lock `acquire()`", P.wh_lock() },
    sem = { "waithandles semaphore(4) `acquire()`", P.wh_semaphore(4) },
  }
  for _, n in ipairs(CONTENDERS) do
    local res = interleaved({ "flock", "lock", "sem" }, function(k)
      return P.contention(dir, contenders[k][2], n, S.contention_s)
    end)
    local f = res.flock
    for _, k in ipairs({ "flock", "lock", "sem" }) do
      local c = res[k]
      local ops, p99, fair = med(c, "ops"), med(c, "p99"), med(c, "fairness")
      local r = row({ what = ("%d × %s"):format(n, contenders[k][1]), value = ops,
        result = ("%.0f k acq/s · p50 %s · p99 %s · max/min %.2f"):format(ops / 1e3,
          si(med(c, "p50")), si(p99), fair),
        base = k == "flock" and "itself" or ("flock %.0f k/s, p99 %s"):format(med(f, "ops") / 1e3,
          si(med(f, "p99"))),
        ratio = med(c, "ops", f) })
      if n == 8 and k == "lock" then
        target(r, r.ratio >= 1 and fair <= 2 and p99 <= med(f, "p99"),
          "8 processes: throughput ≥ flock's, fairness max/min ≤ 2, p99 ≤ flock's",
          ("%.0f k/s vs %.0f k/s (%s), max/min %.2f, p99 %s vs %s"):format(ops / 1e3,
            med(f, "ops") / 1e3, x(r.ratio), fair, si(p99), si(med(f, "p99"))))
      end
    end
  end

  heading("4. Crash recovery: SIGKILL of the holder → a blocked waiter acquires")
  for _, ac in ipairs({ 0.1, 0.01 }) do
    local l = P.recovery(dir, ac, S.recovery_trials)
    local r = row({ what = ("abandonment_check = %g s (%d trials)"):format(ac, #l), value = U.median(l),
      result = ("p50 %s · max %s"):format(si(U.median(l)), si(U.max(l))),
      base = "abandonment_check " .. si(ac), ratio = U.median(l) / ac })
    target(r, U.median(l) <= ac + 0.01, ("recovery p50 ≤ abandonment_check + 10 ms (%g s)"):format(ac),
      ("p50 %s, max %s"):format(si(U.median(l)), si(U.max(l))))
  end
  do
    local rel, acq = P.stopped_guard(dir, S.stop_trials)
    local r = row({ what = ("a process SIGSTOPped inside the guard (%d trials): release()"):format(#rel),
      value = U.max(rel), result = ("max %s · p50 %s"):format(si(U.max(rel)), si(U.median(rel))) })
    target(r, U.max(rel) <= 0.02, "release() with the guard's owner stopped returns within 20 ms",
      "max " .. si(U.max(rel)))
    r = row({ what = "the same: `acquire(0.3)` times out after", value = U.max(acq),
      result = ("max %s · p50 %s"):format(si(U.max(acq)), si(U.median(acq))) })
    target(r, U.max(acq) <= 0.35, "acquire(0.3) with the guard's owner stopped ends within 50 ms of its deadline",
      "max " .. si(U.max(acq)))
  end
  local waiters = { ["0.1"] = P.wh_lock({ ac = 0.1 }), ["0.01"] = P.wh_lock({ ac = 0.01 }),
    async = P.wh_lock({ async = P.counting() }) }
  local wcpu = interleaved({ "0.1", "0.01", "async" }, function(k)
    local cpu, polls = P.waiter_cpu(dir, waiters[k], S.waiter_s)
    return { cpu = cpu, polls = polls }
  end)
  for _, ac in ipairs({ "0.1", "0.01" }) do
    local cpu = med(wcpu[ac], "cpu")
    local r = row({ what = ("CPU of a blocked waiter, abandonment_check = %s s"):format(ac),
      result = pct(cpu) .. " of a core", value = cpu })
    target(r, cpu <= 0.01, ("a blocked waiter uses ≤ 1 %% of a core (abandonment_check %s s)"):format(ac),
      pct(cpu))
  end
  row({ what = "CPU of an async waiter (today's back-off, real sleep)", value = med(wcpu.async, "cpu"),
    result = ("%s of a core, %.0f polls/s"):format(pct(med(wcpu.async, "cpu")), med(wcpu.async, "polls")) })

  heading("5. Scale")
  local one = r54.tickets_1[1]
  for _, k in ipairs({ 1, 256, 4096 }) do
    local t = r54["tickets_" .. k][1]
    local r = row({ what = ("%s: semaphore pair with %d ticket%s held"):format(r54.version, k,
      k > 1 and "s" or ""),
      result = ns(t), base = "1 ticket held " .. ns(one), ratio = t / one, value = t })
    if k == 4096 then
      target(r, t / one <= 1.25, "O(1) in held tickets (4096 held ≤ 1.25× 1 held)", x(t / one))
    end
  end
  for _, k in ipairs({ 256, 4096 }) do
    local t = c["ofd_" .. k]
    row({ what = ("C, no Lua: OFD pair with %d other OFD locks on the inode"):format(k), value = t,
      result = ns(t), base = "OFD pair " .. ns(c.ofd), ratio = t / c.ofd })
  end
  local create, first, again = P.open_costs(dir, S.opens)
  row({ what = "open a new object (creates its file) + one acquire/release", value = create,
    result = si(create), base = "lock pair " .. ns(r54.lock_try[1]), ratio = create * 1e9 / r54.lock_try[1] })
  row({ what = "open an existing object, first time in this process (+ one pair)", value = first,
    result = si(first), base = "new object " .. si(create), ratio = first / create })
  row({ what = "open it again while it is open in this process (+ one pair)", value = again,
    result = si(again), base = "new object " .. si(create), ratio = again / create })
  local m = P.many_objects(dir, S.objects)
  row({ what = ("%d objects open in one process, per object"):format(S.objects), value = m[1],
    result = ("%.1f kB resident · %.2f descriptors · %.2f mappings"):format(m[1], m[2], m[3]) })
  local many = P.many_objects(dir, S.many)
  row({ what = ("open %d distinct objects in one process"):format(S.many), value = many[4],
    result = ("%s (%s per object)"):format(si(many[4]), si(many[4] / S.many)),
    base = ("%s per object for %d"):format(si(m[4] / S.objects), S.objects),
    ratio = many[4] / S.many / (m[4] / S.objects) })
  local wall, each = P.many_processes(dir, S.procs, S.proc_objects)
  row({ what = ("%d processes at once, each opening the same %d objects"):format(S.procs, S.proc_objects),
    value = wall, result = ("all done in %s; one process %s (median)"):format(si(wall), si(each)) })

  heading(("6. Async busy fraction (issue 21): N processes loop acquire → hold 5 ms → release; "
    .. "medians of %d rounds"):format(S.rounds))
  local holders = { blocking = P.wh_lock(), async = P.wh_lock({ async = P.counting() }) }
  for _, n in ipairs(BUSY_N) do
    local res = interleaved({ "blocking", "async" }, function(k)
      return P.busy(dir, holders[k], n, S.busy_s, BUSY_HOLD)
    end)
    for _, k in ipairs({ "blocking", "async" }) do
      local b, overlaps = res[k], 0
      for _, one in ipairs(b) do overlaps = overlaps + one.overlaps end
      local busy, gap50, gap99 = med(b, "busy"), med(b, "gap50"), med(b, "gap99")
      local r = row({ what = ("%d × %s"):format(n, k == "async" and "`acquire_async` (real sleep)" or "`acquire()`"),
        value = busy, result = ("busy %s · idle gap p50 %s · p99 %s · max/min %.2f%s"):format(
          pct(busy), si(gap50), si(gap99), med(b, "fairness"),
          overlaps > 0 and (" · **%d overlapping holds**"):format(overlaps) or "") })
      if k == "async" then
        r.base, r.ratio = "blocking busy " .. pct(med(res.blocking, "busy")), med(b, "busy", res.blocking)
        if n == 6 then
          target(r, busy >= 0.9 and gap50 <= 0.002,
            "6 async waiters: busy ≥ 90 %, idle gap p50 ≤ 2 ms (issue 21)",
            ("busy %s, idle gap p50 %s, p99 %s"):format(pct(busy), si(gap50), si(gap99)))
        end
      end
    end
  end

  heading("7. Command line: whole-process time, median of runs")
  local cli = "bin/waithandle"
  if not io.open(cli, "r") then
    skip("`waithandle NAME -- true` vs `flock FILE true`", "bin/waithandle does not exist yet")
  else
    local t0 = P.command({ "true" }, S.cli_runs)
    local fl = P.command({ "flock", dir .. "/cli-flock", "true" }, S.cli_runs)
    local w = P.command({ cli, "--dir", dir, "cli-bench", "--", "true" }, S.cli_runs)
    row({ what = "`true` (the cost of a process)", result = si(t0), value = t0 })
    row({ what = "`flock FILE true`", result = si(fl), base = "`true` " .. si(t0), ratio = fl / t0, value = fl })
    row({ what = "`waithandle NAME -- true`", result = si(w), base = "`flock` " .. si(fl), ratio = w / fl, value = w })
  end
end

-- ---- output -----------------------------------------------------------------------------

local function cell(s) return (tostring(s or ""):gsub("|", "\\|")) end

local function table_text()
  local out = { "| # | measurement | result | same-run baseline | ratio | target |",
    "|---|---|---|---|---|---|" }
  for _, r in ipairs(rows) do
    if r.heading then
      out[#out + 1] = ("| | **%s** | | | | |"):format(cell(r.heading))
    else
      out[#out + 1] = ("| %s | %s | %s | %s | %s | %s |"):format(r.id, cell(r.what), cell(r.result),
        cell(r.base), r.ratio and x(r.ratio) or "", cell(r.target))
    end
  end
  return table.concat(out, "\n")
end

-- The rows that should have produced a number and did not.
local function missing()
  local bad = {}
  for _, r in ipairs(rows) do
    if not r.heading and not r.skip and not (finite(r.value) and (r.ratio == nil or finite(r.ratio))) then
      bad[#bad + 1] = ("%s %s"):format(r.id, r.what)
    end
  end
  return bad
end

local function machine()
  local function first(cmd) return (U.sh(cmd .. " 2>&1"):match("[^\n]*")) end
  local cpu = U.sh("grep -m1 'model name' /proc/cpuinfo"):gsub("^model name%s*:%s*", "")
  local lines = {
    ("- %s CPUs (`nproc`), %s; %s of memory"):format(U.sh("nproc"), cpu,
      U.sh("awk '/MemTotal/ {printf \"%.0f GB\", $2/1048576}' /proc/meminfo")),
    ("- kernel %s; lock directory on %s; load average %s when the run started"):format(
      U.sh("uname -sr"), U.sh("df -T " .. dir .. " | awk 'NR==2 {print $2}'"),
      U.sh("cut -d' ' -f1-3 /proc/loadavg")),
    ("- %s; %s"):format(first(LUA .. " -v"):match("^%S+ %S+"),
      LUAJIT ~= "" and first(LUAJIT .. " -v"):match("^%S+ %S+") or "no LuaJIT"),
    ("- lua-filesystem: %s; compiler: %s"):format(
      first(LUA .. " -e 'print(require(\"lfs\")._VERSION)'"), first((os.getenv("CC") or "cc") .. " --version")),
  }
  return table.concat(lines, "\n")
end

local NOTES_MARK = "<!-- Everything below this line is kept by `make bench-results`. -->"

local function write_results(tbl, elapsed, host)
  local path = "bench/RESULTS.md"
  local notes = ""
  local f = io.open(path, "r")
  if f then
    local old = f:read("*a")
    f:close()
    local at = old:find(NOTES_MARK, 1, true)
    if at then notes = old:sub(at + #NOTES_MARK) end
  end
  f = assert(io.open(path, "w"))
  f:write("# Benchmark results\n\n",
    "Written by `make bench-results` from one run of `make bench` (", os.date("!%Y-%m-%d"),
    ", ", ("%.0f"):format(elapsed), " s). Every figure is a median over rounds or trials; every ratio ",
    "compares with a baseline measured in the same run. Only those ratios mean anything: this ",
    "virtual machine drifts by ±20 % within the hour, and other work shared its 2 CPUs.\n\n",
    "## Machine\n\n", host, "\n\n",
    "## Commands\n\n",
    "```\nmake bench            # this table (builds the module and the bench's C: whbench.so, whcpair;\n",
    "                      # the uncontended rows also under LuaJIT when it is installed)\n",
    "make bench-quick      # a short run that checks every row produced a number (make test)\n",
    "make bench-results    # a full run that rewrites this file above the notes\n```\n\n",
    "## Table\n\n", tbl, "\n\n",
    "## DESIGN.md and issue targets on this run\n\n", table.concat(targets, "\n"), "\n\n",
    NOTES_MARK, notes ~= "" and notes or "\n")
  f:close()
  io.stderr:write("wrote " .. path .. "\n")
end

io.stderr:write(("waithandles benchmark (%s), directory %s\n"):format(MODE, dir))
local host = WRITE and not QUICK and machine() -- before the run's directory goes
local ok, err = xpcall(run, debug.traceback)
os.execute("rm -rf '" .. dir .. "'")
if not ok then
  io.stderr:write("benchmark failed: ", tostring(err), "\n")
  os.exit(1)
end
local tbl = table_text()
print(tbl)
print()
print(table.concat(targets, "\n"))
local elapsed = T.now() - started
print(("\n%s took %.0f s"):format(MODE, elapsed))
local bad = missing()
if #bad > 0 then
  print("not ok - rows without a number: " .. table.concat(bad, "; "))
  os.exit(1)
end
local n = 0
for _, r in ipairs(rows) do if not r.heading then n = n + 1 end end
print(("ok - every one of the %d rows produced a number (or says why it was skipped)"):format(n))
if host then write_results(tbl, elapsed, host) end
