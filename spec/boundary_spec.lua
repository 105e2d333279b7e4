-- The Lua boundary: no Lua code can crash the process or corrupt memory
-- through waithandles' values, not even by calling what debug.getmetatable
-- reaches with foreign values; self is checked everywhere (fast path
-- included), and argument errors name the function and the caller's line.
local wh = require "waithandles"
local H = require "helpers"

-- Every value waithandles hands out, in every state, built in `dir` (child code).
local VALUES = [[
local dir = ARGS.dir
local lock, sem, rw = wh.lock("a", { dir = dir }), wh.semaphore("s", 3, { dir = dir }),
  wh.rwlock("r", { dir = dir })
local p = wh.provider({ dir = dir })
local held = assert(lock:try_acquire())
local released = assert(wh.lock("b", { dir = dir }):try_acquire())
released:release()
local ticket = assert(sem:try_acquire())
local read = assert(rw:try_acquire_read())
local up = assert(wh.rwlock("u", { dir = dir }):try_acquire_upgradeable_read())
local upgraded = assert(wh.rwlock("v", { dir = dir }):try_acquire_upgradeable_read())
assert(upgraded:try_upgrade())
local write = assert(wh.rwlock("w", { dir = dir }):try_acquire_write())
local comp = assert(p:try_acquire_all({ "c1", "c2" }))
local err = select(2, pcall(lock.acquire, lock, 0))
-- A waiter: the start of an async acquisition of a busy lock.
local core = require "waithandles.core"
local _, waiter = core.starts["lock.try_acquire_async"](lock, 5)
local ev, aev = wh.event("e", { dir = dir }), p:event("ae", { auto_reset = true, initial = true })
local _, ev_waiter = core.starts["event.wait_async"](ev, 5)
VALUES = { lock = lock, sem = sem, rw = rw, p = p, held = held, released = released,
  ticket = ticket, read = read, up = up, upgraded = upgraded, write = write, comp = comp,
  err = err, token = wh.cancel_token(), waiter = waiter, ev = ev, aev = aev,
  ev_waiter = ev_waiter }
]]

