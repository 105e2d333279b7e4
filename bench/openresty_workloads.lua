-- The request handlers of `make bench-openresty` (bench/openresty.lua), run
-- inside nginx workers: each workload with waithandles ("wh") and with the
-- lua-resty-lock algorithm on a shared dict ("rl", bench/resty_lock_baseline.lua).
--
-- init_by_lua:   WL = require "openresty_workloads"; WL.setup{ dir =, locks = }
-- init_worker:   WL.start_refresher(impl)        (workload 3 only)
-- content:       WL.counter(impl), WL.limit(impl), WL.serve(impl), WL.hold5(impl), WL.hold(impl),
--                WL.wait(impl), WL.stats()
--
-- Shared dicts: `locks` (the baseline's locks and counters) and `stats`.
local wh = require "waithandles"
local RL = require "resty_lock_baseline"
local ngx = ngx

local M = {}
local C -- the configuration given to setup
local LOCK, SEM, RW, REFRESH, CRASH -- waithandles objects, opened by the master

local TIMEOUT = 30 -- every wait, both implementations: long enough never to time out here
local SIZE = 65536 -- the cached value's payload

function M.setup(conf)
  C = conf
  local o = { dir = conf.locks }
  LOCK = wh.lock("counter", o)
  SEM = wh.semaphore("upstream", 3, o)
  RW = wh.rwlock("cache", o)
  REFRESH = wh.lock("cache-refresh", o)
  CRASH = wh.lock("crash", o)
end

local function stats() return ngx.shared.stats end

-- A monotonic clock in seconds, finer than ngx.now()'s milliseconds (LuaJIT's FFI; the
-- driver, which loads this file for write_value only, has none).
local mono
do
  local ok, ffi = pcall(require, "ffi")
  if ok then
    ffi.cdef [[
      struct wl_timespec { long tv_sec; long tv_nsec; };
      int clock_gettime(int clk, struct wl_timespec *ts);
    ]]
    local ts = ffi.new("struct wl_timespec")
    mono = function()
      ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
      return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
    end
  end
end

-- Adds the time since t0 to the time the object was held (stats "held_us").
local function held_since(t0)
  stats():incr("held_us", math.floor((mono() - t0) * 1e6 + 0.5), 0)
end

local function fail(err)
  ngx.log(ngx.ERR, tostring(err))
  ngx.status = 500
  ngx.say(tostring(err))
  return ngx.exit(500)
end

-- ---- 1. a counter in a file: read, ngx.sleep(0.001), write, under the lock ----

local function bump()
  local st = stats()
  if st:incr("inside", 1, 0) > 1 then st:incr("violations", 1, 0) end
  local path = C.dir .. "/counter.txt"
  local f = assert(io.open(path, "r"))
  local n = tonumber(f:read("*a"))
  f:close()
  ngx.sleep(0.001)
  f = assert(io.open(path, "w"))
  f:write(tostring(n + 1))
  f:close()
  st:incr("inside", -1)
  st:incr("done", 1, 0)
end

-- Written the common way, the wait inside pcall (issue 10: that used to block the worker).
function M.counter(impl)
  local ok, err = pcall(function()
    if impl == "wh" then
      local h = LOCK:acquire_async(TIMEOUT)
      local t0 = mono()
      bump()
      held_since(t0)
      h:release()
    else
      local lk = RL.new("locks", { timeout = TIMEOUT })
      assert(lk:lock("counter"))
      local t0 = mono()
      bump()
      held_since(t0)
      lk:unlock()
    end
  end)
  if not ok then return fail(err) end
  ngx.say("ok")
end

-- ---- 4. a lock held 5 ms (ngx.sleep) per request: how busy the lock is kept ----

function M.hold5(impl)
  local st = stats()
  local lk, h
  if impl == "wh" then
    h = LOCK:acquire_async(TIMEOUT)
  else
    lk = RL.new("locks", { timeout = TIMEOUT })
    local ok, err = lk:lock("hold5")
    if not ok then return fail(err) end
  end
  local t0 = mono()
  if st:incr("inside", 1, 0) > 1 then st:incr("violations", 1, 0) end
  ngx.sleep(0.005)
  st:incr("inside", -1)
  st:incr("done", 1, 0)
  held_since(t0)
  if h then h:release() else lk:unlock() end
  ngx.say("ok")
end

-- ---- 2. at most 3 requests of all workers in a 5 ms upstream call -------------

local function upstream()
  local st = stats()
  if st:incr("inside", 1, 0) > 3 then st:incr("violations", 1, 0) end
  ngx.sleep(0.005) -- the upstream stand-in
  st:incr("inside", -1)
  st:incr("done", 1, 0)
end

