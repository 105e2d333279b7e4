-- Shared helpers for the specs: temporary lock directories, files as
-- signals, child Lua interpreters (real processes, same Lua version as the
-- runner) and the code they share, waiting, error checks, rwlock info checks
-- and coroutine schedulers. Every spec's after_each calls H.cleanup().
local whtest = require "whtest"
-- The spec files' `assert` (busted gives them luassert; a module sees _G's).
local assert = require "luassert"

-- WH_GCSTRESS=1: a collection cycle runs all the time (in children too), so that every
-- finaliser runs at the worst moment somewhere in the suite.
local GC_STRESS = [[
if os.getenv("WH_GCSTRESS") == "1" then
  if not pcall(collectgarbage, "generational", 1, 50) then -- 5.4: a minor cycle per 1 % growth
    collectgarbage("setpause", 50)                        -- older: a new cycle at once
    collectgarbage("setstepmul", 1000)
  end
end
]]
assert((loadstring or load)(GC_STRESS))()

local H = {}
H.whtest = whtest
H.lua = os.getenv("WH_LUA") or "lua5.4"
H.now = whtest.now
H.sleep = whtest.sleep
H.is_54 = _VERSION == "Lua 5.4"
H.is_51 = _VERSION == "Lua 5.1" and not rawget(_G, "jit")
H.is_root = whtest.geteuid() == 0

-- Temporary directories, cleanup, files --------------------------------------

local dirs = {}
local shared_modules -- see H.spawn_as
local children = {} -- every child H.spawn started since the last H.cleanup()

