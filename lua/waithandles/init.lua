-- waithandles: machine-wide, crash-safe named locks, semaphores and
-- reader-writer locks. The API is ../../API.md's; this file holds the
-- policy (defaults, waiting loops, which sleep to use), waithandles.core the
-- mechanisms (shared memory, registry, futexes).

local core = require "waithandles.core"

local M = {}
M._VERSION = "waithandles 0.1.0"

local unpack = table.unpack or unpack
local function pack(...) return { n = select("#", ...), ... } end
local huge, min = math.huge, math.min
local type, select, error, pcall, setmetatable, getmetatable, rawget, rawset =
  type, select, error, pcall, setmetatable, getmetatable, rawget, rawset

local MODE_LOCK, MODE_READ, MODE_WRITE = core.MODE_LOCK, core.MODE_READ, core.MODE_WRITE
local MODE_UPGRADEABLE, MODE_UPGRADE = core.MODE_UPGRADEABLE, core.MODE_UPGRADE
local check_timeout, check_options, now = core.check_timeout, core.check_options, core.now

local DEFAULT_MODE = 438 -- 0666
local DEFAULT_ABANDONMENT_CHECK = 0.1
local FIRST_DELAY, MAX_DELAY, GROWTH = 0.001, 0.05, 1.5
local LEASE_MARGIN = 0.5 -- an async waiter's marks outlive its next poll by this much

-- ---- errors -----------------------------------------------------------

local function raise(code, message, name, errno)
  error(core.error(code, message, name, errno), 0)
end

local function argerror(argn, fname, msg, level)
  error(("bad argument #%d to '%s' (%s)"):format(argn, fname, msg), (level or 2) + 1)
end

local function check_count(n, last, fname)
  if n > last then
    argerror(last + 1, fname, ("no more than %d arguments expected"):format(last), 3)
  end
end

local function describe(obj)
  return ("%s '%s'"):format(obj.kind, obj.name)
end

-- ---- cancellation -----------------------------------------------------

M.cancel_token = core.cancel_token

-- Calls f(...) in protected mode, even across yields on Lua 5.1 (whose pcall
-- cannot be yielded through): f runs in its own coroutine and its yields are
-- passed on to our resumer.
local pcall_yieldable = pcall
if _VERSION == "Lua 5.1" and not rawget(_G, "jit") then
  local create, resume, status, yield = coroutine.create, coroutine.resume, coroutine.status,
    coroutine.yield
  pcall_yieldable = function(f, ...)
    local co = create(function(...) return f(...) end) -- 5.1 cannot create from a C function
    local r = pack(resume(co, ...))
    while r[1] and status(co) ~= "dead" do
      r = pack(resume(co, yield(unpack(r, 2, r.n))))
    end
    return unpack(r, 1, r.n)
  end
end

-- Raises "cancelled" (after withdraw) if the wait should stop; an error
-- raised by a cancel function propagates unchanged, also after withdraw.
local function check_cancel(cancel, obj, withdraw)
  if cancel == nil then return end
  local cancelled
  if type(cancel) == "function" then
    local ok, r = pcall(cancel)
    if not ok then
      if withdraw then withdraw() end
      error(r, 0)
    end
    cancelled = r
  else
    cancelled = cancel:is_cancelled()
  end
  if cancelled then
    if withdraw then withdraw() end
    raise("cancelled", ("waiting for %s was cancelled"):format(describe(obj)), obj.name)
  end
end

-- ---- choosing how an async wait sleeps ---------------------------------

local NGX_YIELD_PHASES = {
  rewrite = true, access = true, content = true, timer = true, ssl_cert = true,
  ssl_session_fetch = true, ssl_client_hello = true, preread = true,
}

-- Can the running coroutine yield here? Lua 5.3+ and LuaJIT say so
-- themselves; on 5.1 and 5.2 any C function on the coroutine's stack (5.2:
-- other than pcall/xpcall) makes a yield fail, so look for one.
local yieldable = coroutine.isyieldable
if not yieldable then
  local getinfo = debug and debug.getinfo
  local allow = _VERSION ~= "Lua 5.1" and { [pcall] = true, [xpcall] = true } or {}
  yieldable = function()
    local co, main = coroutine.running()
    if co == nil or main or not getinfo then return false end
    for level = 3, 250 do
      local info = getinfo(level, "Sf")
      if info == nil then return true end
      if info.what == "C" and not allow[info.func] then return false end
    end
    return false
  end
