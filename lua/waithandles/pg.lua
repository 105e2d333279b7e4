-- waithandles.pg: the postgres backend. waithandles.provider{ backend = "postgres",
-- conninfo = "postgresql://..." } gives a provider whose locks, semaphores and reader-writer
-- locks are PostgreSQL session-level advisory locks (doc/POSTGRES.md): the server releases
-- them the moment the holding session ends, so a holder that dies never leaves one held.
--
-- The C module waithandles.libpq exposes libpq's non-blocking steps; this file owns the
-- connection, the keys, the state machines and every wait (cqueues' split, as for the local
-- backend). One connection (session) per provider holds all of its holds. The server ignores
-- conflicts between the locks of one session, so the provider keeps the state of its own holds
-- and waiters (`local_state`) and checks those conflicts itself before asking the server.
local core = require "waithandles.core"
local facade = require "waithandles"
local ok_pq, libpq = pcall(require, "waithandles.libpq")

local M = {}

local type, select, error, pcall, setmetatable, getmetatable, tostring, pairs, ipairs =
  type, select, error, pcall, setmetatable, getmetatable, tostring, pairs, ipairs
local rawget, rawset, next = rawget, rawset, next
local floor, huge, min, max = math.floor, math.huge, math.min, math.max
local concat, sort = table.concat, table.sort
local fmt = string.format
local now = core.now
local MAX_SECONDS = 2147483.647
local ECONNREFUSED, ECONNRESET, EIO, EOPNOTSUPP = 111, 104, 5, 95

-- How waits behave (doc/POSTGRES.md "Waiting").
local DEFAULT_AC = 0.1         -- abandonment_check: how often a blocking wait asks its cancel function
local SEM_SLICE = 0.05         -- a semaphore waiter waits on one ticket at most this long, then tries all
local POLL_FIRST = 0.0005      -- an async waiter's first delay; it doubles up to POLL_MAX
local POLL_MAX = 0.02
local LIVE_WAITER = 0.25       -- a local waiter not polled for this long no longer keeps others out

-- ---- argument checks: the messages and positions of the C core (lerr.c) ----

local function typename(v)
  local mt = getmetatable(v)
  if type(mt) == "string" then return mt end
  if type(mt) == "table" and type(rawget(mt, "__name")) == "string" then return mt.__name end
  return type(v)
end

