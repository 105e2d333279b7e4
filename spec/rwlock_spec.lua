-- Reader-writer lock: Medallion.Threading's reader-writer cases, ported.
-- Other processes are real child interpreters (helpers.spawn); they are told
-- what to do through files and report through lines on their stdout.
local wh = require "waithandles"
local H = require "helpers"

-- Code every child starts with: the rwlock under test, and a way to wait
-- for the parent's go-ahead (a file appearing).
local CHILD = [[
local rw = wh.rwlock(ARGS.name, { dir = ARGS.dir })
local function wait_file(path)
  local deadline = T.now() + 60
  while true do
    local f = io.open(path, "r")
    if f then f:close() return end
    if T.now() > deadline then error("never saw " .. path) end
    T.sleep(0.002)
  end
end
]]

local kids = {}

local function spawn(code, args)
  local c = H.spawn(CHILD .. code, args)
  kids[#kids + 1] = c
  return c
end

-- Kills and reaps every child a test left running.
local function reap()
  for _, c in ipairs(kids) do
    if c.status == nil then
      c:kill()
      pcall(c.wait, c, 5)
    end
  end
  kids = {}
end

local function touch(path)
  assert(io.open(path, "w")):close()
end

-- The child's next line must be `want` (no line is skipped).
local function said(child, want, timeout)
  local l, why = child:line(timeout or 10)
  assert.are.equal(want, l, ("child %d: got %s; it said:\n%s"):format(child.pid,
    tostring(l or why), table.concat(child.log, "\n")))
end

-- Every field of rwlock:info() that the contract fixes; unspecified fields
-- are those of a free lock, and held = readers + writers.
local function assert_info(rw, want)
  local i = rw:info()
  local readers, writer = want.readers or 0, want.writer or false
  local expected = {
    readers = readers,
    writer = writer,
    upgradeable = want.upgradeable or false,
    waiting_writers = want.waiting_writers or 0,
    held = readers + (writer and 1 or 0),
  }
  for _, k in ipairs({ "readers", "writer", "upgradeable", "waiting_writers", "held" }) do
    assert.are.equal(expected[k], i[k], "info()." .. k)
  end
  assert.are.equal("rwlock", i.kind)
  assert.are.equal(rw.name, i.name)
end

-- A sleep for async calls that yields to the coroutine's resumer (the same
-- as the default inside a coroutine, which has a test of its own).
local function yield(d) coroutine.yield(d) end

local function waiting_writers(rw, n)
  H.eventually(function() return rw:info().waiting_writers == n end, 10,
    n .. " waiting writer(s) in info()")
end