end
M._yieldable = yieldable

local function pick_sleep(opts, obj)
  local s = opts and opts.sleep or obj._sleep
  if s then return s end
  if not yieldable() then return nil end -- the blocking wait
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.sleep) == "function" and type(ngx.get_phase) == "function"
    and NGX_YIELD_PHASES[ngx.get_phase()] then
    return ngx.sleep
  end
  return coroutine.yield
end

-- ---- the waiting loops --------------------------------------------------

-- A wait is described by a table:
--   obj        the object (for messages, abandonment_check, sleep)
--   step(w, lease)   one non-blocking attempt, registering w's marks if busy
--   block(w, seconds) blocks up to seconds (sliced in C), like step
--   waiter(futex)    a new waiter
--   check()    raises if the wait can no longer succeed (e.g. released handle)

-- Raises (after withdraw, if given) if the wait is cancelled or can no longer succeed.
local function check_stop(d, cancel, withdraw)
  check_cancel(cancel, d.obj, withdraw)
  if d.check then d.check(withdraw) end -- the cancel function may have released the handle
end

local function blocking_wait(d, t, cancel, since)
  local w = d.waiter(true, since)
  if cancel == nil then
    local r = d.block(w, t)
    w:withdraw()
    return r
  end
  local deadline, ac = since + t, d.obj._ac
  local function withdraw() w:withdraw() end
  while true do
    local r = d.block(w, min(deadline - now(), ac))
    if r then return r end
    if now() >= deadline then
      w:withdraw()
      return nil
    end
    check_stop(d, cancel, withdraw)
  end
end

local function async_wait(d, t, cancel, sleep, since)
  local w = d.waiter(false, since)
  local deadline, delay = since + t, FIRST_DELAY
  local function withdraw() w:withdraw() end
  while true do
    -- Skip the full attempt while nothing changed (a read of seq in C).
    if w:changed() then
      if d.check then d.check(withdraw) end
      local r = d.step(w, 2 * delay + LEASE_MARGIN)
      if r then return r end
    end
    local left = deadline - now()
    if left <= 0 then
      w:withdraw()
      return nil
    end
    local ok, err = pcall_yieldable(sleep, min(delay, left))
    if not ok then
      w:withdraw()
      error(err, 0)
    end
    check_cancel(cancel, d.obj, withdraw)
    delay = min(delay * GROWTH, MAX_DELAY)
  end
end

-- Common body of every acquiring call once its arguments are checked.
local function wait_for(d, t, opts, async)
  local cancel = opts and opts.cancel
  local since = now()
  check_stop(d, cancel)
  local r = d.step(nil)
  if r or t == 0 then return r end
  local sleep = async and pick_sleep(opts, d.obj)
  if sleep then return async_wait(d, t, cancel, sleep, since) end
  return blocking_wait(d, t, cancel, since)
end

local function timed_out(obj, t)
  raise("timeout", ("timed out after %g s waiting for %s in %s"):format(t, describe(obj), obj.dir),
    obj.name)
end

local function acquisition(obj, mode)
  return {
    obj = obj,
    step = function(w, lease) return core.attempt(obj, mode, w, lease) end,
    block = function(w, s) return core.wait(obj, w, s) end,
    waiter = function(futex, since) return core.waiter(obj, mode, futex, since) end,
  }
end

-- Calls define(name, is_try, async) for try_<base>, <base>, try_<base>_async, <base>_async.
local function define_forms(base, define)
  define("try_" .. base, true, false)
  define(base, false, false)
  define("try_" .. base .. "_async", true, true)
  define(base .. "_async", false, true)
end

