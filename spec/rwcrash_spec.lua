-- Reader-writer lock: every kind of hold and every kind of waiting claim
-- comes back when its process is SIGKILLed, and an async waiter that is
-- abandoned without dying stops counting once its lease runs out. Holders
-- and waiters are child interpreters (helpers.spawn), told what to do
-- through files, reporting through lines. The time bounds are liveness
-- bounds, far above what the library needs (abandonment_check is 0.1 s).
local wh = require "waithandles"
local H = require "helpers"

local RECLAIM_BOUND = 2 -- s: a dead process's hold or claim is gone by then
local LEASE_BOUND = 5   -- s: an abandoned async waiter's claim is gone by then

-- Children work on `rw`, the rwlock ARGS.name in ARGS.dir.
local spawn = H.spawn_rw

-- SIGKILL, reaped: the process is gone for good when this returns.
local function kill(child)
  assert.is_true(child:kill())
  local st = child:wait(10)
  assert.are.equal(H.whtest.SIGKILL, st.signal, "child " .. child.pid .. " was not killed")
  return H.now()
end

-- Polls try_acquire_read until it succeeds; fails after `bound` seconds.
local function read_within(rw, bound, what)
  return H.eventually(function() return rw:try_acquire_read() end, bound, what)
end

-- Holds ARGS.n holds of kind ARGS.what ("read", "write", "upgradeable",
-- "upgraded") until ARGS.go exists.
local HOLDER = [[
local hs = {}
for i = 1, ARGS.n or 1 do
  local h
  if ARGS.what == "read" then h = rw:try_acquire_read()
  elseif ARGS.what == "write" then h = rw:try_acquire_write()
  else h = rw:try_acquire_upgradeable_read() end
  if not h then error("refused " .. ARGS.what) end
  if ARGS.what == "upgraded" then h:upgrade(5) end
  hs[i] = h
end
say("held")
wait_file(ARGS.go, 60)
for _, h in ipairs(hs) do h:release() end
say("released")
]]

-- The same through acquire_write_async, polling with a sleep of its own.
local ASYNC_WRITER = [[
say("waiting")
local h = rw:acquire_write_async(20, { sleep = function(d) T.sleep(d) end })
say("got")
wait_file(ARGS.go, 60)
h:release()
say("released")
]]

-- An upgradeable reader in a child that blocks in upgrade.
local BLOCKED_UPGRADER = [[
local u = rw:try_acquire_upgradeable_read()
if not u then error("refused upgradeable") end
say("waiting")
u:upgrade(20)
say("upgraded")
wait_file(ARGS.go, 60)
u:release()
say("released")
]]

-- An async writer that takes one step in a coroutine, which is then never
-- resumed; the process lives on (until ARGS.go exists) and keeps the
-- coroutine referenced. It reports whether its own claim kept a reader out.
local ABANDONED_WRITER = [[
CO = coroutine.create(function()
  return rw:try_acquire_write_async(60, { sleep = function(d) coroutine.yield(d) end })
end)
local ok, d = coroutine.resume(CO)
if not ok then error(d) end
local r = rw:try_acquire_read()
if r then r:release() end
say(coroutine.status(CO), type(d), r and "admitted" or "refused")
wait_file(ARGS.go, 60)
say(coroutine.status(CO) == "suspended" and "alive, never resumed" or "resumed?")
]]