-- Raises "bad argument #argn to 'fname' (msg)" at the caller of the API function, which is
-- `level` frames above the function that calls argerror (1: that function's caller).
local function argerror(level, argn, fname, msg, ...)
  error(fmt("bad argument #%d to '%s' (%s)", argn, fname, msg:format(...)), level + 2)
end

local function check_timeout(t, level, argn, fname, forever)
  if t == nil then return forever and huge or 0 end
  if type(t) ~= "number" then
    argerror(level + 1, argn, fname, "timeout must be a number of seconds, got %s", typename(t))
  end
  if t ~= t then argerror(level + 1, argn, fname, "timeout is NaN") end
  if t < 0 then argerror(level + 1, argn, fname, "timeout must not be negative") end
  if t > MAX_SECONDS and t ~= huge then
    argerror(level + 1, argn, fname, "timeout must be at most 2147483.647 s (2^31-1 ms) or math.huge")
  end
  return t
end

local function is_token(v)
  return getmetatable(v) == "waithandles.CancelToken"
end

local function check_call_opts(o, level, argn, fname)
  if o == nil then return nil end
  if type(o) ~= "table" then argerror(level + 1, argn, fname, "options table expected, got %s", typename(o)) end
  for k, v in pairs(o) do
    if type(k) ~= "string" then argerror(level + 1, argn, fname, "unknown option (a %s key)", type(k)) end
    if k == "sleep" then
      if type(v) ~= "function" then
        argerror(level + 1, argn, fname, "option 'sleep' must be a function, got %s", typename(v))
      end
    elseif k == "cancel" then
      if type(v) ~= "function" and not is_token(v) then
        argerror(level + 1, argn, fname, "option 'cancel' must be a cancel token or a function, got %s",
          typename(v))
      end
    else
      argerror(level + 1, argn, fname, "unknown option '%s' (per-call options are 'cancel' and 'sleep')", k)
    end
  end
  return o
end

-- Options of the provider (provider = true) and of its constructors.
local CTOR_OPTS = {
  exact_name = "boolean", exact_key = "boolean", sleep = "function", abandonment_check = "number",
}
local PROVIDER_OPTS = {
  backend = "string", conninfo = "string", namespace = "string", exact_name = "boolean",
  exact_key = "boolean", sleep = "function", abandonment_check = "number",
}

local function check_ctor_opts(o, level, argn, fname, provider)
  if o == nil then return {} end
  if type(o) ~= "table" then argerror(level + 1, argn, fname, "options table expected, got %s", typename(o)) end
  local allowed = provider and PROVIDER_OPTS or CTOR_OPTS
  local copy = {}
  for k, v in pairs(o) do
    if type(k) ~= "string" then argerror(level + 1, argn, fname, "unknown option (a %s key)", type(k)) end
    local want = allowed[k]
    if want == nil then
      if k == "dir" or k == "mode" or k == "scope" then
        argerror(level + 1, argn, fname, "option '%s' has no meaning for backend \"postgres\"", k)
      end
      argerror(level + 1, argn, fname, "unknown option '%s'", k)
    end
    if type(v) ~= want then
      argerror(level + 1, argn, fname, "option '%s' must be a %s, got %s", k, want, typename(v))
    end
    if k == "abandonment_check" and not (v > 0 and v <= MAX_SECONDS) then
      argerror(level + 1, argn, fname,
        "option 'abandonment_check' must be a number of seconds > 0 and at most 2147483.647")
    end
    if k == "namespace" and (v == "" or v:find("[^A-Za-z0-9._-]")) then
      argerror(level + 1, argn, fname, "option 'namespace' must be a non-empty string of [A-Za-z0-9._-]")
    end
    copy[k] = v
  end
  return copy
end

local function check_nargs(n, most, level, fname)
  if n > most then argerror(level + 1, most + 1, fname, "no more than %d arguments expected", most) end
end

-- ---- errors -----------------------------------------------------------------

local function raise(code, msg, name, errno)
  error(core.error(code, msg, name, errno), 0)
end

-- ---- exact keys -------------------------------------------------------------

-- Whether s is a decimal integer from -2^(bits-1) to 2^(bits-1)-1.
local function integer_in(s, bits)
  local neg, digits = s:match("^(%-?)(%d+)$")
  if not digits or (digits:sub(1, 1) == "0" and #digits > 1) or (neg == "-" and digits == "0") then
    return false
  end
  local limit = bits == 64 and (neg == "-" and "9223372036854775808" or "9223372036854775807")
    or (neg == "-" and "2147483648" or "2147483647")
  return #digits < #limit or (#digits == #limit and digits <= limit)
end

-- ---- providers and their connection -------------------------------------------

local Provider = {}
Provider.__index = Provider
Provider.__metatable = "waithandles.Provider"
Provider.__name = "waithandles.Provider"

local function provider_tostring(p)
  return fmt("waithandles.provider(postgres, namespace '%s')", p.namespace)
end
Provider.__tostring = provider_tostring

local function conn_error(p, msg, errno, name)
  raise("os", fmt("postgres backend%s: %s", name and (" ('" .. name .. "')") or "", msg), name,
    errno or ECONNRESET)
end

-- Forgets the session: its holds are gone (handles of session `gen` report lost).
function Provider:_drop()
  local c = self.c
  -- The server released everything the session held: so do the local states.
  self.c, self.busy, self.pending, self.locals = nil, nil, {}, {}
  if c then c:close() end
end

-- The live connection, connecting first if there is none (or the session ended, or this is
-- a child of the process that connected). Connecting waits for the server.
function Provider:_conn(name)
  local c = self.c
  if c and self.pid == libpq.getpid() and (self.busy or self.checked == self.ops) then return c end
  if c and self.pid == libpq.getpid() and c:alive() then
    self.checked = self.ops
    return c
  end
  self:_drop()
  local err
  c, err = libpq.connect(self.conninfo)
  if not c then conn_error(self, "cannot connect: " .. tostring(err), ECONNREFUSED, name) end
  local deadline = now() + 30
  while true do
    local st, e = c:connect_poll()
    if st == "ok" then break end
    if not st or now() > deadline then
      c:close()
      conn_error(self, "cannot connect: " .. tostring(e or "timed out"), ECONNREFUSED, name)
    end
    c:wait(st == "read", st == "write", max(0, deadline - now()))
  end
  self.c, self.pid, self.gen = c, libpq.getpid(), self.gen + 1
  self._bpid = c:pid()
  self.checked = self.ops
  return c
end

-- Waits (blocking) until the query in progress has all its results; returns them, or nil and
-- a message if the session ended.
local function collect(c)
  while true do
    local ok, err = c:consume()
    if not ok then return nil, err end
    if not c:busy() then break end
    c:wait(true, false, 1)
  end
  local res = {}
  while true do
    local r = c:result()
    if r == nil then break end
    res[#res + 1] = r
  end
  return res
end

-- Ends the server-side wait in progress of an async waiter (it waits again at its next
-- poll), so that the connection serves someone else: the one place where this backend may
-- block an async caller for a moment (PQcancel's exchange and a round trip).
function Provider:_preempt()
  local w = self.busy
  if not w then return end
  local c = self.c
  -- A cancel that reaches the server before it has begun the statement is dropped (it is
  -- still reading the command): cancel again until the statement has ended.
  local delay = 0.001
  while c:consume() and c:busy() do
    c:cancel()
    c:wait(true, false, delay)
    delay = min(delay * 2, 0.1)
  end
  local res, err = collect(c)
  self.busy = nil
  w.inflight = false
  if not res then
    self:_drop()
    w.conn_lost = err
    return
  end
  w:on_wait_result(res)
end

-- Runs sql (one or more statements) and returns its results, after the releases waiting to
-- be sent. Raises code "os" if the session ends on the way.
function Provider:_run(sql, name)
  self.ops = self.ops + 1
  local was = self.driving
  self.driving = true
  local ok, res = pcall(function()
    local c = self:_conn(name)
    self:_preempt()
    c = self:_conn(name)
    local pre = self.pending
    local n = #pre
    if n > 0 then
      self.pending = {}
      sql = concat(pre, ";") .. ";" .. sql
    end
    local sent, err = c:send(sql)
    local res
    if sent then res, err = collect(c) end
    if not res then
      self:_drop()
      conn_error(self, "the session ended: " .. tostring(err), ECONNRESET, name)
    end
    for i = 1, #res do
      local r = res[i]
      if not r.ok and r.sqlstate ~= "55P03" and r.sqlstate ~= "57014" then
        raise("os", fmt("postgres backend%s: %s (SQLSTATE %s)", name and (" ('" .. name .. "')") or "",
          tostring(r.message), tostring(r.sqlstate)), name, EIO)
      end
    end
    if n > 0 then
      local tail = {}
      for i = n + 1, #res do tail[#tail + 1] = res[i] end
      res = tail
    end
    return res
  end)
  self.driving = was
  if not was then self:_flush() end
  if not ok then error(res, 0) end
  return res
end

-- Sends the releases that had to wait (for a __gc that ran while the connection was in use).
function Provider:_flush()
  if #self.pending > 0 and not self.driving and self.c then pcall(self._run, self, "SELECT 1") end
end

-- Releases sql (unlocks) now if the connection is free, else with the next query. Never
-- raises: a session that ended released everything anyway.
function Provider:_unlock(sql, gen)
  if gen ~= self.gen or not self.c or self.pid ~= libpq.getpid() then return end
  if self.driving then
    self.pending[#self.pending + 1] = sql
    return
  end
  pcall(self._run, self, sql) -- ends a server-side wait in progress first
end

local function first_value(res, i)
  local r = res[i or #res]
  return r and r[1] and r[1][1]
end

-- ---- objects and keys ---------------------------------------------------------

-- The keys of an object, computed by the server once per provider and name (doc/POSTGRES.md
-- "Keys"): K (bigint) the lock / the rwlock's data key, U (bigint) the rwlock's upgradeable
-- key, A (int4) a semaphore's ticket space: ticket i is the key pair (A, i).
function Provider:_keys(o)
  local k = self.keys[o.ident]
  if k then return k end
  local s = "'" .. o.ident .. "'"
  if o.exact_key and o.kind == "semaphore" then
    k = { A = o.name }
  else
    local res = self:_run(fmt("SELECT hashtextextended(%s COLLATE \"C\", 0), hashtextextended(%s COLLATE \"C\", 1), "
      .. "hashtextextended(%s COLLATE \"C\", 2) >> 32", s, s, s), o.name)
    local row = res[1][1]
    k = { K = o.exact_key and o.name or row[1], U = row[2], A = row[3] }
  end
  self.keys[o.ident] = k
  return k
end

-- This provider's own holds and waiters of the objects that share a key space.
function Provider:_local(space)
  local l = self.locals[space]
  if not l then
    -- waiters: a weak set, so that a wait that is never resumed can be collected (and withdrawn)
    l = { excl = 0, reads = 0, upgr = false, upgraded = false, tickets = {}, nt = 0,
      waiters = setmetatable({}, { __mode = "k" }) }
    self.locals[space] = l
  end
  return l
end

local OBJ = {}            -- the key of an object's state in the object table
local object_mts = {}     -- metatable by kind

local KIND_TYPE = { lock = "waithandles.Lock", semaphore = "waithandles.Semaphore", rwlock = "waithandles.RWLock" }

local function new_object(p, kind, name, max_count, opts, fname)
  local exact_name = opts.exact_name
  if exact_name == nil then exact_name = p.opts.exact_name end
  local exact_key = opts.exact_key
  if exact_key == nil then exact_key = p.opts.exact_key end
  local ename
  if exact_key then
    if not integer_in(name, kind == "semaphore" and 32 or 64) then
      raise("invalid_name", fmt("'%s' is not a valid exact key: %s", name, kind == "semaphore"
        and "a semaphore's key is an integer from -2^31 to 2^31-1"
        or "an integer from -2^63 to 2^63-1"), name)
    end
    ename = name
  elseif exact_name then
    if core.safe_name(name) ~= name then
      raise("invalid_name", fmt("'%s' is not a valid exact name", name), name)
    end
    ename = name
  else
    ename = core.safe_name(name)
  end
  local ac = opts.abandonment_check or p.opts.abandonment_check or DEFAULT_AC
  local o = {
    p = p, kind = kind, name = ename, max_count = max_count, exact_key = exact_key,
    ident = p.namespace .. (exact_key and ":#" or ":") .. ename,
    sleep = opts.sleep or p.opts.sleep, ac = max(ac, 0.001),
  }
  o.space = (kind == "semaphore" and "s:" or "k:") .. o.ident
  return setmetatable({ [OBJ] = o }, object_mts[kind])
end

local function obj_of(v)
  local o = type(v) == "table" and rawget(v, OBJ)
  return o and object_mts[o.kind] == object_mts[getmetatable(v)] and o or nil
end

-- ---- local state: the conflicts the server does not see (one session's own holds) ----

local WRITERS = { write = true, upgrade = true, lock = true }
-- CONFLICTS[a][b]: a waiter for b keeps an attempt of a out.
local ALL = { lock = true, write = true, read = true, upgradeable_read = true, upgrade = true }
local CONFLICTS = {
  lock = ALL, write = ALL,
  read = { lock = true, write = true, upgrade = true },
  upgradeable_read = { lock = true, write = true, upgradeable_read = true, upgrade = true },
  semaphore = { semaphore = true },
}

-- Whether mode may be attempted now, given this provider's own holds and its live waiters
-- (w: the waiter asking, nil for a newcomer): a waiter that came first, or a writer (writer
-- preference), keeps a conflicting attempt out. An upgrade passes every waiter.
local function admitted(l, mode, w)
  if mode == "lock" or mode == "write" then
    if l.excl > 0 or l.reads > 0 or l.upgr then return false end
  elseif mode == "read" then
    if l.excl > 0 or l.upgraded then return false end
  elseif mode == "upgradeable_read" then
    if l.excl > 0 or l.upgr then return false end
  elseif mode == "upgrade" then
    return l.reads == 0
  end
  local t, conflicts = now(), CONFLICTS[mode]
  for x in pairs(l.waiters) do
    if x ~= w and not x.done and t - x.polled < LIVE_WAITER and conflicts[x.mode]
      and (w == nil or x.since < w.since or (WRITERS[x.mode] and not WRITERS[mode])) then
      return false
    end
  end
  return true
end

local function hold_local(l, mode, ticket)
  if mode == "lock" or mode == "write" then l.excl = l.excl + 1
  elseif mode == "read" then l.reads = l.reads + 1
  elseif mode == "upgradeable_read" then l.upgr = true
  elseif mode == "semaphore" then l.tickets[ticket] = true; l.nt = l.nt + 1
  end
end

local function release_local(l, st)
  local mode = st.mode
  if mode == "lock" or mode == "write" then l.excl = l.excl - 1
  elseif mode == "read" then l.reads = l.reads - 1
  elseif mode == "upgradeable_read" then l.upgr = false; l.upgraded = false
  elseif mode == "semaphore" then l.tickets[st.ticket] = nil; l.nt = l.nt - 1
  end
end

-- ---- the statements of each mode ------------------------------------------------

local function ms(seconds)
  if seconds == huge or seconds >= 2147483 then return 0 end -- lock_timeout 0: no limit
  return max(1, floor(seconds * 1000 + 0.5))
end

local function held_list(l)
  local t = {}
  for i in pairs(l.tickets) do t[#t + 1] = i end
  return "'{" .. concat(t, ",") .. "}'::int[]"
end

-- Whether this session holds K shared already: then the server grants K shared again at once,
-- without looking at writers that wait (a lock a session holds is granted to it again), so
-- writer preference needs a look at pg_locks.
local function holds_shared(l)
  return l.reads > 0 or l.upgr
end

local function no_waiting_writer(k)
  return fmt("NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND "
    .. "mode = 'ExclusiveLock' AND objsubid = 1 AND classid::int8 = ((%s::int8 >> 32) & 4294967295) AND "
    .. "objid::int8 = (%s::int8 & 4294967295) AND database = (SELECT oid FROM pg_database WHERE "
    .. "datname = current_database()))", k.K, k.K)
end

-- K shared, as an expression.
local function try_shared(k, l)
  if holds_shared(l) then
    return fmt("CASE WHEN %s THEN pg_try_advisory_lock_shared(%s) ELSE false END", no_waiting_writer(k), k.K)
  end
  return fmt("pg_try_advisory_lock_shared(%s)", k.K)
end

-- One attempt without waiting, as one statement whose value is true (or a ticket) when it
-- acquired.
local function try_sql(o, k, l, mode)
  if mode == "lock" or mode == "write" then
    return fmt("SELECT pg_try_advisory_lock(%s)", k.K)
  elseif mode == "read" then
    return "SELECT " .. try_shared(k, l)
  elseif mode == "upgradeable_read" then
    -- CASE fixes the order: U, then K shared, giving U back if K is refused.
    return fmt("SELECT CASE WHEN pg_try_advisory_lock(%s) THEN CASE WHEN %s "
      .. "THEN true ELSE NOT pg_advisory_unlock(%s) END ELSE false END", k.U, try_shared(k, l), k.U)
  elseif mode == "semaphore" then
    return fmt("WITH RECURSIVE t(i, got) AS (SELECT 0, false UNION ALL SELECT i + 1, CASE WHEN i + 1 = "
      .. "ANY(%s) THEN false ELSE pg_try_advisory_lock(%s, i + 1) END FROM t WHERE NOT got AND i < %d) "
      .. "SELECT i FROM t WHERE got", held_list(l), k.A, o.max_count)
  end
end

local function unlock_sql(k, st)
  local mode = st.mode
  if mode == "lock" or mode == "write" then
    return fmt("SELECT pg_advisory_unlock(%s)", k.K)
  elseif mode == "read" then
    return fmt("SELECT pg_advisory_unlock_shared(%s)", k.K)
  elseif mode == "upgradeable_read" then
    if st.upgraded then
      return fmt("SELECT pg_advisory_unlock(%s), pg_advisory_unlock_shared(%s), pg_advisory_unlock(%s)",
        k.K, k.K, k.U)
    end
    return fmt("SELECT pg_advisory_unlock_shared(%s), pg_advisory_unlock(%s)", k.K, k.U)
  elseif mode == "semaphore" then
    return fmt("SELECT pg_advisory_unlock(%s, %d)", k.A, st.ticket)
  end
end

-- ---- handles --------------------------------------------------------------------

local STATE = {}          -- the key of a handle's state in the handle table
local STATES = setmetatable({}, { __mode = "k" }) -- state -> "handle" | "composite"
local handle_mts = {}     -- metatable by kind
local is_51 = _VERSION == "Lua 5.1"

local function state_of(h, what)
  local st = type(h) == "table" and rawget(h, STATE)
  return st and STATES[st] == what and st or nil
end

local function handle_state(h, fname)
  local st = state_of(h, "handle")
  if not st then argerror(2, 1, fname, "waithandles.Handle expected, got %s", typename(h)) end
  return st
end

local function st_ours(st)
  return st.pid == libpq.getpid()
end

local function st_lost(st)
  if not st.held or not st_ours(st) then return false end
  local p = st.p
  if p.gen ~= st.gen or not p.c then return true end
  if p.busy or p.driving then return false end
  if not p.c:alive() then
    p:_drop()
    return true
  end
  return false
end

-- Releases the hold of st; true if this call released it. Never raises.
local function st_release(st)
  if not st.held then return false end
  st.held = false
  if not st_ours(st) then return false end
  local p = st.p
  if st.gen == p.gen then
    release_local(p:_local(st.o.space), st)
    p:_unlock(unlock_sql(st.keys, st), st.gen)
  end
  return true
end

local handle_methods = {}

function handle_methods.release(h, ...)
  return st_release(handle_state(h, "release"))
end

function handle_methods.is_held(h)
  local st = handle_state(h, "is_held")
  return st.held and st_ours(st) and not st_lost(st)
end

function handle_methods.is_lost(h)
  return st_lost(handle_state(h, "is_lost"))
end

local function new_handle(o, mode, keys, ticket)
  local p = o.p
  local kind = mode == "lock" and (o.kind == "semaphore" and "semaphore" or "lock") or mode
  local st = {
    p = p, o = o, mode = mode == "lock" and o.kind == "semaphore" and "semaphore" or mode,
    keys = keys, ticket = ticket, held = true, gen = p.gen, pid = libpq.getpid(), upgraded = false,
  }
  STATES[st] = "handle"
  local h = { [STATE] = st }
  if is_51 then
    -- No __gc for tables on 5.1 and LuaJIT: a userdata that lives and dies with the handle.
    local proxy = newproxy(true)
    getmetatable(proxy).__gc = function() st_release(st) end
    h[proxy] = true
  end
  return setmetatable(h, handle_mts[kind])
end

local function make_handle_mt(kind)
  local mt = {}
  mt.__metatable = "waithandles.Handle"
  mt.__name = "waithandles.Handle"
  mt.__index = function(h, key)
    local st = rawget(h, STATE)
    if key == "kind" then return kind end
    if key == "name" then return st.o.name end
    if key == "upgraded" and kind == "upgradeable_read" then return st.upgraded end
    if key == "ticket" and kind == "semaphore" then return st.ticket end
    local m = handle_methods[key]
    if m then return m end
    if kind == "upgradeable_read" then return M._upgrade_methods[key] end
    return nil
  end
  mt.__newindex = function() error("waithandles.Handle is read-only", 2) end
  mt.__tostring = function(h)
    local st = rawget(h, STATE)
    return fmt("waithandles.handle(%s '%s', %s%s)", kind, st.o.name,
      (st.held and st_ours(st) and not st_lost(st)) and "held" or "released",
      st.upgraded and ", upgraded" or "")
  end
  mt.__gc = function(h)
    local st = type(h) == "table" and rawget(h, STATE)
    if st then st_release(st) end
  end
  mt.__close = mt.__gc
  handle_mts[kind] = mt
end
for _, kind in ipairs({ "lock", "semaphore", "read", "write", "upgradeable_read" }) do make_handle_mt(kind) end

-- ---- waiting ------------------------------------------------------------------

-- Raises "cancelled" if the cancel option says so (an error of a cancel function propagates
-- unchanged).
local function cancelled(cancel)
  if cancel == nil then return false end
  if type(cancel) == "function" then return cancel() and true or false end
  return cancel:is_cancelled()
end

local function what(o) return o.kind end

local function raise_cancelled(o)
  raise("cancelled", fmt("waiting for %s '%s' was cancelled", what(o), o.name), o.name)
end

local function raise_timeout(o, t, upgrade)
  raise("timeout", fmt("timed out after %g s waiting for %s%s '%s' on postgres", t,
    upgrade and "the upgrade of " or "", what(o), o.name), o.name)
end

-- A waiter: one acquisition (or upgrade) that could not be done at once. Its server-side
-- waits are statements in flight on the provider's connection (p.busy == w); any other use
-- of the connection ends them first (Provider:_preempt), and the waiter sends its wait again
-- at its next poll.
local Waiter = {}
Waiter.__index = Waiter

-- Applies the results of this waiter's wait statement.
function Waiter:on_wait_result(res)
  local r = res[#res]
  if not (r and r.ok) then return end -- 55P03 lock timeout, 57014 cancelled: not acquired
  local o, l = self.o, self.l
  if self.mode == "upgradeable_read" and not self.have_u then
    self.have_u = true   -- step one of two: the upgradeable key
    return
  end
  if self.mode == "semaphore" then
    local v = r[1] and r[1][1]
    if not v then return end
    self.ticket = floor(tonumber(v))
  end
  self.granted = true
  if self.mode ~= "upgrade" then hold_local(l, self.mode, self.ticket) end
end

-- The statement of a server-side wait of at most `left` seconds.
function Waiter:wait_sql(left)
  local k, mode = self.keys, self.mode
  if mode == "lock" or mode == "write" or mode == "upgrade" then
    return fmt("SET lock_timeout = %d; SELECT pg_advisory_lock(%s)", ms(left), k.K)
  elseif mode == "read" then
    return fmt("SET lock_timeout = %d; SELECT pg_advisory_lock_shared(%s)", ms(left), k.K)
  elseif mode == "upgradeable_read" then
    if not self.have_u then
      return fmt("SET lock_timeout = %d; SELECT pg_advisory_lock(%s)", ms(left), k.U)
    end
    return fmt("SET lock_timeout = %d; SELECT pg_advisory_lock_shared(%s)", ms(left), k.K)
  elseif mode == "semaphore" then
    -- Try every ticket; if none is free, wait on one (a different one each time) for a slice.
    local n, j = self.o.max_count, self.next_ticket
    for _ = 1, min(n, 64) do
      j = j % min(n, 16) + 1
      if not self.l.tickets[j] then break end
    end
    self.next_ticket = j
    return fmt("SET lock_timeout = %d; SELECT COALESCE((%s), (SELECT %d FROM pg_advisory_lock(%s, %d) x))",
      ms(min(left, SEM_SLICE)), try_sql(self.o, k, self.l, "semaphore"), j, k.A, j)
  end
end

function Waiter:withdraw()
  if self.finished then return end
  self.finished = true
  local p = self.p
  if p.busy == self then p:_preempt() end
  self.done = true
  self.l.waiters[self] = nil
  -- What the waiter took but never handed out goes back.
  if self.granted then
    self.granted = false
    if self.mode == "upgrade" then
      p:_unlock(fmt("SELECT pg_advisory_unlock(%s)", self.keys.K), self.gen)
    else
      local st = { mode = self.mode, ticket = self.ticket }
      release_local(self.l, st)
      p:_unlock(unlock_sql(self.keys, st), self.gen)
    end
  elseif self.have_u then
    p:_unlock(fmt("SELECT pg_advisory_unlock(%s)", self.keys.U), self.gen)
  end
  self.have_u = false
end

-- One step of the wait: true when it acquired (or failed for good); otherwise false and
-- whether its statement is in flight.
function Waiter:step()
  local p = self.p
  self.polled = now()
  if p.busy == self then
    local c = p.c
    local ok = c:consume()
    if not ok then
      p:_drop()
    elseif not c:busy() then
      local res, err = collect(c)
      p.busy = nil
      self.inflight = false
      if not res then p:_drop() self.conn_lost = err else self:on_wait_result(res) end
    else
      return false, true
    end
  end
  if self.granted then return true end
  if self.mode == "upgrade" and (not self.st.held or self.st.gen ~= p.gen) then return true end
  if self.gen ~= p.gen or not p.c then
    -- The session ended: what the wait held is gone; start again on a new one.
    self.have_u, self.conn_lost = false, nil
    if self.mode == "upgrade" then return true end -- the handle was lost with it
    p:_conn(self.o.name)
    self.gen = p.gen
    self.l = p:_local(self.o.space)
    self.l.waiters[self] = true
  end
  if now() >= self.deadline then return true end
  if not admitted(self.l, self.mode, self) then return false, false end
  -- A server-side wait, unless the server would grant it at once because this session
  -- holds K shared already (then attempts, which look at waiting writers).
  local shared_step = self.mode == "read" or (self.mode == "upgradeable_read" and self.have_u)
  if p.busy == nil and not (shared_step and holds_shared(self.l)) then
    local c = p:_conn(self.o.name)
    if self.gen ~= p.gen then return self:step() end
    p.ops = p.ops + 1
    if #p.pending > 0 then pcall(p._run, p, "SELECT 1") end
    local ok, err = c:send(self:wait_sql(self.deadline - now()))
    if not ok then
      p:_drop()
      self.conn_lost = err
      return false, false
    end
    p.busy, self.inflight = self, true
    return false, true
  end
  -- The connection waits for someone else: a plain attempt (which ends that wait).
  local sql
  if self.mode == "upgrade" then
    sql = fmt("SET lock_timeout = 1; SELECT pg_advisory_lock(%s)", self.keys.K)
  elseif self.mode == "upgradeable_read" and self.have_u then
    sql = "SELECT " .. try_shared(self.keys, self.l)
  else
    sql = try_sql(self.o, self.keys, self.l, self.mode)
  end
  local res = p:_run(sql, self.o.name)
  local r = res[#res]
  local v = r.ok and (self.mode == "upgrade" or (r[1] and r[1][1]))
  if v and v ~= "f" then
    if self.mode == "semaphore" then self.ticket = floor(tonumber(v)) end
    self.granted = true
    if self.mode ~= "upgrade" then hold_local(self.l, self.mode, self.ticket) end
    return true
  end
  return false, false
end

-- Waits until the waiter is done: blocking (sleep == nil: on the socket, asking the cancel
-- option at least every abandonment_check) or async (calling sleep between polls).
local function run_waiter(w, sleep, protect)
  local polls = 0
  local least = 0
  local ngx = rawget(_G, "ngx")
  if sleep and type(ngx) == "table" and sleep == ngx.sleep then least = 0.001 end
  local p = w.p
  while true do
    local was = p.driving
    p.driving = true
    local ok, done, inflight = pcall(w.step, w)
    p.driving = was
    if not was and not p.busy then p:_flush() end
    if not ok then
      w:withdraw()
      error(done, 0)
    end
    if done then return end
    local left = w.deadline - now()
    if sleep then
      polls = polls + 1
      local d = min(POLL_FIRST * 2 ^ min(polls - 1, 10), POLL_MAX, max(left, 0))
      local sok, serr = protect(sleep, max(d, least))
      if not sok then
        w:withdraw()
        error(serr, 0)
      end
    else
      local d = min(max(left, 0), w.cancel ~= nil and w.o.ac or 1)
      if inflight and p.c then
        p.c:wait(true, false, d)
      else
        -- Nothing in flight (a hold of this provider is in the way): look again soon.
        libpq.sleep(min(d, 0.005))
      end
    end
    local cok, yes = pcall(cancelled, w.cancel)
    if not cok then
      w:withdraw()
      error(yes, 0)
    end
    if yes then
      w:withdraw()
      raise_cancelled(w.o)
    end
  end
end

-- ---- acquiring ----------------------------------------------------------------

local FORMS = {
  -- method suffix -> mode
  { "acquire", "lock" },
  { "acquire_read", "read" },
  { "acquire_write", "write" },
  { "acquire_upgradeable_read", "upgradeable_read" },
}

-- An acquisition of mode on object o (or an upgrade of handle st): the common path of every
-- form. is_try: nil (or false) when not in time; async: waits through sleep.
local function acquire(o, mode, timeout, opts, fname, is_try, async, st)
  local p = o.p
  local cancel = opts and opts.cancel
  if cancel ~= nil and cancelled(cancel) then raise_cancelled(o) end
  if st then
    if not st.held or not st_ours(st) then
      raise("released", fmt("the handle of rwlock '%s' was released; it cannot be upgraded", o.name), o.name)
    end
    if st.upgraded then
      raise("invalid_state", fmt("rwlock '%s' was already upgraded; a handle upgrades once", o.name), o.name)
    end
    if st.gen ~= p.gen or st_lost(st) then
      raise("released", fmt("the hold of rwlock '%s' was lost with its session; it cannot be upgraded",
        o.name), o.name)
    end
  end
  local keys = p:_keys(o)
  local l = p:_local(o.space)
  local smode = o.kind == "semaphore" and "semaphore" or mode -- the mode of the state machines
  -- The first attempt, without waiting (an upgrade waits on the server for 1 ms: the server
  -- lets it pass writers that wait for it only in a wait).
  if admitted(l, smode, nil) then
    local sql = mode == "upgrade" and fmt("SET lock_timeout = 1; SELECT pg_advisory_lock(%s)", keys.K)
      or try_sql(o, keys, l, smode)
    local res = p:_run(sql, o.name)
    local r = res[#res]
    local v = r.ok and (mode == "upgrade" or (r[1] and r[1][1]))
    l = p:_local(o.space) -- a new one if the session was replaced on the way
    if v and v ~= "f" then
      if mode == "upgrade" then
        st.upgraded = true
        l.upgraded = true
        return true
      end
      local ticket = o.kind == "semaphore" and floor(tonumber(v)) or nil
      hold_local(l, smode, ticket)
      return new_handle(o, mode, keys, ticket)
    end
  end
  if timeout == 0 then
    if is_try then
      if mode == "upgrade" then return false end
      return nil
    end
    raise_timeout(o, 0, mode == "upgrade")
  end
  local w = setmetatable({
    p = p, o = o, l = l, keys = keys, mode = smode,
    since = now(), polled = now(), deadline = timeout == huge and huge or now() + timeout,
    gen = p.gen, cancel = cancel, next_ticket = 0, st = st,
  }, Waiter)
  l.waiters[w] = true
  local sleep
  if async then sleep = facade._wait.pick_sleep(opts and opts.sleep or o.sleep) end
  if is_51 then
    local proxy = newproxy(true)
    getmetatable(proxy).__gc = function() pcall(w.withdraw, w) end
    w.proxy = proxy
  else
    setmetatable(w, { __index = Waiter, __gc = function(x) pcall(x.withdraw, x) end })
  end
  run_waiter(w, sleep, sleep and facade._wait.protect_for_yield() or pcall)
  -- Done: acquired, or out of time, or (an upgrade) its session ended.
  w.done = true
  w.l.waiters[w] = nil
  l = w.l
  if w.granted then
    w.granted, w.have_u, w.finished = false, false, true
    if mode == "upgrade" then
      if not st.held or st.gen ~= p.gen then
        p:_unlock(fmt("SELECT pg_advisory_unlock(%s)", keys.K), w.gen)
        raise("released", fmt("the handle of rwlock '%s' was released; it cannot be upgraded", o.name), o.name)
      end
      st.upgraded = true
      l.upgraded = true
      return true
    end
    return new_handle(o, mode, keys, w.ticket)
  end
  w:withdraw()
  if mode == "upgrade" and (not st.held or st.gen ~= p.gen) then
    raise("released", fmt("the handle of rwlock '%s' was released; it cannot be upgraded", o.name), o.name)
  end
  if is_try then
    if mode == "upgrade" then return false end
    return nil
  end
  raise_timeout(o, timeout, mode == "upgrade")
end

-- The four forms of a method `base` acquiring `mode` on an object of `kind`.
local function install_forms(methods, kind, base, mode)
  for _, f in ipairs({
    { "try_" .. base, true, false }, { base, false, false },
    { "try_" .. base .. "_async", true, true }, { base .. "_async", false, true },
  }) do
    local fname, is_try, async = f[1], f[2], f[3]
    methods[fname] = function(self, timeout, opts, ...)
      local o = obj_of(self)
      if not o or o.kind ~= kind then
        argerror(1, 1, fname, "%s expected, got %s", KIND_TYPE[kind], typename(self))
      end
      check_nargs(select("#", ...) + 2, 2, 1, fname)
      timeout = check_timeout(timeout, 1, 1, fname, not is_try)
      opts = check_call_opts(opts, 1, 2, fname)
      return acquire(o, mode, timeout, opts, fname, is_try, async)
    end
  end
end

local lock_methods, sem_methods, rw_methods = {}, {}, {}
install_forms(lock_methods, "lock", "acquire", "lock")
install_forms(sem_methods, "semaphore", "acquire", "lock")
for i = 2, 4 do install_forms(rw_methods, "rwlock", FORMS[i][1], FORMS[i][2]) end

M._upgrade_methods = {}
for _, f in ipairs({
  { "try_upgrade", true, false }, { "upgrade", false, false },
  { "try_upgrade_async", true, true }, { "upgrade_async", false, true },
}) do
  local fname, is_try, async = f[1], f[2], f[3]
  M._upgrade_methods[fname] = function(h, timeout, opts, ...)
    local st = state_of(h, "handle")
    if not st or st.mode ~= "upgradeable_read" then
      argerror(1, 1, fname, "upgradeable read handle expected, got %s", typename(h))
    end
    check_nargs(select("#", ...) + 2, 2, 1, fname)
    timeout = check_timeout(timeout, 1, 1, fname, not is_try)
    opts = check_call_opts(opts, 1, 2, fname)
    return acquire(st.o, "upgrade", timeout, opts, fname, is_try, async, st)
  end
end

-- ---- info() ---------------------------------------------------------------------

-- The advisory locks of the object's keys, from pg_locks: { pid, mode, granted, key, appname }.
local function lock_rows(o, k)
  local p = o.p
  local where
  if o.kind == "semaphore" then
    where = fmt("l.objsubid = 2 AND l.classid::int8 = (%s::int8 & 4294967295) AND l.objid::int8 BETWEEN 1 AND %d",
      k.A, o.max_count)
  else
    local function key(x)
      return fmt("(l.objsubid = 1 AND l.classid::int8 = ((%s::int8 >> 32) & 4294967295) AND "
        .. "l.objid::int8 = (%s::int8 & 4294967295))", x, x)
    end
    where = key(k.K) .. (o.kind == "rwlock" and (" OR " .. key(k.U)) or "")
  end
  local res = p:_run(fmt("SELECT l.pid, l.mode, l.granted, "
    .. "CASE WHEN l.objsubid = 1 THEN ((l.classid::int8 << 32) | l.objid::int8)::text ELSE l.objid::text END, "
    .. "a.application_name FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
    .. "WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database WHERE datname = "
    .. "current_database()) AND (%s) ORDER BY l.pid", where), o.name)
  local rows = {}
  for _, r in ipairs(res[#res]) do
    rows[#rows + 1] = { pid = tonumber(r[1]), mode = r[2], granted = r[3] == "t", key = r[4],
      appname = r[5] or nil }
  end
  return rows
end

local function info(self, ...)
  local o = obj_of(self)
  if not o then argerror(1, 1, "info", "waithandles object expected, got %s", typename(self)) end
  if select("#", ...) > 0 then argerror(1, 1, "info", "no more than 0 arguments expected") end
  local p = o.p
  local k = p:_keys(o)
  local rows = lock_rows(o, k)
  local l = p:_local(o.space)
  local me = p.c and p._bpid
  local i = { name = o.name, kind = o.kind, max_count = o.max_count, holders = {} }
  local seen, waiting = {}, 0
  local function holder(r)
    if not seen[r.pid] then
      seen[r.pid] = true
      i.holders[#i.holders + 1] = { pid = r.pid, application_name = r.appname }
    end
  end
  if o.kind == "semaphore" then
    local held = 0
    for _, r in ipairs(rows) do
      if r.granted then held = held + 1 holder(r) else waiting = waiting + 1 end
    end
    i.held = held
  else
    local K, U = k.K, k.U
    local excl, share, u, up = {}, {}, false, {}
    for _, r in ipairs(rows) do
      if not r.granted then
        waiting = waiting + 1
        if r.key == K and r.mode == "ExclusiveLock" then i.waiting_writers = (i.waiting_writers or 0) + 1 end
      elseif r.key == K then
        holder(r)
        if r.mode == "ExclusiveLock" then excl[r.pid] = true else share[r.pid] = true end
      elseif r.key == U then
        u = true
        up[r.pid] = true
      end
    end
    local writer, readers = next(excl) ~= nil, 0
    for pid in pairs(share) do
      if pid == me then
        readers = readers + l.reads + ((l.upgr and not l.upgraded) and 1 or 0)
      elseif not excl[pid] then
        readers = readers + 1
      end
    end
    if o.kind == "rwlock" then
      local upgraded = false
      for pid in pairs(up) do if excl[pid] then upgraded = true end end
      i.readers, i.writer, i.upgradeable, i.upgraded = readers, writer, u, upgraded
      i.waiting_writers = i.waiting_writers or 0
      i.held = readers + (writer and 1 or 0)
    else
      i.held = (writer or readers > 0) and 1 or 0
      i.waiting_writers = nil
    end
  end
  i.waiting = waiting
  return i
end

-- ---- objects' metatables ------------------------------------------------------

local METHODS = { lock = lock_methods, semaphore = sem_methods, rwlock = rw_methods }
for _, m in pairs(METHODS) do m.info = info end

for kind, tname in pairs(KIND_TYPE) do
  local mt = { __metatable = tname, __name = tname }
  mt.__index = function(proxy, key)
    local o = rawget(proxy, OBJ)
    if key == "name" or key == "kind" or key == "max_count" then return o[key] end
    if key == "backend" then return "postgres" end
    if key == "key" then
      -- The advisory lock key (a decimal string): the bigint K of a lock or rwlock, the first
      -- int4 of a semaphore's tickets. Asks the server the first time.
      local k = o.p:_keys(o)
      return o.kind == "semaphore" and k.A or k.K
    end
    return METHODS[o.kind][key]
  end
  mt.__newindex = function() error(tname .. " is read-only", 2) end
  mt.__tostring = function(proxy)
    local o = rawget(proxy, OBJ)
    return fmt("waithandles.%s('%s')", o.kind, o.name)
  end
  object_mts[kind] = mt
  object_mts[tname] = mt
end

-- ---- composite handles ------------------------------------------------------------

local Composite = {}
local composite_mt = { __metatable = "waithandles.Handle", __name = "waithandles.Handle" }
composite_mt.__index = function(c, key)
  if key == "kind" then return "composite" end
  local parts = rawget(c, STATE)
  if key == "name" then return parts.name end
  if key == "names" then return parts.names end
  return Composite[key]
end
composite_mt.__newindex = function() error("waithandles.Handle is read-only", 2) end

function Composite.release(c)
  local parts = rawget(c, STATE)
  local any = false
  for i = #parts, 1, -1 do any = parts[i]:release() or any end
  return any
end

function Composite.is_held(c)
  for _, h in ipairs(rawget(c, STATE)) do if not h:is_held() then return false end end
  return true
end

function Composite.is_lost(c)
  for _, h in ipairs(rawget(c, STATE)) do if h:is_lost() then return true end end
  return false
end

composite_mt.__tostring = function(c)
  return fmt("waithandles.handle(composite '%s', %s)", rawget(c, STATE).name,
    Composite.is_held(c) and "held" or "released")
end
composite_mt.__gc = function(c)
  local parts = type(c) == "table" and rawget(c, STATE)
  if parts then for i = #parts, 1, -1 do pcall(parts[i].release, parts[i]) end end
end
composite_mt.__close = composite_mt.__gc

-- ---- the provider's methods ------------------------------------------------------

local function check_provider(p, fname)
  if type(p) ~= "table" or getmetatable(p) ~= "waithandles.Provider" or rawget(p, "backend") ~= "postgres" then
    argerror(2, 1, fname, "waithandles.Provider expected, got %s", typename(p))
  end
end

local function check_name(name, level, argn, fname)
  if type(name) ~= "string" then argerror(level + 1, argn, fname, "name must be a string, got %s", typename(name)) end
end

function Provider.lock(p, name, opts, ...)
  check_provider(p, "lock")
  check_nargs(select("#", ...) + 2, 2, 1, "lock")
  check_name(name, 1, 1, "lock")
  return new_object(p, "lock", name, nil, check_ctor_opts(opts, 1, 2, "lock"), "lock")
end

function Provider.rwlock(p, name, opts, ...)
  check_provider(p, "rwlock")
  check_nargs(select("#", ...) + 2, 2, 1, "rwlock")
  check_name(name, 1, 1, "rwlock")
  return new_object(p, "rwlock", name, nil, check_ctor_opts(opts, 1, 2, "rwlock"), "rwlock")
end

function Provider.semaphore(p, name, max_count, opts, ...)
  check_provider(p, "semaphore")
  check_nargs(select("#", ...) + 3, 3, 1, "semaphore")
  check_name(name, 1, 1, "semaphore")
  if type(max_count) ~= "number" or max_count ~= max_count or max_count < 1 or max_count > 2147483647
    or floor(max_count) ~= max_count then
    argerror(1, 2, "semaphore", "max_count must be an integer from 1 to 2^31-1")
  end
  return new_object(p, "semaphore", name, floor(max_count), check_ctor_opts(opts, 1, 3, "semaphore"), "semaphore")
end

-- Nothing to remove: advisory locks leave nothing behind on the server once released, so
-- remove only checks its arguments and returns false ("no such file").
function Provider.remove(p, name, opts, ...)
  check_provider(p, "remove")
  check_nargs(select("#", ...) + 2, 2, 1, "remove")
  check_name(name, 1, 1, "remove")
  check_ctor_opts(opts, 1, 2, "remove")
  return false
end

-- No events: a set event must stay set while no session is connected, and advisory locks
-- keep nothing beyond their session (doc/POSTGRES.md "Events and fencing tokens").
function Provider.event(p, name, opts, ...)
  check_provider(p, "event")
  check_nargs(select("#", ...) + 2, 2, 1, "event")
  check_name(name, 1, 1, "event")
  if opts ~= nil and type(opts) ~= "table" then
    argerror(1, 2, "event", "options table expected, got %s", typename(opts))
  end
  raise("os", fmt("backend \"postgres\" has no events (event '%s'): advisory locks keep no state "
    .. "beyond a session; use p:event of a provider{ backend = \"local\" } on one machine, or the "
    .. "database's LISTEN/NOTIFY", name), name, EOPNOTSUPP)
end

-- Closes the provider's session now: every hold it has ends (handles report lost).
function Provider.close(p)
  check_provider(p, "close")
  p:_drop()
end

-- The backend PID of the provider's session (nil before its first use): what info().holders
-- and pg_locks show for its holds.
function Provider.backend_pid(p)
  check_provider(p, "backend_pid")
  return p.c and p._bpid or nil
end

local function bytes_less(a, b)
  for i = 1, min(#a, #b) do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local function install_all(fname, is_try, async)
  Provider[fname] = function(p, names, timeout, opts, ...)
    check_provider(p, fname)
    check_nargs(select("#", ...) + 3, 3, 1, fname)
    if type(names) ~= "table" or #names == 0 then
      argerror(1, 1, fname, "non-empty array of names expected")
    end
    timeout = check_timeout(timeout, 1, 2, fname, not is_try)
    opts = check_call_opts(opts, 1, 3, fname)
    local locks, byname, order = {}, {}, {}
    for i = 1, #names do
      local n = names[i]
      if type(n) ~= "string" then
        argerror(1, 1, fname, "names[%d] must be a string, got %s", i, typename(n))
      end
      local l = Provider.lock(p, n)
      local e = l.name
      if byname[e] then argerror(1, 1, fname, "names '%s' and '%s' are the same lock", names[byname[e]], n) end
      byname[e] = i
      locks[e] = l
      order[#order + 1] = e
    end
    sort(order, bytes_less) -- byte order, as the local backend (Lua's < follows the locale)
    local cancel = opts and opts.cancel
    if cancel ~= nil and cancelled(cancel) then
      raise("cancelled", fmt("waiting for locks %s was cancelled", concat(names, ", ")))
    end
    local single = async and "try_acquire_async" or "try_acquire"
    local deadline, handles = now() + timeout, {}
    for i, e in ipairs(order) do
      local lock = locks[e]
      local left = timeout == huge and huge or max(0, deadline - now())
      local ok, h = pcall(lock[single], lock, left, opts)
      if not ok or h == nil then
        for j = i - 1, 1, -1 do handles[j]:release() end
        if not ok then error(h, 0) end
        if is_try then return nil end
        raise("timeout", fmt("timed out after %g s waiting for locks %s", timeout, concat(names, ", ")), e)
      end
      handles[i] = h
    end
    handles.names, handles.name = order, concat(order, "+")
    STATES[handles] = "composite"
    local c = { [STATE] = handles }
    if is_51 then
      local proxy = newproxy(true)
      getmetatable(proxy).__gc = function() for j = #handles, 1, -1 do pcall(handles[j].release, handles[j]) end end
      c[proxy] = true
    end
    return setmetatable(c, composite_mt)
  end
end
install_all("try_acquire_all", true, false)
install_all("acquire_all", false, false)
install_all("try_acquire_all_async", true, true)
install_all("acquire_all_async", false, true)

-- ---- waithandles.provider{ backend = "postgres", ... } -------------------------------------

function M.provider(opts)
  local o = check_ctor_opts(opts, 2, 1, "provider", true)
  if type(o.conninfo) ~= "string" then
    argerror(2, 1, "provider", "option 'conninfo' (a libpq connection string or URI) is required for backend \"postgres\"")
  end
  if not ok_pq then
    raise("os", "backend \"postgres\" needs the module waithandles.libpq, built where libpq is installed: "
      .. tostring(libpq):match("^[^\n]*"), nil, 2)
  end
  local p = setmetatable({
    backend = "postgres", conninfo = o.conninfo, namespace = o.namespace or "waithandles",
    opts = o, gen = 0, ops = 0, checked = -1, pending = {}, keys = {}, locals = {},
  }, Provider)
  return p
end

facade._is_handle = function(h)
  return state_of(h, "handle") ~= nil or state_of(h, "composite") ~= nil
end

return M
