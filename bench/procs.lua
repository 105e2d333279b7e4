-- The benchmark's multi-process measurements: hand-over latency, contention,
-- crash recovery, scale, async busy fraction, the command line. Every
-- process is a fork of the benchmark; it reports through a shared mapped
-- array of 8-byte slots (whbench.shared) or its own file (benchutil.put),
-- with CLOCK_MONOTONIC timestamps. Each function returns plain numbers.

local wh = require "waithandles"
local T = require "whtest"
local B = require "whbench"
local U = require "benchutil"

local now, sleep = T.now, T.sleep
local P = {}

local serial = 0
-- A fresh path in the run's directory (shared files, result files, object names).
local function fresh(dir, tag)
  serial = serial + 1
  return ("%s/%s-%d"):format(dir, tag, serial), ("%s-%d"):format(tag, serial)
end

-- Lock makers: make(dir, name) runs in a child and returns acquire() -> h and release(h).
-- opts may carry async (a sleep function) and ac (abandonment_check) for waithandles.
function P.wh_lock(opts)
  opts = opts or {}
  return function(dir, name)
    local lock = wh.lock(name, { dir = dir, abandonment_check = opts.ac })
    local acquire = lock.acquire
    if opts.async then
      local call = { sleep = opts.async }
      return function() return lock:acquire_async(nil, call) end, function(h) h:release() end
    end
    return function() return acquire(lock) end, function(h) h:release() end
  end
end

function P.wh_semaphore(count, async)
  return function(dir, name)
    local sem = wh.semaphore(name, count, { dir = dir })
    if async then
      local call = { sleep = async }
      return function() return sem:acquire_async(nil, call) end, function(h) h:release() end
    end
    return function() return sem:acquire() end, function(h) h:release() end
  end
end

-- A peer of whbench: "flock", "ofd" (F_OFD_SETLKW) or "futex" (a futex mutex on a shared word).
function P.peer(kind)
  return function(dir, name)
    local k = B.locker(kind, dir .. "/" .. name)
    return function()
      k:lock()
      return k
    end, function(h) h:unlock() end
  end
end

-- ---- 2. hand-over latency -------------------------------------------------

-- Two processes pass one lock back and forth `want` times. The holder keeps
-- the lock hold_lo..hold_hi seconds (the other starts to wait a few ms into
-- it), stamps and releases; the waiter stamps when acquire returns. Returns the
-- latencies (seconds), the waiters' CPU per second of waiting, and their
-- sleep calls per second of waiting (counted by sleeps made with P.counting).
local S_DONE, S_READY, S_STAMPS = 1, 2, 8
local polls = 0

-- An async waiter's sleep function: a real sleep of min(delay, cap) that counts its calls.
function P.counting(cap)
  cap = cap or math.huge
  return function(d)
    polls = polls + 1
    sleep(d < cap and d or cap)
  end
end

