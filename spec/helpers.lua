-- Shared helpers for the specs: temporary lock directories, child Lua
-- interpreters (real processes, same Lua version as the runner), signals.
local whtest = require "whtest"

local H = {}
H.whtest = whtest
H.lua = os.getenv("WH_LUA") or "lua5.4"
H.now = whtest.now
H.sleep = whtest.sleep
H.is_54 = _VERSION == "Lua 5.4"
H.is_51 = _VERSION == "Lua 5.1" and not rawget(_G, "jit")
H.is_root = whtest.geteuid() == 0

local dirs = {}

-- A fresh private lock directory (mode 0700, ours), removed by H.cleanup().
function H.tmpdir()
  local d = whtest.mkdtemp()
  dirs[#dirs + 1] = d
  return d
end

function H.cleanup()
  for _, d in ipairs(dirs) do
    os.execute("rm -rf '" .. d .. "'")
  end
  dirs = {}
end

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

-- Runs `code` in a new interpreter. The chunk sees ARGS (the serialized
-- `args`), wh (the module), T (whtest) and say(...) (a flushed line on
-- stdout, which the parent reads with child:line()).
function H.spawn(code, args)
  local prelude = "ARGS = " .. serialize(args or {}) .. "\n"
    .. "io.stdout:setvbuf('no')\n"
    .. "wh = require 'waithandles'\nT = require 'whtest'\n"
    .. "function say(...) local t = {} for i = 1, select('#', ...) do t[i] = tostring(select(i, ...)) end "
    .. "io.stdout:write(table.concat(t, ' '), '\\n') end\n"
  local pid, fd = whtest.spawn({ H.lua, "-e", prelude .. code })
  return setmetatable({ pid = pid, fd = fd, buf = "", log = {} }, Child)
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

-- Polls f until it returns a true value (a liveness bound, not a timing test).
function H.eventually(f, timeout, what)
  local deadline = H.now() + (timeout or 10)
  repeat
    local r = f()
    if r then return r end
    H.sleep(0.005)
  until H.now() > deadline
  error("not within " .. (timeout or 10) .. " s: " .. (what or "condition"), 2)
end

-- Seconds that f() takes.
function H.time(f)
  local t = H.now()
  f()
  return H.now() - t
end

return H
