-- fork(): a child's copies of the parent's handles are inert (released,
-- collected, closed or not, the parent keeps its hold); a parent that dies
-- gives its holds back even while a forked child lives on; a forked child
-- acquires locks of its own like any process.
local H = require "helpers"
local wh = require "waithandles"
local T = H.whtest

local pids = {}

-- Kills the forked copies of this process (ours to reap) and grandchildren
-- (not ours) that a test left running.
local function reap_forks()
  for _, p in ipairs(pids) do
    if not p.reaped then
      T.kill(p.pid, T.SIGKILL)
      if p.ours then pcall(T.waitpid, p.pid, 5) end
    end
  end
  pids = {}
end

-- For code that runs in a forked copy of this process: a failed check is an error.
local function check(cond, msg)
  if not cond then error(msg or "check failed", 2) end
end

-- Runs fn in a forked copy of this (busted) process. The copy never returns
-- to busted: it writes "ok" or its error to a file and _exits. Returns an
-- object whose :wait() reaps it and asserts that fn succeeded.
local forks = 0
local function fork(dir, fn)
  forks = forks + 1
  local result = ("%s/fork-result-%d"):format(dir, forks)
  local pid = T.fork()
  if pid == 0 then
    local ok, err = pcall(fn)
    local f = io.open(result, "w")
    if f then
      f:write(ok and "ok" or tostring(err))
      f:close()
    end
    T.exit(ok and 0 or 1)
  end
  local rec = { pid = pid, ours = true }
  pids[#pids + 1] = rec
  return {
    pid = pid,
    wait = function()
      local st = T.waitpid(pid, 30)
      if st == nil then error("the forked child did not end", 2) end
      rec.reaped = true
      assert.are.equal("ok", H.read_file(result) or ("no result; status " .. tostring(st.code or st.signal)))
      assert.are.equal(0, st.code)
    end,
  }
end

-- The parent's hold of lock l (handle h) is intact: seen from here and from a third process.
local function still_held(dir, l, h)
  assert.is_true(h:is_held())
  assert.are.equal(1, l:info().held)
  assert.is_nil(l:try_acquire())
  assert.are.equal("busy", H.probe_lock(dir, l.name))
  assert.is_true(h:release())
  assert.are.equal("acquired", H.probe_lock(dir, l.name))
end

describe("fork", function()
  after_each(function()
    reap_forks()
    H.cleanup()
  end)

  describe("a child's copy of the parent's handle", function()
    it("is inert: is_held false, release false, and the parent still holds", function()
      local dir = H.tmpdir()
      local l = wh.lock("f", { dir = dir })
      local h = l:acquire(1)
      fork(dir, function()
        check(h:is_held() == false, "the copy says it is held")
        check(h:release() == false, "releasing the copy returned true")
        check(h:is_held() == false, "the copy says it is held after release")
        check(h:release() == false, "releasing the copy twice returned true")
        check(tostring(h):find("released", 1, true), tostring(h))
        -- the parent's hold is untouched, as this process sees it
        check(l:try_acquire() == nil, "the child got the lock the parent holds")
        check(l:info().held == 1, "info().held in the child")
      end):wait()
      still_held(dir, l, h)
    end)

    it("is inert after the child collects it (__gc) and exits", function()
      local dir = H.tmpdir()
      local l = wh.lock("g", { dir = dir })
      local h = l:acquire(1)
      fork(dir, function()
        local weak = setmetatable({ h }, { __mode = "v" })
        h = nil -- the child's copy of the upvalue only
        collectgarbage()
        collectgarbage()
        check(weak[1] == nil, "the copy was not collected")
        check(l:try_acquire() == nil, "collecting the copy released the parent's lock")
        check(l:info().held == 1, "info().held in the child")
      end):wait()
      still_held(dir, l, h)
    end)

    it("is inert when the child's Lua state is closed (os.exit(0, true) in a forked interpreter)", function()
      local dir = H.tmpdir()
      local l = wh.lock("c", { dir = dir })
      local c = H.spawn([[
        HANDLE = wh.lock("c", { dir = ARGS.dir }):acquire(10)
        local pid = T.fork()
        if pid == 0 then
          if HANDLE:release() ~= false then T.exit(3) end
          os.exit(0, true) -- lua_close: every finaliser of the copy runs
        end
        local st = T.waitpid(pid, 20)
        say("child", st and st.code)
        say(HANDLE:is_held() and "still held" or "lost")
        wait_file(ARGS.dir .. "/done")
        HANDLE:release()
        say("released")
      ]], { dir = dir })
      assert.are.equal("child 0", c:line(20))
      assert.are.equal("still held", c:line(10))
      assert.are.equal(1, l:info().held)
      assert.are.equal("busy", H.probe_lock(dir, "c"))
      H.touch(dir .. "/done")
      c:expect("released")
      c:ok()
      assert.are.equal(0, l:info().held)
    end)

    it("is inert when the child closes it with <close> (Lua 5.4)", function()
      if not H.is_54 then
        pending("<close> needs Lua 5.4")
        return
      end
      local dir = H.tmpdir()
      local l = wh.lock("k", { dir = dir })
      local h = l:acquire(1)
      fork(dir, function()
        local close_it = assert(load("local h = ... do local x <close> = h end"))
        close_it(h)
        check(l:try_acquire() == nil, "<close> on the copy released the parent's lock")
      end):wait()
      still_held(dir, l, h)
    end)

    it("of a semaphore ticket, rwlock read and upgraded handle are inert too", function()
      local dir = H.tmpdir()
      local sem = wh.semaphore("s", 3, { dir = dir })
      local rw = wh.rwlock("rw", { dir = dir })
      local rd = wh.rwlock("rd", { dir = dir })
      local t1, t2 = sem:acquire(1), sem:acquire(1)
      local up = rw:acquire_upgradeable_read(1)
      assert.is_true(up:try_upgrade(1))
      local r = rd:acquire_read(1)
      local ur = wh.rwlock("ur", { dir = dir })
      local u = ur:acquire_upgradeable_read(1) -- not upgraded
      fork(dir, function()
        -- the copy of a held, not upgraded handle is a released handle: it cannot upgrade
        local ok, err = pcall(u.try_upgrade, u)
        check(not ok and type(err) == "table" and err.code == "released",
          "upgrading a copy: " .. tostring(ok) .. " " .. tostring(err))
        check(ur:info().writer == false, "the copy upgraded the parent's hold")
        ok, err = pcall(up.try_upgrade, up)
        check(not ok and type(err) == "table" and (err.code == "released" or err.code == "invalid_state"),
          "upgrading a copy of an upgraded handle: " .. tostring(ok) .. " " .. tostring(err))
        for _, x in ipairs({ t1, t2, up, r, u }) do
          check(x:is_held() == false, "a copy says it is held: " .. tostring(x))
          check(x:release() == false, "releasing a copy returned true: " .. tostring(x))
        end
        check(ur:try_acquire_upgradeable_read() == nil, "a second upgradeable read")
        check(ur:info().upgradeable == true, "the parent's upgradeable read")
        -- the parent's holds are intact as this process sees them
        check(sem:info().held == 2, "semaphore held " .. sem:info().held)
        local mine = sem:try_acquire()
        check(mine ~= nil, "the free ticket")
        check(sem:try_acquire() == nil, "a ticket the parent holds")
        mine:release()
        check(rw:try_acquire_read() == nil, "read beside the parent's write")
        check(rw:info().writer == true, "the parent's write lock")
        check(rd:try_acquire_write() == nil, "write beside the parent's read")
        check(rd:info().readers == 1, "the parent's read")
      end):wait()
      assert.are.equal(2, sem:info().held)
      assert.is_true(t1:is_held() and t2:is_held() and up:is_held() and r:is_held())
      assert.is_true(rw:info().writer)
      assert.are.equal(1, rd:info().readers)
      assert.is_true(t1:release())
      assert.is_true(t2:release())
      assert.is_true(up:release())
      assert.is_true(r:release())
      assert.is_true(u:is_held())
      assert.is_false(ur:info().writer)
      assert.is_true(u:try_upgrade(1))
      assert.is_true(u:release())
      assert.are.equal(0, ur:info().held)
      assert.are.equal(0, sem:info().held)
      assert.are.equal(0, rw:info().held)
      assert.is_false(rw:info().upgradeable)
      assert.are.equal(0, rd:info().held)
    end)
  end)

  describe("a parent that dies while its forked child lives on", function()
    local A = [[
      local l = wh.lock("p", { dir = ARGS.dir })
      HANDLE = l:acquire(10)
      local pid = T.fork()
      if pid == 0 then
        if ARGS.active then
          -- B works with the library too: its own slot, its own lock
          OTHER = wh.lock("other", { dir = ARGS.dir }):acquire(10)
          touch(ARGS.dir .. "/b-holds")
        end
        T.sleep(120)
        T.exit(0)
      end
      say("ready", pid)
      T.sleep(120)
    ]]

    local function parent_dies(active)
      local dir = H.tmpdir()
      local l = wh.lock("p", { dir = dir })
      local a = H.spawn(A, { dir = dir, active = active })
      local b = tonumber(a:expect("^ready %d+$"):match("%d+"))
      pids[#pids + 1] = { pid = b }
      if active then
        H.eventually(function() return H.exists(dir .. "/b-holds") end, 10, "B holds its lock")
      end
      assert.is_nil(l:try_acquire())
      assert.are.equal(1, l:info().held)
      a:kill()
      assert.are.equal(T.SIGKILL, a:wait().signal)
      assert.is_true(T.kill(b, 0), "B died with A")
      local t0 = T.now()
      local h = l:acquire(2)
      assert.is_true(T.now() - t0 < 2)
      assert.is_true(T.kill(b, 0), "B died")
      assert.are.equal(1, l:info().held)
      h:release()
      if active then
        -- B, alive, keeps what it holds itself; once it dies, that comes back too
        local o = wh.lock("other", { dir = dir })
        assert.is_nil(o:try_acquire())
        assert.are.equal(1, o:info().held)
        T.kill(b, T.SIGKILL)
        local h2 = o:acquire(2)
        h2:release()
      end
    end

    it("releases (the child idle)", function()
      parent_dies(false)
    end)

    it("releases (the child holding a lock of its own)", function()
      parent_dies(true)
    end)

    it("leaves no waiter behind when it dies while blocked", function()
      local dir = H.tmpdir()
      local l = wh.lock("w", { dir = dir })
      local h = l:acquire(1)
      local a = H.spawn([[
        local l = wh.lock("w", { dir = ARGS.dir })
        local o = wh.lock("o", { dir = ARGS.dir }):acquire(1) -- a slot before the fork
        local pid = T.fork()
        if pid == 0 then T.sleep(120) T.exit(0) end
        say("forked", pid)
        l:acquire(60)
        say("got")
      ]], { dir = dir })
      local b = tonumber(a:expect("^forked %d+$"):match("%d+"))
      pids[#pids + 1] = { pid = b }
      H.eventually(function() return l:info().waiting == 1 end, 10, "A waits")
      a:kill()
      a:wait()
      H.eventually(function() return l:info().waiting == 0 end, 2, "A's wait entry goes")
      assert.is_true(T.kill(b, 0))
      -- A's lock "o" came back too
      local ho = wh.lock("o", { dir = dir }):acquire(2)
      ho:release()
      h:release()
      local h2 = l:try_acquire()
      assert.is_truthy(h2)
      h2:release()
    end)
  end)

  describe("a child after fork", function()
    it("acquires and releases other locks itself, and its own holds are released when it dies", function()
      local dir = H.tmpdir()
      local la = wh.lock("a", { dir = dir })
      local lb = wh.lock("b", { dir = dir }) -- opened before the fork, used in the child
      local ha = la:acquire(1)
      local child = fork(dir, function()
        local hb = lb:acquire(1)
        check(hb:is_held(), "the child's own handle")
        check(lb:try_acquire() == nil, "not reentrant in the child")
        check(hb:release() == true, "the child's own release")
        check(hb:is_held() == false)
        -- a lock opened only in the child
        local lc = wh.lock("c", { dir = dir })
        local hc = lc:acquire(1)
        check(hc:release() == true)
        -- the parent's lock stays the parent's
        check(la:try_acquire() == nil, "the child got the parent's lock")
        local ok, err = pcall(la.acquire, la, 0.2)
        check(not ok and type(err) == "table" and err.code == "timeout", "acquire(0.2): " .. tostring(err))
        -- hold b, let the parent see it, then die without releasing
        HB = lb:acquire(1)
        H.touch(dir .. "/child-holds")
        local deadline = T.now() + 20
        while not H.exists(dir .. "/parent-saw") do
          check(T.now() < deadline, "the parent never looked")
          T.sleep(0.002)
        end
      end)
      H.eventually(function() return H.exists(dir .. "/child-holds") end, 10, "the child holds b")
      assert.is_nil(lb:try_acquire())
      assert.are.equal(1, lb:info().held)
      assert.are.equal("busy", H.probe_lock(dir, "b"))
      H.touch(dir .. "/parent-saw")
      child:wait() -- it _exits still holding b
      local t0 = T.now()
      local hb = lb:acquire(2)
      assert.is_true(T.now() - t0 < 2)
      hb:release()
      assert.is_true(ha:is_held())
      assert.is_true(ha:release())
      assert.are.equal(0, la:info().held)
      assert.are.equal(0, lb:info().held)
    end)

    it("of a parent that never used the registry works, and so does the parent afterwards", function()
      local dir = H.tmpdir()
      local l = wh.lock("n", { dir = dir }) -- opened, never acquired: no slot yet
      fork(dir, function()
        local h = l:acquire(1)
        check(h:is_held())
        check(h:release() == true)
        HOLD = l:acquire(1) -- dies holding it
      end):wait()
      local h = l:acquire(2)
      assert.is_true(h:is_held())
      assert.is_true(h:release())
    end)

    it("forked twice in a row, each child releases only its own holds", function()
      local dir = H.tmpdir()
      local l = wh.lock("t", { dir = dir })
      local h = l:acquire(1)
      for i = 1, 3 do
        fork(dir, function()
          check(h:release() == false, "round " .. i)
          local o = wh.lock("own" .. i, { dir = dir }):acquire(1)
          check(o:release() == true, "round " .. i)
          check(l:try_acquire() == nil, "round " .. i)
        end):wait()
        assert.is_true(h:is_held())
        assert.are.equal(1, l:info().held)
      end
      still_held(dir, l, h)
    end)
  end)
end)
