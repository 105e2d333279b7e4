-- The soak (make soak): long runs of ordinary use in one process, after which
-- open descriptors (/proc/self/fd), mappings (/proc/self/maps), RSS and the Lua
-- heap must be where they were after a warm-up, within a margin:
--   * 100 000 acquire/release pairs per kind (lock, semaphore ticket, read,
--     write, upgradeable read, upgrade, acquire_all), blocking and async forms;
--   * 10 000 objects made, used, collected and removed;
--   * 10 000 waits that time out or are cancelled (blocking and async);
--   * 1 000 async waits abandoned in coroutines that are never resumed.
-- Prints TAP lines and the figures. Usage: lua scripts/soak.lua [scale=1]
-- (scale < 1 for a quicker run; the counts above are for 1).
local wh = require "waithandles"
local T = require "whtest"

local SCALE = tonumber(arg and arg[1]) or 1
local VERSION = rawget(_G, "jit") and jit.version or _VERSION
local dir
do -- on tmpfs where there is one, as lock directories usually are
  local f = io.popen("mktemp -d /dev/shm/wh-soak.XXXXXX 2>/dev/null")
  dir = f:read("*l")
  f:close()
  if not dir or dir == "" then dir = T.mkdtemp() end
end
local p = wh.provider({ dir = dir, abandonment_check = 0.001 })
local failures = 0

local function read(path)
  local f = assert(io.open(path, "r"))
  local s = f:read("*a")
  f:close()
  return s
end

local function sample()
  collectgarbage()
  collectgarbage()
  local _, nmaps = read("/proc/self/maps"):gsub("\n", "")
  return {
    fds = T.nfds(),
    maps = nmaps,
    rss = tonumber(read("/proc/self/status"):match("VmRSS:%s*(%d+)")), -- kB
    heap = collectgarbage("count"), -- kB
  }
end

-- Margins: descriptors exact; mappings +2 (the allocator may map an arena); RSS +1.5 MB (a leak
-- of 16 bytes per pair would be 1.4 MB over 90 000 pairs); the Lua heap +256 kB.
local function flat(what, n, before, after, started)
  local ok = after.fds <= before.fds and after.maps <= before.maps + 2 and
    after.rss <= before.rss + 1536 and after.heap <= before.heap + 256
  if not ok then failures = failures + 1 end
  print(("%s - %s: %d in %.1f s; fds %d -> %d, maps %d -> %d, RSS %d -> %d kB, Lua heap %.0f -> %.0f kB")
    :format(ok and "ok" or "not ok", what, n, T.now() - started, before.fds, after.fds, before.maps,
    after.maps, before.rss, after.rss, before.heap, after.heap))
end

-- Runs body(i) for i = 1..n; the baseline is taken after the first tenth (the warm-up).
local function soak(what, n, body, after_all)
  n = math.max(10, math.floor(n * SCALE))
  local warm = math.floor(n / 10)
  local started = T.now()
  for i = 1, warm do body(i) end
  local before = sample()
  for i = warm + 1, n do body(i) end
  if after_all then after_all() end
  flat(what, n, before, sample(), started)
end

local function check(cond, msg)
  if not cond then error(msg, 2) end
end

print(("# soak on %s in %s (scale %g)"):format(VERSION, dir, SCALE))

-- ---- acquire/release pairs ------------------------------------------------------------

local lock, sem, rw = p:lock("lock"), p:semaphore("sem", 2), p:rwlock("rw")
local FORMS = { "try", "blocking", "async" }
local function take(o, base, i)
  local form = FORMS[i % 3 + 1]
  local h
  if form == "try" then h = o["try_" .. base](o)
  elseif form == "blocking" then h = o[base](o, 1)
  else h = o[base .. "_async"](o, 1, { sleep = T.sleep }) end
  check(h, base .. " failed on a free object")
  return h
end

