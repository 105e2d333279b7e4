-- API.md "Cancellation": tokens and cancel functions, for blocking, try_*
-- and async calls, and the Details about them (errors from cancel functions
-- propagate unchanged after the wait's claims are withdrawn).
local wh = require "waithandles"
local H = require "helpers"

-- The "cancelled" error object, naming the object.
local function assert_cancelled(name, err, what)
  H.assert_error("cancelled", name, err, what)
end

describe("cancellation", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  local function lock(name, opts) return H.lock_in(dir, name, opts) end

  local LOCK_METHODS = { "try_acquire", "acquire", "try_acquire_async", "acquire_async" }

  describe("an already cancelled token", function()
    it("raises 'cancelled' at once from every lock method, even if the lock is free", function()
      local l = lock("free")
      local tok = wh.cancel_token()
      tok:cancel()
      for _, m in ipairs(LOCK_METHODS) do
        for _, t in ipairs({ "default", 0, 5, math.huge }) do
          local what = ("%s(%s)"):format(m, tostring(t))
          local err
          local dt = H.time(function()
            if t == "default" then
              err = H.catch(l[m], l, nil, { cancel = tok })
            else
              err = H.catch(l[m], l, t, { cancel = tok })
            end
          end)
          assert_cancelled("free", err, what)
          assert.is_true(dt < 2, what .. " took " .. dt .. " s")
          local i = l:info()
          assert.are.equal(0, i.held, what)
          assert.are.equal(0, i.waiting, what)
        end
      end
    end)

    it("raises 'cancelled', not nil, from try_* on a busy lock", function()
      local l = lock("busy")
      local _h = assert(l:try_acquire())
      local tok = wh.cancel_token()
      tok:cancel()
      for _, m in ipairs(LOCK_METHODS) do
        assert_cancelled("busy", H.catch(l[m], l, 0, { cancel = tok }), m)
        assert_cancelled("busy", H.catch(l[m], l, 5, { cancel = tok }), m)
      end
      assert.are.equal(0, l:info().waiting)
    end)

    it("raises at once inside a coroutine too, without yielding", function()
      local l = lock("co")
      local tok = wh.cancel_token()
      tok:cancel()
      local _h = assert(l:try_acquire())
      for _, m in ipairs({ "try_acquire_async", "acquire_async" }) do
        local co = coroutine.create(function() return l[m](l, 5, { cancel = tok }) end)
        local ok, err = coroutine.resume(co)
        assert.is_false(ok, m)
        assert.are.equal("dead", coroutine.status(co))
        assert_cancelled("co", err, m)
      end
      assert.are.equal(0, l:info().waiting)
    end)

    it("raises from semaphores, rwlocks, upgrades and composite locks too", function()
      local tok = wh.cancel_token()
      tok:cancel()
      local o = { cancel = tok }
      local sem = wh.semaphore("sem", 2, { dir = dir })
      for _, m in ipairs(LOCK_METHODS) do
        assert_cancelled("sem", H.catch(sem[m], sem, nil, o), "semaphore " .. m)
      end
      assert.are.equal(0, sem:info().held)
      local rw = wh.rwlock("rw", { dir = dir })
      for _, kind in ipairs({ "_read", "_write", "_upgradeable_read" }) do
        for _, base in ipairs({ "try_acquire%s", "acquire%s", "try_acquire%s_async", "acquire%s_async" }) do
          local m = base:format(kind)
          assert_cancelled("rw", H.catch(rw[m], rw, nil, o), "rwlock " .. m)
        end
      end
      assert.are.equal(0, rw:info().held)
      local u = assert(rw:try_acquire_upgradeable_read())
      for _, m in ipairs({ "try_upgrade", "upgrade", "try_upgrade_async", "upgrade_async" }) do
        assert_cancelled("rw", H.catch(u[m], u, nil, o), m)
        assert.is_true(u:is_held(), m)
        assert.is_falsy(u.upgraded, m)
      end
      local p = wh.provider({ dir = dir })
      for _, m in ipairs({ "try_acquire_all", "acquire_all", "try_acquire_all_async", "acquire_all_async" }) do
        assert_cancelled(nil, H.catch(p[m], p, { "c1", "c2" }, nil, o), m)
        assert.are.equal(0, p:lock("c1"):info().held, m)
        assert.are.equal(0, p:lock("c2"):info().held, m)
      end
    end)
  end)

  describe("a token cancelled while an async wait sleeps", function()
    it("stops the wait with 'cancelled' and withdraws its claims", function()
      local l = lock("later")
      local h = assert(l:try_acquire())
      for _, m in ipairs({ "acquire_async", "try_acquire_async" }) do
        local tok = wh.cancel_token()
        local waiting_before
        local results, _, yields = H.run({
          function() return l[m](l, 10, { cancel = tok }) end,
          function()
            coroutine.yield(0.1)
            waiting_before = l:info().waiting
            tok:cancel()
          end,
        })
        assert.is_false(results[1][1], m .. " was not cancelled")
        assert_cancelled("later", results[1][2], m)
        assert.is_true(results[2][1], tostring(results[2][2]))
        assert.is_true(yields[1] >= 1, m .. " never yielded")
        assert.are.equal(1, waiting_before, m)
        local i = l:info()
        assert.are.equal(0, i.waiting, m)
        assert.are.equal(1, i.held, m)
        assert.is_true(h:is_held())
      end
      h:release()
      assert.is_truthy(l:try_acquire())
    end)

    it("is checked before the next attempt, even when that attempt would succeed", function()
      local l = lock("race")
      local h = assert(l:try_acquire())
      local tok = wh.cancel_token()
      local results = H.run({
        function() return l:acquire_async(10, { cancel = tok }) end,
        function()
          coroutine.yield(0.1)
          tok:cancel()
          assert(h:release())
        end,
      })
      assert.is_false(results[1][1], "the wait was not cancelled")
      assert_cancelled("race", results[1][2])
      -- the cancelled waiter took nothing
      local i = l:info()
      assert.are.equal(0, i.held)
      assert.are.equal(0, i.waiting)
      assert.is_truthy(l:try_acquire())
    end)

    it("the same with a sleep function that cancels and frees the lock", function()
      local l = lock("race2")
      local h = assert(l:try_acquire())
      local tok = wh.cancel_token()
      local sleeps = 0
      local err = H.catch(l.acquire_async, l, 10, { cancel = tok, sleep = function()
        sleeps = sleeps + 1
        if sleeps == 3 then
          tok:cancel()
          h:release()
        end
      end })
      assert_cancelled("race2", err)
      assert.are.equal(3, sleeps)
      local i = l:info()
      assert.are.equal(0, i.held)
      assert.are.equal(0, i.waiting)
    end)

    it("has no effect on a handle already acquired", function()
      local l = lock("after")
      local tok = wh.cancel_token()
      local h = l:acquire_async(10, { cancel = tok })
      tok:cancel()
      assert.is_true(h:is_held())
      assert.is_nil(l:try_acquire())
    end)
  end)

  describe("a cancel function", function()
    it("returning true stops a blocking wait on a lock another process holds", function()
      local l = lock("other", { abandonment_check = 0.05 })
      H.lock_holder(dir, "other", 30)
      -- (try_acquire's default timeout is 0: one attempt, nothing to cancel)
      for _, case in ipairs({ { "acquire" }, { "acquire", 30 }, { "acquire", math.huge },
        { "try_acquire", 30 }, { "try_acquire", math.huge } }) do
        local m, t = case[1], case[2]
        local what = m .. "(" .. tostring(t) .. ")"
        local calls = 0
        local cancel = function()
          calls = calls + 1
          return calls >= 3
        end
        local err
        local dt = H.time(function() err = H.catch(l[m], l, t, { cancel = cancel }) end)
        assert_cancelled("other", err, what)
        assert.are.equal(3, calls, what)
        assert.is_true(dt < 10, what .. " took " .. dt .. " s")
        assert.are.equal(0, l:info().waiting, what)
        assert.are.equal(1, l:info().held, what)
      end
    end)

    it("is called at least once per abandonment_check during a blocking wait", function()
      local l = lock("rate", { abandonment_check = 0.05 })
      H.lock_holder(dir, "rate", 30)
      local calls = 0
      local t0 = H.now()
      local err = H.catch(l.acquire, l, 30, { cancel = function()
        calls = calls + 1
        return H.now() - t0 >= 0.5
      end })
      local dt = H.now() - t0
      assert_cancelled("rate", err)
      assert.is_true(dt < 10, "took " .. dt .. " s")
      -- 0.5 s at one check per 0.05 s is about 10 calls; allow for a slow machine
      assert.is_true(calls >= 4, "called " .. calls .. " times in " .. dt .. " s")
    end)

    it("returning true stops an async wait", function()
      local l = lock("fn-async")
      local _h = assert(l:try_acquire())
      local calls, sleeps = 0, 0
      local err = H.catch(l.try_acquire_async, l, 10, {
        cancel = function() calls = calls + 1 return calls >= 4 end,
        sleep = function() sleeps = sleeps + 1 end,
      })
      assert_cancelled("fn-async", err)
      assert.are.equal(4, calls)
      assert.are.equal(0, l:info().waiting)
      -- checked before every attempt: never more sleeps than checks
      assert.is_true(sleeps <= calls, sleeps .. " sleeps, " .. calls .. " checks")
    end)

    it("is checked before every attempt of an async wait", function()
      local l = lock("every")
      local _h = assert(l:try_acquire())
      local checks, sleeps = 0, 0
      local r = l:try_acquire_async(0.2, {
        cancel = function() checks = checks + 1 return false end,
        sleep = function(s) sleeps = sleeps + 1 H.sleep(s) end,
      })
      assert.is_nil(r)
      assert.is_true(sleeps >= 1)
      -- one check before the first attempt and one after every sleep
      assert.is_true(checks >= sleeps + 1, checks .. " checks for " .. sleeps .. " sleeps")
    end)

    it("that raises: the error propagates unchanged from blocking waits", function()
      local l = lock("raise", { abandonment_check = 0.05 })
      H.lock_holder(dir, "raise", 30)
      for _, m in ipairs({ "acquire", "try_acquire" }) do
        local e = setmetatable({}, { __tostring = function() return "mine" end })
        local calls = 0
        local ok, err = pcall(l[m], l, 10, { cancel = function()
          calls = calls + 1
          if calls == 2 then error(e) end
          return false
        end })
        assert.is_false(ok)
        assert.is_true(rawequal(e, err), m .. ": got " .. tostring(err))
        assert.are.equal(2, calls)
        assert.are.equal(0, l:info().waiting, m)

        calls = 0
        ok, err = pcall(l[m], l, 10, { cancel = function()
          calls = calls + 1
          if calls == 2 then error("plain message", 0) end
        end })
        assert.is_false(ok)
        assert.are.equal("plain message", err)
        assert.are.equal(0, l:info().waiting, m)
      end
    end)

    it("that raises: the error propagates unchanged from async waits", function()
      local l = lock("raise-async")
      local _h = assert(l:try_acquire())
      for _, m in ipairs({ "acquire_async", "try_acquire_async" }) do
        local e = {}
        local calls, waiting_during = 0, nil
        local ok, err = pcall(l[m], l, 10, {
          cancel = function()
            calls = calls + 1
            if calls == 3 then
              waiting_during = l:info().waiting
              error(e)
            end
          end,
          sleep = function() end,
        })
        assert.is_false(ok)
        assert.is_true(rawequal(e, err), m .. ": got " .. tostring(err))
        assert.are.equal(1, waiting_during, m)
        assert.are.equal(0, l:info().waiting, m)

        -- and from inside a coroutine whose wait yields
        calls = 0
        local results = H.run({ function()
          return l[m](l, 10, { cancel = function()
            calls = calls + 1
            if calls == 3 then error(e) end
          end })
        end })
        assert.is_false(results[1][1])
        assert.is_true(rawequal(e, results[1][2]), m .. ": got " .. tostring(results[1][2]))
        assert.are.equal(0, l:info().waiting, m)
      end
      assert.are.equal(1, l:info().held)
    end)
  end)
end)