-- Defines try_X, X, try_X_async, X_async for one mode of one kind. The
-- blocking pair also gets a C closure per object (see new_object) that
-- serves the common cases without entering Lua.
local function acquirers(methods, fast, suffix, mode)
  local function define(name, is_try, async)
    methods[name] = function(self, timeout, opts, ...)
      check_count(select("#", ...) + 2, 2, name)
      local t = check_timeout(timeout, 1, name, not is_try, 2)
      check_options(opts, 2, name, "call", 2)
      local h = wait_for(acquisition(self, mode), t, opts, async)
      if h == nil and not is_try then timed_out(self, t) end
      return h
    end
    if not async then fast[#fast + 1] = { name, mode, is_try } end
  end
  define_forms("acquire" .. suffix, define)
end

-- ---- handles ------------------------------------------------------------

local HandleMethods = { release = core.release, is_held = core.is_held }

local UpgradeableMethods = { release = core.release, is_held = core.is_held }

local function object_of(h)
  local mt = getmetatable(h)
  local fields = type(mt) == "table" and rawget(mt, "_fields")
  return fields and rawget(fields, "_obj")
end

local function upgrade_wait(h, obj)
  local ac = obj._ac
  return {
    obj = obj,
    step = function(w, lease) return core.upgrade(h, w, lease, ac) or nil end,
    block = function(w, s) return core.upgrade(h, w, nil, ac, s) or nil end,
    waiter = function(futex, since) return core.waiter(h, MODE_UPGRADE, futex, since, ac) end,
    check = function(withdraw)
      if not core.is_held(h) then
        if withdraw then withdraw() end
        raise("released", ("the handle of %s was released while it waited to upgrade")
          :format(describe(obj)), obj.name)
      end
    end,
  }
end

local function define_upgrade(name, is_try, async)
  UpgradeableMethods[name] = function(h, timeout, opts, ...)
    check_count(select("#", ...) + 2, 2, name)
    local t = check_timeout(timeout, 1, name, not is_try, 2)
    check_options(opts, 2, name, "call", 2)
    local obj = object_of(h)
    if obj == nil then argerror(0, name, "upgradeable read handle expected", 2) end
    if core.is_upgraded(h) then
      raise("invalid_state", ("%s was already upgraded; a handle upgrades once")
        :format(describe(obj)), obj.name)
    end
    local ok = wait_for(upgrade_wait(h, obj), t, opts, async)
    if not ok and not is_try then timed_out(obj, t) end
    return ok and true or false
  end
end
define_forms("upgrade", define_upgrade)

-- ---- options and names ----------------------------------------------------

local function is_dir(path)
  local f = io.open(path .. "/.", "r")
  if f then f:close() return true end
  return false
end

local function default_dir()
  local env = os.getenv("WAITHANDLES_DIR")
  if env and env ~= "" then return env end
  if is_dir("/dev/shm") then return "/dev/shm/waithandles" end
  return "/tmp/waithandles"
end

local function normalize_dir(dir)
  local d = dir:gsub("/+$", "")
  return d == "" and "/" or d
end

-- Permission bits for a missing lock directory we create, from the file mode:
-- x wherever r, and sticky when others may write (like /tmp).
local function dir_mode_for(mode)
  local function bit(m, b) return math.floor(m / b) % 2 == 1 end
  local d = mode % 512
  for _, r in ipairs({ 256, 32, 4 }) do
    if bit(d, r) and not bit(d, r / 4) then d = d + r / 4 end
  end
  if bit(mode, 16) or bit(mode, 2) then d = d + 512 end
  return d
end

-- Settings of one object: per-object options over the provider's.
local function settings(popts, opts)
  local function get(k)
    local v = opts and opts[k]
    if v == nil then v = popts[k] end
    return v
  end
  local dir, mode = get("dir"), get("mode") or DEFAULT_MODE
  local dir_mode
  if dir == nil then
    dir, dir_mode = default_dir(), 1023 -- 01777, like /tmp: objects are machine-wide
  else
    dir_mode = dir_mode_for(mode)
  end
  return {
    dir = normalize_dir(dir), dir_mode = dir_mode, mode = mode, exact = get("exact_name"),
    ac = get("abandonment_check") or DEFAULT_ABANDONMENT_CHECK, sleep = get("sleep"),
  }
end

local function object_name(name, exact, fname)
  if type(name) ~= "string" then
    argerror(1, fname, "name must be a string, got " .. type(name), 3)
  end
  if not exact then return core.safe_name(name) end
  if not core.valid_name(name) then
    raise("invalid_name",
      ("'%s' is not a valid exact name: use 1 to 255 of [A-Za-z0-9._-], not starting with '.', "
        .. "or drop exact_name to have it escaped"):format(name), name)
  end
  return name
end

function M.safe_name(name, ...)
  check_count(select("#", ...) + 1, 1, "safe_name")
  if type(name) ~= "string" then argerror(1, "safe_name", "string expected, got " .. type(name)) end
  return core.safe_name(name)
end

-- ---- objects ------------------------------------------------------------

local LockMethods, SemaphoreMethods, RWLockMethods = {}, {}, {}
local LockFast, SemaphoreFast, RWLockFast = {}, {}, {}
acquirers(LockMethods, LockFast, "", MODE_LOCK)
acquirers(SemaphoreMethods, SemaphoreFast, "", MODE_LOCK)
acquirers(RWLockMethods, RWLockFast, "_read", MODE_READ)
acquirers(RWLockMethods, RWLockFast, "_write", MODE_WRITE)
acquirers(RWLockMethods, RWLockFast, "_upgradeable_read", MODE_UPGRADEABLE)

local function info(self, ...)
  check_count(select("#", ...), 0, "info")
  local t = core.info(self)
  t.name, t.path, t.kind, t.max_count = self.name, self.path, self.kind, self.max_count
  return t
end
LockMethods.info, SemaphoreMethods.info, RWLockMethods.info = info, info, info

local function object_tostring(self)
  return ("waithandles.%s('%s')"):format(self.kind, self.name)
end

local KINDS = {
  lock = {
    id = core.KIND_LOCK,
    mt = { __index = LockMethods, __tostring = object_tostring, __name = "waithandles.Lock" },
    handles = { { MODE_LOCK, "lock" } },
    fast = LockFast,
  },
  semaphore = {
    id = core.KIND_SEMAPHORE,
    mt = { __index = SemaphoreMethods, __tostring = object_tostring,
      __name = "waithandles.Semaphore" },
    handles = { { MODE_LOCK, "semaphore" } },
    fast = SemaphoreFast,
  },
  rwlock = {
    id = core.KIND_RWLOCK,
    mt = { __index = RWLockMethods, __tostring = object_tostring, __name = "waithandles.RWLock" },
    handles = { { MODE_READ, "read" }, { MODE_WRITE, "write" },
      { MODE_UPGRADEABLE, "upgradeable_read" } },
    fast = RWLockFast,
  },
}

-- A new object of `kind` with settings s (see settings()).
local function new_object(kind, name, max_count, s, fname)
  local k = KINDS[kind]
  local ename = object_name(name, s.exact, fname)
  local ud = core.open(k.id, s.dir, s.dir_mode, ename, max_count or 1, s.mode, s.ac)
  local self = setmetatable({
    ud, {},
    name = ename, path = (s.dir == "/" and "" or s.dir) .. "/" .. ename, dir = s.dir,
    kind = kind, max_count = max_count, _ac = s.ac, _sleep = s.sleep,
  }, k.mt)
  for _, hm in ipairs(k.handles) do
    local upg = hm[1] == MODE_UPGRADEABLE
    local mt = core.handle_mt(hm[2], ename, upg and UpgradeableMethods or HandleMethods, upg)
    rawset(rawget(mt, "_fields"), "_obj", self)
    self[2][hm[1]] = mt
  end
  local methods = k.mt.__index
  for _, f in ipairs(k.fast) do
    rawset(self, f[1], core.fast(self, f[2], methods[f[1]], f[3]))
  end
  return self
end

-- ---- composite handles ----------------------------------------------------

local Composite = {}
local CompositeMT = { __index = Composite, __name = "waithandles.Handle" }

function Composite.release(self)
  local any = false
  for i = #self._handles, 1, -1 do
    if self._handles[i]:release() then any = true end
  end
  return any
end

function Composite.is_held(self)
  for _, h in ipairs(self._handles) do
    if not h:is_held() then return false end
  end
  return true
end

CompositeMT.__close = function(self) self:release() end
CompositeMT.__gc = CompositeMT.__close -- Lua 5.2+; on 5.1 each part has its own __gc
CompositeMT.__tostring = function(self)
  return ("waithandles.handle(composite '%s', %s)"):format(self.name,
    self:is_held() and "held" or "released")
end

-- Byte order, never the locale's collation.
local function bytes_less(a, b)
  local n = min(#a, #b)
  for i = 1, n do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- ---- providers ------------------------------------------------------------

local Provider = {}
local ProviderMT = { __index = Provider, __name = "waithandles.Provider" }

function M.provider(opts, ...)
  check_count(select("#", ...) + 1, 1, "provider")
  check_options(opts, 1, "provider", "ctor", 2)
  local copy = {}
  for k, v in pairs(opts or {}) do copy[k] = v end
  return setmetatable({ _opts = copy }, ProviderMT)
end

local function check_provider(p, fname)
  if getmetatable(p) ~= ProviderMT then
    argerror(0, fname, "provider expected (use p:" .. fname .. "(...))", 3)
  end
end

function Provider.lock(self, name, opts, ...)
  check_provider(self, "lock")
  check_count(select("#", ...) + 2, 2, "lock")
  check_options(opts, 2, "lock", "ctor", 2)
  return new_object("lock", name, nil, settings(self._opts, opts), "lock")
end

function Provider.semaphore(self, name, max_count, opts, ...)
  check_provider(self, "semaphore")
  check_count(select("#", ...) + 3, 3, "semaphore")
  if type(max_count) ~= "number" or max_count ~= max_count or max_count < 1
    or max_count > 2147483647 or math.floor(max_count) ~= max_count then
    argerror(2, "semaphore", "max_count must be an integer from 1 to 2^31-1")
  end
  check_options(opts, 3, "semaphore", "ctor", 2)
  return new_object("semaphore", name, math.floor(max_count), settings(self._opts, opts),
    "semaphore")
end

function Provider.rwlock(self, name, opts, ...)
  check_provider(self, "rwlock")
  check_count(select("#", ...) + 2, 2, "rwlock")
  check_options(opts, 2, "rwlock", "ctor", 2)
  return new_object("rwlock", name, nil, settings(self._opts, opts), "rwlock")
end

function Provider.remove(self, name, opts, ...)
  check_provider(self, "remove")
  check_count(select("#", ...) + 2, 2, "remove")
  check_options(opts, 2, "remove", "ctor", 2)
  local s = settings(self._opts, opts)
  return core.remove(s.dir, s.dir_mode, object_name(name, s.exact, "remove"))
end

local function define_all(name, is_try, async)
  -- Each lock gets what is left of the one deadline, via try_*: a failure returns nil, so what
  -- is held can be released before we raise.
  local single = async and "try_acquire_async" or "try_acquire"
  local protect = async and pcall_yieldable or pcall
  Provider[name] = function(self, names, timeout, opts, ...)
    check_provider(self, name)
    check_count(select("#", ...) + 3, 3, name)
    if type(names) ~= "table" or #names == 0 then
      argerror(1, name, "non-empty array of names expected")
    end
    local t = check_timeout(timeout, 2, name, not is_try, 2)
    check_options(opts, 3, name, "call", 2)
    local locks, seen, s = {}, {}, settings(self._opts)
    for i = 1, #names do
      if type(names[i]) ~= "string" then
        argerror(1, name, ("names[%d] must be a string, got %s"):format(i, type(names[i])))
      end
      local lock = new_object("lock", names[i], nil, s, name)
      if seen[lock.name] then
        argerror(1, name, ("names '%s' and '%s' are the same lock"):format(seen[lock.name],
          names[i]))
      end
      seen[lock.name] = names[i]
      locks[i] = lock
    end
    -- A canonical order, so overlapping sets never deadlock.
    table.sort(locks, function(a, b) return bytes_less(a.name, b.name) end)
    local deadline, handles = now() + t, {}
    for i, lock in ipairs(locks) do
      local left = t == huge and huge or math.max(0, deadline - now())
      local ok, h = protect(lock[single], lock, left, opts)
      if not ok or h == nil then
        for j = i - 1, 1, -1 do handles[j]:release() end
        if not ok then error(h, 0) end
        if is_try then return nil end
        raise("timeout", ("timed out after %g s waiting for locks %s"):format(t,
          table.concat(names, ", ")), lock.name)
      end
      handles[i] = h
    end
    local ordered = {}
    for i, l in ipairs(locks) do ordered[i] = l.name end
    return setmetatable({ _handles = handles, kind = "composite",
      name = table.concat(ordered, "+"), names = ordered }, CompositeMT)
  end
end
define_forms("acquire_all", define_all)

-- ---- module-level API -------------------------------------------------------

local default_provider
local function provider()
  default_provider = default_provider or M.provider()
  return default_provider
end

-- M.lock and M.rwlock check their options themselves rather than tail-call
-- Provider's: on Lua 5.1 an error raised beyond a tail call loses the
-- caller's position ("file:line:").
function M.lock(name, opts, ...)
  check_count(select("#", ...) + 2, 2, "lock")
  check_options(opts, 2, "lock", "ctor", 2)
  return new_object("lock", name, nil, settings(provider()._opts, opts), "lock")
end

function M.semaphore(name, max_count, opts, ...)
  check_count(select("#", ...) + 3, 3, "semaphore")
  return Provider.semaphore(provider(), name, max_count, opts)
end

function M.rwlock(name, opts, ...)
  check_count(select("#", ...) + 2, 2, "rwlock")
  check_options(opts, 2, "rwlock", "ctor", 2)
  return new_object("rwlock", name, nil, settings(provider()._opts, opts), "rwlock")
end

function M.remove(name, opts, ...)
  check_count(select("#", ...) + 2, 2, "remove")
  return Provider.remove(provider(), name, opts)
end

-- ---- extensions: looking at objects (and what the command-line tool needs) ----

-- p:inspect(name [, opts]) -> a table like info()'s (name, path, kind, held, waiting, holders,
-- max_count or the rwlock fields) for whatever kind of object `name` is, or nil if there is
-- none. It creates nothing and claims no registry slot; holds of dead processes do not count.
function Provider.inspect(self, name, opts, ...)
  check_provider(self, "inspect")
  check_count(select("#", ...) + 2, 2, "inspect")
  check_options(opts, 2, "inspect", "ctor", 2)
  local s = settings(self._opts, opts)
  local ename = object_name(name, s.exact, "inspect")
  local t = core.inspect(s.dir, ename)
  if t then
    t.name, t.path = ename, (s.dir == "/" and "" or s.dir) .. "/" .. ename
  end
  return t
end

-- p:list([opts]) -> the names of the files in the lock directory (objects, and anything else
-- put there; not the registry), in byte order.
function Provider.list(self, opts, ...)
  check_provider(self, "list")
  check_count(select("#", ...) + 1, 1, "list")
  check_options(opts, 1, "list", "ctor", 2)
  local names = core.list(settings(self._opts, opts).dir)
  table.sort(names, bytes_less)
  return names
end

function M.inspect(name, opts, ...)
  check_count(select("#", ...) + 2, 2, "inspect")
  return Provider.inspect(provider(), name, opts)
end

function M.list(opts, ...)
  check_count(select("#", ...) + 1, 1, "list")
  return Provider.list(provider(), opts)
end

-- Internal, for bin/waithandle: the descriptors (registry, object file) whose duplicates keep
-- this process's holds on obj alive in a process that inherits them; nil before any hold.
M._slot_fd = core.slot_fd

-- Scoped use for Lua 5.1-5.3 (5.4 has <close>): fn(handle, ...) runs, the
-- handle is released whether fn returns or raises, and the outcome passes on.
function M.using(handle, fn, ...)
  if handle == nil then
    argerror(1, "using", "handle expected, got nil (did try_acquire time out?)")
  end
  if not core.is_handle(handle) and getmetatable(handle) ~= CompositeMT then
    argerror(1, "using", "handle expected, got " .. type(handle))
  end
  if type(fn) ~= "function" then argerror(2, "using", "function expected, got " .. type(fn)) end
  local r = pack(pcall(fn, handle, ...))
  handle:release()
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

return M