-- A fresh private lock directory (mode 0700, ours), removed by H.cleanup().
function H.tmpdir()
  local d = whtest.mkdtemp()
  dirs[#dirs + 1] = d
  return d
end

-- For after_each: kills (SIGKILL) and reaps every child a test left running,
-- then removes the temporary directories.
function H.cleanup()
  for _, c in ipairs(children) do
    if c.status == nil then
      c:kill(whtest.SIGKILL)
      pcall(c.wait, c, 5)
    end
  end
  children = {}
  for _, d in ipairs(dirs) do
    os.execute("rm -rf '" .. d .. "'")
  end
  dirs = {}
  shared_modules = nil
end

-- Files as signals between processes (parent side; children have the same
-- globals, see H.spawn).
function H.touch(p)
  local f = assert(io.open(p, "w"))
  f:close()
end

function H.exists(p)
  local f = io.open(p, "r")
  if f then f:close() return true end
  return false
end

-- The contents of file p, or nil (and the reason) if it cannot be opened.
function H.read_file(p)
  local f, err = io.open(p, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

function H.write_file(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end

-- The output (stdout and stderr) of shell command `cmd`.
function H.sh(cmd)
  local f = assert(io.popen(cmd .. " 2>&1"))
  local out = f:read("*a")
  f:close()
  return out
end

-- Child processes ------------------------------------------------------------

local function serialize(v)
  local t = type(v)
  if t == "string" then return ("%q"):format(v) end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  if t == "table" then
    local parts = {}
    for k, x in pairs(v) do
      parts[#parts + 1] = "[" .. serialize(k) .. "]=" .. serialize(x)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  error("cannot serialize " .. t)
end

local Child = {}
Child.__index = Child

-- Globals for every child, after ARGS, wh, T and say (see H.spawn).
local CHILD_PRELUDE = [[
-- Files as signals: touch, exists, read_file and write_file (both fail if
-- the file cannot be opened), wait_file (until p exists; t s, default 30).
function touch(p) local f = assert(io.open(p, "w")) f:close() end
function exists(p) local f = io.open(p, "r") if f then f:close() return true end return false end
function read_file(p) local f = assert(io.open(p, "rb")) local s = f:read("*a") f:close() return s end
function write_file(p, s) local f = assert(io.open(p, "wb")) f:write(s) f:close() end
function wait_file(p, t)
  local deadline = T.now() + (t or 30)
  while not exists(p) do
    if T.now() > deadline then error("timed out waiting for file " .. p) end
    T.sleep(0.002)
  end
end
-- Waits until obj:info()[field] >= n (t s, default 30).
function wait_info(obj, field, n, t)
  local deadline = T.now() + (t or 30)
  while obj:info()[field] < n do
    if T.now() > deadline then error("timed out waiting for info()." .. field .. " >= " .. n) end
    T.sleep(0.002)
  end
end
-- l:acquire(t), or with `async` l:acquire_async(t) sleeping in a Lua function.
function acquire(l, t, async)
  if async then return l:acquire_async(t, { sleep = function(s) T.sleep(s) end }) end
  return l:acquire(t)
end
-- The monotonic time as a string for say(); the parent reads it back.
function stamp() return string.format("%.6f", T.now()) end
-- Ends this process at once with SIGKILL (no cleanup of any kind).
function die() T.kill(T.getpid(), T.SIGKILL) T.sleep(10) error("still alive after SIGKILL") end
]]

-- Runs `code` in a new interpreter. The chunk sees ARGS (the serialized
-- `args`), wh (the module), T (whtest), say(...) (a flushed line on stdout,
-- which the parent reads with child:line()) and the globals of CHILD_PRELUDE
-- above. The child is remembered: H.cleanup() kills it if it still runs.
-- `env`, if given, adds environment variables ({ NAME = value }); `pre`, a command the
-- interpreter is run through (e.g. setpriv ...).
function H.spawn(code, args, env, pre)
  local prelude = "ARGS = " .. serialize(args or {}) .. "\n"
    .. "io.stdout:setvbuf('no')\n"
    .. GC_STRESS .. "wh = require 'waithandles'\nT = require 'whtest'\n"
    .. "function say(...) local t = {} for i = 1, select('#', ...) do t[i] = tostring(select(i, ...)) end "
    .. "io.stdout:write(table.concat(t, ' '), '\\n') end\n"
    .. CHILD_PRELUDE
  local argv = {}
  if env then
    argv[1] = "env"
    for k, v in pairs(env) do argv[#argv + 1] = k .. "=" .. v end
  end
  for _, a in ipairs(pre or {}) do argv[#argv + 1] = a end
  for _, a in ipairs({ H.lua, "-e", prelude .. code }) do argv[#argv + 1] = a end
  return H.spawn_argv(argv)
end

-- A copy of the module and whtest that any user can read, for children of another user (the
-- checkout itself may be private); made once per test.
local function modules_for_anyone()
  if not shared_modules then
    local d = whtest.mkdtemp()
    local build = os.getenv("WH_BUILD") or "build/5.4"
    assert(os.execute(("mkdir -p %s/waithandles && cp lua/waithandles/*.lua %s/waithandles/ && "
      .. "cp %s/waithandles/core.so %s/waithandles/ && cp %s/whtest.so %s/ && chmod -R a+rX %s")
      :format(d, d, build, d, build, d, d)))
    dirs[#dirs + 1] = d -- removed with the rest (another run makes it again)
    shared_modules = d
  end
  return shared_modules
end

-- H.spawn as another user (root only): `user` is a name with a group of the same name or
-- "nobody" (group nogroup).
function H.spawn_as(user, code, args, env)
  local m = modules_for_anyone()
  env = env or {}
  env.LUA_PATH = m .. "/?.lua;" .. m .. "/?/init.lua;;"
  env.LUA_CPATH = m .. "/?.so;;"
  local group = user == "nobody" and "nogroup" or user
  return H.spawn(code, args, env, { "setpriv", "--reuid=" .. user, "--regid=" .. group,
    "--clear-groups" })
end

-- Runs the command argv (searched in PATH) as a child like H.spawn's: its
-- stdout and stderr are read with child:line(), and H.cleanup() kills it.
function H.spawn_argv(argv)
  local pid, fd = whtest.spawn(argv)
  local c = setmetatable({ pid = pid, fd = fd, buf = "", log = {} }, Child)
  children[#children + 1] = c
  return c
end

-- The next line the child printed, or nil, reason ("timeout" or "eof").
function Child:line(timeout)
  local deadline = H.now() + (timeout or 10)
  while true do
    local nl = self.buf:find("\n", 1, true)
    if nl then
      local l = self.buf:sub(1, nl - 1)
      self.buf = self.buf:sub(nl + 1)
      self.log[#self.log + 1] = l
      return l
    end
    local left = deadline - H.now()
    if left <= 0 then return nil, "timeout" end
    local data = whtest.read(self.fd, left)
    if data == nil then return nil, "timeout" end
    if data == "" then return nil, "eof" end
    self.buf = self.buf .. data
  end
end

-- Waits for a line equal to `want` (or matching it, if it is a pattern
-- starting with "^"); fails with everything the child said otherwise.
function Child:expect(want, timeout)
  local deadline = H.now() + (timeout or 10)
  while true do
    local l, why = self:line(math.max(0, deadline - H.now()))
    if l == nil then
      error(("child %d: expected %q, got %s; it said:\n%s"):format(self.pid, want, why,
        table.concat(self.log, "\n") .. self.buf), 2)
    end
    if l == want or (want:sub(1, 1) == "^" and l:match(want)) then return l end
  end
end

-- The child's very next line must be `want` (no line is skipped). drive(), if given, is
-- called every few milliseconds meanwhile: an async waiter resumed there keeps its place (a
-- waiter that stops polling loses it within its lease, and a child may take longer to start).
function Child:said(want, timeout, drive)
  local l, why
  if drive then
    local deadline = H.now() + (timeout or 10)
    repeat
      drive()
      l, why = self:line(0.005)
    until l ~= nil or why ~= "timeout" or H.now() > deadline
  else
    l, why = self:line(timeout or 10)
  end
  assert.are.equal(want, l, ("child %d: got %s; it said:\n%s"):format(self.pid,
    tostring(l or why), table.concat(self.log, "\n")))
end

function Child:kill(sig)
  return whtest.kill(self.pid, sig or whtest.SIGKILL)
end

-- Exit status {code=} or {signal=}; fails if the child does not end in time.
function Child:wait(timeout)
  local st = whtest.waitpid(self.pid, timeout or 30)
  if st == nil then
    whtest.kill(self.pid, whtest.SIGKILL)
    whtest.waitpid(self.pid, 5)
    error(("child %d did not exit; it said:\n%s"):format(self.pid, table.concat(self.log, "\n")), 2)
  end
  -- drain what is left for diagnostics
  while true do
    local data = whtest.read(self.fd, 0)
    if data == nil or data == "" then break end
    self.buf = self.buf .. data
  end
  whtest.close(self.fd)
  self.status = st
  return st
end

-- Everything the child printed (after wait()).
function Child:output()
  return table.concat(self.log, "\n") .. (self.buf ~= "" and ("\n" .. self.buf) or "")
end

-- Waits for a child to exit 0; fails with its output otherwise.
function Child:ok(timeout)
  local st = self:wait(timeout)
  if st.code ~= 0 then
    error(("child %d failed (%s); it said:\n%s"):format(self.pid,
      st.code and ("exit " .. st.code) or ("signal " .. tostring(st.signal)), self:output()), 2)
  end
  return self
end

-- Waiting --------------------------------------------------------------------

-- Polls f until it returns a true value (a liveness bound, not a timing test).
function H.eventually(f, timeout, what)
  local deadline = H.now() + (timeout or 10)
  repeat
    local r = f()
    if r then return r end
    H.sleep(0.005)
  until H.now() > deadline
  if type(what) == "function" then what = what() end
  error("not within " .. (timeout or 10) .. " s: " .. (what or "condition"), 2)
end

-- Seconds that f() takes.
function H.time(f)
  local t = H.now()
  f()
  return H.now() - t
end

-- Waits until cond() holds, failing at once (with what they said) if one of
-- the children `cs` (one child or a list) ends first. Reads their output into
-- their buffers without consuming lines, so child:expect still sees everything.
function H.await(cs, cond, what, timeout)
  if cs.pid then cs = { cs } end
  local deadline = H.now() + (timeout or 10)
  while not cond() do
    for _, c in ipairs(cs) do
      local data = whtest.read(c.fd, 0.002)
      if data == "" then
        error(("child %d ended while waiting for %s; it said:\n%s"):format(c.pid, what,
          table.concat(c.log, "\n") .. c.buf), 2)
      end
      if data then c.buf = c.buf .. data end
    end
    if H.now() > deadline then error("not within " .. (timeout or 10) .. " s: " .. what, 2) end
  end
end

-- Objects -------------------------------------------------------------------

-- wh.lock(name, opts), in `dir` unless opts.dir says otherwise (opts is
-- changed).
function H.lock_in(dir, name, opts)
  opts = opts or {}
  opts.dir = opts.dir or dir
  return require("waithandles").lock(name, opts)
end

-- Children many specs use ----------------------------------------------------

-- A child that takes lock `name` in `dir` (l, its handle h) and says "held", then runs
-- `rest` (code that sees l, h and ARGS, which `args` adds to). Returns once it held.
local function lock_child(dir, name, rest, args)
  args.name, args.dir = name, dir
  local c = H.spawn([[
    local l = wh.lock(ARGS.name, { dir = ARGS.dir })
    local h = assert(l:try_acquire())
    say("held")
  ]] .. rest, args)
  c:expect("held")
  return c
end

-- A child holding lock `name` in `dir` (it has said "held") for `seconds`,
-- or until it is killed.
function H.lock_holder(dir, name, seconds)
  return lock_child(dir, name, "T.sleep(ARGS.seconds)", { seconds = seconds })
end

-- A child holding lock `name` in `dir` (it has said "held") until some
-- process waits for it (a live wait entry in info().waiting), then `extra`
-- seconds more; then it releases it and says "released". Ends a blocking
-- wait without help from the waiter.
function H.lock_holder_until_waited(dir, name, extra)
  return lock_child(dir, name, [[
    local deadline = T.now() + 20
    while l:info().waiting < 1 do
      if T.now() > deadline then say("nobody waited") os.exit(1) end
      T.sleep(0.002)
    end
    T.sleep(ARGS.extra)
    assert(h:release())
    say("released")
  ]], { extra = extra })
end

-- What a try on lock `name` in `dir` gives a separate process: "busy" or "acquired".
function H.probe_lock(dir, name)
  local c = H.spawn([[
    local h = wh.lock(ARGS.name, { dir = ARGS.dir }):try_acquire()
    say(h and "acquired" or "busy")
    if h then h:release() end
  ]], { dir = dir, name = name })
  local l = c:line(10)
  c:ok()
  return l
end

-- Errors ---------------------------------------------------------------------

-- All the values of a call, with their count n (nils included).
function H.pack(...) return { n = select("#", ...), ... } end

-- The error f(...) raises (fails if it raises none).
function H.catch(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error, got success")
  return err
end

-- The error object (a table) f(...) raises; fails if it raises none or another kind.
function H.raised(f, ...)
  local err = H.catch(f, ...)
  assert.are.equal("table", type(err), tostring(err))
  return err
end

-- err must be a waithandles error object with `code`: a message string and a
-- __tostring, both naming the object `name` if given, which is also err.name.
-- `what`, if given, prefixes the failure messages. Returns err.
function H.assert_error(code, name, err, what)
  what = what and (what .. ": ") or ""
  assert.are.equal("table", type(err), what .. "expected an error object, got: " .. tostring(err))
  assert.are.equal(code, err.code, what .. tostring(err))
  assert.are.equal("string", type(err.message))
  local mt = getmetatable(err)
  assert.are.equal("function", type(mt and mt.__tostring))
  assert.are.equal("string", type(tostring(err)))
  if name then
    assert.are.equal(name, err.name, what)
    assert.is_truthy(err.message:find(name, 1, true), what .. err.message)
    assert.is_truthy(tostring(err):find(name, 1, true), what .. tostring(err))
  end
  return err
end

-- f(...) must raise such an error object (H.assert_error). Returns the error.
function H.assert_code(code, name, f, ...)
  return H.assert_error(code, name, H.catch(f, ...))
end

-- f(...) must raise a standard Lua argument error (a string) containing `want`.
-- Returns the error.
function H.assert_argerror(want, f, ...)
  local err = H.catch(f, ...)
  assert.are.equal("string", type(err), "expected an argument error, got: " .. tostring(err))
  assert.is_truthy(err:find(want, 1, true), ("expected %q in %q"):format(want, err))
  return err
end

-- f(...) must raise the standard Lua error for bad argument #n to function
-- `fname` (a string saying "bad argument #n to 'fname'"). Returns the error.
function H.assert_bad_argument(n, fname, f, ...)
  return H.assert_argerror(("bad argument #%d to '%s'"):format(n, fname), f, ...)
end

-- Reader-writer locks --------------------------------------------------------

-- Every field of rwlock:info() that the contract fixes; unspecified fields
-- are those of a free lock, and held = readers + writers.
function H.assert_rw_info(rw, want)
  local i = rw:info()
  local readers, writer = want.readers or 0, want.writer or false
  local expected = {
    readers = readers,
    writer = writer,
    upgradeable = want.upgradeable or false,
    waiting_writers = want.waiting_writers or 0,
    held = readers + (writer and 1 or 0),
  }
  for _, k in ipairs({ "readers", "writer", "upgradeable", "waiting_writers", "held" }) do
    assert.are.equal(expected[k], i[k], "info()." .. k)
  end
  assert.are.equal("rwlock", i.kind)
  assert.are.equal(rw.name, i.name)
end

-- Waits (10 s at most) until rw:info() counts n waiting writers.
function H.waiting_writers(rw, n)
  H.eventually(function() return rw:info().waiting_writers == n end, 10,
    n .. " waiting writer(s) in info()")
end

-- One attempt of each kind on rwlock `rw` (in `dir`) by a separate process
-- must give `want`, e.g. "read no upgradeable no write".
function H.probe_rw(dir, rw, want, drive)
  local p = H.spawn([[
    local rw = wh.rwlock(ARGS.name, { dir = ARGS.dir })
    local r = rw:try_acquire_read()
    local u = rw:try_acquire_upgradeable_read()
    local w = rw:try_acquire_write()
    say(r and "read" or "no read", u and "upgradeable" or "no upgradeable", w and "write" or "no write")
  ]], { dir = dir, name = rw.name })
  p:said(want, nil, drive)
  p:ok()
end

-- H.spawn for the rwlock specs: the child's code runs after
-- `local rw = wh.rwlock(ARGS.name, { dir = ARGS.dir })`.
function H.spawn_rw(code, args)
  return H.spawn("local rw = wh.rwlock(ARGS.name, { dir = ARGS.dir })\n" .. code, args)
end

-- Child code for H.spawn_rw.

-- A writer: says "waiting", blocks in acquire_write, says "got", holds until
-- ARGS.go exists, says "released".
H.RW_BLOCKED_WRITER = [[
say("waiting")
local h = rw:acquire_write(20)
say("got")
wait_file(ARGS.go, 60)
h:release()
say("released")
]]

-- A reader: holds a read until ARGS.go exists.
H.RW_HOLDING_READER = [[
local h = rw:try_acquire_read()
say(h and "held" or "refused")
if not h then return end
wait_file(ARGS.go, 60)
h:release()
say("released")
]]

-- A child holding a read of `rw` (in dir) until the file `go` exists; it has said "held".
function H.rw_reader(dir, rw, go)
  local c = H.spawn_rw(H.RW_HOLDING_READER, { dir = dir, name = rw.name, go = go })
  c:said("held")
  return c
end

-- A child about to block in acquire_write on `rw` (in dir), then holding the
-- write until the file `go` exists; it has said "waiting".
function H.rw_writer(dir, rw, go)
  local c = H.spawn_rw(H.RW_BLOCKED_WRITER, { dir = dir, name = rw.name, go = go })
  c:said("waiting")
  return c
end

-- Coroutines -----------------------------------------------------------------

-- A scheduler for the specs: runs each function as a coroutine until all
-- have ended. A coroutine yields a delay in seconds and is resumed (with no
-- values) once that much time has passed on the clock: the real monotonic
-- clock, or with `o.fake = true` a simulated one that jumps to the next
-- wake-up; it fails if the tasks run longer than o.limit (default 20) real
-- seconds. Returns the results of each task ({ ok, ... } as from
-- coroutine.resume), the log of yields: { task=, value=, tag= } where tag is
-- o.tags[task] at the moment it yielded, and the number of yields of each task.
function H.run(tasks, o)
  o = o or {}
  local fake_now = 0
  local function now() return o.fake and fake_now or H.now() end
  local limit = H.now() + (o.limit or 20)
  local live, order, results, log, yields = {}, 0, {}, {}, {}
  for i, f in ipairs(tasks) do
    order = order + 1
    live[i] = { id = i, co = coroutine.create(f), wake = now(), order = order }
    yields[i] = 0
  end
  while true do
    local e
    for _, x in pairs(live) do
      if e == nil or x.wake < e.wake or (x.wake == e.wake and x.order < e.order) then e = x end
    end
    if e == nil then break end
    assert(H.now() < limit, "scheduler: tasks still running after " .. (o.limit or 20) .. " s")
    if o.fake then
      fake_now = math.max(fake_now, e.wake)
    else
      local d = e.wake - H.now()
      if d > 0 then H.sleep(d) end
    end
    local r = H.pack(coroutine.resume(e.co))
    if coroutine.status(e.co) == "dead" then
      live[e.id] = nil
      results[e.id] = r
    else
      local v = r[2]
      log[#log + 1] = { task = e.id, value = v, tag = o.tags and o.tags[e.id] }
      yields[e.id] = yields[e.id] + 1
      order = order + 1
      e.order = order
      e.wake = now() + (type(v) == "number" and v > 0 and v or 0)
    end
  end
  return results, log, yields
end

-- Runs a coroutine body (or resumes a suspended coroutine) to its end,
-- calling on_yield(value, n) after each yield and sleeping (for real) the
-- delay it yielded (else 1 ms); an error in the body is raised again, and so
-- is not ending within `limit` seconds if given. Returns what the body
-- returned first, the number of yields, and everything coroutine.resume gave
-- at the end.
function H.drive_body(body, on_yield, limit)
  local co = type(body) == "thread" and body or coroutine.create(body)
  local deadline = limit and H.now() + limit
  local n = 0
  while true do
    assert(not deadline or H.now() < deadline, "the coroutine did not end within " .. tostring(limit) .. " s")
    local r = { coroutine.resume(co) }
    if not r[1] then error(r[2], 0) end
    if coroutine.status(co) == "dead" then return r[2], n, r end
    n = n + 1
    if on_yield then on_yield(r[2], n) end
    H.sleep(type(r[2]) == "number" and r[2] or 0.001)
  end
end

-- A cancel function that cancels after `seconds`: bounds a wait that a
-- broken implementation might not end.
function H.watchdog(seconds)
  local at = H.now() + seconds
  return function() return H.now() >= at end
end

return H
