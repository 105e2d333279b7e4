-- waithandles: machine-wide, crash-safe named locks, semaphores and
-- reader-writer locks (doc/API.md). The C core (waithandles.core) owns the
-- types, checks every argument and makes every attempt; this file holds what
-- only Lua can do: waits that yield (the *_async forms, between calls to a
-- sleep function), the choice of that sleep function, acquire_all's loop and
-- using().

local core = require "waithandles.core"

local M = {}
M._VERSION = "waithandles 0.1.0"

local unpack = table.unpack or unpack
local function pack(...) return { n = select("#", ...), ... } end
local huge, max = math.huge, math.max
local type, select, error, pcall, rawget = type, select, error, pcall, rawget
local now = core.now

M.lock, M.semaphore, M.rwlock, M.remove = core.lock, core.semaphore, core.rwlock, core.remove
M.provider, M.safe_name, M.cancel_token = core.provider, core.safe_name, core.cancel_token
M.inspect, M.list, M.event = core.inspect, core.list, core.event

-- waithandles.provider{ backend = "postgres", conninfo = ... } is the postgres backend
-- (waithandles/pg.lua); backend = "local", the default, is the C core's provider.
function M.provider(opts, ...)
  if type(opts) == "table" and rawget(opts, "backend") ~= nil and select("#", ...) == 0 then
    if rawget(opts, "backend") == "postgres" then
      local p = require("waithandles.pg").provider(opts) -- not a tail call: errors are positioned
      return p
    end
    if rawget(opts, "backend") ~= "local" then
      error("bad argument #1 to 'provider' (option 'backend' must be \"local\" or \"postgres\")", 2)
    end
    local copy = {}
    for k, v in pairs(opts) do if k ~= "backend" then copy[k] = v end end
    opts = copy
  end
  local ok, p = pcall(core.provider, opts, ...)
  if ok then return p end
  -- An argument error is the caller's, not this function's.
  if type(p) == "string" then error((p:gsub("^[^:]*:%d+: ", "")), 2) end
  error(p, 0)
end
-- Internal, for bin/waithandle: the descriptors (registry, object file) whose duplicates keep
-- this process's holds on obj alive in a process that inherits them; nil before any hold.
M._slot_fd = core.slot_fd

-- ---- can the running coroutine yield here? -------------------------------

-- The C core knows on 5.1 (PUC and LuaJIT), 5.3 and 5.4. On 5.2 any C
-- function on the coroutine's stack but pcall and xpcall stops a yield
-- (metamethods and iterators called from Lua do not), so look for one.
local can_yield = core.yieldable
if can_yield() == nil then
  local getinfo, running = debug.getinfo, coroutine.running
  local allow = { [pcall] = true, [xpcall] = true }
  can_yield = function()
    local _, main = running()
    if main then return false end
    for level = 2, 250 do
      local info = getinfo(level, "Sf")
      if info == nil then return true end
      if info.what == "C" and not allow[info.func] then return false end
    end
    return false
  end
end

-- Calls f(...) in protected mode, even across yields on PUC Lua 5.1 (whose
-- pcall cannot be yielded through): f runs in its own coroutine and its
-- yields are passed on to our resumer. Only where the caller can yield.
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

local function protect_for_yield()
  return can_yield() and pcall_yieldable or pcall
end

-- ---- how an async wait sleeps --------------------------------------------

-- OpenResty phases whose handlers run in a coroutine that ngx.sleep can yield.
local NGX_YIELD_PHASES = {
  rewrite = true, access = true, content = true, timer = true, ssl_cert = true,
  ssl_session_fetch = true, ssl_client_hello = true, preread = true,
}

-- The configured sleep (the call's, else the object's), else ngx.sleep in an
-- OpenResty phase that can yield, else coroutine.yield in a coroutine that
-- can yield; nil means the blocking wait.
local function pick_sleep(configured)
  if configured then return configured end
  if not can_yield() then return nil end
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.get_phase) == "function" then
    if NGX_YIELD_PHASES[ngx.get_phase()] and type(ngx.sleep) == "function" then return ngx.sleep end
    return nil
  end
  return coroutine.yield
end

