-- waithandles.lock in one process: API.md "Lock", "Handles", "Scoped use
-- without <close>", "Errors", "Timeouts and per-call options", "Removing
-- objects" and the Details about them. Cross-process behaviour lives in
-- other suites; async waiting in async_spec, cancellation in cancel_spec.
local wh = require "waithandles"
local H = require "helpers"

local unpack = table.unpack or unpack

local function gc()
  collectgarbage()
  collectgarbage()
end

local METHODS = { "try_acquire", "acquire", "try_acquire_async", "acquire_async" }

describe("lock", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  local function lock(name, opts) return H.lock_in(dir, name, opts) end

  -- A cancel function that calls f() once, as soon as `seconds` have passed
  -- since it was made, and never cancels: a way to change the world while a
  -- blocking wait of this process is in progress (it is called at least once
  -- per abandonment_check).
  local function after(seconds, f)
    local at, done = H.now() + seconds, false
    return function()
      if not done and H.now() >= at then
        done = true
        f()
      end
      return false
    end
  end

  describe("try_acquire", function()
    it("returns a held handle for a free lock", function()
      local l = lock("jobs")
      local h = l:try_acquire()
      assert.is_truthy(h)
      assert.is_true(h:is_held())
      assert.are.equal(1, l:info().held)
    end)

    it("defaults to one attempt: returns nil at once for a busy lock", function()
      local l = lock("jobs")
      local h = assert(l:try_acquire())
      local r
      local dt = H.time(function() r = l:try_acquire() end)
      assert.is_nil(r)
      assert.is_true(dt < 2, "took " .. dt .. " s")
      assert.is_nil(l:try_acquire(nil))
      assert.is_nil(l:try_acquire(0))
      -- (a cancel function as a watchdog: a wrong default would wait, not hang)
      assert.is_nil(l:try_acquire(nil, { cancel = H.watchdog(5) }))
      assert.is_nil(l:try_acquire_async(nil, { cancel = H.watchdog(5) }))
      assert.is_true(h:is_held())
    end)

    it("with a timeout waits that long, then returns nil", function()
      local l = lock("jobs")
      local h = assert(l:try_acquire())
      local r
      local dt = H.time(function() r = l:try_acquire(0.2) end)
      assert.is_nil(r)
      assert.is_true(dt >= 0.19, "returned after " .. dt .. " s")
      assert.is_true(dt < 10, "took " .. dt .. " s")
      assert.is_true(h:is_held())
      assert.are.equal(0, l:info().waiting)
    end)

    it("succeeds during its timeout when the lock is released", function()
      local l = lock("jobs", { abandonment_check = 0.05 })
      local h = assert(l:try_acquire())
      local h2 = l:try_acquire(10, { cancel = after(0.2, function() h:release() end) })
      assert.is_truthy(h2)
      assert.is_true(h2:is_held())
      assert.is_false(h:is_held())
    end)
  end)

  describe("acquire", function()
    it("returns a held handle for a free lock", function()
      local l = lock("jobs")
      local h = l:acquire()
      assert.is_true(h:is_held())
      h:release()
      h = l:acquire(nil, {})
      assert.is_true(h:is_held())
      h:release()
      h = l:acquire(5)
      assert.is_true(h:is_held())
    end)

    it("raises code 'timeout' as an error object naming the lock", function()
      local l = lock("jobs")
      local h = assert(l:try_acquire())
      local err
      local dt = H.time(function() err = H.assert_code("timeout", "jobs", l.acquire, l, 0.2) end)
      assert.is_true(dt >= 0.19, "raised after " .. dt .. " s")
      assert.is_true(dt < 10)
      assert.is_truthy(tostring(err):find("jobs", 1, true), tostring(err))
      assert.is_true(h:is_held())
      assert.are.equal(0, l:info().waiting)
    end)

    it("with timeout 0 makes one attempt and raises 'timeout'", function()
      local l = lock("jobs")
      local _h = assert(l:try_acquire())
      H.assert_code("timeout", "jobs", l.acquire, l, 0)
    end)

    it("waits without a time limit by default and for math.huge", function()
      local l = lock("jobs")
      for _, case in ipairs({ { "acquire" }, { "acquire", math.huge }, { "try_acquire", math.huge } }) do
        local c = H.lock_holder_until_waited(dir, "jobs", 0.3)
        local t0 = H.now()
        local h = l[case[1]](l, case[2])
        local dt = H.now() - t0
        c:ok()
        assert.is_truthy(h, case[1])
        assert.is_true(h:is_held())
        assert.is_true(dt >= 0.3, case[1] .. " returned after " .. dt .. " s")
        h:release()
      end
    end)
  end)

  describe("is not reentrant", function()
    it("through the same lock object", function()
      local l = lock("jobs")
      local h = assert(l:try_acquire())
      assert.is_nil(l:try_acquire())
      assert.is_nil(l:try_acquire(0.05))
      assert.is_nil(l:try_acquire(nil, { cancel = H.watchdog(5) }))
      H.assert_code("timeout", "jobs", l.acquire, l, 0.05)
      assert.is_nil(l:try_acquire_async(nil, { cancel = H.watchdog(5) }))
      assert.is_true(h:is_held())
      assert.are.equal(1, l:info().held)
    end)

    it("through another lock object of the same name", function()
      local a, b = lock("jobs"), lock("jobs")
      local h = assert(a:try_acquire())
      assert.is_nil(b:try_acquire())
      assert.is_nil(b:try_acquire(0.05))
      H.assert_code("timeout", "jobs", b.acquire, b, 0.05)
      h:release()
      local h2 = assert(b:try_acquire())
      assert.is_nil(a:try_acquire())
      h2:release()
    end)

    it("from another coroutine", function()
      local l = lock("jobs")
      local h = assert(l:try_acquire())
      local ok, r = coroutine.resume(coroutine.create(function() return l:try_acquire() end))
      assert.is_true(ok, tostring(r))
      assert.is_nil(r)
      -- and the other way round
      h:release()
      local h2
      ok, h2 = coroutine.resume(coroutine.create(function() return l:try_acquire() end))
      assert.is_true(ok)
      assert.is_truthy(h2)
      assert.is_nil(l:try_acquire())
      h2:release()
    end)

    it("after a release: the lock is free again", function()
      local l = lock("jobs")
      for _ = 1, 3 do
        local h = assert(l:try_acquire())
        assert.is_nil(l:try_acquire())
        assert.is_true(h:release())
      end
      assert.are.equal(0, l:info().held)
    end)
  end)

  describe("handles", function()
    it("have kind, name and a tostring saying whether they are held", function()
      local l = lock("jobs")
      local h = assert(l:try_acquire())
      assert.are.equal("lock", h.kind)
      assert.are.equal("jobs", h.name)
      assert.are.equal("waithandles.handle(lock 'jobs', held)", tostring(h))
      h:release()
      local s = tostring(h)
      assert.is_truthy(s:find("lock 'jobs'", 1, true), s)
      assert.is_truthy(s:find("released", 1, true), s)
      assert.is_falsy(s:find("held", 1, true), s)
    end)

    it("carry the escaped name", function()
      local l = lock("a/b c")
      local h = assert(l:acquire(5))
      assert.are.equal(wh.safe_name("a/b c"), h.name)
      assert.are.equal(l.name, h.name)
      assert.are.equal("lock", h.kind)
    end)

    it("release() returns true, then false, and never raises", function()
      local l = lock("jobs")
      local h = assert(l:try_acquire())
      assert.is_true(h:release())
      assert.is_false(h:release())
      assert.is_false(h:release())
      assert.is_false(h:is_held())
      assert.is_truthy(l:try_acquire())
    end)

    it("is_held() follows the handle's state", function()
      local l = lock("jobs")
      local h = assert(l:try_acquire())
      assert.is_true(h:is_held())
      h:release()
      assert.is_false(h:is_held())
    end)

    it("can be released from another coroutine", function()
      local l = lock("jobs")
      local h = assert(l:try_acquire())
      local ok, r = coroutine.resume(coroutine.create(function() return h:release() end))
      assert.is_true(ok)
      assert.is_true(r)
      assert.is_false(h:is_held())
      assert.is_truthy(l:try_acquire())
    end)

    it("a released handle stays released while the lock is taken again", function()
      local l = lock("jobs")
      local old = assert(l:try_acquire())
      assert.is_true(old:release())
      local h = assert(l:try_acquire())
      assert.is_false(old:is_held())
      assert.is_false(old:release())
      assert.is_true(h:is_held())
      assert.is_nil(l:try_acquire())
      assert.are.equal("waithandles.handle(lock 'jobs', held)", tostring(h))
      -- collecting the released handle does not release the new hold
      old = nil -- luacheck: ignore
      gc()
      assert.is_true(h:is_held())
      assert.is_nil(l:try_acquire())
      assert.are.equal(1, l:info().held)
    end)

    it("__gc: a handle that becomes garbage is released", function()
      local l = lock("jobs")
      ;(function()
        local h = assert(l:try_acquire())
        assert.is_true(h:is_held())
      end)()
      gc()
      assert.are.equal(0, l:info().held)
      local h = l:try_acquire()
      assert.is_truthy(h)
      h:release()
    end)

    it("need no other reference to their lock object", function()
      local name = "orphan"
      local h = (function() return assert(lock(name):try_acquire()) end)()
      gc()
      assert.is_true(h:is_held())
      assert.is_nil(lock(name):try_acquire())
      assert.is_true(h:release())
      assert.is_false(h:release())
      assert.is_truthy(lock(name):try_acquire())
    end)

    if _VERSION == "Lua 5.4" then
      it("__close: a <close> variable releases the handle at scope exit", function()
        local l = lock("jobs")
        local f = assert(load([[
          local l = ...
          local inner, busy
          do
            local h <close> = l:acquire(5)
            inner = h
            busy = l:try_acquire() == nil and h:is_held()
          end
          return inner, busy
        ]]))
        local h, busy = f(l)
        assert.is_true(busy)
        assert.is_false(h:is_held())
        assert.is_false(h:release())
        local h2 = assert(l:try_acquire())
        h2:release()
      end)

      it("__close: also when the scope is left by an error", function()
        local l = lock("jobs")
        local e = {}
        local g = assert(load([[
          local l, e = ...
          local h <close> = l:acquire(5)
          error(e)
        ]]))
        local ok, err = pcall(g, l, e)
        assert.is_false(ok)
        assert.are.equal(e, err)
        assert.are.equal(0, l:info().held)
        assert.is_truthy(l:try_acquire())
      end)

      it("__close of a released handle does nothing", function()
        local l = lock("jobs")
        local f = assert(load([[
          local l = ...
          local other
          do
            local h <close> = l:acquire(5)
            h:release()
            other = l:acquire(5)
          end
          return other
        ]]))
        local other = f(l)
        assert.is_true(other:is_held())
        assert.is_nil(l:try_acquire())
      end)
    else
      pending("__close: a <close> variable releases the handle at scope exit (Lua 5.4 only)")
    end
  end)

  describe("waithandles.using", function()
    it("calls fn(handle, ...) with the handle held and returns all of fn's results", function()
      local l = lock("jobs")
      local h = assert(l:acquire(5))
      local seen
      local r = H.pack(wh.using(h, function(hh, a, b, c)
        seen = { hh = hh, a = a, b = b, c = c, held = hh:is_held(), busy = l:try_acquire() == nil }
        return "x", nil, 3, nil
      end, 1, nil, "c"))
      assert.are.equal(h, seen.hh)
      assert.are.equal(1, seen.a)
      assert.is_nil(seen.b)
      assert.are.equal("c", seen.c)
      assert.is_true(seen.held)
      assert.is_true(seen.busy)
      assert.are.equal(4, r.n)
      assert.are.same({ "x", nil, 3, nil }, { unpack(r, 1, r.n) })
      assert.is_false(h:is_held())
      assert.are.equal(0, l:info().held)
    end)

    it("returns nothing when fn returns nothing", function()
      local l = lock("jobs")
      assert.are.equal(0, select("#", wh.using(assert(l:try_acquire()), function() end)))
    end)

    it("releases the handle and re-raises a table error unchanged", function()
      local l = lock("jobs")
      local h = assert(l:acquire(5))
      local e = setmetatable({}, { __tostring = function() return "mine" end })
      local ok, err = pcall(wh.using, h, function() error(e) end)
      assert.is_false(ok)
      assert.is_true(rawequal(e, err))
      assert.is_false(h:is_held())
      assert.is_truthy(l:try_acquire())
    end)

    it("re-raises a string error unchanged", function()
      local l = lock("jobs")
      local line
      local ok, err = pcall(wh.using, assert(l:try_acquire()), function()
        line = debug.getinfo(1, "l").currentline + 1
        error("boom")
      end)
      assert.is_false(ok)
      -- exactly the message fn raised, with fn's position, not a wrapper's
      assert.are.equal(("%s:%d: boom"):format(debug.getinfo(1, "S").short_src, line), err)
      ok, err = pcall(wh.using, assert(l:try_acquire()), function() error("plain", 0) end)
      assert.are.equal("plain", err)
      assert.are.equal(0, l:info().held)
    end)

    it("re-raises a waithandles error object unchanged", function()
      local l, other = lock("jobs"), lock("other")
      local _busy = assert(other:try_acquire())
      local inner
      local ok, err = pcall(wh.using, assert(l:try_acquire()), function()
        local ok2, e = pcall(other.acquire, other, 0)
        inner = e
        error(e)
      end)
      assert.is_false(ok)
      assert.is_true(rawequal(inner, err))
      assert.are.equal("timeout", err.code)
      assert.are.equal(0, l:info().held)
    end)

    it("still works when fn released the handle itself", function()
      local l = lock("jobs")
      local h = assert(l:try_acquire())
      assert.are.equal(7, wh.using(h, function(hh) hh:release() return 7 end))
      assert.is_false(h:is_held())
    end)

    it("checks its arguments", function()
      local l = lock("jobs")
      local called = false
      local fn = function() called = true end
      H.assert_bad_argument(1, "using", wh.using, nil, fn)
      H.assert_bad_argument(1, "using", wh.using, "handle", fn)
      H.assert_bad_argument(1, "using", wh.using, {}, fn)
      H.assert_bad_argument(1, "using", wh.using, 42, fn)
      assert.is_false(called)
      local h = assert(l:try_acquire())
      H.assert_bad_argument(2, "using", wh.using, h, nil)
      H.assert_bad_argument(2, "using", wh.using, h, "fn")
      H.assert_bad_argument(2, "using", wh.using, h, {})
    end)

    it("rejects a userdata that is not a handle, before calling fn", function()
      local called = false
      H.assert_bad_argument(1, "using", wh.using, io.stdout, function() called = true end)
      assert.is_false(called)
    end)

    it("a nil from try_acquire gives an argument error, not a call", function()
      local l = lock("jobs")
      local _h = assert(l:try_acquire())
      local called = false
      H.assert_bad_argument(1, "using", wh.using, l:try_acquire(), function() called = true end)
      assert.is_false(called)
    end)
  end)

  describe("info()", function()
    it("reports name, path, kind, held and holders", function()
      local l = lock("a/b")
      local i = l:info()
      assert.are.equal(l.name, i.name)
      assert.are.equal(wh.safe_name("a/b"), i.name)
      assert.are.equal(l.path, i.path)
      assert.are.equal(dir .. "/" .. l.name, i.path)
      assert.are.equal("lock", i.kind)
      assert.are.equal(0, i.held)
      assert.are.equal("table", type(i.holders))
      assert.are.equal(0, #i.holders)

      local h = assert(l:try_acquire())
      i = l:info()
      assert.are.equal(1, i.held)
      assert.are.equal(1, #i.holders)
      assert.are.equal(H.whtest.getpid(), i.holders[1].pid)
      -- another object of the same name sees the same state
      assert.are.equal(1, lock("a/b"):info().held)

      h:release()
      i = l:info()
      assert.are.equal(0, i.held)
      assert.are.equal(0, #i.holders)
    end)

    it("takes no arguments", function()
      local l = lock("jobs")
      H.assert_bad_argument(1, "info", l.info, l, "x")
    end)
  end)

  describe("waithandles.remove", function()
    it("refuses while any object of the name is open, removes once all are collected", function()
      local name = "rm"
      local a, b = lock(name), lock(name)
      local path = a.path
      assert.are.equal("file", H.whtest.stat(path).type)
      assert.is_false(wh.remove(name, { dir = dir }))
      a = nil -- luacheck: ignore
      gc()
      assert.is_false(wh.remove(name, { dir = dir }))
      assert.are.equal("file", H.whtest.stat(path).type)
      assert.is_truthy(b:try_acquire())
      b = nil -- luacheck: ignore
      gc()
      assert.is_true(wh.remove(name, { dir = dir }))
      assert.is_nil(H.whtest.stat(path))
      -- gone now
      assert.is_false(wh.remove(name, { dir = dir }))
      -- and the name works again, as a fresh object
      local c = lock(name)
      assert.is_truthy(c:try_acquire())
    end)

    it("refuses while a handle outlives its lock object", function()
      local name = "rm-h"
      local h = (function() return assert(lock(name):try_acquire()) end)()
      gc()
      assert.is_false(wh.remove(name, { dir = dir }))
      h:release()
      h = nil -- luacheck: ignore
      gc()
      assert.is_true(wh.remove(name, { dir = dir }))
    end)

    it("returns false for a name that does not exist", function()
      assert.is_false(wh.remove("never-made", { dir = dir }))
      assert.is_false(wh.remove("never-made", { dir = dir .. "/no-such-subdir" }))
    end)

    it("removes the escaped name's file", function()
      local path = (function() return lock("x/y").path end)()
      gc()
      assert.are.equal("file", H.whtest.stat(path).type)
      assert.is_true(wh.remove("x/y", { dir = dir }))
      assert.is_nil(H.whtest.stat(path))
    end)

    it("checks its arguments", function()
      H.assert_bad_argument(1, "remove", wh.remove, 42, { dir = dir })
      H.assert_bad_argument(1, "remove", wh.remove, nil, { dir = dir })
      H.assert_bad_argument(2, "remove", wh.remove, "x", { dir = dir, bogus = true })
      H.assert_bad_argument(2, "remove", wh.remove, "x", "dir")
    end)
  end)

  describe("timeouts", function()
    it("accept nil, 0, integers, floats, 2147483.647 and math.huge", function()
      local l = lock("jobs")
      for _, m in ipairs(METHODS) do
        for _, t in ipairs({ 0, 1, 0.5, 2147483.647, math.huge }) do
          local h = l[m](l, t)
          assert.is_truthy(h, m .. "(" .. t .. ")")
          assert.is_true(h:release(), m .. "(" .. t .. ")")
        end
        local h = l[m](l, nil, {})
        assert.is_true(h:release(), m .. "(nil, {})")
      end
    end)

    it("2147483.647 is accepted for a wait, not only for a free lock", function()
      local l = lock("jobs")
      for _, m in ipairs({ "acquire", "try_acquire" }) do
        local c = H.lock_holder_until_waited(dir, "jobs", 0.05)
        local h = l[m](l, 2147483.647)
        c:ok()
        assert.is_truthy(h, m)
        assert.is_true(h:is_held())
        h:release()
      end
    end)

    it("reject negative, NaN, too large, strings, tables and booleans", function()
      local l = lock("jobs")
      local bad = { -1, -0.001, -math.huge, 0 / 0, 2147483.648, 2147483.7, 1e300, "1", "0", {}, true }
      for _, m in ipairs(METHODS) do
        for _, t in ipairs(bad) do
          H.assert_bad_argument(1, m, l[m], l, t)
        end
        -- an options table is never accepted in the timeout position
        H.assert_bad_argument(1, m, l[m], l, { cancel = wh.cancel_token() })
      end
      -- nothing was acquired or left waiting by the failed calls
      local i = l:info()
      assert.are.equal(0, i.held)
      assert.are.equal(0, i.waiting)
    end)

    it("are checked on a busy lock too", function()
      local l = lock("jobs")
      local _h = assert(l:try_acquire())
      for _, m in ipairs(METHODS) do
        H.assert_bad_argument(1, m, l[m], l, -1)
        H.assert_bad_argument(1, m, l[m], l, "1")
        H.assert_bad_argument(1, m, l[m], l, 2147483.648)
      end
    end)
  end)

  describe("per-call options", function()
    it("accept cancel (a token or a function) and sleep", function()
      local l = lock("jobs")
      local tok = wh.cancel_token()
      local opts = {
        {}, { cancel = tok }, { cancel = function() return false end },
        { sleep = function() end }, { cancel = tok, sleep = function() end },
      }
      for _, m in ipairs(METHODS) do
        for i, o in ipairs(opts) do
          local h = l[m](l, 0, o)
          assert.is_truthy(h, m .. " options #" .. i)
          h:release()
        end
      end
    end)

    it("reject unknown keys, constructor options and 'timeout'", function()
      local l = lock("jobs")
      local bad = {
        { timeout = 1 }, { dir = dir }, { mode = 438 }, { exact_name = true },
        { abandonment_check = 0.1 }, { bogus = 1 }, { true }, { [2] = "x" },
      }
      for _, m in ipairs(METHODS) do
        for _, o in ipairs(bad) do
          H.assert_bad_argument(2, m, l[m], l, 0, o)
          H.assert_bad_argument(2, m, l[m], l, nil, o)
        end
      end
      assert.are.equal(0, l:info().held)
    end)

    it("reject values of the wrong type", function()
      local l = lock("jobs")
      local bad = {
        { cancel = "yes" }, { cancel = true }, { cancel = 1 }, { cancel = {} }, { cancel = l },
        { sleep = 1 }, { sleep = "sleep" }, { sleep = {} }, { sleep = true },
      }
      for _, m in ipairs(METHODS) do
        for _, o in ipairs(bad) do
          H.assert_bad_argument(2, m, l[m], l, 0, o)
        end
        for _, o in ipairs({ "opts", 1, true }) do
          H.assert_bad_argument(2, m, l[m], l, 0, o)
        end
      end
      assert.are.equal(0, l:info().held)
    end)

    it("a sleep given to a blocking call is ignored", function()
      local l = lock("jobs")
      local _h = assert(l:try_acquire())
      local called = 0
      local sleep = function() called = called + 1 error("sleep was called") end
      assert.is_nil(l:try_acquire(0.1, { sleep = sleep }))
      H.assert_code("timeout", "jobs", l.acquire, l, 0.1, { sleep = sleep })
      assert.are.equal(0, called)
      -- and so is the object's sleep option
      local l2 = lock("jobs", { sleep = sleep })
      assert.is_nil(l2:try_acquire(0.1))
      H.assert_code("timeout", "jobs", l2.acquire, l2, 0.1)
      assert.are.equal(0, called)
    end)
  end)

  describe("constructor options", function()
    it("accept exact_name, dir, mode, abandonment_check and sleep", function()
      local l = wh.lock("ok-name", {
        exact_name = true, dir = dir, mode = 384, abandonment_check = 0.25, sleep = function() end,
      })
      assert.are.equal("ok-name", l.name)
      assert.is_truthy(l:try_acquire())
      assert.is_truthy(wh.lock("x", { dir = dir, exact_name = false }):try_acquire())
      assert.is_truthy(wh.lock("y", { dir = dir, abandonment_check = 0.001 }):try_acquire())
      assert.is_truthy(wh.lock("z", { dir = dir, abandonment_check = 5 }):try_acquire())
    end)

    it("mode: integers 0 to 4095, applied without the umask", function()
      for _, mode in ipairs({ 0, 384, 416, 438, 511 }) do
        local l = wh.lock("mode" .. mode, { dir = dir, mode = mode })
        assert.is_truthy(l:try_acquire(), "mode " .. mode)
        assert.are.equal(mode, H.whtest.stat(l.path).mode % 512, "mode " .. mode)
      end
      -- the largest value is accepted (which special bits survive is the system's business)
      local l = wh.lock("mode4095", { dir = dir, mode = 4095 })
      assert.is_truthy(l:try_acquire())
    end)

    it("reject unknown keys and per-call options", function()
      for _, o in ipairs({ { bogus = 1 }, { cancel = wh.cancel_token() }, { timeout = 1 }, { true } }) do
        o.dir = dir
        H.assert_bad_argument(2, "lock", wh.lock, "x", o)
        H.assert_bad_argument(2, "rwlock", wh.rwlock, "x", o)
        H.assert_bad_argument(3, "semaphore", wh.semaphore, "x", 2, o)
        H.assert_bad_argument(1, "provider", wh.provider, o)
        H.assert_bad_argument(2, "lock", wh.provider({ dir = dir }).lock, wh.provider({ dir = dir }), "x", o)
      end
    end)

    it("reject values of the wrong type or out of range", function()
      local bad = {
        { exact_name = "yes" }, { exact_name = 1 },
        { dir = 42 }, { dir = true }, { dir = {} },
        { mode = -1 }, { mode = 4096 }, { mode = 1.5 }, { mode = "438" }, { mode = 0 / 0 },
        { mode = true },
        { abandonment_check = 0 }, { abandonment_check = -1 }, { abandonment_check = "0.1" },
        { abandonment_check = 0 / 0 }, { abandonment_check = true },
        { sleep = 1 }, { sleep = "sleep" }, { sleep = {} },
      }
      for _, o in ipairs(bad) do
        if o.dir == nil then o.dir = dir end
        H.assert_bad_argument(2, "lock", wh.lock, "x", o)
        H.assert_bad_argument(1, "provider", wh.provider, o)
      end
      H.assert_bad_argument(2, "lock", wh.lock, "x", "opts")
      H.assert_bad_argument(2, "lock", wh.lock, "x", 5)
      H.assert_bad_argument(1, "provider", wh.provider, "opts")
    end)

    it("reject a name that is not a string", function()
      H.assert_bad_argument(1, "lock", wh.lock, 42, { dir = dir })
      H.assert_bad_argument(1, "lock", wh.lock, nil, { dir = dir })
      H.assert_bad_argument(1, "lock", wh.lock, {}, { dir = dir })
    end)

    it("a provider's options apply to its locks", function()
      local p = wh.provider({ dir = dir, mode = 384 })
      local l = p:lock("via-provider")
      assert.are.equal(dir .. "/via-provider", l.path)
      local h = l:try_acquire()
      assert.is_truthy(h)
      assert.are.equal(384, H.whtest.stat(l.path).mode % 512)
      -- the same object as the module-level constructor with the same dir
      assert.is_nil(wh.lock("via-provider", { dir = dir }):try_acquire())
    end)
  end)

  describe("error objects", function()
    it("timeout: code, message and name, with a __tostring naming the lock", function()
      local l = lock("err-lock")
      local _h = assert(l:try_acquire())
      local err = H.assert_code("timeout", "err-lock", l.acquire, l, 0.01)
      assert.is_nil(err.errno)
      assert.is_truthy(tostring(err):find("err-lock", 1, true))
      assert.is_truthy(tostring(err):find("timeout", 1, true))
    end)

    it("mismatch: a name used by another kind", function()
      local l = lock("kind")
      assert.is_truthy(l:try_acquire())
      H.assert_code("mismatch", "kind", function()
        local rw = wh.rwlock("kind", { dir = dir })
        rw:try_acquire_read()
      end)
    end)

    it("corrupt: a file that is not a lock file", function()
      local f = assert(io.open(dir .. "/junk", "wb"))
      f:write(("not a lock file\n"):rep(512))
      f:close()
      H.assert_code("corrupt", "junk", function()
        lock("junk"):try_acquire()
      end)
    end)

    it("argument errors are strings", function()
      local l = lock("jobs")
      assert.are.equal("string", type(H.catch(l.try_acquire, l, -1)))
      assert.are.equal("string", type(H.catch(wh.lock, "x", { bogus = 1 })))
    end)
  end)

  describe("module", function()
    it("_VERSION looks like 'waithandles X.Y.Z'", function()
      assert.are.equal("string", type(wh._VERSION))
      assert.is_truthy(wh._VERSION:match("^waithandles %d+%.%d+%.%d+$"), wh._VERSION)
    end)

    it("cancel_token() gives independent tokens with cancel and is_cancelled", function()
      local a, b = wh.cancel_token(), wh.cancel_token()
      assert.is_false(a:is_cancelled())
      assert.is_false(b:is_cancelled())
      a:cancel()
      assert.is_true(a:is_cancelled())
      assert.is_false(b:is_cancelled())
      a:cancel() -- idempotent
      assert.is_true(a:is_cancelled())
      assert.is_false(b:is_cancelled())
      assert.has_error(function() a.is_cancelled({}) end)
      assert.has_error(function() a.cancel(42) end)
    end)
  end)
end)
