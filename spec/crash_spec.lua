-- Crash safety: holders and waiters that are SIGKILLed, exit without
-- releasing, error out, are killed at random points of their work, or are
-- stopped. Nothing is ever stuck; a stopped process is alive and keeps what
-- it holds; info().held stays exact.
local H = require "helpers"
local wh = require "waithandles"
local T = H.whtest

-- Waits until process pid is in the stopped state (Linux /proc; elsewhere returns at once).
local function wait_stopped(pid)
  local deadline = T.now() + 10
  while true do
    local f = io.open("/proc/" .. pid .. "/stat", "r")
    if not f then return end
    local st = f:read("*a")
    f:close()
    local state = st:match("^%d+ %b() (%a)")
    if state == "T" or state == "t" then return end
    assert(T.now() < deadline, "process " .. pid .. " did not stop (state " .. tostring(state) .. ")")
    T.sleep(0.001)
  end
end

-- The time a child printed with stamp() on a line "<word> <time>".
local function stamp_of(line)
  return tonumber(line:match("^%S+ (%S+)$"))
end

-- A child holding n tickets of the semaphore "pool" (max_count max) in dir
-- until killed; it has said "held".
local function ticket_holder(dir, max, n)
  local c = H.spawn([[
    local s = wh.semaphore("pool", ARGS.max, { dir = ARGS.dir })
    local hs = {}
    for i = 1, ARGS.n do hs[i] = s:acquire(10) end
    say("held")
    T.sleep(120)
  ]], { dir = dir, max = max, n = n })
  c:expect("held")
  return c
end

-- A child that holds `name`, waits until somebody waits for it, then ends
-- the way ARGS.how says without releasing; says "dying <time>" first.
local HOLD_UNTIL_WAITED = [[
  local l = wh.lock(ARGS.name, { dir = ARGS.dir })
  HANDLE = l:acquire(10) -- a global: only the end of the process lets go of it
  say("held")
  wait_info(l, "waiting", 1)
  say("dying", stamp())
  local how = ARGS.how
  if how == "kill" then die()
  elseif how == "term" then T.kill(T.getpid(), T.SIGTERM) T.sleep(10)
  elseif how == "exit" then os.exit(7)
  elseif how == "exit_close" then os.exit(7, true)
  elseif how == "_exit" then T.exit(7)
  elseif how == "error" then error("boom: the holder fails")
  elseif how == "error_table" then error({ "not a string" })
  end
  error("unknown way to die: " .. tostring(how))
]]

-- The parent blocks in acquire(20) while a child holding the lock ends as
-- `how`; the lock must be ours within 2 s. Returns the child's exit status and
-- the child.
local function blocked_waiter_recovers(how)
  local dir = H.tmpdir()
  local l = wh.lock("victim", { dir = dir })
  local c = H.spawn(HOLD_UNTIL_WAITED, { dir = dir, name = "victim", how = how })
  c:expect("held")
  assert.is_nil(l:try_acquire())
  assert.are.equal(1, l:info().held)
  local h = l:acquire(20)
  local got = T.now()
  assert.is_true(h:is_held())
  local died = stamp_of(c:expect("^dying "))
  local st = c:wait()
  assert.is_true(got - died < 2, ("acquired %.3f s after the holder ended"):format(got - died))
  assert.are.equal(1, l:info().held)
  assert.is_true(h:release())
  assert.are.equal(0, l:info().held)
  assert.are.equal(0, l:info().waiting)
  return st, c
end