-- Polls waiter w (C) until it is done, sleeping between polls the delay it
-- suggests. A sleep function that raises gets the wait withdrawn first.
local function wait_async(w, configured)
  local sleep = pick_sleep(configured)
  if not sleep then return w:block() end
  local protect = protect_for_yield()
  -- ngx.sleep counts whole milliseconds: less would be ngx.sleep(0), a busy loop.
  local ngx = rawget(_G, "ngx")
  local least = type(ngx) == "table" and sleep == ngx.sleep and 0.001 or 0
  while true do
    local done, r, delay = w:poll()
    if done then return r end
    local ok, err = protect(sleep, delay > least and delay or least)
    if not ok then
      w:withdraw()
      error(err, 0)
    end
  end
end

-- An async form from its C start, which checks the arguments and makes the
-- first attempt: it returns the result, or nil, a waiter and its sleep.
local function async_form(start)
  return function(...)
    local r, w, sleep = start(...)
    if w == nil then return r end
    return wait_async(w, sleep)
  end
end

-- For other backends (waithandles/pg.lua): how async waits sleep, the same way.
M._wait = { pick_sleep = pick_sleep, protect_for_yield = protect_for_yield }

-- ---- acquire_all -----------------------------------------------------------

-- Each lock gets what is left of the one deadline through its try_* form,
-- which returns nil on failure, so what is held can be released first.
local function all_form(start, is_try, async)
  local single = async and "try_acquire_async" or "try_acquire"
  return function(self, names, timeout, opts, ...)
    local locks, t, sorted = start(self, names, timeout, opts, ...)
    local protect = async and protect_for_yield() or pcall
    local deadline, handles = now() + t, {}
    for i, lock in ipairs(locks) do
      local left = t == huge and huge or max(0, deadline - now())
      local ok, h = protect(lock[single], lock, left, opts)
      if not ok or h == nil then
        for j = i - 1, 1, -1 do handles[j]:release() end
        if not ok then error(h, 0) end
        if is_try then return nil end
        error(core.error("timeout", ("timed out after %g s waiting for locks %s"):format(t,
          table.concat(names, ", ")), lock.name), 0)
      end
      handles[i] = h
    end
    return core.composite(handles, sorted)
  end
end

for key, start in pairs(core.starts) do
  local all = key:match("^provider%.(.*)")
  if all then
    core.install(key, all_form(start, all:sub(1, 4) == "try_", all:sub(-6) == "_async"))
  else
    core.install(key, async_form(start))
  end
end

-- ---- OpenResty: holds that end with their request ---------------------------

-- In the phases that run for a request (a timer's callback counts as one), a
-- hold of an object whose scope is "request" (the default) is given back when
-- the request ends, however it ends (csrc/lngx.c). Not in `log`: nginx has run
-- the request's cleanups by then, so a hold taken there lasts until released.
do
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.get_phase) == "function" then
    local REQUEST_PHASES = {
      set = true, rewrite = true, balancer = true, access = true, content = true,
      header_filter = true, body_filter = true, timer = true,
    }
    local get_phase, bind = ngx.get_phase, core.ngx_bind
    core.set_acquire_hook(function(h)
      if REQUEST_PHASES[get_phase()] then bind(h) end
    end)
  end
end

-- ---- scoped use ---------------------------------------------------------------

local function argerror(argn, fname, msg)
  error(("bad argument #%d to '%s' (%s)"):format(argn, fname, msg), 3)
end

-- Scoped use for Lua 5.1-5.3 (5.4 has <close>): fn(handle, ...) runs, the
-- handle is released whether fn returns or raises, and the outcome passes on.
-- fn may yield wherever the caller may.
function M.using(handle, fn, ...)
  if handle == nil then
    argerror(1, "using", "handle expected, got nil (did try_acquire time out?)")
  end
  if not core.is_handle(handle) and not (M._is_handle and M._is_handle(handle)) then
    argerror(1, "using", "handle expected, got " .. type(handle))
  end
  if type(fn) ~= "function" then argerror(2, "using", "function expected, got " .. type(fn)) end
  local r = pack(protect_for_yield()(fn, handle, ...))
  handle:release()
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

return M
