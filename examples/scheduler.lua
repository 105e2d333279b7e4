-- A coroutine scheduler of your own, and waithandles' *_async calls in it: 100 coroutines
-- want one lock; each waits with lock:acquire_async(), which, in a coroutine that can yield
-- and with no `sleep` given, calls coroutine.yield(delay). The scheduler resumes each
-- coroutine when the delay it yielded has passed, and sleeps while nobody is due. The
-- coroutines arrive one per millisecond and are served roughly in the order they came.
--
--   lua examples/scheduler.lua     (LUA_PATH/LUA_CPATH finding waithandles; luasystem, which
--                                   busted depends on, gives the clock and the sleep)
-- It doubles as a spec: spec/hosts_scheduler_spec.lua loads it and runs the same checks.
local waithandles = require "waithandles"
local system = require "system"
local now, sleep = system.monotime, system.sleep

local M = {}

-- Runs the tasks (functions) as coroutines to their ends. A task yields a delay in seconds
-- and is resumed once it has passed; `start[i]` delays the first resume of task i. Returns
-- how many times each task yielded.
function M.run(tasks, start)
  local t0, live, yields = now(), {}, {}
  for i, f in ipairs(tasks) do
    live[#live + 1] = { id = i, co = coroutine.create(f), wake = t0 + (start and start[i] or 0) }
    yields[i] = 0
  end
  while #live > 0 do
    local k = 1 -- the task due first (a heap would do for thousands)
    for j = 2, #live do
      if live[j].wake < live[k].wake then k = j end
    end
    local task = live[k]
    local d = task.wake - now()
    if d > 0 then sleep(d) end
    local ok, delay = coroutine.resume(task.co)
    if not ok then error(delay, 0) end
    if coroutine.status(task.co) == "dead" then
      table.remove(live, k)
    else
      yields[task.id] = yields[task.id] + 1
      task.wake = now() + (type(delay) == "number" and delay or 0)
    end
  end
  return yields
end

-- N coroutines (default 100) contend for one lock, arriving one per millisecond, each
-- holding it for about `hold` seconds. Returns the order they were served in, the number of
-- times each yielded while it waited, and how many held the lock at once at most.
function M.contend(o)
  o = o or {}
  local n, hold = o.n or 100, o.hold or 0.001
  local lock = waithandles.lock(o.name or "scheduler-example", { dir = o.dir })
  local order, inside, most = {}, 0, 0
  local tasks, start = {}, {}
  for i = 1, n do
    start[i] = (i - 1) * 0.001
    tasks[i] = function()
      local h = lock:acquire_async(30) -- yields the delay until its next try
      inside = inside + 1
      most = math.max(most, inside)
      order[#order + 1] = i
      coroutine.yield(hold) -- holding it, the other coroutines run
      inside = inside - 1
      h:release()
    end
  end
  local yields = M.run(tasks, start)
  for i = 1, n do yields[i] = yields[i] - 1 end -- less the one while holding
  return order, yields, most
end

-- How far from arrival order: the largest |place served - place arrived|, and the share
-- of pairs served in the opposite order of their arrival.
function M.disorder(order)
  local far, inversions, pairs_ = 0, 0, 0
  for place, i in ipairs(order) do
    far = math.max(far, math.abs(place - i))
    for later = place + 1, #order do
      pairs_ = pairs_ + 1
      if order[later] < i then inversions = inversions + 1 end
    end
  end
  return far, inversions / math.max(1, pairs_)
end

-- The checks the spec and a plain run make.
function M.check(order, yields, most, n)
  assert(#order == n, ("%d of %d coroutines were served"):format(#order, n))
  assert(most == 1, "two coroutines held the lock at once")
  local waited = 0
  for i = 1, n do
    if yields[i] > 0 then waited = waited + 1 end
  end
  assert(waited >= n / 2, ("only %d coroutines ever yielded while waiting"):format(waited))
  local far, inverted = M.disorder(order)
  assert(far <= 40 and inverted <= 0.05, ("not served roughly in order: a coroutine %d places "
    .. "off, %.1f %% of pairs inverted; order %s"):format(far, inverted * 100,
    table.concat(order, " ")))
  return far, inverted
end

if ... == "module" then return M end

local t = now()
local order, yields, most = M.contend()
local far, inverted = M.check(order, yields, most, 100)
print(("100 coroutines served in %.0f ms, at most %d places from arrival order, %.1f %% of "
  .. "pairs inverted"):format((now() - t) * 1000, far, inverted * 100))