describe("rwlock crash reclamation", function()
  after_each(H.cleanup)

  local function setup()
    local dir, sig = H.tmpdir(), H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local function args(t)
      t = t or {}
      t.dir, t.name = dir, rw.name
      t.go = t.go or (sig .. "/never")
      return t
    end
    return rw, args, sig
  end

  -- A writer blocked in another process must get the lock within the bound
  -- once `victim` is killed; then it releases and the lock is free.
  local function writer_gets_it_after_kill(rw, args, sig, victim, before)
    local w = spawn(H.RW_BLOCKED_WRITER, args({ go = sig .. "/w" }))
    w:said("waiting")
    H.waiting_writers(rw, 1)
    H.assert_rw_info(rw, before)
    local t0 = kill(victim)
    w:said("got", RECLAIM_BOUND)
    assert.is_true(H.now() - t0 < RECLAIM_BOUND)
    H.assert_rw_info(rw, { writer = true })
    H.touch(sig .. "/w")
    w:said("released")
    w:ok()
    H.assert_rw_info(rw, {})
  end

  it("gives back a killed reader's reads", function()
    local rw, args, sig = setup()
    local r = spawn(HOLDER, args({ what = "read", n = 3 }))
    r:said("held")
    H.assert_rw_info(rw, { readers = 3 })
    writer_gets_it_after_kill(rw, args, sig, r, { readers = 3, waiting_writers = 1 })
  end)

  it("gives back a killed writer's write", function()
    local rw, args, sig = setup()
    local c = spawn(HOLDER, args({ what = "write" }))
    c:said("held")
    assert.is_nil(rw:try_acquire_read())
    writer_gets_it_after_kill(rw, args, sig, c, { writer = true, waiting_writers = 1 })
    -- and a reader after a killed writer, without a writer in between
    c = spawn(HOLDER, args({ what = "write" }))
    c:said("held")
    assert.is_nil(rw:try_acquire_read())
    local t0 = kill(c)
    local h = rw:acquire_read(20)
    assert.is_true(H.now() - t0 < RECLAIM_BOUND)
    H.assert_rw_info(rw, { readers = 1 })
    h:release()
    H.assert_rw_info(rw, {})
  end)

  it("gives back a killed upgradeable reader's hold", function()
    local rw, args, sig = setup()
    local c = spawn(HOLDER, args({ what = "upgradeable" }))
    c:said("held")
    assert.is_nil(rw:try_acquire_upgradeable_read())
    writer_gets_it_after_kill(rw, args, sig, c,
      { readers = 1, upgradeable = true, waiting_writers = 1 })
    -- the upgradeable read is free again, alongside readers
    local r = rw:try_acquire_read()
    c = spawn(HOLDER, args({ what = "upgradeable" }))
    c:said("held")
    H.assert_rw_info(rw, { readers = 2, upgradeable = true })
    local t0 = kill(c)
    local u = rw:acquire_upgradeable_read(20)
    assert.is_true(H.now() - t0 < RECLAIM_BOUND)
    H.assert_rw_info(rw, { readers = 2, upgradeable = true })
    u:release()
    r:release()
    H.assert_rw_info(rw, {})
  end)

  it("gives back a killed upgrader's upgraded hold", function()
    local rw, args, sig = setup()
    local c = spawn(HOLDER, args({ what = "upgraded" }))
    c:said("held")
    assert.is_nil(rw:try_acquire_read())
    writer_gets_it_after_kill(rw, args, sig, c,
      { writer = true, upgradeable = true, waiting_writers = 1 })
    local u = rw:try_acquire_upgradeable_read()
    assert.is_truthy(u)
    assert.is_true(u:try_upgrade())
    u:release()
    H.assert_rw_info(rw, {})
  end)

  it("drops the claim and the hold of an upgrader killed while it waits to upgrade", function()
    local rw, args = setup()
    local r = rw:try_acquire_read()
    local c = spawn(BLOCKED_UPGRADER, args())
    c:said("waiting")
    H.waiting_writers(rw, 1)
    H.assert_rw_info(rw, { readers = 2, upgradeable = true, waiting_writers = 1 })
    assert.is_nil(rw:try_acquire_read())
    local t0 = kill(c)
    local r2 = read_within(rw, RECLAIM_BOUND, "a reader after the waiting upgrader was killed")
    assert.is_true(H.now() - t0 < RECLAIM_BOUND)
    H.assert_rw_info(rw, { readers = 2 })
    local u = rw:try_acquire_upgradeable_read()
    assert.is_truthy(u)
    u:release()
    r:release()
    r2:release()
    H.assert_rw_info(rw, {})
  end)

  for _, case in ipairs({ { "blocked", H.RW_BLOCKED_WRITER }, { "async", ASYNC_WRITER } }) do
    it("a SIGKILLed " .. case[1] .. " waiting writer keeps readers out no longer than "
      .. RECLAIM_BOUND .. " s", function()
      local rw, args, sig = setup()
      local r = spawn(HOLDER, args({ what = "read", go = sig .. "/r" }))
      r:said("held")
      local w = spawn(case[2], args())
      w:said("waiting")
      H.waiting_writers(rw, 1)
      H.assert_rw_info(rw, { readers = 1, waiting_writers = 1 })
      assert.is_nil(rw:try_acquire_read(), "writer preference")
      local t0 = kill(w)
      local h = read_within(rw, RECLAIM_BOUND, "a reader after the waiting writer was killed")
      assert.is_true(H.now() - t0 < RECLAIM_BOUND)
      H.assert_rw_info(rw, { readers = 2 })
      H.touch(sig .. "/r")
      r:said("released")
      r:ok()
      h:release()
      H.assert_rw_info(rw, {})
    end)
  end

  it("an async waiting writer abandoned without dying stops keeping readers out (lease)", function()
    local rw, args, sig = setup()
    local r = rw:try_acquire_read()
    local a = spawn(ABANDONED_WRITER, args({ go = sig .. "/a" }))
    local t0 = H.now()
    a:said("suspended number refused")
    local h = read_within(rw, LEASE_BOUND, "a reader after the async writer was abandoned")
    assert.is_true(H.now() - t0 < LEASE_BOUND)
    H.assert_rw_info(rw, { readers = 2 })
    -- a writer gets in once the readers leave: the abandoned claim is no obstacle
    r:release()
    h:release()
    local w = rw:try_acquire_write()
    assert.is_truthy(w)
    w:release()
    -- the abandoning process never died
    H.touch(sig .. "/a")
    a:said("alive, never resumed")
    a:ok()
    H.assert_rw_info(rw, {})
  end)

  it("an abandoned async waiter that is garbage collected withdraws its claim", function()
    local rw, args, sig = setup()
    local r = rw:try_acquire_read()
    local a = spawn([[
      local co = coroutine.create(function()
        return rw:try_acquire_write_async(60, { sleep = function(d) coroutine.yield(d) end })
      end)
      local ok, d = coroutine.resume(co)
      if not ok then error(d) end
      say(rw:info().waiting_writers)
      co = nil
      collectgarbage()
      collectgarbage()
      local waiting, r = rw:info().waiting_writers, rw:try_acquire_read()
      if r then r:release() end
      say(waiting, r and "admitted" or "refused")
      wait_file(ARGS.go, 60)
    ]], args({ go = sig .. "/a" }))
    a:said("1")
    a:said("0 admitted")
    H.assert_rw_info(rw, { readers = 1 })
    H.touch(sig .. "/a")
    a:ok()
    r:release()
    H.assert_rw_info(rw, {})
  end)

  it("after crashes of every kind at once, info() is exact", function()
    local rw, args, sig = setup()
    local mine = rw:try_acquire_read()
    local r1 = spawn(HOLDER, args({ what = "read", n = 2 }))
    local r2 = spawn(HOLDER, args({ what = "read" }))
    r1:said("held")
    r2:said("held")
    local u = spawn(BLOCKED_UPGRADER, args())
    u:said("waiting")
    H.waiting_writers(rw, 1)
    -- The upgrade waits, so new holders are refused; writers now queue up.
    local w1 = spawn(H.RW_BLOCKED_WRITER, args())
    local w2 = spawn(ASYNC_WRITER, args())
    w1:said("waiting")
    w2:said("waiting")
    H.waiting_writers(rw, 3)
    local a = spawn(ABANDONED_WRITER, args({ go = sig .. "/a" }))
    a:said("suspended number refused")
    local i = rw:info()
    assert.are.equal(5, i.readers)
    assert.is_true(i.upgradeable)
    assert.is_false(i.writer)
    assert.are.equal(5, i.held)
    for _, c in ipairs({ r1, r2, u, w1, w2 }) do kill(c) end
    -- The dead give everything back; the abandoned claim lapses.
    local t0 = H.now()
    H.eventually(function()
      local x = rw:info()
      return x.readers == 1 and x.waiting_writers == 0 and not x.upgradeable
    end, LEASE_BOUND, "info() back to this process's one read")
    assert.is_true(H.now() - t0 < LEASE_BOUND)
    H.assert_rw_info(rw, { readers = 1 })
    H.assert_rw_info(rw, { readers = 1 })
    mine:release()
    H.assert_rw_info(rw, {})
    -- and every kind of hold can be taken again
    local w = rw:try_acquire_write()
    assert.is_truthy(w)
    H.assert_rw_info(rw, { writer = true })
    w:release()
    local r, up = rw:try_acquire_read(), rw:try_acquire_upgradeable_read()
    assert.is_truthy(r and up)
    H.assert_rw_info(rw, { readers = 2, upgradeable = true })
    r:release()
    assert.is_true(up:try_upgrade())
    H.assert_rw_info(rw, { writer = true, upgradeable = true })
    up:release()
    H.assert_rw_info(rw, {})
    H.touch(sig .. "/a")
    a:said("alive, never resumed")
    a:ok()
    H.assert_rw_info(rw, {})
  end)
end)