soak("lock acquire/release pairs", 100000, function(i) take(lock, "acquire", i):release() end)
soak("semaphore ticket pairs", 100000, function(i) take(sem, "acquire", i):release() end)
soak("read pairs", 100000, function(i) take(rw, "acquire_read", i):release() end)
soak("write pairs", 100000, function(i) take(rw, "acquire_write", i):release() end)
soak("upgradeable read pairs", 100000, function(i)
  take(rw, "acquire_upgradeable_read", i):release()
end)
soak("upgrades (upgradeable read, upgrade, release)", 100000, function(i)
  local h = take(rw, "acquire_upgradeable_read", i)
  local form = FORMS[i % 3 + 1]
  if form == "try" then check(h:try_upgrade(), "try_upgrade failed")
  elseif form == "blocking" then h:upgrade(1)
  else h:upgrade_async(1, { sleep = T.sleep }) end
  h:release()
end)
local NAMES = { "a", "b", "c" }
soak("acquire_all pairs", 100000, function(i)
  local form = FORMS[i % 3 + 1]
  local h
  if form == "try" then h = p:try_acquire_all(NAMES)
  elseif form == "blocking" then h = p:acquire_all(NAMES, 1)
  else h = p:acquire_all_async(NAMES, 1, { sleep = T.sleep }) end
  check(h, "acquire_all failed")
  h:release()
end)
-- Handles dropped without release: __gc gives them back (100 tickets between collections).
local pool = p:semaphore("pool", 100)
soak("handles released by the garbage collector", 100000, function(i)
  check(pool:try_acquire(), "handles dropped earlier still hold their tickets")
  if i % 100 == 0 then collectgarbage() end -- the handles above are garbage at once
end)

-- ---- objects made and collected --------------------------------------------------------

local KINDS = { "lock", "semaphore", "rwlock" }
local unremoved = {} -- made, not removed yet: remove() refuses while this process has it open
local function remove_collected()
  collectgarbage()
  local still = {}
  for _, name in ipairs(unremoved) do
    if not p:remove(name) then still[#still + 1] = name end
  end
  unremoved = still
end
soak("objects made, used, collected and removed", 10000, function(i)
  local name = "obj-" .. i
  local kind = KINDS[i % 3 + 1]
  local o = kind == "semaphore" and p:semaphore(name, 3) or p[kind](p, name)
  local h = kind == "rwlock" and o:try_acquire_write() or o:try_acquire()
  check(h, "a new object is busy")
  h:release()
  unremoved[#unremoved + 1] = name
  if i % 50 == 0 then remove_collected() end
end)
remove_collected()
-- (LuaJIT may keep the last object or two alive from a stale stack slot for a while.)
local left = #wh.list({ dir = dir })
print(("%s - the objects' files are gone once collected (%d of the 10000 left)")
  :format(left <= 12 and "ok" or "not ok", left))
if left > 12 then failures = failures + 1 end

-- ---- waits that time out or are cancelled ---------------------------------------------

local busy = p:lock("busy")
local holder = assert(busy:try_acquire())
soak("waits that time out or are cancelled", 10000, function(i)
  local r = i % 4
  if r == 0 then
    check(busy:try_acquire(0.0002) == nil, "acquired a held lock")
  elseif r == 1 then
    check(busy:try_acquire_async(0.0002, { sleep = T.sleep }) == nil, "acquired a held lock")
  else
    -- Cancelled after a first check, so that the wait has begun (and registered its mark).
    local calls = 0
    local cancel = function() calls = calls + 1 return calls > 1 end
    local ok, err
    if r == 2 then
      ok, err = pcall(busy.acquire, busy, 5, { cancel = cancel })
    else
      ok, err = pcall(busy.acquire_async, busy, 5, { cancel = cancel, sleep = T.sleep })
    end
    check(not ok and type(err) == "table" and err.code == "cancelled", "not cancelled: " .. tostring(err))
  end
end)
check(busy:info().waiting == 0, "marks left behind by waits that ended")

-- ---- abandoned async waits ----------------------------------------------------------------

soak("async waits abandoned in coroutines never resumed", 1000, function(i)
  local co = coroutine.create(function() return busy:acquire_async(10) end)
  local ok, delay = coroutine.resume(co)
  check(ok and type(delay) == "number", "the async wait did not yield")
  co = nil
  if i % 50 == 0 then collectgarbage() end
end)
collectgarbage()
T.sleep(0.15) -- what a collection did not withdraw, its lease ends
local waiting = busy:info().waiting
print(("%s - no mark of an abandoned wait is left (%d waiting)"):format(waiting == 0 and "ok" or "not ok", waiting))
if waiting ~= 0 then failures = failures + 1 end
holder:release()
local h = busy:try_acquire()
print(("%s - the lock is free for the next comer"):format(h and "ok" or "not ok"))
if not h then failures = failures + 1 end

os.execute("rm -rf '" .. dir .. "'")
print(("# soak: %d failed"):format(failures))
os.exit(failures == 0 and 0 or 1)