function P.handover(dir, make, want, hold_lo, hold_hi)
  local rounds = want + 2 -- the first hand-over to each process runs cold: not counted
  local path, name = fresh(dir, "handover")
  local sh = B.shared(path .. ".slots", S_STAMPS + 2 * rounds + 2)
  local REL, ACQ = S_STAMPS, S_STAMPS + rounds + 1
  local pids = {}
  for me = 0, 1 do
    pids[#pids + 1] = U.spawn(function()
      math.randomseed(me + 7)
      local acquire, release = make(dir, name)
      local wa, wr = make(dir, name .. "-warm") -- join the registry before the clock runs
      wr(wa())
      local cpu, waited, npolls = 0, 0, 0
      -- Acquisition k (1 = process 1's first, k > 1 = the hand-over of round k-1) is made by
      -- process k % 2.
      for k = (me == 1 and 1 or 2), rounds + 1, 2 do
        if k > 1 then
          sleep(hold_lo / 4) -- the hand-over to the other is under way: stay out of its way
          assert(U.wait_until(function() return sh:iget(S_DONE) >= k - 1 end, 60),
            "the other process never acquired")
        end
        sh:add(S_READY)
        local c0, t0, p0 = B.cpu(), now(), polls
        local h = acquire()
        local t1 = now()
        if k > 1 then sh:set(ACQ + k - 1, t1) end
        if k > 3 then
          cpu, waited, npolls = cpu + B.cpu() - c0, waited + t1 - t0, npolls + polls - p0
        end
        sh:add(S_DONE)
        if k <= rounds then
          -- Hold hold_lo..hold_hi (and at least until the other is about to wait), hand over.
          local until_ = t1 + hold_lo + math.random() * (hold_hi - hold_lo)
          assert(U.wait_until(function() return sh:iget(S_READY) >= k + 1 end, 60))
          sleep(math.max(0, until_ - now()))
          sh:set(REL + k, now())
        end
        release(h)
      end
      U.put(("%s.%d"):format(path, me), { cpu, waited, npolls })
    end)
  end
  local failed = U.wait_all(pids, 60 + rounds * (hold_hi + 0.2))
  assert(failed == 0, "a hand-over process failed")
  local lat, cpu, waited, npolls = {}, 0, 0, 0
  for k = 3, rounds do lat[k - 2] = sh:get(ACQ + k) - sh:get(REL + k) end
  for me = 0, 1 do
    local r = U.get(("%s.%d"):format(path, me))
    cpu, waited, npolls = cpu + r[1], waited + r[2], npolls + r[3]
  end
  return { lat = lat, cpu = cpu / waited, polls = npolls / waited }
end

-- n processes wait for one manual-reset event; the parent sets it, `rounds` times (resetting it
-- once all have woken). Each round's latency runs from the set to the last waiter returning from
-- its wait. async: a sleep function, to wait with wait_async instead.
local W_READY, W_WOKE, W_ROUND, W_STAMPS = 1, 2, 3, 8

function P.wake_all(dir, n, rounds, async)
  local path, name = fresh(dir, "wake")
  local sh = B.shared(path .. ".slots", W_STAMPS + n * (rounds + 1))
  local pids = {}
  for me = 1, n do
    pids[me] = U.spawn(function()
      local ev = wh.event(name, { dir = dir })
      local call = async and { sleep = async }
      for k = 1, rounds do
        assert(U.wait_until(function() return sh:iget(W_ROUND) >= k end, 60), "no round " .. k)
        sh:add(W_READY)
        local ok
        if async then ok = ev:wait_async(60, call) else ok = ev:wait(60) end
        sh:set(W_STAMPS + k * n + me - 1, now())
        assert(ok, "the event was never set")
        sh:add(W_WOKE)
      end
    end)
  end
  local ev = wh.event(name, { dir = dir })
  local lat = {}
  for k = 1, rounds do
    sh:add(W_ROUND) -- now k
    assert(U.wait_until(function() return sh:iget(W_READY) >= k * n end, 60), "waiters not ready")
    sleep(0.01) -- they are inside wait now: blocked, or between polls
    local t0 = now()
    ev:set()
    assert(U.wait_until(function() return sh:iget(W_WOKE) >= k * n end, 60), "waiters not woken")
    ev:reset()
    local last = 0
    for me = 1, n do last = math.max(last, sh:get(W_STAMPS + k * n + me - 1)) end
    lat[k] = last - t0
  end
  assert(U.wait_all(pids, 60) == 0, "a waiter failed")
  return lat
end

-- ---- 3. contention ----------------------------------------------------------

-- n processes loop acquire -> release (nothing held in between) for `duration` seconds.
-- Returns throughput (acquisitions/s), latency p50/p99 of one acquire call, and
-- fairness (most / fewest acquisitions of one process).
local S_START, S_READIED = 1, 2

-- Starts n processes together. Each runs setup(i) (before the clock: opening objects), then
-- body(i, start, what setup returned) from a common start time; returns that start time
-- once all have exited.
local function together(path, n, setup, body, timeout)
  local sh = B.shared(path .. ".slots", 2)
  local pids = {}
  for i = 1, n do
    pids[i] = U.spawn(function()
      local ctx = setup and setup(i)
      sh:add(S_READIED)
      assert(U.wait_until(function() return sh:get(S_START) ~= 0 end, 60))
      local start = sh:get(S_START)
      sleep(math.max(0, start - now()))
      body(i, start, ctx)
    end)
  end
  assert(U.wait_until(function() return sh:iget(S_READIED) >= n end, 60), "processes not ready")
  local start = now() + 0.05
  sh:set(S_START, start)
  assert(U.wait_all(pids, timeout) == 0, "a benchmark process failed")
  return start
end

-- Opens the lock (make(dir, name)) and takes it once, so that the object is open and the
-- process has joined the registry before the clock starts.
local function opened(make, dir, name)
  local acquire, release = make(dir, name)
  release(acquire())
  return { acquire, release }
end

function P.contention(dir, make, n, duration)
  local path, name = fresh(dir, "contention")
  together(path, n, function() return opened(make, dir, name) end, function(i, start, l)
    local acquire, release = l[1], l[2]
    local stop, count, hist, hist_add = start + duration, 0, {}, U.hist_add
    local t = now()
    while t < stop do
      local h = acquire()
      local t1 = now()
      release(h)
      count = count + 1
      hist_add(hist, t1 - t)
      t = now()
    end
    U.put(("%s.%d"):format(path, i), { count }, hist)
  end, duration + 60)
  local total, counts, hist = 0, {}, {}
  for i = 1, n do
    local list, h = U.get(("%s.%d"):format(path, i))
    counts[i] = list[1]
    total = total + list[1]
    U.hist_merge(hist, h)
  end
  return {
    ops = total / duration, p50 = U.hist_quantile(hist, 0.5), p99 = U.hist_quantile(hist, 0.99),
    fairness = U.fairness(counts),
  }
end

-- ---- 4. crash recovery --------------------------------------------------------

-- A holder takes the lock and is SIGKILLed while a blocked waiter waits; returns the
-- latencies from the kill to the waiter's return (seconds), one per trial.
local S_HELD, S_WAITING, S_GOT = 1, 2, 3

function P.recovery(dir, ac, trials)
  local lat = {}
  for trial = 1, trials do
    local path, name = fresh(dir, "recovery")
    local sh = B.shared(path .. ".slots", 4)
    local opts = { dir = dir, abandonment_check = ac }
    local holder = U.spawn(function()
      local h = wh.lock(name, opts):acquire()
      sh:set(S_HELD, 1)
      sleep(120)
      h:release()
    end)
    local waiter = U.spawn(function()
      local lock = wh.lock(name, opts)
      wh.lock(name .. "-warm", opts):try_acquire():release() -- join the registry now
      assert(U.wait_until(function() return sh:get(S_HELD) == 1 end, 60))
      sh:set(S_WAITING, 1)
      local h = lock:acquire()
      sh:set(S_GOT, now())
      h:release()
    end)
    assert(U.wait_until(function() return sh:get(S_WAITING) == 1 end, 60), "waiter not ready")
    -- Kill at a random phase of the waiter's abandonment_check slices.
    sleep(0.02 + math.random() * ac)
    local t = now()
    T.kill(holder, T.SIGKILL)
    assert(U.wait_all({ waiter }, 60) == 0, "the waiter did not acquire after the kill")
    U.wait_all({ holder }, 10)
    lat[trial] = sh:get(S_GOT) - t
  end
  return lat
end

-- A process stopped for good inside a guard section: a child writes its own identity into the
-- guard word of the object's file (offset 64, doc/FORMAT.md) and stops itself (SIGSTOP). Returns
-- the durations of release() of a hold taken before, and of acquire(0.3) (which must time out
-- on time), one each per trial.
local function stopped(pid)
  return U.wait_until(function()
    local f = io.open("/proc/" .. pid .. "/stat")
    local s = f and f:read("*a") or ""
    if f then f:close() end
    return s:match("^%d+ %b() (%a)") == "T"
  end, 30)
end

function P.stopped_guard(dir, trials)
  local rel, acq = {}, {}
  for trial = 1, trials do
    local path, name = fresh(dir, "stopped")
    local lock = wh.lock(name, { dir = dir })
    local h = lock:acquire()
    local sh = B.shared(path .. ".slots", 2)
    local child = U.spawn(function()
      local id = wh.lock(name .. "-id", { dir = dir })
      local hid = id:acquire()
      assert(T.word64(lock.path, 64, T.word64(id.path, 128)) == "0", "the guard was not free")
      sh:set(1, 1)
      T.kill(T.getpid(), T.SIGSTOP)
      T.word64(lock.path, 64, "0")
      hid:release()
      sleep(120)
    end)
    assert(U.wait_until(function() return sh:get(1) == 1 end, 30), "the child did not take the guard")
    assert(stopped(child), "the child did not stop")
    local t = now()
    h:release()
    rel[trial] = now() - t
    t = now()
    local ok = pcall(lock.acquire, lock, 0.3)
    acq[trial] = now() - t
    assert(not ok, "acquired while the guard's owner is stopped")
    T.kill(child, T.SIGCONT)
    T.kill(child, T.SIGKILL)
    U.wait_all({ child }, 10)
  end
  return rel, acq
end

-- CPU a waiter uses per second while blocked (make's acquire) behind a live holder.
function P.waiter_cpu(dir, make, seconds)
  local path, name = fresh(dir, "waitcpu")
  local sh = B.shared(path .. ".slots", 4)
  local holder = U.spawn(function()
    local acquire, release = make(dir, name)
    local h = acquire()
    sh:set(S_HELD, 1)
    assert(U.wait_until(function() return sh:get(S_WAITING) == 1 end, 60))
    sleep(seconds)
    release(h)
  end)
  local waiter = U.spawn(function()
    local acquire, release = make(dir, name)
    polls = 0
    assert(U.wait_until(function() return sh:get(S_HELD) == 1 end, 60))
    local c0, t0 = B.cpu(), now()
    sh:set(S_WAITING, 1)
    local h = acquire()
    local c1, t1 = B.cpu(), now()
    release(h)
    U.put(path .. ".out", { (c1 - c0) / (t1 - t0), polls / (t1 - t0) })
  end)
  assert(U.wait_all({ holder, waiter }, seconds + 60) == 0, "a waiter-CPU process failed")
  local r = U.get(path .. ".out")
  return r[1], r[2]
end

-- ---- 5. scale -----------------------------------------------------------------

local function status_kb(field)
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)"))
end

local function nmaps()
  local n = 0
  for _ in io.lines("/proc/self/maps") do n = n + 1 end
  return n
end

-- Opens one object and takes it once (acquire: other processes may hold it at that moment):
-- what a user pays before its first hold.
local function open_use(dir, name)
  local lock = wh.lock(name, { dir = dir })
  lock:acquire():release()
  return lock
end

-- Runs fn in a child and returns the numbers it returns.
local function in_child(dir, fn)
  local path = fresh(dir, "child")
  local pid = U.spawn(function() U.put(path, fn()) end)
  assert(U.wait_all({ pid }, 600) == 0, "a scale process failed")
  return U.get(path)
end

-- Medians (seconds) of: opening a new object (creating its file), opening an existing
-- file for the first time in a process, and opening it again while it is open there.
-- Each open includes one acquire + release.
function P.open_costs(dir, n)
  local sub = fresh(dir, "open")
  os.execute("mkdir " .. sub)
  local function timed(i, into)
    local t = now()
    local lock = open_use(sub, "o" .. i)
    into[#into + 1] = now() - t
    return lock
  end
  local create = in_child(dir, function()
    open_use(sub, "warm") -- the directory and the registry
    local t = {}
    for i = 1, n do timed(i, t) end
    return { U.median(t) }
  end)
  local reopen = in_child(dir, function()
    open_use(sub, "warm")
    local first, again, keep = {}, {}, {}
    for i = 1, n do keep[i] = timed(i, first) end
    for i = 1, n do timed(i, again) end
    return { U.median(first), U.median(again) }
  end)
  return create[1], reopen[1], reopen[2]
end

-- What n objects open (and used once) cost one process: kB of resident memory, descriptors
-- and mappings per object, and the seconds it took.
function P.many_objects(dir, n)
  local sub = fresh(dir, "many")
  os.execute("mkdir " .. sub)
  return in_child(dir, function()
    open_use(sub, "warm")
    collectgarbage()
    local rss, fds, maps, t = status_kb("VmRSS"), B.nfds(), nmaps(), now()
    local keep = {}
    for i = 1, n do keep[i] = open_use(sub, "m" .. i) end
    local elapsed = now() - t
    collectgarbage()
    return { (status_kb("VmRSS") - rss) / n, (B.nfds() - fds) / n, (nmaps() - maps) / n,
      elapsed, #keep }
  end)
end

-- nproc processes start together and each opens (and uses once) the same nobj objects.
-- Returns the wall time until the last is done, and the median time of one process.
function P.many_processes(dir, nproc, nobj)
  local path = fresh(dir, "procs")
  local sub = path .. ".d"
  os.execute("mkdir " .. sub)
  local start = together(path, nproc, nil, function(i)
    local keep = {}
    for j = 1, nobj do keep[j] = open_use(sub, "p" .. j) end
    U.put(("%s.%d"):format(path, i), { now() })
  end, 600)
  local each = {}
  for i = 1, nproc do each[i] = U.get(("%s.%d"):format(path, i))[1] - start end
  return U.max(each), U.median(each)
end

-- ---- 6. async busy fraction (issue 21) ----------------------------------------

-- n processes each loop acquire -> hold `hold` seconds -> release for `duration` seconds.
-- Returns the fraction of the time the lock was held, the idle gap between a release
-- and the next acquisition (p50, p99), the fairness (most / fewest holds of one process)
-- and the number of overlapping holds (must be 0).
function P.busy(dir, make, n, duration, hold)
  local path, name = fresh(dir, "busy")
  local start = together(path, n, function() return opened(make, dir, name) end,
    function(i, start, l)
      local acquire, release = l[1], l[2]
      local stamps, stop = {}, start + duration
      while now() < stop do
        local h = acquire()
        local t = now()
        sleep(hold)
        stamps[#stamps + 1] = t
        stamps[#stamps + 1] = now()
        release(h)
      end
      U.put(("%s.%d"):format(path, i), stamps)
    end, duration + 120)
  local holds, counts = {}, {}
  for i = 1, n do
    local s = U.get(("%s.%d"):format(path, i))
    counts[i] = #s / 2
    for j = 1, #s, 2 do holds[#holds + 1] = { s[j], s[j + 1] } end
  end
  table.sort(holds, function(a, b) return a[1] < b[1] end)
  local stop, held, gaps, overlaps = start + duration, 0, {}, 0
  for j, h in ipairs(holds) do
    held = held + math.max(0, math.min(h[2], stop) - math.max(h[1], start))
    local nxt = holds[j + 1]
    if nxt and nxt[1] < stop then
      gaps[#gaps + 1] = nxt[1] - h[2]
      if nxt[1] < h[2] then overlaps = overlaps + 1 end
    end
  end
  return {
    busy = held / duration, gap50 = U.quantile(gaps, 0.5), gap99 = U.quantile(gaps, 0.99),
    fairness = U.fairness(counts), overlaps = overlaps,
  }
end

-- ---- 7. the command line ------------------------------------------------------

-- Median wall time of running argv `runs` times (every run must succeed).
function P.command(argv, runs)
  local t = {}
  for i = 1, runs do
    local s, status = B.run((table.unpack or unpack)(argv))
    assert(status == 0, table.concat(argv, " ") .. " exited with status " .. status)
    t[i] = s
  end
  return U.median(t)
end

return P
