-- Exclusion and hand-over between processes: child interpreters hold, wait
-- for and pass on locks, semaphores and rwlocks; the parent checks what it
-- can and cannot get. Children coordinate through files in the lock
-- directory and through the objects themselves, never through sleeps.
local H = require "helpers"
local wh = require "waithandles"
local T = H.whtest

describe("across processes", function()
  after_each(H.cleanup)

  it("a lock held by a child excludes the parent; released, it passes to the parent blocked in acquire", function()
    local dir = H.tmpdir()
    local l = wh.lock("x", { dir = dir })
    local c = H.spawn([[
      local l = wh.lock("x", { dir = ARGS.dir })
      local h = assert(l:try_acquire())
      say("held")
      wait_file(ARGS.dir .. "/parent-blocks")
      wait_info(l, "waiting", 1) -- the parent waits in acquire(10) now
      assert(h:is_held() == true)
      say("releasing")
      assert(h:release() == true)
      assert(h:release() == false)
      say("released")
    ]], { dir = dir })
    c:expect("held")
    assert.is_nil(l:try_acquire())
    assert.is_nil(l:try_acquire(0.2))
    local ok, err = pcall(l.acquire, l, 0.2)
    assert.is_false(ok)
    assert.are.equal("table", type(err))
    assert.are.equal("timeout", err.code)
    local info = l:info()
    assert.are.equal(1, info.held)
    assert.are.equal(0, info.waiting)
    assert.is_true(#info.holders <= 1)
    if #info.holders == 1 then assert.are.equal(c.pid, info.holders[1].pid) end

    H.touch(dir .. "/parent-blocks")
    local h = l:acquire(10)
    assert.is_true(h:is_held())
    c:expect("released")
    c:ok()
    -- the parent holds it now: a third process is excluded
    assert.are.equal("busy", H.probe_lock(dir, "x"))
    assert.are.equal(1, l:info().held)
    assert.is_true(h:release())
    assert.are.equal("acquired", H.probe_lock(dir, "x"))
    assert.are.equal(0, l:info().held)
  end)

  it("a lock held by the parent excludes a child, which gets it once the parent releases", function()
    local dir = H.tmpdir()
    local l = wh.lock("y", { dir = dir })
    local h = assert(l:try_acquire())
    local c = H.spawn([[
      local l = wh.lock("y", { dir = ARGS.dir })
      say(l:try_acquire() == nil and "busy" or "acquired")
      local ok, err = pcall(l.acquire, l, 0.1)
      say(ok and "acquired" or err.code)
      local h = l:acquire(20)
      say("got")
      wait_file(ARGS.dir .. "/go")
      assert(h:release() == true)
      say("done")
    ]], { dir = dir })
    c:expect("busy")
    c:expect("timeout")
    H.await(c, function() return l:info().waiting == 1 end, "the child waits")
    assert.is_true(h:release())
    c:expect("got")
    assert.is_nil(l:try_acquire())
    assert.are.equal(1, l:info().held)
    H.touch(dir .. "/go")
    c:expect("done")
    c:ok()
    local h2 = l:try_acquire()
    assert.is_truthy(h2)
    h2:release()
  end)

  it("hands a lock over to a waiter blocked in another process, and to an async poller", function()
    local dir = H.tmpdir()
    local l = wh.lock("z", { dir = dir })
    local h = assert(l:try_acquire())
    local code = [[
      local l = wh.lock("z", { dir = ARGS.dir })
      local h
      if ARGS.async then
        local polls = 0
        h = l:acquire_async(20, { sleep = function(s) polls = polls + 1 T.sleep(s) end })
        assert(polls > 0, "the async waiter never slept")
      else
        h = l:acquire(20)
      end
      say("got it")
      wait_file(ARGS.dir .. "/pass-" .. ARGS.me)
      assert(h:release() == true)
    ]]
    local w = {
      blocking = H.spawn(code, { dir = dir, me = "blocking", async = false }),
      async = H.spawn(code, { dir = dir, me = "async", async = true }),
    }
    H.await({ w.blocking, w.async }, function() return l:info().waiting == 2 end, "two waiters")
    assert.is_nil(l:try_acquire())
    assert.is_true(h:release())
    -- exactly one of them gets it; the other only once it is passed on
    local first, second
    local deadline = T.now() + 10
    while first == nil and T.now() < deadline do
      if w.blocking:line(0.01) == "got it" then first, second = "blocking", "async" end
      if first == nil and w.async:line(0.01) == "got it" then first, second = "async", "blocking" end
    end
    assert.is_truthy(first, "nobody got the lock")
    assert.is_nil(w[second]:line(0.2))
    assert.is_nil(l:try_acquire())
    assert.are.equal(1, l:info().held)
    assert.are.equal(1, l:info().waiting)
    H.touch(dir .. "/pass-" .. first)
    w[first]:ok()
    w[second]:expect("got it")
    assert.is_nil(l:try_acquire())
    H.touch(dir .. "/pass-" .. second)
    w[second]:ok()
    assert.are.equal(0, l:info().held)
    assert.are.equal(0, l:info().waiting)
  end)

  it("an async poller whose sleep is a C function gets the lock when another process releases it", function()
    local dir = H.tmpdir()
    local l = wh.lock("c", { dir = dir })
    local h = assert(l:try_acquire())
    local c = H.spawn([[
      local l = wh.lock("c", { dir = ARGS.dir })
      local h = l:acquire_async(20, { sleep = T.sleep }) -- a C function, as ngx.sleep is
      say("got it")
      h:release()
    ]], { dir = dir })
    H.await(c, function() return l:info().waiting == 1 end, "the poller to wait")
    assert.is_true(h:release())
    c:expect("got it")
    c:ok()
    assert.are.equal(0, l:info().held)
  end)

  -- n processes x iters increments of a counter file, read-modify-write with a yield
  -- in the middle; `async(i)` says whether process i polls with acquire_async.
  local function counter_run(nproc, iters, async)
    local dir = H.tmpdir()
    local counter = dir .. "/counter.txt"
    H.write_file(counter, "0")
    local code = [[
      local l = wh.lock("counter", { dir = ARGS.dir })
      local path = ARGS.dir .. "/counter.txt"
      say("ready")
      wait_file(ARGS.dir .. "/go")
      for i = 1, ARGS.n do
        local h = acquire(l, 60, ARGS.async)
        local v = tonumber(read_file(path))
        if v == nil then error("torn counter file at iteration " .. i) end
        T.sleep(0.00005) -- a deliberate yield inside the critical section
        write_file(path, tostring(v + 1))
        if h:release() ~= true then error("release did not release") end
      end
      say("done")
    ]]
    local cs = {}
    for i = 1, nproc do
      cs[i] = H.spawn(code, { dir = dir, n = iters, async = async(i) })
    end
    for i = 1, nproc do cs[i]:expect("ready") end
    H.touch(dir .. "/go")
    for i = 1, nproc do cs[i]:expect("done", 60) end
    for i = 1, nproc do cs[i]:ok() end
    assert.are.equal(tostring(nproc * iters), H.read_file(counter))
    local info = wh.lock("counter", { dir = dir }):info()
    assert.are.equal(0, info.held)
    assert.are.equal(0, info.waiting)
  end

  it("8 processes x 200 read-modify-write increments under the lock end at exactly 1600", function()
    counter_run(8, 200, function() return false end)
  end)

  it("4 blocking waiters and 4 async pollers x 100 increments end at exactly 800", function()
    counter_run(8, 100, function(i) return i % 2 == 0 end)
  end)

  it("a semaphore with max_count 2 never admits more than 2 processes at once", function()
    local dir = H.tmpdir()
    H.write_file(dir .. "/inside.txt", "0 0")
    local cs = {}
    for i = 1, 6 do
      cs[i] = H.spawn([[
        local sem = wh.semaphore("pool", 2, { dir = ARGS.dir })
        local meta = wh.lock("meta", { dir = ARGS.dir })
        local path = ARGS.dir .. "/inside.txt"
        local function change(d)
          local m = meta:acquire(30)
          local now, max = read_file(path):match("^(%d+) (%d+)$")
          now, max = tonumber(now) + d, tonumber(max)
          if now > max then max = now end
          write_file(path, now .. " " .. max)
          m:release()
        end
        say("ready")
        wait_file(ARGS.dir .. "/go")
        for i = 1, 40 do
          local t = sem:acquire(30)
          change(1)
          T.sleep(0.0002)
          change(-1)
          assert(t:release() == true)
        end
        say("done")
      ]], { dir = dir })
    end
    for i = 1, 6 do cs[i]:expect("ready") end
    H.touch(dir .. "/go")
    for i = 1, 6 do cs[i]:expect("done", 60) end
    for i = 1, 6 do cs[i]:ok() end
    local now, max = H.read_file(dir .. "/inside.txt"):match("^(%d+) (%d+)$")
    assert.are.equal("0", now)
    assert.is_true(tonumber(max) >= 1 and tonumber(max) <= 2, "max inside: " .. max)
    local info = wh.semaphore("pool", 2, { dir = dir }):info()
    assert.are.equal(0, info.held)
    assert.are.equal(2, info.max_count)
  end)

  it("rwlock writers exclude each other and readers across processes", function()
    local dir = H.tmpdir()
    H.write_file(dir .. "/data.txt", "0")
    local writer = [[
      local rw = wh.rwlock("data", { dir = ARGS.dir })
      local path = ARGS.dir .. "/data.txt"
      say("ready")
      wait_file(ARGS.dir .. "/go")
      for i = 1, 100 do
        local h = rw:acquire_write(60)
        local v = tonumber(read_file(path))
        if v == nil then error("torn data file") end
        local f = assert(io.open(path, "w")) -- truncated: readers must never see this
        T.sleep(0.00005)
        f:write(tostring(v + 1))
        f:close()
        assert(h:release() == true)
      end
      say("done")
    ]]
    local reader = [[
      local rw = wh.rwlock("data", { dir = ARGS.dir })
      local path = ARGS.dir .. "/data.txt"
      say("ready")
      wait_file(ARGS.dir .. "/go")
      local last = 0
      for i = 1, 100 do
        local h = rw:acquire_read(60)
        local v = tonumber(read_file(path))
        if v == nil then error("a reader saw a half-written file") end
        if v < last then error("went backwards") end
        last = v
        assert(h:release() == true)
      end
      say("done")
    ]]
    local cs = {}
    for i = 1, 3 do cs[#cs + 1] = H.spawn(writer, { dir = dir }) end
    for i = 1, 3 do cs[#cs + 1] = H.spawn(reader, { dir = dir }) end
    for _, c in ipairs(cs) do c:expect("ready") end
    H.touch(dir .. "/go")
    for _, c in ipairs(cs) do c:expect("done", 60) end
    for _, c in ipairs(cs) do c:ok() end
    assert.are.equal("300", H.read_file(dir .. "/data.txt"))
    local info = wh.rwlock("data", { dir = dir }):info()
    assert.are.equal(0, info.held)
    assert.is_false(info.writer)
    assert.are.equal(0, info.waiting_writers)
  end)

  it("two processes alternate hand-over 2 x 200 times in strict turn", function()
    local dir = H.tmpdir()
    H.write_file(dir .. "/turn", "A")
    H.write_file(dir .. "/log", "")
    local code = [[
      local l = wh.lock("pingpong", { dir = ARGS.dir })
      local turn, log = ARGS.dir .. "/turn", ARGS.dir .. "/log"
      say("ready")
      wait_file(ARGS.dir .. "/go")
      local done = 0
      while done < ARGS.n do
        local h = l:acquire(30)
        if read_file(turn) == ARGS.me then
          local f = assert(io.open(log, "a"))
          f:write(ARGS.me)
          f:close()
          write_file(turn, ARGS.other)
          done = done + 1
          h:release()
        else
          h:release()
          T.sleep(0.0002) -- not our turn: let the other one in (speed only)
        end
      end
      say("done")
    ]]
    local a = H.spawn(code, { dir = dir, me = "A", other = "B", n = 200 })
    local b = H.spawn(code, { dir = dir, me = "B", other = "A", n = 200 })
    a:expect("ready")
    b:expect("ready")
    local t0 = T.now()
    H.touch(dir .. "/go")
    a:expect("done", 60)
    b:expect("done", 60)
    a:ok()
    b:ok()
    assert.are.equal(("AB"):rep(200), H.read_file(dir .. "/log"))
    assert.is_true(T.now() - t0 < 30)
    assert.are.equal(0, wh.lock("pingpong", { dir = dir }):info().held)
  end)
end)
