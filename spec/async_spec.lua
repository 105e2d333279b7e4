-- API.md "Async (coroutine-friendly) calls" for locks, and the Details about
-- them: which sleep is used, yielding to the resumer, the blocking fallback
-- where nothing can yield, timeouts, errors from sleep, polling rate.
-- Cancellation of async waits is in cancel_spec.
local wh = require "waithandles"
local H = require "helpers"

-- Resumes one coroutine until it ends, sleeping (for real) whatever it
-- yields. Returns the number of yields and what it returned.
local function drive(co, ...)
  local yields, r = 0, H.pack(coroutine.resume(co, ...))
  while coroutine.status(co) ~= "dead" do
    yields = yields + 1
    assert(yields < 100000, "never ends")
    local d = r[2]
    assert(type(d) == "number" and d > 0, "yielded " .. tostring(d))
    H.sleep(d)
    r = H.pack(coroutine.resume(co))
  end
  return yields, r
end

local function assert_ended_ok(r)
  assert.is_true(r[1], "the coroutine failed: " .. tostring(r[2]))
end

describe("async", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  local function lock(name, opts) return H.lock_in(dir, name, opts) end

  describe("inside coroutines with no sleep given", function()
    it("yield the suggested delay to the resumer; contenders get the lock in turn", function()
      local l = lock("turns")
      local N, ROUNDS, HOLD = 4, 3, 0.05
      local inside, max_inside, grants, waiting, waits_seen = 0, 0, {}, {}, {}
      local tasks = {}
      for i = 1, N do
        tasks[i] = function()
          for _ = 1, ROUNDS do
            waiting[i] = true
            local h = l:acquire_async(10)
            waiting[i] = false
            inside = inside + 1
            max_inside = math.max(max_inside, inside)
            grants[#grants + 1] = i
            -- every other contender is waiting, with one live wait entry each
            local others = 0
            for j = 1, N do if waiting[j] then others = others + 1 end end
            waits_seen[#waits_seen + 1] = { l:info().waiting, others }
            coroutine.yield(HOLD)
            inside = inside - 1
            assert(h:release())
          end
          return "done"
        end
      end
      local results, log = H.run(tasks, { tags = waiting })
      for i = 1, N do
        assert_ended_ok(results[i])
        assert.are.equal("done", results[i][2])
      end
      assert.are.equal(1, max_inside)
      assert.are.equal(N * ROUNDS, #grants)
      -- in turn: within each round every contender gets the lock once
      for round = 0, ROUNDS - 1 do
        local seen = {}
        for k = 1, N do
          local who = grants[round * N + k]
          assert.is_nil(seen[who], "task " .. who .. " got the lock twice in round " .. round + 1
            .. " while others waited: " .. table.concat(grants, " "))
          seen[who] = true
        end
      end
      -- the waits yielded positive delays to the resumer
      local waited_yields = 0
      for _, y in ipairs(log) do
        if y.tag then
          waited_yields = waited_yields + 1
          assert.are.equal("number", type(y.value))
          assert.is_true(y.value > 0 and y.value <= 10, "delay " .. tostring(y.value))
        end
      end
      assert.is_true(waited_yields >= N - 1, "only " .. waited_yields .. " yields while waiting")
      for _, w in ipairs(waits_seen) do
        assert.are.equal(w[2], w[1], "info().waiting vs contenders waiting")
      end
      local i = l:info()
      assert.are.equal(0, i.held)
      assert.are.equal(0, i.waiting)
    end)

    it("a waiter gets the lock from a holder that keeps re-acquiring it", function()
      local l = lock("newcomer")
      local cycles, got_at = 0, nil
      local results = H.run({
        function()
          for _ = 1, 20 do
            if got_at then break end
            local h = l:acquire_async(10)
            cycles = cycles + 1
            coroutine.yield(0.05)
            h:release()
          end
        end,
        function()
          coroutine.yield(0.01) -- start after the first holder
          local h = l:acquire_async(10)
          got_at = cycles
          h:release()
        end,
      })
      assert_ended_ok(results[1])
      assert_ended_ok(results[2])
      assert.is_truthy(got_at, "the waiter never got the lock")
      assert.is_true(got_at <= 3, "the waiter got the lock only after " .. got_at .. " cycles")
    end)

    it("yield delays that start small and back off (real clock: the policy reads it)", function()
      local l = lock("fake")
      local h = assert(l:try_acquire())
      local tags = { true }
      local results, log = H.run({
        function() return l:acquire_async(10) end,
        function()
          coroutine.yield(1.0) -- one second
          assert(h:release())
        end,
      }, { tags = tags })
      assert_ended_ok(results[1])
      assert_ended_ok(results[2])
      assert.is_true(results[1][2]:is_held())
      local delays, total, biggest = {}, 0, 0
      for _, y in ipairs(log) do
        if y.task == 1 then
          assert.are.equal("number", type(y.value))
          assert.is_true(y.value > 0, "delay " .. tostring(y.value))
          delays[#delays + 1] = y.value
          total = total + y.value
          biggest = math.max(biggest, y.value)
        end
      end
      assert.is_true(total >= 0.5, "yielded delays add up to only " .. total .. " s")
      assert.is_true(#delays >= 5 and #delays <= 400, #delays .. " polls in the first second")
      assert.is_true(delays[1] <= 0.1, "first delay " .. delays[1])
      assert.is_true(biggest > delays[1], "delays never grew")
    end)

    it("info().waiting counts a suspended async waiter", function()
      local l = lock("suspended")
      local h = assert(l:try_acquire())
      local co = coroutine.create(function() return l:acquire_async(10) end)
      local ok, d = coroutine.resume(co)
      assert.is_true(ok, tostring(d))
      assert.are.equal("suspended", coroutine.status(co))
      assert.are.equal("number", type(d))
      assert.is_true(d > 0)
      assert.are.equal(1, l:info().waiting)
      h:release()
      local yields, r = drive(co)
      assert_ended_ok(r)
      assert.is_true(r[2]:is_held())
      assert.is_true(yields < 1000)
      assert.are.equal(0, l:info().waiting)
      assert.are.equal(1, l:info().held)
    end)

    it("a free lock is taken without yielding", function()
      local l = lock("free")
      local co = coroutine.create(function() return l:acquire_async(), l:try_acquire_async() end)
      local ok, h, h2 = coroutine.resume(co)
      assert.is_true(ok, tostring(h))
      assert.are.equal("dead", coroutine.status(co))
      assert.is_true(h:is_held())
      assert.is_nil(h2) -- not reentrant, and one attempt by default
    end)
  end)

  describe("a sleep function", function()
    it("given to the call is used between polls", function()
      local l = lock("s")
      local h = assert(l:try_acquire())
      local delays = {}
      local h2 = l:acquire_async(10, { sleep = function(s)
        delays[#delays + 1] = s
        if #delays == 3 then h:release() end
      end })
      assert.is_true(h2:is_held())
      assert.are.equal(3, #delays)
      for _, s in ipairs(delays) do
        assert.are.equal("number", type(s))
        assert.is_true(s > 0)
      end
    end)

    it("given to the call is used inside a coroutine too, instead of yielding", function()
      local l = lock("s")
      local h = assert(l:try_acquire())
      local calls = 0
      local co = coroutine.create(function()
        return l:acquire_async(10, { sleep = function()
          calls = calls + 1
          if calls == 2 then h:release() end
        end })
      end)
      local ok, h2 = coroutine.resume(co)
      assert.is_true(ok, tostring(h2))
      assert.are.equal("dead", coroutine.status(co))
      assert.is_true(h2:is_held())
      assert.are.equal(2, calls)
    end)

    it("may itself yield to the resumer (like ngx.sleep)", function()
      local l = lock("s")
      local h = assert(l:try_acquire())
      local calls = 0
      local co = coroutine.create(function()
        return l:acquire_async(10, { sleep = function(s)
          calls = calls + 1
          coroutine.yield("from sleep", s)
        end })
      end)
      local ok, what, s = coroutine.resume(co)
      assert.is_true(ok, tostring(what))
      assert.are.equal("from sleep", what)
      assert.is_true(s > 0)
      ok, what = coroutine.resume(co)
      assert.is_true(ok, tostring(what))
      assert.are.equal("from sleep", what)
      h:release()
      local r = H.pack(coroutine.resume(co))
      assert.is_true(r[1], tostring(r[2]))
      assert.are.equal("dead", coroutine.status(co))
      assert.is_true(r[2]:is_held())
      assert.are.equal(2, calls)
    end)

    it("set on the lock object is used by its async calls", function()
      local calls = 0
      local h
      local l = lock("obj", { sleep = function()
        calls = calls + 1
        if calls == 2 then h:release() end
      end })
      h = assert(l:try_acquire())
      local h2 = l:acquire_async(10)
      assert.is_true(h2:is_held())
      assert.are.equal(2, calls)
      -- also inside a coroutine, instead of yielding
      h = h2
      calls = 0
      local co = coroutine.create(function() return l:try_acquire_async(10) end)
      local ok, h3 = coroutine.resume(co)
      assert.is_true(ok, tostring(h3))
      assert.are.equal("dead", coroutine.status(co))
      assert.is_true(h3:is_held())
      assert.are.equal(2, calls)
    end)

    it("set on a provider is used by its locks' async calls", function()
      local calls = 0
      local h
      local p = wh.provider({ dir = dir, sleep = function()
        calls = calls + 1
        if calls == 2 then h:release() end
      end })
      local l = p:lock("prov")
      h = assert(l:try_acquire())
      local h2 = l:acquire_async(10)
      assert.is_true(h2:is_held())
      assert.are.equal(2, calls)
    end)

    it("given to the call wins over the object's and the provider's", function()
      local h
      local used = {}
      local function sleeper(who)
        return function()
          used[who] = (used[who] or 0) + 1
          if who == "call" and used[who] == 2 then h:release() end
        end
      end
      local p = wh.provider({ dir = dir, sleep = sleeper("provider") })
      local l1 = p:lock("win1")
      h = assert(l1:try_acquire())
      assert.is_truthy(l1:acquire_async(10, { sleep = sleeper("call") }))
      assert.are.same({ call = 2 }, used)

      used = {}
      local l2 = lock("win2", { sleep = sleeper("object") })
      h = assert(l2:try_acquire())
      assert.is_truthy(l2:try_acquire_async(10, { sleep = sleeper("call") }))
      assert.are.same({ call = 2 }, used)

      used = {}
      local l3 = p:lock("win3", { sleep = sleeper("object") })
      h = assert(l3:try_acquire())
      assert.is_truthy(l3:acquire_async(10, { sleep = sleeper("call") }))
      assert.are.same({ call = 2 }, used)
    end)

    it("of the object wins over the provider's", function()
      local used, h = {}, nil
      local function sleeper(who)
        return function()
          used[who] = (used[who] or 0) + 1
          h:release()
        end
      end
      local p = wh.provider({ dir = dir, sleep = sleeper("provider") })
      local l = p:lock("objwin", { sleep = sleeper("object") })
      h = assert(l:try_acquire())
      assert.is_truthy(l:acquire_async(10))
      assert.are.same({ object = 1 }, used)
    end)

    it("is not called when the lock is free or the timeout is 0", function()
      local l = lock("nosleep")
      local calls = 0
      local sleep = function() calls = calls + 1 end
      local h = l:acquire_async(10, { sleep = sleep })
      assert.is_true(h:is_held())
      -- (a cancel function as a watchdog: a wrong default would wait, not hang)
      assert.is_nil(l:try_acquire_async(nil, { sleep = sleep, cancel = H.watchdog(5) }))
      assert.is_nil(l:try_acquire_async(0, { sleep = sleep, cancel = H.watchdog(5) }))
      H.assert_code("timeout", "nosleep", l.acquire_async, l, 0, { sleep = sleep })
      assert.are.equal(0, calls)
    end)

    it("that raises: the error propagates unchanged, after the wait's claims are withdrawn", function()
      local l = lock("boom")
      local _h = assert(l:try_acquire())
      for _, m in ipairs({ "acquire_async", "try_acquire_async" }) do
        local e = setmetatable({}, { __tostring = function() return "mine" end })
        local waiting_during
        local ok, err = pcall(l[m], l, 10, { sleep = function()
          waiting_during = l:info().waiting
          error(e)
        end })
        assert.is_false(ok)
        assert.is_true(rawequal(e, err), m .. ": got " .. tostring(err))
        assert.are.equal(1, waiting_during, m)
        assert.are.equal(0, l:info().waiting, m)
        assert.are.equal(1, l:info().held, m)

        ok, err = pcall(l[m], l, 10, { sleep = function() error("plain message", 0) end })
        assert.is_false(ok)
        assert.are.equal("plain message", err)
        assert.are.equal(0, l:info().waiting, m)
      end
    end)

    it("that raises inside a coroutine (after yielding): the same", function()
      local l = lock("boom2")
      local h = assert(l:try_acquire())
      local e = {}
      local calls = 0
      local co = coroutine.create(function()
        return l:acquire_async(10, { sleep = function(s)
          calls = calls + 1
          if calls == 3 then error(e) end
          coroutine.yield(s)
        end })
      end)
      local _, r = drive(co)
      assert.is_false(r[1])
      assert.is_true(rawequal(e, r[2]))
      assert.are.equal(0, l:info().waiting)
      -- nothing was taken: the holder still holds, and after it the lock is free
      assert.are.equal(1, l:info().held)
      h:release()
      assert.is_truthy(l:try_acquire())
    end)
  end)

  describe("where nothing can yield", function()
    it("outside any coroutine, waits in the ordinary way for another process", function()
      local l = lock("main")
      local c = H.lock_holder_until_waited(dir, "main", 0.05)
      local h = l:acquire_async(15)
      assert.is_true(h:is_held())
      c:expect("released")
      c:ok()
      h:release()
      c = H.lock_holder_until_waited(dir, "main", 0.05)
      h = l:try_acquire_async(15)
      assert.is_truthy(h)
      assert.is_true(h:is_held())
      c:ok()
    end)

    it("inside a string.gsub callback, falls back to the blocking wait", function()
      local l = lock("gsub")
      local c = H.lock_holder_until_waited(dir, "gsub", 0.05)
      local co = coroutine.create(function()
        local h
        ("x"):gsub("x", function() h = l:acquire_async(15) end)
        return h
      end)
      local ok, h = coroutine.resume(co)
      assert.is_true(ok, tostring(h))
      assert.are.equal("dead", coroutine.status(co))
      assert.is_true(h:is_held())
      c:ok()
    end)

    it("inside pcall: blocks on Lua 5.1, yields elsewhere", function()
      local l = lock("pcall")
      local c = H.lock_holder_until_waited(dir, "pcall", 0.05)
      local co = coroutine.create(function()
        local ok, h = pcall(l.acquire_async, l, 15)
        assert(ok, tostring(h))
        return h
      end)
      local yields, r = drive(co)
      assert_ended_ok(r)
      assert.is_true(r[2]:is_held())
      if H.is_51 then
        assert.are.equal(0, yields)
      else
        assert.is_true(yields >= 1, "it did not yield through pcall")
      end
      c:ok()
    end)

    it("inside waithandles.using: yields on every Lua version", function()
      local l, other = lock("using"), lock("using-other")
      local c = H.lock_holder_until_waited(dir, "using", 0.05)
      local co = coroutine.create(function()
        return wh.using(assert(other:try_acquire()), function() return l:acquire_async(15) end)
      end)
      local yields, r = drive(co)
      assert_ended_ok(r)
      assert.is_true(r[2]:is_held())
      assert.are.equal(0, other:info().held)
      assert.is_true(yields >= 1, "it did not yield through using")
      c:ok()
    end)

    it("a sleep given to the call is still used inside a string.gsub callback", function()
      local l = lock("gsub-sleep")
      local h = assert(l:try_acquire())
      local calls = 0
      local co = coroutine.create(function()
        local r
        ("x"):gsub("x", function()
          r = l:acquire_async(10, { sleep = function()
            calls = calls + 1
            if calls == 2 then h:release() end
          end })
        end)
        return r
      end)
      local ok, h2 = coroutine.resume(co)
      assert.is_true(ok, tostring(h2))
      assert.is_true(h2:is_held())
      assert.are.equal(2, calls)
    end)
  end)

  describe("timeouts", function()
    it("try_acquire_async returns nil, acquire_async raises 'timeout' (custom sleep)", function()
      local l = lock("to")
      local _h = assert(l:try_acquire())
      local r
      local dt = H.time(function() r = l:try_acquire_async(0.2, { sleep = H.sleep }) end)
      assert.is_nil(r)
      assert.is_true(dt >= 0.19 and dt < 10, "took " .. dt .. " s")
      assert.are.equal(0, l:info().waiting)
      dt = H.time(function()
        local err = H.assert_code("timeout", "to", l.acquire_async, l, 0.2, { sleep = H.sleep })
        assert.is_truthy(tostring(err):find("to", 1, true))
      end)
      assert.is_true(dt >= 0.19 and dt < 10, "took " .. dt .. " s")
      assert.are.equal(0, l:info().waiting)
      assert.are.equal(1, l:info().held)
    end)

    it("the same inside coroutines that yield", function()
      local l = lock("to-co")
      local _h = assert(l:try_acquire())
      local results, log = H.run({
        function() return l:try_acquire_async(0.2) end,
        function() return l:acquire_async(0.2) end,
      })
      assert.is_true(results[1][1], tostring(results[1][2]))
      assert.are.equal(2, results[1].n)
      assert.is_nil(results[1][2])
      assert.is_false(results[2][1])
      assert.are.equal("table", type(results[2][2]), tostring(results[2][2]))
      assert.are.equal("timeout", results[2][2].code)
      assert.are.equal("to-co", results[2][2].name)
      local yields = { 0, 0 }
      for _, y in ipairs(log) do yields[y.task] = yields[y.task] + 1 end
      assert.is_true(yields[1] >= 1 and yields[2] >= 1)
      assert.are.equal(0, l:info().waiting)
    end)

    it("try_acquire_async defaults to one attempt: nil without sleeping or yielding", function()
      local l = lock("to-default")
      local _h = assert(l:try_acquire())
      local co = coroutine.create(function() return l:try_acquire_async() end)
      local r = H.pack(coroutine.resume(co))
      assert.is_true(r[1], tostring(r[2]))
      assert.are.equal("dead", coroutine.status(co))
      assert.is_nil(r[2])
      assert.are.equal(0, l:info().waiting)
    end)

    it("an async waiter polls at most a few hundred times in its first second", function()
      local l = lock("polls")
      H.lock_holder(dir, "polls", 60)
      local calls, gaps = {}, {}
      local t0 = H.now()
      local last_end
      local r = l:try_acquire_async(1.0, { sleep = function(s)
        local t = H.now()
        if last_end then gaps[#gaps + 1] = t - last_end end
        calls[#calls + 1] = { s = s, left = t0 + 1.0 - t }
        H.sleep(s)
        last_end = H.now()
      end })
      local elapsed = H.now() - t0
      assert.is_nil(r)
      assert.is_true(elapsed >= 0.99 and elapsed < 10, "took " .. elapsed .. " s")
      assert.is_true(#calls >= 5, "only " .. #calls .. " polls")
      assert.is_true(#calls <= 400, #calls .. " polls in one second")
      local biggest = 0
      for i, c in ipairs(calls) do
        assert.are.equal("number", type(c.s))
        assert.is_true(c.s > 0, "delay #" .. i .. " is " .. c.s)
        assert.is_true(c.s <= c.left + 0.005,
          ("delay #%d is %g s with %g s of the timeout left"):format(i, c.s, c.left))
        biggest = math.max(biggest, c.s)
      end
      assert.is_true(calls[1].s <= 0.1, "first delay " .. calls[1].s)
      assert.is_true(biggest > calls[1].s, "delays never grew")
      -- no poll blocked the thread
      for _, g in ipairs(gaps) do assert.is_true(g < 1, "a poll took " .. g .. " s") end
      assert.are.equal(0, l:info().waiting)
    end)

    it("a delay passed to sleep never exceeds the remaining timeout", function()
      local l = lock("short")
      local _h = assert(l:try_acquire())
      for _, t in ipairs({ 0.003, 0.03, 0.12 }) do
        local calls = {}
        local t0 = H.now()
        assert.is_nil(l:try_acquire_async(t, { sleep = function(s)
          calls[#calls + 1] = { s = s, left = t0 + t - H.now() }
          H.sleep(s)
        end }))
        assert.is_true(#calls >= 1)
        for i, c in ipairs(calls) do
          assert.is_true(c.s > 0, "delay #" .. i .. " is " .. c.s)
          -- (c.left is measured a little after the poll that chose c.s)
          assert.is_true(c.s <= c.left + 0.01,
            ("timeout %g: delay #%d is %g s with %g s left"):format(t, i, c.s, c.left))
        end
      end
    end)
  end)
end)