local function error_code(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  assert.are.equal("table", type(err), tostring(err))
  return err.code, err
end

-- A writer in a child: says "waiting", blocks in acquire_write, says "got",
-- holds until ARGS.go exists, says "released".
local BLOCKED_WRITER = [[
say("waiting")
local h = rw:acquire_write(20)
say("got")
wait_file(ARGS.go)
h:release()
say("released")
]]

-- A reader in a child: holds a read until ARGS.go exists.
local HOLDING_READER = [[
local h = rw:try_acquire_read()
say(h and "held" or "refused")
if not h then return end
wait_file(ARGS.go)
h:release()
say("released")
]]

-- A child that makes one attempt of each kind and reports it.
local PROBE = [[
local r = rw:try_acquire_read()
local u = rw:try_acquire_upgradeable_read()
local w = rw:try_acquire_write()
say(r and "read" or "no read", u and "upgradeable" or "no upgradeable", w and "write" or "no write")
]]

describe("rwlock", function()
  after_each(reap)
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
      wait_file(ARGS.go)
      a:release()
      b:release()
      say("released")
    ]], { dir = dir, name = rw.name, go = sig .. "/go" })
    said(c, "held 2")
    said(c, "no writer")
    assert_info(rw, { readers = 6 })
    assert.is_nil(rw:try_acquire_write())
    assert.is_nil(wh.rwlock("rw", { dir = dir }):try_acquire_write())
    touch(sig .. "/go")
    said(c, "released")
    c:ok()
    assert_info(rw, { readers = 4 })
    assert.is_nil(rw:try_acquire_write())
    for i = 1, 3 do assert.is_true(mine[i]:release()) end
    assert.is_nil(rw:try_acquire_write(), "one reader is left")
    assert.is_true(mine[4]:release())
    assert_info(rw, {})
    local w = rw:try_acquire_write()
    assert.is_truthy(w)
    assert_info(rw, { writer = true })
    w:release()
  end)

  it("has one writer, who excludes readers, upgradeable readers and writers everywhere", function()
    local dir, sig = H.tmpdir(), H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local w = rw:try_acquire_write()
    assert.is_truthy(w)
    assert_info(rw, { writer = true })
    -- in its own process, through the same object and through another one
    for _, o in ipairs({ rw, wh.rwlock("rw", { dir = dir }) }) do
      assert.is_nil(o:try_acquire_write())
      assert.is_nil(o:try_acquire_read())
      assert.is_nil(o:try_acquire_upgradeable_read())
      assert.is_nil(o:try_acquire_read(0.05))
      assert.are.equal("timeout", error_code(o.acquire_read, o, 0.05))
      assert.are.equal("timeout", error_code(o.acquire_write, o, 0.05))
      assert.are.equal("timeout", error_code(o.acquire_upgradeable_read, o, 0.05))
    end
    -- in another process
    local p = spawn(PROBE, { dir = dir, name = rw.name })
    said(p, "no read no upgradeable no write")
    p:ok()
    -- a writer blocked in another process gets it when this one releases
    local c = spawn(BLOCKED_WRITER, { dir = dir, name = rw.name, go = sig .. "/go" })
    said(c, "waiting")
    waiting_writers(rw, 1)
    assert_info(rw, { writer = true, waiting_writers = 1 })
    assert.is_true(w:release())
    said(c, "got")
    assert_info(rw, { writer = true })
    assert.is_nil(rw:try_acquire_write())
    assert.is_nil(rw:try_acquire_read())
    assert.is_nil(rw:try_acquire_upgradeable_read())
    local err = select(2, error_code(rw.acquire_read, rw, 0.05))
    assert.are.equal("timeout", err.code)
    assert.are.equal(rw.name, err.name)
    touch(sig .. "/go")
    local r = rw:acquire_read(10)
    assert.is_truthy(r)
    said(c, "released")
    c:ok()
    assert_info(rw, { readers = 1 })
    r:release()
    assert_info(rw, {})
  end)

  it("writer preference: a waiting writer keeps new readers out, then readers come back", function()
    local dir, sig = H.tmpdir(), H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local r1, r2 = rw:try_acquire_read(), rw:try_acquire_read()
    assert.is_truthy(r1 and r2)
    local w = spawn(BLOCKED_WRITER, { dir = dir, name = rw.name, go = sig .. "/go" })
    said(w, "waiting")
    waiting_writers(rw, 1)
    -- Only readers hold, yet a third process cannot read: the writer waits.
    local p = spawn(PROBE, { dir = dir, name = rw.name })
    said(p, "no read no upgradeable no write")
    p:ok()
    assert.is_nil(rw:try_acquire_read())
    assert.is_nil(rw:try_acquire_read(0.1))
    assert.is_nil(rw:try_acquire_upgradeable_read())
    assert_info(rw, { readers = 2, waiting_writers = 1 })
    -- once the readers release, the writer gets it
    r1:release()
    assert_info(rw, { readers = 1, waiting_writers = 1 })
    r2:release()
    said(w, "got")
    assert_info(rw, { writer = true })
    assert.is_nil(rw:try_acquire_read())
    -- then readers again, here and elsewhere
    touch(sig .. "/go")
    said(w, "released")
    w:ok()
    local r3 = rw:acquire_read(5)
    assert.is_truthy(r3)
    local p2 = spawn(PROBE, { dir = dir, name = rw.name })
    said(p2, "read upgradeable no write")
    p2:ok()
    assert_info(rw, { readers = 1 })
    r3:release()
    assert_info(rw, {})
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
    assert_info(rw, { readers = 1, waiting_writers = 1 })
    local p = spawn(PROBE, { dir = dir, name = rw.name })
    said(p, "no read no upgradeable no write")
    p:ok()
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
    assert_info(rw, { writer = true })
    h:release()

    -- Cancelled: the claim is withdrawn at once.
    r = rw:try_acquire_read()
    local tok = wh.cancel_token()
    co = coroutine.create(function()
      return rw:try_acquire_write_async(30, { cancel = tok, sleep = yield })
    end)
    assert.is_true((coroutine.resume(co)))
    assert_info(rw, { readers = 1, waiting_writers = 1 })
    tok:cancel()
    local res
    ok, res = coroutine.resume(co)
    assert.is_false(ok)
    assert.are.equal("cancelled", type(res) == "table" and res.code or res)
    assert_info(rw, { readers = 1 })
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
        assert_info(rw, { readers = 1, waiting_writers = 1 })
        H.sleep(res)
      end
    until coroutine.status(co) == "dead"
    assert.is_nil(res)
    assert_info(rw, { readers = 1 })
    r2 = rw:try_acquire_read()
    assert.is_truthy(r2)
    r2:release()
    r:release()
    assert_info(rw, {})
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
        assert_info(rw, {})
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

    local function arg_error(n, name, f, ...)
      local ok, err = pcall(f, ...)
      assert.is_false(ok, ("%s: no error for bad argument #%d"):format(name, n))
      assert.are.equal("string", type(err), ("%s: %s"):format(name, tostring(err)))
      local want = ("bad argument #%d to '%s'"):format(n, name)
      assert.is_truthy(err:find(want, 1, true), ("%s: %q does not say %q"):format(name, err, want))
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
          for _, t in ipairs(bad_timeouts) do arg_error(1, m, rw[m], rw, t) end
          for _, o in ipairs(bad_options) do
            arg_error(2, m, rw[m], rw, nil, o)
            arg_error(2, m, rw[m], rw, 0, o)
          end
          arg_error(3, m, rw[m], rw, nil, nil, 1)
          arg_error(3, m, rw[m], rw, 1, {}, {})
          arg_error(3, m, rw[m], rw, 0, nil, nil, "x") -- the first extra argument is named
        end
        -- on a free object
        check_all()
        assert_info(rw, {})
        -- and on a busy one: still an argument error, never a nil
        local w = wh.rwlock("rw", { dir = dir }):try_acquire_write()
        assert.is_truthy(w)
        check_all()
        assert_info(rw, { writer = true })
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
        assert_info(rw, {})
      end)
    end

    it("info", function()
      local rw = wh.rwlock("rw", { dir = H.tmpdir() })
      arg_error(1, "info", rw.info, rw, 1)
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
    assert_info(rw, {})
  end)

  it("reports exact info() in every state", function()
    local dir, sig = H.tmpdir(), H.tmpdir()
    local rw = wh.rwlock("rw", { dir = dir })
    local other = wh.rwlock("rw", { dir = dir })
    assert_info(rw, {})

    -- readers, here and in another process
    local a, b = rw:try_acquire_read(), other:try_acquire_read()
    assert_info(rw, { readers = 2 })
    local c = spawn(HOLDING_READER, { dir = dir, name = rw.name, go = sig .. "/r" })
    said(c, "held")
    assert_info(rw, { readers = 3 })
    assert_info(other, { readers = 3 })
    a:release()
    assert_info(rw, { readers = 2 })

    -- an upgradeable reader counts as a reader until it upgrades
    local u = rw:try_acquire_upgradeable_read()
    assert.is_truthy(u)
    assert_info(rw, { readers = 3, upgradeable = true })

    -- waiting writers: two of them, in two processes
    local w1 = spawn(BLOCKED_WRITER, { dir = dir, name = rw.name, go = sig .. "/w1" })
    local w2 = spawn(BLOCKED_WRITER, { dir = dir, name = rw.name, go = sig .. "/w2" })
    said(w1, "waiting")
    said(w2, "waiting")
    waiting_writers(rw, 2)
    assert_info(rw, { readers = 3, upgradeable = true, waiting_writers = 2 })

    -- the upgrade counts as a waiting writer too, until the readers leave
    local co = coroutine.create(function() return u:upgrade_async(30, { sleep = yield }) end)
    assert.is_true((coroutine.resume(co)))
    assert_info(rw, { readers = 3, upgradeable = true, waiting_writers = 3 })
    b:release()
    touch(sig .. "/r")
    said(c, "released")
    c:ok()
    local deadline = H.now() + 10
    while coroutine.status(co) == "suspended" do
      assert.is_true(H.now() < deadline, "the upgrade never completed")
      local ok, d = coroutine.resume(co)
      assert.is_true(ok, tostring(d))
      if coroutine.status(co) ~= "dead" then H.sleep(d) end
    end
    -- upgraded: one writer, no readers; the two writers still wait
    assert.is_true(u.upgraded)
    assert_info(rw, { writer = true, upgradeable = true, waiting_writers = 2 })

    -- releasing it lets one writer in, then the other
    u:release()
    H.eventually(function() return rw:info().writer end, 10, "a writer got it")
    assert_info(rw, { writer = true, waiting_writers = 1 })
    touch(sig .. "/w1")
    touch(sig .. "/w2")
    for _, w in ipairs({ w1, w2 }) do
      said(w, "got")
      said(w, "released")
      w:ok()
    end
    assert_info(rw, {})

    -- a writer here
    local w = rw:try_acquire_write()
    assert_info(rw, { writer = true })
    assert_info(other, { writer = true })
    w:release()
    assert_info(rw, {})
  end)
end)
