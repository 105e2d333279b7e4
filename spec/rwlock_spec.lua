-- Reader-writer lock: Medallion.Threading's reader-writer cases, ported.
-- Other processes are real child interpreters (helpers.spawn); they are told
-- what to do through files and report through lines on their stdout.
local wh = require "waithandles"
local H = require "helpers"

-- Children work on `rw`, the rwlock ARGS.name in ARGS.dir.
local spawn = H.spawn_rw

-- A sleep for async calls that yields to the coroutine's resumer (the same
-- as the default inside a coroutine, which has a test of its own).
local function yield(d) coroutine.yield(d) end

describe("rwlock", function()
  after_each(H.cleanup)

  it("lets many readers hold at once, in one process and across processes", function()
    local dir, sig = H.tmpdir(), H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local mine = {}
    for i = 1, 3 do
      mine[i] = rw:try_acquire_read()
      assert.is_truthy(mine[i])
    end
    mine[4] = rw:acquire_read(5)
    assert.is_truthy(mine[4])
    local c = spawn([[
      local a, b = rw:try_acquire_read(), rw:acquire_read(5)
      say(a and b and "held 2" or "refused")
      say(rw:try_acquire_write() == nil and "no writer" or "writer")
      wait_file(ARGS.go, 60)
      a:release()
      b:release()
      say("released")
    ]], { dir = dir, name = rw.name, go = sig .. "/go" })
    c:said("held 2")
    c:said("no writer")
    H.assert_rw_info(rw, { readers = 6 })
    assert.is_nil(rw:try_acquire_write())
    assert.is_nil(wh.rwlock("rw", { dir = dir }):try_acquire_write())
    H.touch(sig .. "/go")
    c:said("released")
    c:ok()
    H.assert_rw_info(rw, { readers = 4 })
    assert.is_nil(rw:try_acquire_write())
    for i = 1, 3 do assert.is_true(mine[i]:release()) end
    assert.is_nil(rw:try_acquire_write(), "one reader is left")
    assert.is_true(mine[4]:release())
    H.assert_rw_info(rw, {})
    local w = rw:try_acquire_write()
    assert.is_truthy(w)
    H.assert_rw_info(rw, { writer = true })
    w:release()
  end)

  it("has one writer, who excludes readers, upgradeable readers and writers everywhere", function()
    local dir, sig = H.tmpdir(), H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local w = rw:try_acquire_write()
    assert.is_truthy(w)
    H.assert_rw_info(rw, { writer = true })
    -- in its own process, through the same object and through another one
    for _, o in ipairs({ rw, wh.rwlock("rw", { dir = dir }) }) do
      assert.is_nil(o:try_acquire_write())
      assert.is_nil(o:try_acquire_read())
      assert.is_nil(o:try_acquire_upgradeable_read())
      assert.is_nil(o:try_acquire_read(0.05))
      assert.are.equal("timeout", H.raised(o.acquire_read, o, 0.05).code)
      assert.are.equal("timeout", H.raised(o.acquire_write, o, 0.05).code)
      assert.are.equal("timeout", H.raised(o.acquire_upgradeable_read, o, 0.05).code)
    end
    -- in another process
    H.probe_rw(dir, rw, "no read no upgradeable no write")
    -- a writer blocked in another process gets it when this one releases
    local c = H.rw_writer(dir, rw, sig .. "/go")
    H.waiting_writers(rw, 1)
    H.assert_rw_info(rw, { writer = true, waiting_writers = 1 })
    assert.is_true(w:release())
    c:said("got")
    H.assert_rw_info(rw, { writer = true })
    assert.is_nil(rw:try_acquire_write())
    assert.is_nil(rw:try_acquire_read())
    assert.is_nil(rw:try_acquire_upgradeable_read())
    local err = H.raised(rw.acquire_read, rw, 0.05)
    assert.are.equal("timeout", err.code)
    assert.are.equal(rw.name, err.name)
    H.touch(sig .. "/go")
    local r = rw:acquire_read(10)
    assert.is_truthy(r)
    c:said("released")
    c:ok()
    H.assert_rw_info(rw, { readers = 1 })
    r:release()
    H.assert_rw_info(rw, {})
  end)

  it("writer preference: a waiting writer keeps new readers out, then readers come back", function()
    local dir, sig = H.tmpdir(), H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local r1, r2 = rw:try_acquire_read(), rw:try_acquire_read()
    assert.is_truthy(r1 and r2)
    local w = H.rw_writer(dir, rw, sig .. "/go")
    H.waiting_writers(rw, 1)
    -- Only readers hold, yet a third process cannot read: the writer waits.
    H.probe_rw(dir, rw, "no read no upgradeable no write")
    assert.is_nil(rw:try_acquire_read())
    assert.is_nil(rw:try_acquire_read(0.1))
    assert.is_nil(rw:try_acquire_upgradeable_read())
    H.assert_rw_info(rw, { readers = 2, waiting_writers = 1 })
    -- once the readers release, the writer gets it
    r1:release()
    H.assert_rw_info(rw, { readers = 1, waiting_writers = 1 })
    r2:release()
    w:said("got")
    H.assert_rw_info(rw, { writer = true })
    assert.is_nil(rw:try_acquire_read())
    -- then readers again, here and elsewhere
    H.touch(sig .. "/go")
    w:said("released")
    w:ok()
    local r3 = rw:acquire_read(5)
    assert.is_truthy(r3)
    H.probe_rw(dir, rw, "read upgradeable no write")
    H.assert_rw_info(rw, { readers = 1 })
    r3:release()
    H.assert_rw_info(rw, {})
  end)

  it("writer preference holds for async writers; their claim goes when they give up", function()
    local dir = H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local r = rw:try_acquire_read()
    assert.is_truthy(r)

    -- A waiting async writer (a coroutine, so it yields between polls).
    local co = coroutine.create(function() return rw:acquire_write_async(30, { sleep = yield }) end)
    local ok, delay = coroutine.resume(co)
    assert.is_true(ok, tostring(delay))
    assert.are.equal("suspended", coroutine.status(co))
    assert.are.equal("number", type(delay))
    -- A waiter that stops polling loses its place within its lease: poll it, as a scheduler
    -- would, right before each look and while another process looks.
    local function poll()
      local rok, d = coroutine.resume(co)
      assert.is_true(rok, tostring(d))
      assert.are.equal("suspended", coroutine.status(co))
    end
    H.assert_rw_info(rw, { readers = 1, waiting_writers = 1 })
    H.probe_rw(dir, rw, "no read no upgradeable no write", poll)
    poll()
    assert.is_nil(rw:try_acquire_read())
    -- the reader leaves; resumed, the writer gets it
    r:release()
    local deadline, h = H.now() + 10, nil
    while coroutine.status(co) == "suspended" do
      assert.is_true(H.now() < deadline, "the async writer never got it")
      local res
      ok, res = coroutine.resume(co)
      assert.is_true(ok, tostring(res))
      if coroutine.status(co) == "dead" then h = res else H.sleep(res) end
    end
    assert.are.equal("write", h.kind)
    H.assert_rw_info(rw, { writer = true })
    h:release()

    -- Cancelled: the claim is withdrawn at once.
    r = rw:try_acquire_read()
    local tok = wh.cancel_token()
    co = coroutine.create(function()
      return rw:try_acquire_write_async(30, { cancel = tok, sleep = yield })
    end)
    assert.is_true((coroutine.resume(co)))
    H.assert_rw_info(rw, { readers = 1, waiting_writers = 1 })
    tok:cancel()
    local res
    ok, res = coroutine.resume(co)
    assert.is_false(ok)
    assert.are.equal("cancelled", type(res) == "table" and res.code or res)
    H.assert_rw_info(rw, { readers = 1 })
    local r2 = rw:try_acquire_read()
    assert.is_truthy(r2)
    r2:release()

    -- Timed out: likewise.
    co = coroutine.create(function() return rw:try_acquire_write_async(0.05, { sleep = yield }) end)
    deadline = H.now() + 10
    repeat
      assert.is_true(H.now() < deadline, "the async writer never timed out")
      ok, res = coroutine.resume(co)
      assert.is_true(ok, tostring(res))
      if coroutine.status(co) ~= "dead" then
        H.assert_rw_info(rw, { readers = 1, waiting_writers = 1 })
        H.sleep(res)
      end
    until coroutine.status(co) == "dead"
    assert.is_nil(res)
    H.assert_rw_info(rw, { readers = 1 })
    r2 = rw:try_acquire_read()
    assert.is_truthy(r2)
    r2:release()
    r:release()
    H.assert_rw_info(rw, {})
  end)

  it("async acquisitions in a coroutine yield the suggested delay by default", function()
    local dir = H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    for _, f in ipairs({ "read", "write", "upgradeable_read" }) do
      for _, m in ipairs({ "try_acquire_" .. f .. "_async", "acquire_" .. f .. "_async" }) do
        local w = rw:try_acquire_write()
        assert.is_truthy(w)
        local co = coroutine.create(function() return rw[m](rw, 30) end)
        local ok, d = coroutine.resume(co)
        assert.is_true(ok, m .. ": " .. tostring(d))
        assert.are.equal("suspended", coroutine.status(co), m)
        assert.are.equal("number", type(d), m)
        assert.is_true(d > 0 and d <= 1, m)
        w:release()
        local deadline, h = H.now() + 10, nil
        while coroutine.status(co) == "suspended" do
          assert.is_true(H.now() < deadline, m .. " never got it")
          ok, d = coroutine.resume(co)
          assert.is_true(ok, m .. ": " .. tostring(d))
          if coroutine.status(co) == "dead" then h = d else H.sleep(d) end
        end
        assert.are.equal(f, h and h.kind, m)
        h:release()
        H.assert_rw_info(rw, {})
      end
    end
  end)

  describe("rejects bad arguments:", function()
    local families = { "read", "write", "upgradeable_read" }
    local methods = {}
    for _, f in ipairs(families) do
      for _, pre in ipairs({ "try_acquire_", "acquire_" }) do
        methods[#methods + 1] = pre .. f
        methods[#methods + 1] = pre .. f .. "_async"
      end
    end

    local bad_timeouts = { -1, -0.001, -math.huge, 0 / 0, 2147483.648, 1e300, "1", "0", {}, true,
      print }
    local bad_options = { { foo = 1 }, { timeout = 1 }, { [1] = true }, { cancel = 42 },
      { sleep = "x" }, { cancel = wh.cancel_token(), extra = true }, "opts", 42, true }

    for _, m in ipairs(methods) do
      it(m, function()
        local dir = H.tmpdir()
        local rw = wh.rwlock("rw", { dir = dir })
        local function check_all()
          for _, t in ipairs(bad_timeouts) do H.assert_bad_argument(1, m, rw[m], rw, t) end
          for _, o in ipairs(bad_options) do
            H.assert_bad_argument(2, m, rw[m], rw, nil, o)
            H.assert_bad_argument(2, m, rw[m], rw, 0, o)
          end
          H.assert_bad_argument(3, m, rw[m], rw, nil, nil, 1)
          H.assert_bad_argument(3, m, rw[m], rw, 1, {}, {})
          H.assert_bad_argument(3, m, rw[m], rw, 0, nil, nil, "x") -- the first extra argument is named
        end
        -- on a free object
        check_all()
        H.assert_rw_info(rw, {})
        -- and on a busy one: still an argument error, never a nil
        local w = wh.rwlock("rw", { dir = dir }):try_acquire_write()
        assert.is_truthy(w)
        check_all()
        H.assert_rw_info(rw, { writer = true })
        w:release()
        -- the edges that are accepted
        for _, t in ipairs({ 0, 2147483.647, math.huge, 1, 0.5 }) do
          local h = rw[m](rw, t, { cancel = wh.cancel_token(), sleep = function() end })
          assert.is_truthy(h, m .. "(" .. t .. ")")
          h:release()
          h = rw[m](rw, t, {})
          assert.is_truthy(h)
          h:release()
        end
        local h = rw[m](rw, nil, nil)
        assert.is_truthy(h)
        h:release()
        H.assert_rw_info(rw, {})
      end)
    end

    it("info", function()
      local rw = wh.rwlock("rw", { dir = H.tmpdir() })
      H.assert_bad_argument(1, "info", rw.info, rw, 1)
    end)
  end)

  it("gives handles of kind read, write and upgradeable_read that say what they are", function()
    local dir = H.tmpdir()
    local rw = wh.rwlock("kinds", { dir = dir })
    local function check(h, kind)
      assert.is_truthy(h)
      assert.are.equal(kind, h.kind)
      assert.are.equal("kinds", h.name)
      assert.is_true(h:is_held())
      local s = tostring(h)
      assert.is_truthy(s:find("^waithandles%.handle%("), s)
      assert.is_truthy(s:find(kind .. " 'kinds'", 1, true), s)
      assert.is_truthy(s:find("held", 1, true), s)
      assert.is_falsy(s:find("released", 1, true), s)
      assert.is_true(h:release())
      assert.is_false(h:is_held())
      assert.is_false(h:release())
      s = tostring(h)
      assert.is_truthy(s:find(kind .. " 'kinds'", 1, true), s)
      assert.is_truthy(s:find("released", 1, true), s)
      assert.are.equal(kind, h.kind)
    end
    check(rw:try_acquire_read(), "read")
    check(rw:acquire_read(1), "read")
    check(rw:try_acquire_write(), "write")
    check(rw:acquire_write(1), "write")
    check(rw:try_acquire_upgradeable_read(), "upgradeable_read")
    check(rw:acquire_upgradeable_read(1), "upgradeable_read")
    -- "read" is not a prefix match of "upgradeable_read"
    local h = rw:try_acquire_read()
    assert.is_falsy(tostring(h):find("upgradeable", 1, true))
    h:release()
    -- the async forms give the same kinds
    check(rw:try_acquire_read_async(), "read")
    check(rw:acquire_write_async(1), "write")
    check(rw:try_acquire_upgradeable_read_async(1), "upgradeable_read")
    H.assert_rw_info(rw, {})
  end)

  it("reports exact info() in every state", function()
    local dir, sig = H.tmpdir(), H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local other = wh.rwlock("rw", { dir = dir })
    H.assert_rw_info(rw, {})

    -- readers, here and in another process
    local a, b = rw:try_acquire_read(), other:try_acquire_read()
    H.assert_rw_info(rw, { readers = 2 })
    local c = H.rw_reader(dir, rw, sig .. "/r")
    H.assert_rw_info(rw, { readers = 3 })
    H.assert_rw_info(other, { readers = 3 })
    a:release()
    H.assert_rw_info(rw, { readers = 2 })

    -- an upgradeable reader counts as a reader until it upgrades
    local u = rw:try_acquire_upgradeable_read()
    assert.is_truthy(u)
    H.assert_rw_info(rw, { readers = 3, upgradeable = true })

    -- waiting writers: two of them, in two processes
    local w1 = spawn(H.RW_BLOCKED_WRITER, { dir = dir, name = rw.name, go = sig .. "/w1" })
    local w2 = spawn(H.RW_BLOCKED_WRITER, { dir = dir, name = rw.name, go = sig .. "/w2" })
    w1:said("waiting")
    w2:said("waiting")
    H.waiting_writers(rw, 2)
    H.assert_rw_info(rw, { readers = 3, upgradeable = true, waiting_writers = 2 })

    -- the upgrade counts as a waiting writer too, until the readers leave
    local co = coroutine.create(function() return u:upgrade_async(30, { sleep = yield }) end)
    assert.is_true((coroutine.resume(co)))
    H.assert_rw_info(rw, { readers = 3, upgradeable = true, waiting_writers = 3 })
    b:release()
    H.touch(sig .. "/r")
    c:said("released")
    c:ok()
    H.drive_body(co, nil, 10)
    -- upgraded: one writer, no readers; the two writers still wait
    assert.is_true(u.upgraded)
    H.assert_rw_info(rw, { writer = true, upgradeable = true, waiting_writers = 2 })

    -- releasing it lets one writer in, then the other
    u:release()
    H.eventually(function() return rw:info().writer end, 10, "a writer got it")
    H.assert_rw_info(rw, { writer = true, waiting_writers = 1 })
    H.touch(sig .. "/w1")
    H.touch(sig .. "/w2")
    for _, w in ipairs({ w1, w2 }) do
      w:said("got")
      w:said("released")
      w:ok()
    end
    H.assert_rw_info(rw, {})

    -- a writer here
    local w = rw:try_acquire_write()
    H.assert_rw_info(rw, { writer = true })
    H.assert_rw_info(other, { writer = true })
    w:release()
    H.assert_rw_info(rw, {})
  end)
end)
