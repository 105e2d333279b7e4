-- Semaphores (API.md "Semaphore"), after Medallion.Threading's semaphore
-- test cases: max_count checks, mismatches, concurrency across real
-- processes, abandonment, and the try/acquire/async/cancel variants.
local wh = require "waithandles"
local H = require "helpers"
local T = H.whtest

local MAX = 2147483647 -- 2^31-1

local function contains_pid(holders, pid)
  for _, h in ipairs(holders or {}) do
    if h.pid == pid then return true end
  end
  return false
end

describe("semaphore", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  local function sem(name, max, opts)
    opts = opts or {}
    opts.dir = opts.dir or dir
    return wh.semaphore(name, max, opts)
  end

  describe("max_count", function()
    it("accepts 1 .. 2^31-1 and exposes it as sem.max_count", function()
      for _, n in ipairs({ 1, 2, 3, 1000, MAX - 1, MAX }) do
        local s = sem("mc" .. n, n)
        assert.are.equal(n, s.max_count)
        local h = s:try_acquire()
        assert.is_truthy(h, "a ticket of a max_count " .. n .. " semaphore")
        assert.are.equal(n, s:info().max_count)
        h:release()
      end
    end)

    it("rejects 0, -1, 1.5, 2^31, NaN, huge, '3', nil and tables with a standard argument error", function()
      local bad = { 0, -1, 1.5, MAX + 1, 2 ^ 31, 2 ^ 53, 0 / 0, math.huge, -math.huge, "3", {}, true }
      for _, v in ipairs(bad) do
        H.assert_argerror("bad argument #2 to 'semaphore'", function() return wh.semaphore("x", v, { dir = dir }) end)
        local p = wh.provider { dir = dir }
        H.assert_argerror("bad argument #2 to 'semaphore'", function() return p:semaphore("x", v) end)
      end
      H.assert_argerror("bad argument #2 to 'semaphore'", function() return wh.semaphore("x", nil, { dir = dir }) end)
      H.assert_argerror("bad argument #2 to 'semaphore'", function() return wh.semaphore("x") end)
      -- nothing was created by the rejected calls
      assert.is_nil(T.stat(dir .. "/x"))
    end)

    it("rejects bad names, unknown options and extra arguments", function()
      H.assert_argerror("bad argument #1 to 'semaphore'", function() return wh.semaphore(42, 3, { dir = dir }) end)
      H.assert_argerror("bad argument #3 to 'semaphore'", function() return wh.semaphore("x", 3, { dir = dir, bogus = 1 }) end)
      H.assert_argerror("bad argument #3 to 'semaphore'", function() return wh.semaphore("x", 3, { dir = dir, cancel = function() end }) end)
      H.assert_argerror("bad argument #3 to 'semaphore'", function() return wh.semaphore("x", 3, 5) end)
      H.assert_argerror("bad argument #4 to 'semaphore'", function() return wh.semaphore("x", 3, { dir = dir }, 1) end)
    end)
  end)

  describe("mismatch", function()
    -- Opens (and first acquires) an object, returning the error it raises.
    local function open_error(f)
      return H.assert_code("mismatch", nil, function()
        local o = f()
        if o.kind == "rwlock" then o:try_acquire_read() else o:try_acquire() end
      end)
    end

    it("opening a semaphore's name with another max_count raises mismatch", function()
      local s3 = sem("m", 3)
      assert.is_truthy(s3:try_acquire())
      local err = open_error(function() return sem("m", 4) end)
      assert.are.equal("m", err.name)
      assert.is_truthy(tostring(err):find("mismatch", 1, true))
      open_error(function() return sem("m", 1) end)
      open_error(function() return sem("m", MAX) end)
      -- the right max_count still opens it
      assert.are.equal(3, sem("m", 3).max_count)
    end)

    it("opening a semaphore's name as a lock or rwlock raises mismatch, and vice versa", function()
      local s = sem("s", 2)
      s:try_acquire()
      open_error(function() return wh.lock("s", { dir = dir }) end)
      open_error(function() return wh.rwlock("s", { dir = dir }) end)
      local l = wh.lock("l", { dir = dir })
      l:try_acquire()
      open_error(function() return sem("l", 1) end)
      open_error(function() return sem("l", 2) end)
      local rw = wh.rwlock("rw", { dir = dir })
      rw:try_acquire_read()
      open_error(function() return sem("rw", 1) end)
    end)

    it("is detected from the file, when another process created the object", function()
      local c = H.spawn([[
        local s = wh.semaphore("xs", 3, { dir = ARGS.dir })
        local l = wh.lock("xl", { dir = ARGS.dir })
        assert(s:try_acquire()) assert(l:try_acquire())
        say("created")
      ]], { dir = dir })
      c:expect("created")
      c:ok()
      open_error(function() return sem("xs", 4) end)
      open_error(function() return wh.lock("xs", { dir = dir }) end)
      open_error(function() return sem("xl", 1) end)
      local s = sem("xs", 3)
      assert.is_truthy(s:try_acquire())
      assert.are.equal(1, s:info().held)
    end)
  end)

  describe("tickets", function()
    it("never lets more than max_count holders in at once, and reaches max_count, across 6 processes", function()
      local log, go = dir .. "/log.txt", dir .. "/go"
      local rounds, n = 20, 6
      local code = [[
        local s = wh.semaphore("conc", 3, { dir = ARGS.dir })
        local log = assert(io.open(ARGS.log, "a"))
        log:setvbuf("no")
        local me = T.getpid()
        say("ready")
        wait_file(ARGS.go)
        for i = 1, ARGS.rounds do
          local h = s:acquire(30)
          log:write("in " .. me .. "\n")
          T.sleep(0.004)
          log:write("out " .. me .. "\n")
          assert(h:release())
        end
        log:close()
        say("done")
      ]]
      local children = {}
      for i = 1, n do
        children[i] = H.spawn(code, { dir = dir, log = log, go = go, rounds = rounds })
      end
      for _, c in ipairs(children) do c:expect("ready", 20) end
      H.touch(go)
      for _, c in ipairs(children) do
        c:expect("done", 40)
        c:ok()
      end
      local cur, top, lines, state = 0, 0, 0, {}
      for l in io.lines(log) do
        lines = lines + 1
        local what, pid = l:match("^(%a+) (%d+)$")
        assert.is_truthy(what, "bad log line " .. l)
        if what == "in" then
          assert.is_falsy(state[pid], "process " .. pid .. " went in twice")
          state[pid] = true
          cur = cur + 1
        else
          assert.is_true(state[pid], "process " .. pid .. " went out without going in")
          state[pid] = false
          cur = cur - 1
        end
        assert.is_true(cur <= 3, ("%d holders at once at log line %d"):format(cur, lines))
        if cur > top then top = cur end
      end
      assert.are.equal(n * rounds * 2, lines)
      assert.are.equal(0, cur)
      assert.are.equal(3, top)
      assert.are.equal(0, sem("conc", 3):info().held)
    end)

    it("drains across two objects of the same name in one process", function()
      local s1, s2 = sem("drain", 3), sem("drain", 3)
      local a = s1:try_acquire()
      local b = s2:try_acquire()
      local c = s1:try_acquire()
      assert.is_truthy(a and b and c)
      assert.is_nil(s1:try_acquire())
      assert.is_nil(s2:try_acquire())
      assert.are.equal(3, s1:info().held)
      assert.are.equal(3, s2:info().held)
      assert.is_true(b:release())
      local d = s1:try_acquire()
      assert.is_truthy(d)
      assert.is_nil(s2:try_acquire())
      assert.is_true(a:release())
      assert.is_truthy(s2:try_acquire())
    end)

    it("drains across processes: tickets of both count against the same max_count", function()
      local s = sem("xdrain", 3)
      local a, b = s:try_acquire(), s:try_acquire()
      assert.is_truthy(a and b)
      local c = H.spawn([[
        local s = wh.semaphore("xdrain", 3, { dir = ARGS.dir })
        local h = s:try_acquire()
        say(h and "got" or "busy")
        say(s:try_acquire() and "got" or "busy")
        say("held " .. s:info().held)
        wait_file(ARGS.go)
        h:release()
        say("released")
      ]], { dir = dir, go = dir .. "/go" })
      c:expect("got")
      c:expect("busy")
      c:expect("held 3")
      assert.are.equal(3, s:info().held)
      assert.is_nil(s:try_acquire())
      assert.is_true(a:release())
      local a2 = s:try_acquire()
      assert.is_truthy(a2)
      assert.is_nil(s:try_acquire())
      H.touch(dir .. "/go")
      c:expect("released")
      c:ok()
      local a3 = s:try_acquire()
      assert.is_truthy(a3)
      assert.are.equal(3, s:info().held)
    end)

    it("holds 100 tickets of a 2^31-1 semaphore; info().held is exact and names the holders", function()
      local s = sem("big", MAX)
      local hs = {}
      for i = 1, 100 do
        hs[i] = s:try_acquire()
        assert.is_truthy(hs[i], "ticket " .. i)
      end
      local info = s:info()
      assert.are.equal(100, info.held)
      assert.are.equal(MAX, info.max_count)
      assert.are.equal("semaphore", info.kind)
      assert.are.equal(s.name, info.name)
      assert.are.equal(s.path, info.path)
      assert.is_true(contains_pid(info.holders, T.getpid()))

      local c = H.spawn([[
        local s = wh.semaphore("big", 2147483647, { dir = ARGS.dir })
        local hs = {}
        for i = 1, 7 do hs[i] = assert(s:try_acquire()) end
        say("held")
        wait_file(ARGS.go)
      ]], { dir = dir, go = dir .. "/go" })
      c:expect("held")
      info = s:info()
      assert.are.equal(107, info.held)
      assert.is_true(contains_pid(info.holders, c.pid))
      assert.is_true(contains_pid(info.holders, T.getpid()))
      H.touch(dir .. "/go")
      c:ok()
      -- the child's handles were released when it exited
      assert.are.equal(100, s:info().held)
      assert.is_false(contains_pid(s:info().holders, c.pid))

      for i = 1, 50 do assert.is_true(hs[i]:release()) end
      assert.are.equal(50, s:info().held)
      for i = 1, 50 do assert.is_false(hs[i]:release()) end
      assert.are.equal(50, s:info().held)
      for i = 51, 100 do hs[i]:release() end
      assert.are.equal(0, s:info().held)
      assert.is_false(contains_pid(s:info().holders, T.getpid()))
    end)

    it("a collected handle gives its ticket back", function()
      local s = sem("gc", 2)
      local keep = s:try_acquire()
      do
        local h = s:try_acquire()
        assert.is_truthy(h)
      end
      collectgarbage()
      collectgarbage()
      assert.are.equal(1, s:info().held)
      assert.is_truthy(s:try_acquire())
      assert.is_truthy(keep:is_held())
    end)
  end)

  describe("abandonment", function()
    -- A child takes both tickets of a max_count 2 semaphore, then SIGKILLs
    -- itself once somebody waits for a ticket.
    local function doomed_holder(name)
      return H.spawn([[
        local s = wh.semaphore(ARGS.name, 2, { dir = ARGS.dir })
        local a, b = assert(s:try_acquire()), assert(s:try_acquire())
        say("held")
        local deadline = T.now() + 20
        while T.now() < deadline do
          local w = s:info().waiting
          if w == nil then say("info().waiting missing") os.exit(3) end
          if w > 0 then break end
          T.sleep(0.002)
        end
        T.kill(T.getpid(), T.SIGKILL)
      ]], { name = name, dir = dir })
    end

    it("a SIGKILLed holder's ticket comes back to a waiter blocked in acquire(20) within 2 s", function()
      local s = sem("kill", 2)
      local c = doomed_holder("kill")
      c:expect("held")
      assert.is_nil(s:try_acquire())
      local h
      local took = H.time(function() h = s:acquire(20) end)
      assert.is_truthy(h)
      assert.is_true(took < 2, "took " .. took .. " s")
      assert.are.equal(T.SIGKILL, c:wait().signal)
      assert.is_truthy(s:try_acquire(), "both dead tickets come back")
      assert.are.equal(2, s:info().held)
      assert.is_false(contains_pid(s:info().holders, c.pid))
    end)

    it("a SIGKILLed holder's ticket comes back to an async waiter", function()
      local s = sem("kill_async", 2)
      local c = doomed_holder("kill_async")
      c:expect("held")
      local h
      local took = H.time(function()
        h = s:acquire_async(20, { sleep = H.sleep })
      end)
      assert.is_truthy(h)
      assert.is_true(took < 2, "took " .. took .. " s")
      assert.are.equal(T.SIGKILL, c:wait().signal)
    end)
  end)

  describe("variants", function()
    it("handles are tickets: kind, name, tostring, release, is_held", function()
      local s = sem("h", 1)
      local h = s:try_acquire()
      assert.are.equal("semaphore", h.kind)
      assert.are.equal("h", h.name)
      assert.are.equal("waithandles.handle(semaphore 'h', held)", tostring(h))
      assert.is_true(h:is_held())
      assert.is_true(h:release())
      assert.is_false(h:is_held())
      assert.is_false(h:release())
      assert.are.equal("waithandles.handle(semaphore 'h', released)", tostring(h))
      -- not reentrant: the same object cannot take a second ticket of a max_count 1 semaphore
      local a = s:acquire()
      assert.is_nil(s:try_acquire())
      a:release()
    end)

    it("try_acquire returns nil on a full semaphore, at once or after its timeout", function()
      local s = sem("try", 2)
      local a, b = s:try_acquire(), s:try_acquire(0)
      assert.is_truthy(a and b)
      assert.is_nil(s:try_acquire())
      assert.is_nil(s:try_acquire(0))
      assert.is_nil(s:try_acquire(nil))
      local took = H.time(function() assert.is_nil(s:try_acquire(0.2)) end)
      assert.is_true(took >= 0.15, "returned after " .. took .. " s")
      assert.is_true(took < 5)
      assert.is_nil(s:try_acquire_async(0.1, { sleep = H.sleep }))
      assert.are.equal(2, s:info().held)
    end)

    it("acquire raises code timeout on a full semaphore", function()
      local s = sem("to", 1)
      local h = s:acquire(5)
      local err = H.assert_code("timeout", nil, function() s:acquire(0.2) end)
      assert.are.equal("to", err.name)
      assert.is_truthy(tostring(err):find("timeout", 1, true))
      H.assert_code("timeout", nil, function() s:acquire(0) end)
      H.assert_code("timeout", nil, function() s:acquire_async(0.1, { sleep = H.sleep }) end)
      h:release()
      assert.is_truthy(s:acquire(0))
    end)

    it("a blocked acquire in another process gets the ticket that is released", function()
      local s = sem("wake", 2)
      local a, b = s:try_acquire(), s:try_acquire()
      local c = H.spawn([[
        local s = wh.semaphore("wake", 2, { dir = ARGS.dir })
        say("waiting")
        local h = s:acquire(20)
        say("got " .. tostring(h:is_held()))
      ]], { dir = dir })
      c:expect("waiting")
      H.eventually(function() return s:info().waiting == 1 end, 10, "the child waits")
      assert.is_true(a:release())
      c:expect("got true")
      c:ok()
      assert.is_truthy(s:try_acquire())
      b:release()
    end)

    it("async acquisition yields from a coroutine and gets a released ticket", function()
      local s = sem("async", 1)
      local other = s:try_acquire()
      local yields = 0
      local h = H.drive_body(function() return s:acquire_async(10) end, function(delay, n)
        assert.are.equal("number", type(delay))
        assert.is_true(delay >= 0)
        yields = n
        if n == 3 then other:release() end
      end)
      assert.is_true(yields >= 3)
      assert.is_truthy(h)
      assert.are.equal("semaphore", h.kind)
      assert.is_true(h:is_held())
      assert.is_nil(s:try_acquire())
      -- try_acquire_async in a coroutine times out with nil
      local r, n = H.drive_body(function() return s:try_acquire_async(0.1) end)
      assert.is_nil(r)
      assert.is_true(n >= 1)
    end)

    it("async acquisition uses the call's sleep function", function()
      local s = sem("sleep", 1)
      local other = s:try_acquire()
      local calls = 0
      local h = s:acquire_async(10, { sleep = function(d)
        calls = calls + 1
        assert.are.equal("number", type(d))
        if calls == 2 then other:release() end
        H.sleep(d)
      end })
      assert.is_truthy(h)
      assert.is_true(calls >= 2)
    end)

    it("an already cancelled token raises cancelled at once, even on a free semaphore", function()
      local s = sem("cx", 2)
      local tok = wh.cancel_token()
      tok:cancel()
      assert.is_true(tok:is_cancelled())
      for _, m in ipairs({ "try_acquire", "acquire", "try_acquire_async", "acquire_async" }) do
        local err = H.assert_code("cancelled", nil, function() s[m](s, nil, { cancel = tok }) end)
        assert.are.equal("cx", err.name)
      end
      H.assert_code("cancelled", nil, function() s:try_acquire(0, { cancel = function() return true end }) end)
      assert.are.equal(0, s:info().held)
    end)

    it("cancelling a blocked or async wait raises cancelled and takes nothing", function()
      local s = sem("cw", 1, { abandonment_check = 0.02 })
      local h = s:try_acquire()
      local calls = 0
      local took = H.time(function()
        H.assert_code("cancelled", nil, function()
          s:acquire(20, { cancel = function() calls = calls + 1 return calls >= 3 end })
        end)
      end)
      assert.are.equal(3, calls)
      assert.is_true(took < 5, "took " .. took .. " s")

      local tok = wh.cancel_token()
      H.assert_code("cancelled", nil, function()
        s:acquire_async(20, { cancel = tok, sleep = function(d) tok:cancel() H.sleep(d) end })
      end)

      local tok2 = wh.cancel_token()
      local ok, err = pcall(H.drive_body, function() return s:try_acquire_async(20, { cancel = tok2 }) end,
        function(_, n) if n == 2 then tok2:cancel() end end)
      assert.is_false(ok)
      assert.are.equal("cancelled", type(err) == "table" and err.code, tostring(err))

      assert.are.equal(1, s:info().held)
      assert.are.equal(0, s:info().waiting)
      h:release()
      assert.is_truthy(s:try_acquire())
    end)

    it("rejects bad timeouts and options with argument errors", function()
      local s = sem("args", 1)
      H.assert_argerror("bad argument #1 to 'acquire'", function() s:acquire(-1) end)
      H.assert_argerror("bad argument #1 to 'try_acquire'", function() s:try_acquire(0 / 0) end)
      H.assert_argerror("bad argument #1 to 'try_acquire'", function() s:try_acquire("1") end)
      H.assert_argerror("bad argument #1 to 'acquire_async'", function() s:acquire_async(2147483.648) end)
      H.assert_argerror("bad argument #1 to 'try_acquire'", function() s:try_acquire({ cancel = function() end }) end)
      H.assert_argerror("bad argument #2 to 'try_acquire'", function() s:try_acquire(nil, { bogus = 1 }) end)
      H.assert_argerror("bad argument #2 to 'acquire'", function() s:acquire(1, { timeout = 1 }) end)
      H.assert_argerror("bad argument #2 to 'try_acquire_async'", function() s:try_acquire_async(0, { sleep = 5 }) end)
      assert.are.equal(0, s:info().held)
      local h = s:try_acquire(2147483.647)
      assert.is_truthy(h)
      h:release()
      assert.is_truthy(s:try_acquire(math.huge))
    end)

    it("releases at scope exit with <close> (Lua 5.4) and with waithandles.using", function()
      local s = sem("scope", 1)
      if H.is_54 then
        local chunk = assert(load([[
          local s = ...
          do
            local h <close> = s:acquire(5)
            assert(s:info().held == 1)
          end
          return s:info().held
        ]]))
        assert.are.equal(0, chunk(s))
      end
      local r = wh.using(s:acquire(5), function(h, x)
        assert.is_true(h:is_held())
        assert.are.equal(1, s:info().held)
        return x * 2
      end, 21)
      assert.are.equal(42, r)
      assert.are.equal(0, s:info().held)
      assert.has_error(function()
        wh.using(s:acquire(5), function() error("boom", 0) end)
      end, "boom")
      assert.are.equal(0, s:info().held)
    end)
  end)
end)
