-- Stopped processes (SIGSTOP) are alive: they keep what they hold, but they
-- must never make anybody else wait past a deadline. A process stopped inside
-- a guard section is played by a child that writes its own identity into the
-- guard word of an object's file and stops itself; a stopped waiter by a
-- child blocked or polling in an acquisition. Bounds are generous liveness
-- bounds; the figures are in make bench.
local wh = require "waithandles"
local H = require "helpers"
local T = H.whtest

-- A child that plays a process stopped inside a guard section of the object
-- file `path`: it takes lock "id<pid>" (for an identity of its own, read
-- back from that lock's owner word), writes it into the guard word, says "in
-- guard" and stops itself. Continued, it leaves the section (guard 0), says
-- "left" and lives until the file `done` exists.
local GUARD = [[
local l = wh.lock("id" .. T.getpid(), { dir = ARGS.dir })
local h = assert(l:try_acquire())
local ident = T.word64(l.path, 128)
assert(T.word64(ARGS.path, 64, ident) == "0", "the guard was not free")
say("in guard")
T.kill(T.getpid(), T.SIGSTOP)
T.word64(ARGS.path, 64, "0")
say("left")
wait_file(ARGS.done, 60)
]]

-- Waits until `pid` is stopped (state T in /proc).
local function stopped(pid)
  H.eventually(function()
    local s = H.read_file("/proc/" .. pid .. "/stat") or ""
    return s:match("^%d+ %b() (%a)") == "T"
  end, 10, "process " .. pid .. " stops")
end

describe("a stopped process", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  local function stop_in_guard(obj)
    local c = H.spawn(GUARD, { dir = dir, path = obj.path, done = dir .. "/done" })
    c:expect("in guard")
    stopped(c.pid)
    return c
  end

  local function resume(c)
    c:kill(T.SIGCONT)
    c:expect("left")
  end

  describe("inside a guard section", function()
    it("does not hold up release(): it returns true at once, and the lock is free once the owner goes on", function()
      local l = wh.lock("x", { dir = dir })
      local h = assert(l:try_acquire())
      local c = stop_in_guard(l)
      local took = H.time(function() assert.is_true(h:release()) end)
      assert.is_true(took < 0.5, "release() took " .. took .. " s")
      assert.is_false(h:is_held())
      assert.is_false(h:release())
      assert.are.equal("busy", H.probe_lock(dir, "x")) -- the guard is still held
      resume(c)
      -- Nobody of this process touches the object again: the release completes by itself.
      H.eventually(function() return H.probe_lock(dir, "x") == "acquired" end, 10,
        "the pending release is completed")
    end)

    it("does not hold up __gc, nor <close>", function()
      local l = wh.lock("x", { dir = dir })
      local h = assert(l:try_acquire())
      local c = stop_in_guard(l)
      h = nil -- luacheck: ignore
      local took = H.time(function() collectgarbage() collectgarbage() end)
      assert.is_true(took < 0.5, "__gc took " .. took .. " s")
      if H.is_54 then
        local s = wh.semaphore("s", 2, { dir = dir })
        local t = assert(s:try_acquire())
        local c2 = stop_in_guard(s)
        local close_it = assert(load([[
          local t = ...
          do local x <close> = t end
        ]], "close", "t", _ENV))
        took = H.time(function() close_it(t) end)
        assert.is_true(took < 0.5, "<close> took " .. took .. " s")
        assert.is_false(t:is_held())
        resume(c2)
        H.eventually(function() return s:info().held == 0 end, 10, "the ticket comes back")
      end
      resume(c)
      H.eventually(function() return H.probe_lock(dir, "x") == "acquired" end, 10,
        "the lock comes back")
    end)

    it("that is killed: its guard is taken over and a pending release is completed", function()
      local l = wh.lock("x", { dir = dir })
      local h = assert(l:try_acquire())
      local c = stop_in_guard(l)
      assert.is_true(h:release())
      c:kill(T.SIGKILL)
      c:wait()
      H.eventually(function() return H.probe_lock(dir, "x") == "acquired" end, 10,
        "the lock comes back")
    end)

    it("does not make acquisitions overrun their deadlines, blocking or async", function()
      local l = wh.lock("x", { dir = dir })
      local c = stop_in_guard(l)
      local took = H.time(function() assert.is_nil(l:try_acquire()) end)
      assert.is_true(took < 0.5, "try_acquire() took " .. took .. " s")
      took = H.time(function() H.assert_code("timeout", "x", l.acquire, l, 0.3) end)
      assert.is_true(took < 2, "acquire(0.3) took " .. took .. " s")
      took = H.time(function() assert.is_nil(l:try_acquire(0.3)) end)
      assert.is_true(took < 2, "try_acquire(0.3) took " .. took .. " s")
      local polls, longest = 0, 0
      local function sleep(s)
        polls = polls + 1
        H.sleep(s)
      end
      took = H.time(function()
        local co = coroutine.create(function() return l:try_acquire_async(0.3) end)
        while true do
          local t0 = H.now()
          local ok, d = coroutine.resume(co)
          longest = math.max(longest, H.now() - t0)
          assert.is_true(ok, tostring(d))
          if coroutine.status(co) == "dead" then
            assert.is_nil(d)
            break
          end
          sleep(d)
        end
      end)
      assert.is_true(took < 2, "try_acquire_async(0.3) took " .. took .. " s")
      assert.is_true(longest < 0.2, "one poll blocked the thread for " .. longest .. " s")
      assert.is_true(polls >= 1)
      resume(c)
      assert.is_truthy(l:try_acquire())
    end)
  end)

  -- A waiter (a child in acquire(20) of lock x) asleep on the guard of x, whose owner is
  -- stopped inside its section; clean(path) then plays a cleaner and returns the file whose
  -- section ends. Returns what the waiter said of its hold ("kept" or "lost") and what a probe
  -- of x found next.
  local function wait_through_cleaner(clean)
    local l = wh.lock("x", { dir = dir })
    assert(l:try_acquire()):release()
    local g = stop_in_guard(l)
    local w = H.spawn([[
      local h = wh.lock("x", { dir = ARGS.dir }):acquire(20)
      say(h:is_lost() and "lost" or "kept")
      T.sleep(60)
    ]], { dir = dir })
    -- The waiter sleeps on the guard word once it has set its SLEEPERS bit (bit 63).
    H.eventually(function()
      local v = T.word64(l.path, 64)
      return #v == 16 and tonumber(v:sub(1, 1), 16) >= 8
    end, 10, "the waiter sleeps on the guard")
    T.word64(clean(l.path), 64, "0") -- the section ends
    local said = w:expect("^%a+$", 20)
    local other = H.probe_lock(dir, "x")
    g:kill()
    w:kill()
    return said, other
  end

  -- Found by the torture: an attempt looked at whether its file was still the object before it
  -- waited for the guard, and the guard's owner may stay stopped for as long as the caller's
  -- deadline. A file removed meanwhile got the hold, lost from the start, while a newcomer took
  -- the object at the path. Now whoever waited for the guard looks again inside it.
  it("inside the guard of a file that a cleaner removes: the waiter's hold is on the path's new file", function()
    local said, other = wait_through_cleaner(function(path)
      assert(os.rename(path, path .. ".removed")) -- the object is no longer that file
      return path .. ".removed"
    end)
    assert.are.equal("kept", said, "the waiter's hold was taken on the removed file")
    assert.are.equal("busy", other, "another process took the lock beside the waiter")
  end)

  -- The same for the registry file (found by the torture too): an identity taken before a
  -- long guard wait must not hold once a cleaner has removed the registry file it is from.
  it("inside the guard, while a cleaner removes the registry: the waiter's hold is not lost", function()
    local said = wait_through_cleaner(function(path)
      assert(os.remove(dir .. "/.registry-00")) -- every process here has a slot of shard 0
      return path
    end)
    assert.are.equal("kept", said, "the waiter's hold was taken under an identity of the removed registry")
  end)

  describe("while it waits", function()
    -- A child waiting for lock x (in dir, abandonment_check 10 s) blocking or async; "waiting"
    -- once its mark is in place.
    local function waiter(how)
      local c = H.spawn([[
        local l = wh.lock("x", { dir = ARGS.dir, abandonment_check = 10 })
        say("waiting")
        local h
        if ARGS.how == "async" then h = l:acquire_async(60, { sleep = T.sleep })
        else h = l:acquire(60) end
        say("got")
        T.sleep(60)
      ]], { dir = dir, how = how })
      c:expect("waiting")
      return c
    end

    for _, how in ipairs({ "blocking", "async" }) do
      it("(" .. how .. ") keeps a free lock from others for a fraction of a second, whatever abandonment_check", function()
        local l = wh.lock("x", { dir = dir, abandonment_check = 10 })
        local h = assert(l:try_acquire())
        local c = waiter(how)
        H.eventually(function() return l:info().waiting == 1 end, 10, "the child waits")
        H.sleep(0.05) -- its wait is older than the 10 ms that give it precedence
        c:kill(T.SIGSTOP)
        stopped(c.pid)
        h:release()
        local t0 = H.now()
        local h2 = l:acquire(10)
        local took = H.now() - t0
        assert.is_true(h2:is_held())
        assert.is_true(took < 1, "a newcomer waited " .. took .. " s for a free lock")
        c:kill(T.SIGCONT)
      end)
    end

    it("(a coroutine never resumed) keeps try_acquire(0) from a free lock only briefly", function()
      local l = wh.lock("x", { dir = dir })
      local h = assert(l:try_acquire())
      local co = coroutine.create(function() return l:acquire_async(60) end)
      assert.is_true((coroutine.resume(co)))
      H.sleep(0.05)
      h:release()
      local t0 = H.now()
      H.eventually(function() return l:try_acquire() end, 5, "try_acquire succeeds")
      local took = H.now() - t0
      assert.is_true(took < 0.5, "refused for " .. took .. " s")
    end)
  end)
end)