describe("crash safety", function()
  after_each(H.cleanup)

  describe("a holder that ends without releasing", function()
    it("SIGKILLed while the parent blocks in acquire(20): acquired within 2 s", function()
      local st = blocked_waiter_recovers("kill")
      assert.are.equal(T.SIGKILL, st.signal)
    end)

    it("SIGKILLed by another process while the parent blocks in acquire(20)", function()
      local dir = H.tmpdir()
      local l = wh.lock("victim", { dir = dir })
      local holder = H.lock_holder(dir, "victim", 120)
      local killer = H.spawn([[
        wait_info(wh.lock(ARGS.name, { dir = ARGS.dir }), "waiting", 1)
        say("killing", stamp())
        assert(T.kill(ARGS.pid, T.SIGKILL))
      ]], { dir = dir, name = "victim", pid = holder.pid })
      local h = l:acquire(20)
      local got = T.now()
      local killed = stamp_of(killer:expect("^killing "))
      killer:ok()
      assert.are.equal(T.SIGKILL, holder:wait().signal)
      assert.is_true(got - killed < 2)
      assert.are.equal(1, l:info().held)
      h:release()
    end)

    it("terminated by SIGTERM", function()
      local st = blocked_waiter_recovers("term")
      assert.are.equal(T.SIGTERM, st.signal)
    end)

    it("exiting with os.exit (no lua_close)", function()
      assert.are.equal(7, blocked_waiter_recovers("exit").code)
    end)

    it("exiting with os.exit(code, true)", function()
      assert.are.equal(7, blocked_waiter_recovers("exit_close").code)
    end)

    it("exiting with _exit (no atexit, no finalizers)", function()
      assert.are.equal(7, blocked_waiter_recovers("_exit").code)
    end)

    it("erroring out of the interpreter", function()
      local st, c = blocked_waiter_recovers("error")
      assert.are.equal(1, st.code)
      assert.is_truthy(c:output():find("boom: the holder fails", 1, true))
    end)

    it("erroring out with a non-string error value", function()
      assert.are.equal(1, blocked_waiter_recovers("error_table").code)
    end)

    it("killed before anybody waits: the next acquire gets it within 2 s", function()
      local dir = H.tmpdir()
      local l = wh.lock("victim", { dir = dir })
      local c = H.lock_holder(dir, "victim", 120)
      c:kill()
      c:wait()
      local t0 = T.now()
      local h = l:acquire(2)
      assert.is_true(T.now() - t0 < 2)
      assert.are.equal(1, l:info().held)
      h:release()
    end)

    it("killed: info().held is exact as soon as the holder is reaped", function()
      local dir = H.tmpdir()
      local l = wh.lock("victim", { dir = dir })
      local c = H.lock_holder(dir, "victim", 120)
      assert.are.equal(1, l:info().held)
      c:kill()
      c:wait()
      assert.are.equal(0, l:info().held)
      assert.are.equal(0, #l:info().holders)
    end)

    -- An attempt reclaims when abandonment_check has passed since last_reclaim, a
    -- CLOCK_MONOTONIC time in the file (offset 88, doc/FORMAT.md). A file kept across a reboot
    -- holds a value ahead of the restarted clock; a co-user may write anything (found by
    -- fuzz_object: the difference overflowed, and no attempt ever reclaimed).
    for _, case in ipairs({
      { what = "a reboot after 30 days of uptime", value = function()
        return ("%x"):format(math.floor(T.now() * 1e9) + 30 * 86400 * 1000000000) end },
      { what = "INT64_MIN, written by a co-user", value = function() return "8000000000000000" end },
    }) do
      it("killed, with last_reclaim ahead of the clock (" .. case.what .. "): reclaimed at once", function()
        local dir = H.tmpdir()
        local l = wh.lock("x", { dir = dir, abandonment_check = 0.01 })
        local c = H.lock_holder(dir, "x", 60)
        c:kill()
        c:wait()
        T.word64(l.path, 88, case.value())
        local h = l:try_acquire(1)
        assert.is_not_nil(h, "the dead holder's lock was not reclaimed within 1 s")
        h:release()
      end)
    end

    it("an async waiter in a coroutine (default sleep: yield) acquires when the holder is killed", function()
      local dir = H.tmpdir()
      local l = wh.lock("victim", { dir = dir, abandonment_check = 0.05 })
      local c = H.lock_holder(dir, "victim", 120)
      local co = coroutine.create(function() return l:acquire_async(20) end)
      local ok, delay = coroutine.resume(co)
      assert.is_true(ok, tostring(delay))
      assert.are.equal("suspended", coroutine.status(co))
      assert.are.equal("number", type(delay))
      assert.are.equal(1, l:info().waiting)
      c:kill()
      local killed = T.now()
      c:wait()
      local polls, h = 0, nil
      while true do
        T.sleep(math.min(delay, 0.05))
        local t0 = T.now()
        ok, delay = coroutine.resume(co)
        assert.is_true(T.now() - t0 < 0.5, "a poll blocked the thread")
        assert.is_true(ok, tostring(delay))
        polls = polls + 1
        if coroutine.status(co) == "dead" then
          h = delay
          break
        end
        assert.is_true(T.now() - killed < 10, "never acquired")
      end
      assert.is_true(T.now() - killed < 2)
      assert.is_true(h:is_held())
      assert.are.equal(1, l:info().held)
      assert.are.equal(0, l:info().waiting)
      h:release()
    end)

    it("an async waiter with a custom sleep acquires when the holder is killed", function()
      local dir = H.tmpdir()
      local l = wh.lock("victim", { dir = dir })
      local c = H.lock_holder(dir, "victim", 120)
      local calls, killed = 0, nil
      local h = l:acquire_async(20, { sleep = function(s)
        calls = calls + 1
        if calls == 1 then
          c:kill()
          c:wait()
          killed = T.now()
        end
        T.sleep(s)
      end })
      assert.is_true(T.now() - killed < 2)
      assert.is_true(h:is_held())
      assert.is_true(calls < 500, calls .. " polls")
      assert.are.equal(1, l:info().held)
      h:release()
    end)

    it("waiters that wait forever (acquire(), acquire(math.huge), acquire_async()) recover from a killed holder", function()
      -- one lock each, so that no waiter's recovery wakes another
      local dir = H.tmpdir()
      local code = [[
        local l = wh.lock(ARGS.name, { dir = ARGS.dir })
        local h
        if ARGS.how == "nil" then h = l:acquire()
        elseif ARGS.how == "huge" then h = l:acquire(math.huge)
        else
          local co = coroutine.create(function() return l:acquire_async() end)
          local ok, r = coroutine.resume(co)
          while coroutine.status(co) ~= "dead" do
            T.sleep(math.min(r or 0.01, 0.05))
            ok, r = coroutine.resume(co)
          end
          assert(ok, r)
          h = r
        end
        say("got")
        assert(h:release() == true)
      ]]
      local hows = { "nil", "huge", "async" }
      local holders, waiters, locks = {}, {}, {}
      for i, how in ipairs(hows) do
        local name = "forever-" .. how
        locks[i] = wh.lock(name, { dir = dir })
        holders[i] = H.lock_holder(dir, name, 120)
        waiters[i] = H.spawn(code, { dir = dir, name = name, how = how })
      end
      for i = 1, #hows do
        H.await(waiters[i], function() return locks[i]:info().waiting == 1 end, hows[i] .. " waits")
      end
      for i = 1, #hows do
        holders[i]:kill()
        holders[i]:wait()
      end
      for i = 1, #hows do
        waiters[i]:expect("got", 5)
        waiters[i]:ok(5)
        assert.are.equal(0, locks[i]:info().held)
        assert.are.equal(0, locks[i]:info().waiting)
      end
    end)

    it("a process killed holding several objects (acquire_all, a ticket, a read) gives all of them back", function()
      local dir = H.tmpdir()
      local c = H.spawn([[
        local p = wh.provider({ dir = ARGS.dir })
        ALL = p:acquire_all({ "a", "b", "c" }, 5)
        TICKET = p:semaphore("s", 1):acquire(5)
        READ = p:rwlock("rw"):acquire_read(5)
        say("held")
        T.sleep(120)
      ]], { dir = dir })
      c:expect("held")
      local p = wh.provider({ dir = dir })
      assert.is_nil(p:try_acquire_all({ "a" }))
      assert.is_nil(p:try_acquire_all({ "c" }))
      assert.is_nil(p:semaphore("s", 1):try_acquire())
      assert.is_nil(p:rwlock("rw"):try_acquire_write())
      c:kill()
      c:wait()
      local all = p:acquire_all({ "c", "b", "a" }, 2)
      local t = p:semaphore("s", 1):acquire(2)
      local w = p:rwlock("rw"):acquire_write(2)
      for _, n in ipairs({ "a", "b", "c" }) do assert.are.equal(1, p:lock(n):info().held) end
      assert.is_true(all:release())
      t:release()
      w:release()
      for _, n in ipairs({ "a", "b", "c" }) do assert.are.equal(0, p:lock(n):info().held) end
      assert.are.equal(0, p:semaphore("s", 1):info().held)
      assert.are.equal(0, p:rwlock("rw"):info().held)
    end)

    it("20 kill/recover cycles stay within bounds and leave info().held exact", function()
      local dir = H.tmpdir()
      local l = wh.lock("cycles", { dir = dir })
      for i = 1, 20 do
        local c
        if i % 2 == 0 then
          -- killed while nobody waits
          c = H.lock_holder(dir, "cycles", 120)
          assert.is_nil(l:try_acquire())
          assert.are.equal(1, l:info().held)
          c:kill()
          c:wait()
          assert.are.equal(0, l:info().held)
          local t0 = T.now()
          local h = l:acquire(2)
          assert.is_true(T.now() - t0 < 2, "cycle " .. i)
          assert.are.equal(1, l:info().held)
          assert.is_true(h:release())
        else
          -- kills itself once we block
          c = H.spawn(HOLD_UNTIL_WAITED, { dir = dir, name = "cycles", how = "kill" })
          c:expect("held")
          assert.are.equal(1, l:info().held)
          local h = l:acquire(20)
          local got = T.now()
          local died = stamp_of(c:expect("^dying "))
          c:wait()
          assert.is_true(got - died < 2, "cycle " .. i)
          assert.are.equal(1, l:info().held)
          assert.is_true(h:release())
        end
        local info = l:info()
        assert.are.equal(0, info.held, "cycle " .. i)
        assert.are.equal(0, info.waiting, "cycle " .. i)
      end
    end)
  end)

  describe("many deaths", function()
    -- Registry slots are handed out round-robin, 64 per shard: after 70 deaths the
    -- dead holders' own slots come round again, with their stale holds in place.
    local function chain(kind)
      local dir = H.tmpdir()
      local o = kind == "lock" and wh.lock("chain", { dir = dir }) or wh.semaphore("chain", 3, { dir = dir })
      local mine = kind == "semaphore" and o:acquire(1) or nil -- the parent keeps one ticket
      local base = mine and 1 or 0
      local code = [[
        local o
        if ARGS.kind == "lock" then o = wh.lock("chain", { dir = ARGS.dir })
        else o = wh.semaphore("chain", 3, { dir = ARGS.dir }) end
        local t0 = T.now()
        HOLD = { o:acquire(2) }
        if ARGS.kind == "semaphore" then HOLD[2] = o:acquire(2) end
        say("held", string.format("%.3f", T.now() - t0), o:info().held)
        die()
      ]]
      for i = 1, 70 do
        local c = H.spawn(code, { dir = dir, kind = kind })
        local took, held = c:expect("^held "):match("^held (%S+) (%d+)$")
        assert.is_true(tonumber(took) < 2, ("link %d took %s s"):format(i, took))
        assert.are.equal(base + (kind == "lock" and 1 or 2), tonumber(held), "link " .. i)
        assert.are.equal(T.SIGKILL, c:wait().signal)
        assert.are.equal(base, o:info().held, "after link " .. i)
      end
      if mine then
        local a, b = o:acquire(2), o:acquire(2)
        assert.is_nil(o:try_acquire())
        a:release()
        b:release()
        mine:release()
      else
        o:acquire(2):release()
      end
      assert.are.equal(0, o:info().held)
    end

    it("70 holders in a row die holding a lock; each successor gets in and held stays exact", function()
      chain("lock")
    end)

    it("70 holders in a row die holding 2 semaphore tickets; each successor gets in and held stays exact", function()
      chain("semaphore")
    end)

    -- doc/FORMAT.md: shard .registry-00 has the advisory `hint` (u32) at offset
    -- 28 and slot i's pid (u32) at 72 + 64 i. Steering the hint at a dead
    -- holder's slot makes its successor reuse that slot while the dead
    -- generation's holds are still recorded and nobody else has looked.
    local function u32_at(s, off)
      local a, b, c, d = s:byte(off + 1, off + 4)
      return a + b * 256 + c * 65536 + d * 16777216
    end

    local function slot_of(dir, pid)
      local f = assert(io.open(dir .. "/.registry-00", "rb"))
      local s = f:read("*a")
      f:close()
      for i = 0, 63 do
        if u32_at(s, 72 + 64 * i) == pid then return i end
      end
    end

    local function reuse(kind)
      local dir = H.tmpdir()
      local code = [[
        local o
        if ARGS.kind == "lock" then o = wh.lock("reuse", { dir = ARGS.dir })
        else o = wh.semaphore("reuse", 2, { dir = ARGS.dir }) end
        local t0 = T.now()
        HOLD = { o:acquire(3) }
        if ARGS.kind == "semaphore" then HOLD[2] = o:acquire(3) end
        say("held", T.getpid(), string.format("%.3f", T.now() - t0), o:info().held)
        if ARGS.die then die() end
      ]]
      local first = H.spawn(code, { dir = dir, kind = kind, die = true })
      local pid = tonumber(first:expect("^held "):match("^held (%d+)"))
      first:wait()
      local slot = slot_of(dir, pid)
      assert.is_truthy(slot, "the dead holder's slot")
      local f = assert(io.open(dir .. "/.registry-00", "r+b"))
      f:seek("set", 28)
      f:write(string.char(slot, 0, 0, 0))
      f:close()
      local second = H.spawn(code, { dir = dir, kind = kind })
      local pid2, took, held = second:expect("^held "):match("^held (%d+) (%S+) (%d+)$")
      second:ok()
      if slot_of(dir, tonumber(pid2)) ~= slot then
        pending("the successor did not take the dead holder's slot (the hint is only advisory)")
        return
      end
      assert.is_true(tonumber(took) < 2, "took " .. took .. " s")
      assert.are.equal(kind == "lock" and 1 or 2, tonumber(held))
    end

    it("a successor in a dead holder's registry slot gets the lock (a stale generation)", function()
      reuse("lock")
    end)

    it("a successor in a dead holder's registry slot gets both semaphore tickets, counted once", function()
      reuse("semaphore")
    end)

    it("holders dying amid 6 contending waiters never break exclusion", function()
      local dir = H.tmpdir()
      local f = assert(io.open(dir .. "/counter.txt", "w"))
      f:write("0")
      f:close()
      local worker = [[
        local l = wh.lock("amid", { dir = ARGS.dir, abandonment_check = 0.02 })
        local path, mark = ARGS.dir .. "/counter.txt", ARGS.dir .. "/inside"
        say("ready")
        wait_file(ARGS.dir .. "/go")
        for i = 1, 25 do
          local h = l:acquire(60)
          if exists(mark) then error("two processes inside at once") end
          touch(mark)
          local f = assert(io.open(path, "r"))
          local v = assert(tonumber(f:read("*a")), "torn counter")
          f:close()
          T.sleep(0.0002)
          f = assert(io.open(path, "w"))
          f:write(tostring(v + 1))
          f:close()
          assert(os.remove(mark))
          assert(h:release() == true)
        end
        say("done")
      ]]
      local ws = {}
      for i = 1, 6 do ws[i] = H.spawn(worker, { dir = dir }) end
      for i = 1, 6 do ws[i]:expect("ready") end
      H.touch(dir .. "/go")
      -- meanwhile, holders that get the lock among them and die holding it
      for i = 1, 10 do
        local c = H.spawn([[
          HOLD = wh.lock("amid", { dir = ARGS.dir, abandonment_check = 0.02 }):acquire(30)
          die()
        ]], { dir = dir })
        assert.are.equal(T.SIGKILL, c:wait(40).signal, "a dying holder did not get the lock: " .. c:output())
      end
      for i = 1, 6 do ws[i]:expect("done", 60) end
      for i = 1, 6 do ws[i]:ok() end
      local g = assert(io.open(dir .. "/counter.txt", "r"))
      assert.are.equal("150", g:read("*a"))
      g:close()
      local info = wh.lock("amid", { dir = dir }):info()
      assert.are.equal(0, info.held)
      assert.are.equal(0, info.waiting)
    end)
  end)

  describe("semaphores and rwlocks", function()
    it("tickets of killed holders come back, and info().held counts exactly", function()
      local dir = H.tmpdir()
      local sem = wh.semaphore("pool", 3, { dir = dir })
      local a = ticket_holder(dir, 3, 2)
      local b = ticket_holder(dir, 3, 1)
      assert.are.equal(3, sem:info().held)
      assert.is_nil(sem:try_acquire())
      a:kill()
      a:wait()
      assert.are.equal(1, sem:info().held)
      local t1 = sem:acquire(2)
      local t2 = sem:acquire(2)
      assert.is_nil(sem:try_acquire())
      assert.are.equal(3, sem:info().held)
      b:kill()
      b:wait()
      assert.are.equal(2, sem:info().held)
      local t3 = sem:acquire(2)
      assert.are.equal(3, sem:info().held)
      t1:release()
      t2:release()
      t3:release()
      assert.are.equal(0, sem:info().held)
    end)

    it("10 semaphore kill cycles with 1..3 tickets per victim keep the count exact", function()
      local dir = H.tmpdir()
      local sem = wh.semaphore("pool", 4, { dir = dir })
      local mine = sem:acquire(1) -- the parent keeps one ticket throughout
      for i = 1, 10 do
        local n = (i % 3) + 1
        local c = ticket_holder(dir, 4, n)
        assert.are.equal(1 + n, sem:info().held, "cycle " .. i)
        c:kill()
        c:wait()
        assert.are.equal(1, sem:info().held, "cycle " .. i)
      end
      local hs = {}
      for i = 1, 3 do hs[i] = sem:acquire(2) end
      assert.is_nil(sem:try_acquire())
      for i = 1, 3 do hs[i]:release() end
      mine:release()
      assert.are.equal(0, sem:info().held)
    end)

    it("killed readers: held counts down exactly, then a writer gets in", function()
      local dir = H.tmpdir()
      local rw = wh.rwlock("rw", { dir = dir })
      local cs = {}
      for i = 1, 3 do
        cs[i] = H.spawn([[
          local h = wh.rwlock("rw", { dir = ARGS.dir }):acquire_read(10)
          say("held")
          T.sleep(120)
        ]], { dir = dir })
        cs[i]:expect("held")
      end
      assert.are.equal(3, rw:info().held)
      assert.are.equal(3, rw:info().readers)
      assert.is_nil(rw:try_acquire_write())
      for i = 1, 3 do
        cs[i]:kill()
        cs[i]:wait()
        assert.are.equal(3 - i, rw:info().held)
      end
      local w = rw:acquire_write(2)
      assert.is_true(rw:info().writer)
      w:release()
      assert.are.equal(0, rw:info().held)
    end)

    it("a killed writer: a reader blocked in acquire_read(20) gets in within 2 s", function()
      local dir = H.tmpdir()
      local rw = wh.rwlock("rw", { dir = dir })
      local c = H.spawn([[
        local rw = wh.rwlock("rw", { dir = ARGS.dir })
        HANDLE = rw:acquire_write(10)
        say("held")
        wait_info(rw, "waiting", 1)
        say("dying", stamp())
        die()
      ]], { dir = dir })
      c:expect("held")
      assert.is_true(rw:info().writer)
      local r = rw:acquire_read(20)
      local got = T.now()
      local died = stamp_of(c:expect("^dying "))
      c:wait()
      assert.is_true(got - died < 2)
      local info = rw:info()
      assert.is_false(info.writer)
      assert.are.equal(1, info.held)
      r:release()
    end)

    it("a killed upgraded holder: a writer blocked in acquire_write(20) gets in within 2 s", function()
      local dir = H.tmpdir()
      local rw = wh.rwlock("rw", { dir = dir })
      local c = H.spawn([[
        local rw = wh.rwlock("rw", { dir = ARGS.dir })
        HANDLE = rw:acquire_upgradeable_read(10)
        HANDLE:upgrade(10)
        say("held")
        wait_info(rw, "waiting", 1)
        say("dying", stamp())
        die()
      ]], { dir = dir })
      c:expect("held")
      local info = rw:info()
      assert.is_true(info.writer)
      assert.is_true(info.upgradeable)
      local w = rw:acquire_write(20)
      local got = T.now()
      local died = stamp_of(c:expect("^dying "))
      c:wait()
      assert.is_true(got - died < 2)
      info = rw:info()
      assert.is_true(info.writer)
      assert.is_false(info.upgradeable)
      w:release()
      info = rw:info()
      assert.are.equal(0, info.held)
      assert.is_false(info.writer)
      -- and the upgradeable read is free again
      local u = rw:try_acquire_upgradeable_read()
      assert.is_truthy(u)
      u:release()
    end)
  end)

  describe("a waiter killed while blocked", function()
    it("leaves no lasting trace: waiting returns to 0 within 2 s and others acquire promptly", function()
      local dir = H.tmpdir()
      local l = wh.lock("w", { dir = dir })
      local h = l:acquire(1)
      local code = [[
        local l = wh.lock("w", { dir = ARGS.dir })
        say("waiting")
        local h = acquire(l, 60, ARGS.async)
        say("got", stamp())
        wait_file(ARGS.dir .. "/done")
        h:release()
      ]]
      local blocked = H.spawn(code, { dir = dir })
      local polling = H.spawn(code, { dir = dir, async = true })
      blocked:expect("waiting")
      polling:expect("waiting")
      H.await({ blocked, polling }, function() return l:info().waiting == 2 end, "two waiters")
      blocked:kill()
      polling:kill()
      blocked:wait()
      polling:wait()
      local t0 = T.now()
      H.eventually(function() return l:info().waiting == 0 end, 2, "the dead waiters' entries go")
      assert.is_true(T.now() - t0 < 2)
      -- a new waiter gets the lock promptly once it is released
      local newcomer = H.spawn(code, { dir = dir })
      newcomer:expect("waiting")
      H.await(newcomer, function() return l:info().waiting == 1 end, "the new waiter")
      local released = T.now()
      h:release()
      local got = stamp_of(newcomer:expect("^got "))
      assert.is_true(got - released < 2)
      assert.is_nil(l:try_acquire())
      H.touch(dir .. "/done")
      newcomer:ok()
      local h2 = l:acquire(1)
      h2:release()
      assert.are.equal(0, l:info().held)
      assert.are.equal(0, l:info().waiting)
    end)

    it("a dead waiter's fairness claim never refuses try_acquire(0) on a free lock", function()
      local dir = H.tmpdir()
      local ac = 0.1
      local l = wh.lock("w", { dir = dir, abandonment_check = ac })
      for round = 1, 5 do
        local h = l:acquire(1)
        -- the waiter's own check interval is long, so its lease (interval + 0.5 s)
        -- outlives the bound below: only reclamation can end the refusals in time
        local c = H.spawn([[
          local l = wh.lock("w", { dir = ARGS.dir, abandonment_check = 2 })
          say("waiting")
          l:acquire(60)
          say("got")
        ]], { dir = dir })
        c:expect("waiting")
        H.await(c, function() return l:info().waiting == 1 end, "the waiter")
        T.sleep(0.03) -- let the waiter age past the barging bound (not a synchronisation)
        l:info()
        c:kill()
        c:wait()
        h:release()
        -- nobody holds it and its only waiter is dead: the very first try succeeds
        -- (API.md: try_*(0) on a free object never returns a spurious nil)
        local h2 = l:try_acquire(0)
        assert.is_truthy(h2, ("round %d: a free lock was refused"):format(round))
        h2:release()
      end
    end)

    it("a killed waiting writer withdraws its claim: readers get in within 2 s", function()
      local dir = H.tmpdir()
      local rw = wh.rwlock("rw", { dir = dir })
      local r = rw:acquire_read(1)
      local c = H.spawn([[
        local rw = wh.rwlock("rw", { dir = ARGS.dir })
        say("waiting")
        rw:acquire_write(60)
        say("got")
      ]], { dir = dir })
      c:expect("waiting")
      H.await(c, function() return rw:info().waiting_writers == 1 end, "the writer waits")
      -- writer preference while it lives
      assert.is_nil(rw:try_acquire_read())
      c:kill()
      c:wait()
      local t0 = T.now()
      local r2 = rw:acquire_read(2)
      assert.is_true(T.now() - t0 < 2)
      local info = rw:info()
      assert.are.equal(0, info.waiting_writers)
      assert.are.equal(2, info.held)
      r2:release()
      r:release()
    end)

    it("a dead waiting writer's claim never refuses try_acquire_read(0)", function()
      local dir = H.tmpdir()
      local ac = 0.1
      local rw = wh.rwlock("rw", { dir = dir, abandonment_check = ac })
      local r = rw:acquire_read(1)
      local c = H.spawn([[
        local rw = wh.rwlock("rw", { dir = ARGS.dir, abandonment_check = 2 }) -- lease 2.5 s
        say("waiting")
        rw:acquire_write(60)
      ]], { dir = dir })
      c:expect("waiting")
      H.await(c, function() return rw:info().waiting_writers == 1 end, "the writer waits")
      assert.is_nil(rw:try_acquire_read(0))
      c:kill()
      c:wait()
      local r2 = rw:try_acquire_read(0)
      assert.is_truthy(r2, "a read was refused because of a dead writer's claim")
      r2:release()
      r:release()
    end)
  end)

  describe("killed at a random point of its work", function()
    local function hammer(kind)
      local dir = H.tmpdir()
      local code = [[
        local kind = ARGS.kind
        local o
        if kind == "lock" then o = wh.lock("ham", { dir = ARGS.dir })
        elseif kind == "semaphore" then o = wh.semaphore("ham", 2, { dir = ARGS.dir })
        else o = wh.rwlock("ham", { dir = ARGS.dir }) end
        local i = 0
        while true do
          i = i + 1
          local h
          if kind == "rwlock" then
            local m = i % 3
            if m == 0 then h = o:try_acquire_read()
            elseif m == 1 then h = o:try_acquire_write()
            else
              h = o:try_acquire_upgradeable_read()
              if h then h:try_upgrade() end
            end
          else
            h = o:try_acquire()
          end
          if i % 4 == 0 then o:info() end -- a longer stay in the guard (reclaim scans)
          if i == 200 then say("going") end
          if h then h:release() end
        end
      ]]
      local o
      if kind == "lock" then o = wh.lock("ham", { dir = dir })
      elseif kind == "semaphore" then o = wh.semaphore("ham", 2, { dir = dir })
      else o = wh.rwlock("ham", { dir = dir }) end
      for i = 1, 12 do
        local a = H.spawn(code, { dir = dir, kind = kind })
        local b = H.spawn(code, { dir = dir, kind = kind })
        a:expect("going")
        b:expect("going")
        T.sleep((i % 4) * 0.001) -- only varies the moment of death
        a:kill()
        b:kill()
        a:wait()
        b:wait()
        -- whatever they were doing (even holding the guard), everything is free again
        local t0 = T.now()
        local h
        if kind == "rwlock" then h = o:acquire_write(2) else h = o:acquire(2) end
        assert.is_true(T.now() - t0 < 2, kind .. " round " .. i)
        assert.are.equal(1, o:info().held, kind .. " round " .. i)
        h:release()
        local info = o:info()
        assert.are.equal(0, info.held, kind .. " round " .. i)
        assert.are.equal(0, info.waiting, kind .. " round " .. i)
      end
      if kind == "semaphore" then
        local t1, t2 = o:acquire(1), o:acquire(1)
        assert.is_nil(o:try_acquire())
        t1:release()
        t2:release()
      elseif kind == "rwlock" then
        local u = o:acquire_upgradeable_read(1)
        assert.is_true(u:try_upgrade(1))
        u:release()
        local info = o:info()
        assert.is_false(info.writer)
        assert.is_false(info.upgradeable)
        assert.are.equal(0, info.readers)
      end
    end

    it("a lock", function() hammer("lock") end)
    it("a semaphore", function() hammer("semaphore") end)
    it("an rwlock (read, write, upgrade)", function() hammer("rwlock") end)
  end)

  describe("a stopped process is alive", function()
    it("a SIGSTOPped holder keeps the lock past 3 x abandonment_check; after SIGCONT + release others get it", function()
      local dir = H.tmpdir()
      local ac = 0.05
      local l = wh.lock("stop", { dir = dir, abandonment_check = ac })
      local c = H.spawn([[
        local h = wh.lock("stop", { dir = ARGS.dir }):acquire(10)
        say("held")
        wait_file(ARGS.dir .. "/release")
        assert(h:release() == true)
        say("released")
        T.sleep(120)
      ]], { dir = dir })
      c:expect("held")
      assert.is_true(c:kill(T.SIGSTOP))
      wait_stopped(c.pid)
      assert.is_nil(l:try_acquire(0))
      local t0 = T.now()
      assert.is_nil(l:try_acquire(4 * ac))
      assert.is_true(T.now() - t0 >= 4 * ac - 0.01)
      local ok, err = pcall(l.acquire, l, 4 * ac)
      assert.is_false(ok)
      assert.are.equal("timeout", err.code)
      assert.is_nil(l:try_acquire(0))
      assert.are.equal(1, l:info().held)
      -- a blocked waiter elsewhere does not take it either
      local other = H.spawn([[
        local l = wh.lock("stop", { dir = ARGS.dir, abandonment_check = 0.05 })
        say(l:try_acquire(0.3) and "stolen" or "busy")
      ]], { dir = dir })
      assert.are.equal("busy", other:line(10))
      other:ok()
      assert.is_true(c:kill(T.SIGCONT))
      H.touch(dir .. "/release")
      c:expect("released")
      local h = l:acquire(2)
      assert.is_true(h:is_held())
      assert.are.equal(1, l:info().held)
      h:release()
    end)

    it("a holder stopped at random points of a tight loop never blocks try_acquire(0) for long", function()
      local dir = H.tmpdir()
      local l = wh.lock("loop", { dir = dir, abandonment_check = 0.05 })
      local c = H.spawn([[
        local l = wh.lock("loop", { dir = ARGS.dir })
        local n, stop = 0, ARGS.dir .. "/stop"
        say("going")
        while true do
          for i = 1, 1000 do
            local h = l:try_acquire()
            if h then n = n + 1 h:release() end
          end
          if exists(stop) then break end
        end
        say("count", n)
      ]], { dir = dir })
      c:expect("going")
      for i = 1, 10 do
        T.sleep(0.002 * (i % 3)) -- only varies where it stops
        assert.is_true(c:kill(T.SIGSTOP))
        wait_stopped(c.pid)
        local t0 = T.now()
        local h = l:try_acquire(0)
        assert.is_true(T.now() - t0 < 0.5, "try_acquire(0) blocked behind a stopped process")
        t0 = T.now()
        local h2 = l:try_acquire(0.2)
        assert.is_true(T.now() - t0 < 1.5)
        t0 = T.now()
        local info = l:info()
        assert.is_true(T.now() - t0 < 2)
        assert.is_true(info.held <= 1)
        if h then h:release() end
        if h2 then h2:release() end
        assert.is_true(c:kill(T.SIGCONT))
      end
      H.touch(dir .. "/stop")
      local n = tonumber(c:expect("^count "):match("%d+"))
      c:ok()
      assert.is_true(n > 0)
      local h = l:acquire(2)
      h:release()
      assert.are.equal(0, l:info().held)
    end)

    it("a SIGSTOPped waiter does not block others for long, and waits on after SIGCONT", function()
      local dir = H.tmpdir()
      local l = wh.lock("sw", { dir = dir })
      local h = l:acquire(1)
      local w = H.spawn([[
        local l = wh.lock("sw", { dir = ARGS.dir })
        say("waiting")
        local h = l:acquire(60)
        say("got")
        h:release()
      ]], { dir = dir })
      w:expect("waiting")
      H.await(w, function() return l:info().waiting == 1 end, "the waiter")
      assert.is_true(w:kill(T.SIGSTOP))
      wait_stopped(w.pid)
      h:release()
      local t0 = T.now()
      local h2 = l:acquire(3)
      assert.is_true(T.now() - t0 < 3)
      assert.is_true(w:kill(T.SIGCONT))
      assert.is_nil(w:line(0.3)) -- we hold it: the waiter must not have it
      h2:release()
      w:expect("got")
      w:ok()
      assert.are.equal(0, l:info().held)
    end)
  end)

  describe("another user's process", function()
    it("a holder running as uid 65534, SIGKILLed, is recovered by root", function()
      if not H.is_root then
        pending("needs root to run a child as uid 65534")
        return
      end
      local base = H.tmpdir()
      assert.is_true(T.chmod(base, 493)) -- 0755: uid 65534 may enter
      local dir = base .. "/shared"
      os.execute("mkdir -m 1777 " .. dir)
      local st = T.stat(dir)
      assert.are.equal("directory", st and st.type)
      assert.are.equal(1023, st.mode)
      local l = wh.lock("x", { dir = dir })
      local c = H.spawn([[
        assert(T.seteuid(65534), "seteuid")
        local ok, err = pcall(function()
          HANDLE = wh.lock("x", { dir = ARGS.dir }):acquire(10)
        end)
        assert(T.seteuid(0), "restore euid")
        if not ok then error(err) end
        say("held")
        T.sleep(120)
      ]], { dir = dir })
      c:expect("held")
      assert.is_nil(l:try_acquire())
      assert.are.equal(1, l:info().held)
      c:kill()
      c:wait()
      local h = l:acquire(2)
      assert.is_true(h:is_held())
      h:release()
    end)
  end)
end)