local LIMIT
function M.limit(impl)
  if impl == "wh" then
    local t = SEM:acquire_async(TIMEOUT)
    local t0 = mono()
    upstream()
    held_since(t0)
    t:release()
  else
    LIMIT = LIMIT or RL.limit("locks", "upstream", 3, { timeout = TIMEOUT })
    local ok, err = LIMIT:enter()
    if not ok then return fail(err) end
    local t0 = mono()
    upstream()
    held_since(t0)
    LIMIT:leave()
  end
  ngx.say("ok")
end

-- ---- 3. a cached value in a file, refreshed every second by one worker ------------

-- The value: "version time\n" then SIZE copies of one letter. Written in place
-- (truncated, then written): a reader outside the lock could see it torn.
local function value_path() return C.dir .. "/cache.dat" end

function M.write_value(path, version, time)
  local f = assert(io.open(path, "w"))
  f:write(("%d %.3f\n"):format(version, time), string.char(65 + version % 26):rep(SIZE))
  f:close()
end

-- The version, its time, and whether the value read is whole.
local function read_value()
  local f = assert(io.open(value_path(), "r"))
  local s = f:read("*a")
  f:close()
  local version, time, header = s:match("^(%d+) ([%d.]+)\n()")
  version = tonumber(version)
  local whole = version ~= nil and #s == header - 1 + SIZE
    and s:byte(header) == 65 + version % 26 and s:byte(-1) == 65 + version % 26
  return version, tonumber(time), whole
end

local function header()
  local f = assert(io.open(value_path(), "r"))
  local l = f:read("*l")
  f:close()
  local version, time = (l or ""):match("^(%d+) ([%d.]+)$")
  return tonumber(version) or 0, tonumber(time) or 0
end

function M.serve(impl)
  local version, time, whole
  if impl == "wh" then
    local r = RW:acquire_read_async(TIMEOUT)
    version, time, whole = read_value()
    r:release()
  else
    local lk = RL.new("locks", { timeout = TIMEOUT })
    local ok, err = lk:lock("cache")
    if not ok then return fail(err) end
    version, time, whole = read_value()
    lk:unlock()
  end
  local st = stats()
  st:incr("done", 1, 0)
  if not whole then
    st:incr("violations", 1, 0)
    return fail("a torn value")
  end
  ngx.say("version ", version)
end

-- Every 0.1 s in every worker: whoever gets the refresh lock without waiting
-- (try_acquire; the baseline: lock() with timeout 0) refreshes the value if
-- it is a second old: 20 ms of "backend", then the write under the lock.
local function refresh(impl)
  ngx.update_time()
  local version, time = header() -- only the refresher writes it, and we are it
  if ngx.now() - time < 1 then return end
  ngx.sleep(0.02) -- the backend
  ngx.update_time()
  if impl == "wh" then
    local w = RW:acquire_write_async(TIMEOUT)
    M.write_value(value_path(), version + 1, ngx.now())
    w:release()
  else
    local lk = RL.new("locks", { timeout = TIMEOUT })
    assert(lk:lock("cache"))
    M.write_value(value_path(), version + 1, ngx.now())
    lk:unlock()
  end
  stats():incr("refreshes", 1, 0)
end

local function tick(premature, impl)
  if premature then return end
  local ok, err = pcall(function()
    if impl == "wh" then
      local h = REFRESH:try_acquire()
      if h then
        refresh(impl)
        h:release()
      end
    else
      local lk = RL.new("locks", { timeout = 0 })
      if lk:lock("cache-refresh") then
        refresh(impl)
        lk:unlock()
      end
    end
  end)
  if not ok then ngx.log(ngx.ERR, "refresh: ", tostring(err)) end
end

function M.start_refresher(impl)
  assert(ngx.timer.every(0.1, tick, impl))
end

-- ---- a worker that dies holding the lock -------------------------------------

-- Holds the lock, writes its worker's pid to dir/holder, and sleeps until killed.
function M.hold(impl)
  if impl == "wh" then
    M.held = CRASH:acquire_async(5)
  else
    local lk = RL.new("locks", { timeout = 5 })
    assert(lk:lock("crash"))
    M.held = lk
  end
  local f = assert(io.open(C.dir .. "/holder", "w"))
  f:write(ngx.worker.pid())
  f:close()
  ngx.sleep(3600)
end

-- Waits for the lock from a worker other than `holder` (409 at once in that worker).
function M.wait(impl, holder)
  if ngx.worker.pid() == holder then return ngx.exit(409) end
  if impl == "wh" then
    local h = CRASH:acquire_async(60)
    h:release()
  else
    local lk = RL.new("locks", { timeout = 60 })
    local ok, err = lk:lock("crash")
    if not ok then return fail(err) end
    lk:unlock()
  end
  ngx.say("acquired by ", ngx.worker.pid())
end

function M.stats()
  local st = stats()
  for _, k in ipairs({ "done", "violations", "refreshes", "held_us" }) do
    ngx.say(k, " ", st:get(k) or 0)
  end
  local f = io.open(C.dir .. "/counter.txt", "r")
  if f then
    ngx.say("counter ", f:read("*a"))
    f:close()
  end
end

return M