describe("the Lua boundary", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  it("every function and metamethod reachable from a value survives foreign arguments", function()
    local c = H.spawn(VALUES .. [[
      local foreign = { false, 0, 1.5, "x", {}, print, coroutine.create(function() end), io.stdout }
      for _, v in pairs(VALUES) do foreign[#foreign + 1] = v end
      local calls = 0
      -- The second argument is never a valid timeout: a method given its own kind of object
      -- would otherwise wait (for ever) for a lock this process holds.
      local function abuse(f)
        for _, a in ipairs(foreign) do
          for _, b in ipairs({ a, "upgraded", -1, {}, { bogus = 1 } }) do
            pcall(f, a, b)
            pcall(f, a, b, 1)
            calls = calls + 2
          end
        end
      end
      local seen = {}
      local function each_function(t)
        if type(t) ~= "table" or seen[t] then return end
        seen[t] = true
        for _, f in pairs(t) do
          if type(f) == "function" then abuse(f) end
          each_function(f)
        end
        local mt = debug.getmetatable(t)
        if mt then each_function(mt) end
      end
      for name, v in pairs(VALUES) do
        local mt = debug.getmetatable(v)
        assert(mt, name .. " has no metatable")
        each_function(mt)
        if type(mt.__index) == "function" then
          for i = 1, 3 do
            local _, up = debug.getupvalue(mt.__index, i)
            each_function(up)
          end
        end
      end
      each_function(core)
      collectgarbage()
      collectgarbage()
      say("calls", calls > 1000)
    ]], { dir = dir }, { WAITHANDLES_DIR = dir })
    c:expect("calls true", 120)
    c:ok(120)
  end)

  it("metatables are protected; their __gc runs only on what it was made for", function()
    local c = H.spawn(VALUES .. [[
      for name, v in pairs(VALUES) do
        if name ~= "err" then
          assert(type(getmetatable(v)) == "string", name .. ": getmetatable gave " .. type(getmetatable(v)))
        end
      end
      local mt = debug.getmetatable(VALUES.held)
      mt.__gc(io.stdout)
      mt.__gc(VALUES.ticket)    -- a handle of another object: it is released, nothing else
      assert(not VALUES.ticket:is_held())
      assert(VALUES.held:is_held())
      debug.getmetatable(VALUES.lock).__gc(io.stdout)
      assert(VALUES.lock:info().held == 1)
      local umt = debug.getmetatable(VALUES.up)
      assert(not pcall(umt.__index, {}, "upgraded"))
      assert(not pcall(umt.__index, io.stdout, "upgraded"))
      assert(umt.__index(VALUES.up, "upgraded") == false)
      say("ok")
    ]], { dir = dir })
    c:expect("ok", 30)
    c:ok()
  end)

  it("self is checked on the fast path: another object is used, anything else is an error", function()
    local a, b = wh.lock("a", { dir = dir }), wh.lock("b", { dir = dir })
    local h = a.try_acquire(b) -- a's method with self b: b is acquired
    assert.are.equal(0, a:info().held)
    assert.are.equal(1, b:info().held)
    h:release()
    local err = H.assert_bad_argument(1, "acquire", function() return a.acquire(5) end)
    assert.is_truthy(err:find("waithandles.Lock expected, got number", 1, true), err)
    assert.are.equal(0, a:info().held)
    err = H.assert_bad_argument(1, "try_acquire_async", function() return a.try_acquire_async(5) end)
    assert.is_truthy(err:find("waithandles.Lock expected, got number", 1, true), err)
    local s = wh.semaphore("s", 2, { dir = dir })
    err = H.assert_bad_argument(1, "try_acquire", function() return a.try_acquire(s) end)
    assert.is_truthy(err:find("waithandles.Lock expected, got waithandles.Semaphore", 1, true), err)
    local rw = wh.rwlock("r", { dir = dir })
    local hr = rw:try_acquire_read()
    err = H.assert_bad_argument(1, "try_upgrade", function() return rw.try_acquire_upgradeable_read(rw).try_upgrade(hr) end)
    assert.is_truthy(err:find("upgradeable read handle expected", 1, true), err)
    err = H.assert_bad_argument(1, "release", function() return hr.release(5) end)
    assert.is_truthy(err:find("waithandles.Handle expected, got number", 1, true), err)
    H.assert_bad_argument(1, "info", function() return a.info(rw) end)
  end)

  -- The methods are closures over the object's address, not the object (csrc/ltypes.c): a
  -- LuaJIT trace keeps what it called as a constant, and used to keep every object whose
  -- methods it had called open (found by the soak). A method kept after its object was
  -- collected no longer recognises anything by address.
  it("objects whose methods were called are collected (LuaJIT traces too)", function()
    local p = wh.provider({ dir = dir })
    for i = 1, 3000 do
      local o = p:lock("o" .. i)
      o:try_acquire():release()
    end
    collectgarbage()
    collectgarbage()
    local open = 0
    for i = 1, 3000 do
      if not p:remove("o" .. i) then open = open + 1 end
    end
    assert.are.equal(0, open, open .. " of 3000 garbage objects are still open")
  end)

  it("a method kept after its object was collected checks self like any other call", function()
    local acquire = wh.lock("gone", { dir = dir }).try_acquire
    collectgarbage()
    collectgarbage()
    local junk = {} -- userdata that may take the freed memory
    for i = 1, 50 do junk[i] = io.tmpfile() end
    for i = 1, 50 do junk[i]:close() end
    local other = wh.lock("other", { dir = dir })
    local h = acquire(other)
    assert.are.equal(1, other:info().held)
    h:release()
    H.assert_bad_argument(1, "try_acquire", function() return acquire(io.stdout) end)
    assert.is_true(wh.remove("gone", { dir = dir }))
  end)

  it("argument errors carry the caller's file and line, from C and from the facade", function()
    local l = wh.lock("a", { dir = dir })
    local p = wh.provider({ dir = dir })
    -- (Not tail calls: a tail call leaves no caller's line to report, in any Lua.)
    local cases = {
      function() local r = wh.semaphore("x", 0, { dir = dir }) return r end,
      function() local r = wh.remove(42) return r end,
      function() local r = wh.lock(42) return r end,
      function() local r = l:try_acquire(-1) return r end,
      function() local r = l:acquire_async(-1) return r end,
      function() local r = p:try_acquire_all({}) return r end,
      function() local r = p:acquire_all_async({ "a" }, -1) return r end,
      function() local r = wh.using(nil, print) return r end,
    }
    for i, f in ipairs(cases) do
      local err = H.catch(f)
      assert.are.equal("string", type(err), "case " .. i)
      assert.is_truthy(err:match("^[^:]*boundary_spec%.lua:%d+: bad argument #%d+ to '"), "case " .. i .. ": " .. err)
    end
  end)

  it("upgrading a handle that was upgraded and then released raises 'released'", function()
    local rw = wh.rwlock("r", { dir = dir })
    local u = rw:try_acquire_upgradeable_read()
    assert.is_true(u:try_upgrade())
    u:release()
    for _, m in ipairs({ "try_upgrade", "upgrade", "try_upgrade_async", "upgrade_async" }) do
      H.assert_code("released", "r", u[m], u, 0)
    end
  end)

  it("objects are read-only and say what they are", function()
    local l = wh.lock("a", { dir = dir })
    assert.has_error(function() l.name = "b" end)
    assert.are.equal("a", l.name)
    assert.are.equal("waithandles.lock('a')", tostring(l))
    assert.are.equal("lock", l.kind)
    assert.are.equal(dir, l.dir)
  end)
end)
