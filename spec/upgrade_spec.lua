-- Upgradeable reads and upgrades: Medallion.Threading's upgradeable
-- reader-writer cases, ported. Other processes are child interpreters
-- (helpers.spawn), told what to do through files, reporting through lines.
local wh = require "waithandles"
local H = require "helpers"

-- Children work on `rw`, the rwlock ARGS.name in ARGS.dir.
local spawn = H.spawn_rw

-- A sleep for async calls that yields to the coroutine's resumer.
local function yield(d) coroutine.yield(d) end
-- A sleep for async calls outside coroutines.
local function nap(d) H.sleep(d) end

-- Not synchronisation: lets a waiting writer become older than any bound on
-- barging, so that a rule putting old waiting writers before the upgrade
-- would show (the tests pass either way when the library is right).
local function age_writer() H.sleep(0.1) end

local UPGRADES = { "try_upgrade", "upgrade", "try_upgrade_async", "upgrade_async" }

describe("upgradeable read", function()
  after_each(H.cleanup)

  it("is shared with readers, here and in other processes, in either order", function()
    local dir, sig = H.tmpdir(), H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local r1 = rw:try_acquire_read()
    local u = rw:try_acquire_upgradeable_read()
    local r2 = rw:try_acquire_read()
    assert.is_truthy(r1 and u and r2)
    local c = H.rw_reader(dir, rw, sig .. "/go")
    H.assert_rw_info(rw, { readers = 4, upgradeable = true })
    H.probe_rw(dir, rw, "read no upgradeable no write")
    u:release()
    H.assert_rw_info(rw, { readers = 3 })
    -- an upgradeable read taken while another process reads
    u = rw:acquire_upgradeable_read(5)
    assert.is_truthy(u)
    H.assert_rw_info(rw, { readers = 4, upgradeable = true })
    H.touch(sig .. "/go")
    c:said("released")
    c:ok()
    r1:release()
    r2:release()
    H.assert_rw_info(rw, { readers = 1, upgradeable = true })
    u:release()
    H.assert_rw_info(rw, {})
  end)

  it("is held by one holder at a time", function()
    local dir = H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local u = rw:try_acquire_upgradeable_read()
    assert.is_truthy(u)
    for _, o in ipairs({ rw, wh.rwlock("rw", { dir = dir }) }) do
      assert.is_nil(o:try_acquire_upgradeable_read())
      assert.is_nil(o:try_acquire_upgradeable_read(0.05))
      assert.is_nil(o:try_acquire_upgradeable_read_async(0.05, { sleep = nap }))
      assert.are.equal("timeout", H.raised(o.acquire_upgradeable_read, o, 0.05).code)
    end
    H.probe_rw(dir, rw, "read no upgradeable no write")
    H.assert_rw_info(rw, { readers = 1, upgradeable = true })
    -- another process that asks gets it once it is released
    local c = spawn([[
      say("asking")
      local u = rw:acquire_upgradeable_read(10)
      u:release()
      say("got")
    ]], { dir = dir, name = rw.name })
    c:said("asking")
    u:release()
    c:said("got")
    c:ok()
    u = rw:try_acquire_upgradeable_read()
    assert.is_truthy(u)
    u:release()
    H.assert_rw_info(rw, {})
  end)

  it("keeps writers out, and a writer blocked elsewhere gets in once it is released", function()
    local dir, sig = H.tmpdir(), H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local u = rw:try_acquire_upgradeable_read()
    assert.is_truthy(u)
    for _, o in ipairs({ rw, wh.rwlock("rw", { dir = dir }) }) do
      assert.is_nil(o:try_acquire_write())
      assert.is_nil(o:try_acquire_write(0.05))
      assert.are.equal("timeout", H.raised(o.acquire_write, o, 0.05).code)
    end
    H.probe_rw(dir, rw, "read no upgradeable no write")
    local w = H.rw_writer(dir, rw, sig .. "/go")
    H.waiting_writers(rw, 1)
    H.assert_rw_info(rw, { readers = 1, upgradeable = true, waiting_writers = 1 })
    u:release()
    w:said("got")
    H.assert_rw_info(rw, { writer = true })
    H.touch(sig .. "/go")
    w:said("released")
    w:ok()
    H.assert_rw_info(rw, {})
  end)
end)

describe("upgrade", function()
  after_each(H.cleanup)

  it("try_upgrade fails while readers hold, and does not use up the one upgrade", function()
    local dir, sig = H.tmpdir(), H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local u = rw:try_acquire_upgradeable_read()
    assert.is_truthy(u)
    local c = H.rw_reader(dir, rw, sig .. "/go")
    local function failed_without_trace(ok, what)
      assert.is_false(ok, what)
      assert.is_false(u.upgraded, what)
      assert.is_true(u:is_held(), what)
      H.assert_rw_info(rw, { readers = 2, upgradeable = true })
      -- its claim is gone: a new reader gets in
      local r = rw:try_acquire_read()
      assert.is_truthy(r, what .. " left a claim behind")
      r:release()
    end
    failed_without_trace(u:try_upgrade(), "try_upgrade()")
    failed_without_trace(u:try_upgrade(0), "try_upgrade(0)")
    failed_without_trace(u:try_upgrade(0.05), "try_upgrade(0.05)")
    failed_without_trace(u:try_upgrade_async(0.05), "try_upgrade_async(0.05)")
    failed_without_trace(u:try_upgrade_async(0.05, { sleep = nap }), "try_upgrade_async with sleep")
    failed_without_trace(H.drive_body(function()
      return u:try_upgrade_async(0.05, { sleep = yield })
    end, nil, 10), "try_upgrade_async in a coroutine")
    local err = H.raised(u.upgrade, u, 0.05)
    assert.are.equal("timeout", err.code)
    assert.are.equal(rw.name, err.name)
    failed_without_trace(false, "upgrade(0.05)")
    assert.are.equal("timeout", H.raised(u.upgrade_async, u, 0.05, { sleep = nap }).code)
    failed_without_trace(false, "upgrade_async(0.05)")
    -- a reader in this process stops it too
    H.touch(sig .. "/go")
    c:said("released")
    c:ok()
    local r = rw:try_acquire_read()
    assert.is_false(u:try_upgrade())
    assert.is_false(u.upgraded)
    r:release()
    -- with the readers gone, the one upgrade is still there to take
    assert.is_true(u:try_upgrade())
    assert.is_true(u.upgraded)
    H.assert_rw_info(rw, { writer = true, upgradeable = true })
    u:release()
    H.assert_rw_info(rw, {})
  end)

  for _, m in ipairs(UPGRADES) do
    it(m .. " waits for readers in another process, then succeeds", function()
      local dir = H.tmpdir()
      local rw = wh.rwlock("rw", { dir = dir })
      local u = rw:try_acquire_upgradeable_read()
      assert.is_truthy(u)
      -- The reader leaves only once it sees the upgrade waiting.
      local c = spawn([[
        local h = rw:try_acquire_read()
        say(h and "held" or "refused")
        local deadline = T.now() + 20
        while rw:info().waiting_writers ~= 1 do
          if T.now() > deadline then error("no upgrade ever waited") end
          T.sleep(0.002)
        end
        say(rw:info().writer and "writer!" or "no writer")
        h:release()
        say("released")
      ]], { dir = dir, name = rw.name })
      c:said("held")
      assert.is_false(u:try_upgrade())
      local r
      local elapsed = H.time(function() r = u[m](u, 20, { sleep = nap }) end)
      assert.is_true(elapsed < 10)
      if m:sub(1, 4) == "try_" then assert.is_true(r) end
      c:said("no writer")
      c:said("released")
      c:ok()
      assert.is_true(u.upgraded)
      assert.is_true(u:is_held())
      assert.are.equal("upgradeable_read", u.kind)
      H.assert_rw_info(rw, { writer = true, upgradeable = true })
      H.probe_rw(dir, rw, "no read no upgradeable no write")
      u:release()
      H.assert_rw_info(rw, {})
    end)
  end

  it("keeps new readers out while it waits, in other processes too (writer preference)", function()
    local dir, sig = H.tmpdir(), H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local r = H.rw_reader(dir, rw, sig .. "/r")
    local u = spawn([[
      local u = rw:try_acquire_upgradeable_read()
      say(u and "u" or "refused")
      say("waiting")
      u:upgrade(20)
      say(u.upgraded and "upgraded" or "not upgraded")
      wait_file(ARGS.go, 60)
      u:release()
      say("released")
    ]], { dir = dir, name = rw.name, go = sig .. "/u" })
    u:said("u")
    u:said("waiting")
    H.waiting_writers(rw, 1)
    -- only readers hold (the reader and the upgradeable reader), yet nobody new reads
    H.assert_rw_info(rw, { readers = 2, upgradeable = true, waiting_writers = 1 })
    H.probe_rw(dir, rw, "no read no upgradeable no write")
    assert.is_nil(rw:try_acquire_read())
    assert.is_nil(rw:try_acquire_read(0.1))
    H.touch(sig .. "/r")
    r:said("released")
    r:ok()
    u:said("upgraded")
    H.assert_rw_info(rw, { writer = true, upgradeable = true })
    assert.is_nil(rw:try_acquire_read())
    H.touch(sig .. "/u")
    u:said("released")
    u:ok()
    H.probe_rw(dir, rw, "read upgradeable no write")
    H.assert_rw_info(rw, {})
  end)

  it("waiting through upgrade_async keeps new readers out too", function()
    local dir, sig = H.tmpdir(), H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local u = rw:try_acquire_upgradeable_read()
    local r = H.rw_reader(dir, rw, sig .. "/r")
    local co = coroutine.create(function() return u:upgrade_async(30, { sleep = yield }) end)
    -- A waiter that stops polling loses its place within its lease (tens of ms): poll it, as
    -- a scheduler would, right before each look.
    local function poll()
      local ok, d = coroutine.resume(co)
      assert.is_true(ok, tostring(d))
      assert.are.equal("suspended", coroutine.status(co))
    end
    local probe = H.spawn_rw([[
      wait_file(ARGS.go)
      local r = rw:try_acquire_read()
      local u = rw:try_acquire_upgradeable_read()
      local w = rw:try_acquire_write()
      say(r and "read" or "no read", u and "upgradeable" or "no upgradeable", w and "write" or "no write")
    ]], { dir = dir, name = rw.name, go = sig .. "/go" })
    poll()
    H.assert_rw_info(rw, { readers = 2, upgradeable = true, waiting_writers = 1 })
    assert.is_nil(rw:try_acquire_read())
    poll()
    H.touch(sig .. "/go")
    probe:said("no read no upgradeable no write", nil, poll)
    probe:ok()
    H.touch(sig .. "/r")
    r:said("released")
    r:ok()
    H.drive_body(co, nil, 10)
    assert.is_true(u.upgraded)
    H.assert_rw_info(rw, { writer = true, upgradeable = true })
    u:release()
    H.assert_rw_info(rw, {})
  end)

  it("keeps the kind upgradeable_read and sets upgraded; info() shows a writer", function()
    local dir = H.tmpdir()
    local rw = wh.rwlock("up", { dir = dir })
    local u = rw:try_acquire_upgradeable_read()
    assert.is_false(u.upgraded)
    assert.is_true(u:try_upgrade())
    assert.are.equal("upgradeable_read", u.kind)
    assert.are.equal("up", u.name)
    assert.is_true(u.upgraded)
    assert.is_true(u:is_held())
    local s = tostring(u)
    assert.is_truthy(s:find("upgradeable_read 'up'", 1, true), s)
    assert.is_truthy(s:find("held", 1, true), s)
    H.assert_rw_info(rw, { writer = true, upgradeable = true })
    for _, o in ipairs({ rw, wh.rwlock("up", { dir = dir }) }) do
      assert.is_nil(o:try_acquire_read())
      assert.is_nil(o:try_acquire_write())
      assert.is_nil(o:try_acquire_upgradeable_read())
    end
    H.probe_rw(dir, rw, "no read no upgradeable no write")
  end)

  for _, first in ipairs(UPGRADES) do
    it("raises invalid_state when upgraded twice (" .. first .. ", then each way)", function()
      local rw = wh.rwlock("rw", { dir = H.tmpdir() })
      local u = rw:try_acquire_upgradeable_read()
      u[first](u, 5, { sleep = nap })
      assert.is_true(u.upgraded)
      for _, again in ipairs(UPGRADES) do
        local err = H.raised(u[again], u, nil,
          { sleep = nap })
        assert.are.equal("invalid_state", err.code, again)
        assert.are.equal(rw.name, err.name, again)
        assert.is_true(u:is_held(), again)
        assert.is_true(u.upgraded, again)
        H.assert_rw_info(rw, { writer = true, upgradeable = true })
      end
      assert.is_true(u:release())
      H.assert_rw_info(rw, {})
    end)
  end

  it("raises released on a released handle", function()
    local rw = wh.rwlock("rw", { dir = H.tmpdir() })
    for _, m in ipairs(UPGRADES) do
      local u = rw:try_acquire_upgradeable_read()
      assert.is_true(u:release())
      for _, t in ipairs({ 0, 1 }) do
        local err = H.raised(u[m], u, t, { sleep = nap })
        assert.are.equal("released", err.code, m)
        assert.are.equal(rw.name, err.name, m)
      end
      assert.is_false(u:is_held())
      H.assert_rw_info(rw, {})
      -- and from inside a coroutine
      local co = coroutine.create(function() return u[m](u, 1) end)
      local ok, err = coroutine.resume(co)
      assert.is_false(ok)
      assert.are.equal("released", type(err) == "table" and err.code or err, m)
    end
    H.assert_rw_info(rw, {})
  end)

  for _, m in ipairs({ "upgrade_async", "try_upgrade_async" }) do
    it(m .. " raises released when its handle is released while it waits", function()
      local dir, sig = H.tmpdir(), H.tmpdir()
      local rw = wh.rwlock("rw", { dir = dir })
      local c = H.rw_reader(dir, rw, sig .. "/go")

      -- released by its own sleep function
      local u = rw:try_acquire_upgradeable_read()
      local slept = 0
      local err = H.raised(u[m], u, 10, { sleep = function(d)
        slept = slept + 1
        H.assert_rw_info(rw, { readers = 2, upgradeable = true, waiting_writers = 1 })
        u:release()
        H.sleep(d)
      end })
      assert.are.equal(1, slept)
      assert.are.equal("released", err.code)
      assert.are.equal(rw.name, err.name)
      assert.is_false(u.upgraded)
      -- nothing left behind: no claim, no upgradeable hold
      H.assert_rw_info(rw, { readers = 1 })
      local r, u2 = rw:try_acquire_read(), rw:try_acquire_upgradeable_read()
      assert.is_truthy(r and u2)
      r:release()

      -- released by another coroutine while the upgrade is suspended
      local co = coroutine.create(function() return u2[m](u2, 10, { sleep = yield }) end)
      assert.is_true((coroutine.resume(co)))
      assert.are.equal("suspended", coroutine.status(co))
      H.assert_rw_info(rw, { readers = 2, upgradeable = true, waiting_writers = 1 })
      assert.is_true(u2:release())
      local ok
      ok, err = coroutine.resume(co)
      assert.is_false(ok)
      assert.are.equal("released", type(err) == "table" and err.code or err)
      H.assert_rw_info(rw, { readers = 1 })
      r = rw:try_acquire_read()
      assert.is_truthy(r)
      r:release()

      H.touch(sig .. "/go")
      c:said("released")
      c:ok()
      H.assert_rw_info(rw, {})
    end)
  end

  it("raises released and leaves no claim when its cancel function releases the handle", function()
    local dir, sig = H.tmpdir(), H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local c = H.rw_reader(dir, rw, sig .. "/go")
    local u = rw:try_acquire_upgradeable_read()
    local calls = 0
    -- The first call is before the wait; the second is from inside it.
    local err = H.raised(u.upgrade, u, 10, { cancel = function()
      calls = calls + 1
      if calls == 2 then u:release() end
      return false
    end })
    assert.are.equal(2, calls)
    assert.are.equal("released", err.code)
    local r = rw:try_acquire_read()
    assert.is_truthy(r, "the upgrade's writer claim outlived it")
    r:release()
    H.assert_rw_info(rw, { readers = 1 })
    assert.are.equal(rw.name, err.name)
    H.touch(sig .. "/go")
    c:said("released")
    c:ok()
    H.assert_rw_info(rw, {})
  end)

  it("releasing an upgraded handle releases everything it holds", function()
    local dir, sig = H.tmpdir(), H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local u = rw:try_acquire_upgradeable_read()
    assert.is_true(u:try_upgrade())
    assert.is_true(u:release())
    assert.is_false(u:is_held())
    assert.is_false(u:release())
    H.assert_rw_info(rw, {})
    H.probe_rw(dir, rw, "read upgradeable no write")

    -- a writer blocked elsewhere then gets it
    u = rw:try_acquire_upgradeable_read()
    u:upgrade(5)
    local w = H.rw_writer(dir, rw, sig .. "/go")
    H.waiting_writers(rw, 1)
    H.assert_rw_info(rw, { writer = true, upgradeable = true, waiting_writers = 1 })
    assert.is_true(u:release())
    w:said("got")
    H.assert_rw_info(rw, { writer = true })
    H.touch(sig .. "/go")
    w:said("released")
    w:ok()
    H.assert_rw_info(rw, {})
    local r, u2 = rw:try_acquire_read(), rw:try_acquire_upgradeable_read()
    assert.is_truthy(r and u2)
    r:release()
    u2:release()
  end)

  for _, m in ipairs(UPGRADES) do
    it(m .. " bypasses a writer that waits for it (no deadlock)", function()
      local dir, sig = H.tmpdir(), H.tmpdir()
      local rw = wh.rwlock("rw", { dir = dir })
      local u = rw:try_acquire_upgradeable_read()
      local w = H.rw_writer(dir, rw, sig .. "/go")
      H.waiting_writers(rw, 1)
      age_writer()
      local r
      local elapsed = H.time(function() r = u[m](u, 5, { sleep = nap }) end)
      assert.is_true(elapsed < 2, ("the upgrade took %.3f s"):format(elapsed))
      if m:sub(1, 4) == "try_" then assert.is_true(r) end
      assert.is_true(u.upgraded)
      -- the writer still waits
      H.assert_rw_info(rw, { writer = true, upgradeable = true, waiting_writers = 1 })
      assert.is_nil(w:line(0))
      u:release()
      w:said("got")
      H.touch(sig .. "/go")
      w:said("released")
      w:ok()
      H.assert_rw_info(rw, {})
    end)
  end

  it("waits for readers but still comes before a writer that waited first", function()
    local dir, sig = H.tmpdir(), H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local u = rw:try_acquire_upgradeable_read()
    local r = H.rw_reader(dir, rw, sig .. "/r")
    local w = H.rw_writer(dir, rw, sig .. "/w")
    H.waiting_writers(rw, 1)
    age_writer()
    local slept = 0
    u:upgrade_async(10, { sleep = function(d)
      slept = slept + 1
      if slept == 1 then
        H.assert_rw_info(rw, { readers = 2, upgradeable = true, waiting_writers = 2 })
        H.touch(sig .. "/r") -- the reader may leave now
      end
      H.sleep(d)
    end })
    r:said("released")
    r:ok()
    assert.is_true(slept >= 1)
    assert.is_true(u.upgraded)
    H.assert_rw_info(rw, { writer = true, upgradeable = true, waiting_writers = 1 })
    u:release()
    w:said("got")
    H.touch(sig .. "/w")
    w:said("released")
    w:ok()
    H.assert_rw_info(rw, {})
  end)

  describe("rejects bad arguments:", function()
    local bad_timeouts = { -1, -0.001, -math.huge, 0 / 0, 2147483.648, 1e300, "1", {}, true }
    local bad_options = { { foo = 1 }, { timeout = 1 }, { [1] = true }, { cancel = 42 },
      { sleep = "x" }, "opts", 42 }

    for _, m in ipairs(UPGRADES) do
      it(m, function()
        local rw = wh.rwlock("rw", { dir = H.tmpdir() })
        local u = rw:try_acquire_upgradeable_read()
        for _, t in ipairs(bad_timeouts) do H.assert_bad_argument(1, m, u[m], u, t) end
        for _, o in ipairs(bad_options) do
          H.assert_bad_argument(2, m, u[m], u, nil, o)
          H.assert_bad_argument(2, m, u[m], u, 0, o)
        end
        H.assert_bad_argument(3, m, u[m], u, nil, nil, 1)
        H.assert_bad_argument(3, m, u[m], u, 0, {}, {})
        assert.is_false(u.upgraded)
        assert.is_true(u:is_held())
        H.assert_rw_info(rw, { readers = 1, upgradeable = true })
        -- the largest finite timeout is accepted
        u[m](u, 2147483.647, { cancel = wh.cancel_token(), sleep = nap })
        assert.is_true(u.upgraded)
        u:release()
        H.assert_rw_info(rw, {})
      end)
    end
  end)
end)
