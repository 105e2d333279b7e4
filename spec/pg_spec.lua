-- The postgres backend's own behaviour (doc/POSTGRES.md): keys, exact keys, info() from
-- pg_locks, sessions that end (a killed holder, pg_terminate_backend, a server restart),
-- reconnection, connection errors, async waits that never block. Needs WH_PG_CONNINFO and
-- WH_PG_DIR (the cluster of scripts/pg-cluster.sh, for the restart), set by scripts/test.sh.
local wh = require "waithandles"
local H = require "helpers"
local T = H.whtest

local CONNINFO = os.getenv("WH_PG_CONNINFO")
local PGDIR = os.getenv("WH_PG_DIR")
local unique = 0

local function yield(d) coroutine.yield(d) end

describe("postgres backend", function()
  if not CONNINFO then
    it("needs PostgreSQL", function()
      pending("PostgreSQL did not start (WH_PG_CONNINFO unset): see scripts/pg-cluster.sh")
    end)
    return
  end

  local opts, p, raw
  before_each(function()
    unique = unique + 1
    opts = { backend = "postgres", conninfo = CONNINFO,
      namespace = ("pg%d-%d-%d"):format(T.getpid(), unique, math.floor(H.now() * 1000) % 100000) }
    p = wh.provider(opts)
    raw = wh.provider(opts) -- a second session, for plain SQL (its internal _run)
  end)
  after_each(H.cleanup)

  local function sql(q)
    local res = raw:_run(q)
    local r = res[#res]
    return r[1] and r[1][1], r
  end

  local function spawn(code, args)
    args = args or {}
    args.opts = opts
    return H.spawn("local p = wh.provider(ARGS.opts)\n" .. code, args)
  end

  describe("keys", function()
    it("are hashtextextended(namespace:name) for every process, and documented", function()
      local l = p:lock("jobs")
      local want = sql(("SELECT hashtextextended('%s:jobs' COLLATE \"C\", 0)"):format(opts.namespace))
      assert.are.equal(want, l.key)
      assert.are.equal(want, wh.provider(opts):lock("jobs").key)
      local c = spawn([[say(p:lock("jobs").key)]])
      c:said(want)
      c:ok()
      -- an escaped name's key is that of its escaped form
      assert.are.equal(p:lock("a_2Fb").key, p:lock("a/b").key)
      -- a semaphore's tickets: the int4 pair (A, i), A from the same hash
      local s = p:semaphore("pool", 2)
      assert.are.equal(sql(("SELECT hashtextextended('%s:pool' COLLATE \"C\", 2) >> 32"):format(opts.namespace)),
        s.key)
      local t = assert(s:try_acquire())
      assert.are.equal("t", sql(("SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 "
        .. "AND classid::int8 = (%s::int8 & 4294967295) AND objid = 1 AND granted"):format(s.key)))
      t:release()
    end)

    it("another namespace is another set of objects", function()
      local h = assert(p:lock("jobs"):try_acquire())
      local o2 = {}
      for k, v in pairs(opts) do o2[k] = v end
      o2.namespace = opts.namespace .. "-other"
      assert.is_truthy(wh.provider(o2):lock("jobs"):try_acquire())
      assert.is_nil(wh.provider(opts):lock("jobs"):try_acquire())
      h:release()
    end)

    it("exact_key: the name is the key, shared with SQL that uses pg_advisory_lock", function()
      local l = p:lock("7040042", { exact_key = true })
      assert.are.equal("7040042", l.key)
      local h = assert(l:try_acquire())
      assert.are.equal("f", sql("SELECT pg_try_advisory_lock(7040042)"))
      h:release()
      assert.are.equal("t", sql("SELECT pg_try_advisory_lock(7040042)"))
      assert.is_nil(l:try_acquire())
      sql("SELECT pg_advisory_unlock(7040042)")
      assert.is_truthy(l:try_acquire())
      -- readers and writers of an exact-key rwlock are pg_advisory_lock_shared / pg_advisory_lock
      local rw = p:rwlock("-9223372036854775808", { exact_key = true })
      local r = assert(rw:try_acquire_read())
      assert.are.equal("t", sql("SELECT pg_try_advisory_lock_shared(-9223372036854775808)"))
      assert.are.equal("f", sql("SELECT pg_try_advisory_lock(-9223372036854775808)"))
      sql("SELECT pg_advisory_unlock_shared(-9223372036854775808)")
      r:release()
      -- a semaphore's exact key is an int4: tickets are pg_advisory_lock(key, 1 .. max_count)
      local s = wh.provider({ backend = "postgres", conninfo = CONNINFO, exact_key = true }):semaphore("77", 1)
      local t = assert(s:try_acquire())
      assert.are.equal("f", sql("SELECT pg_try_advisory_lock(77, 1)"))
      t:release()
      for _, bad in ipairs({ "x", "1.5", "9223372036854775808", "-9223372036854775809", "01", "" }) do
        H.assert_code("invalid_name", nil, function() p:lock(bad, { exact_key = true }) end)
      end
      H.assert_code("invalid_name", nil, function() p:semaphore("2147483648", 2, { exact_key = true }) end)
    end)
  end)

  describe("info()", function()
    it("names the holders' backend PIDs and application names", function()
      local o2 = { backend = "postgres", conninfo = CONNINFO .. "&application_name=wh-spec",
        namespace = opts.namespace }
      local q = wh.provider(o2)
      local h = assert(q:lock("jobs"):try_acquire())
      local i = p:lock("jobs"):info()
      assert.are.equal(1, i.held)
      assert.are.equal(q:backend_pid(), i.holders[1].pid)
      assert.are.equal("wh-spec", i.holders[1].application_name)
      h:release()
      assert.are.equal(0, #p:lock("jobs"):info().holders)
    end)

    it("counts waiting writers and readers of other sessions", function()
      local rw = p:rwlock("cfg")
      local r = assert(rw:try_acquire_read())
      local c = spawn([[
        local rw = p:rwlock("cfg")
        say("waiting")
        local w = rw:acquire_write(20)
        say("got")
      ]])
      c:said("waiting")
      H.waiting_writers(rw, 1)
      local i = rw:info()
      assert.are.equal(1, i.readers)
      assert.are.equal(1, i.waiting)
      r:release()
      c:said("got")
      c:ok()
    end)
  end)

  describe("sessions that end", function()
    it("a holder killed with SIGKILL: a blocked waiter here gets the lock within 1 s", function()
      local c = spawn([[
        local h = assert(p:lock("jobs"):try_acquire())
        say("held")
        T.sleep(60)
      ]])
      c:said("held")
      local l = p:lock("jobs")
      local killed
      local h = l:acquire(10, { cancel = function()
        if not killed then killed = H.now() c:kill(T.SIGKILL) end
        return false
      end })
      local dt = H.now() - killed
      assert.is_true(h:is_held())
      assert.is_true(dt < 1, ("took %.3f s"):format(dt))
      c:wait()
    end)

    it("pg_terminate_backend of the provider's session: its handles are lost, then it reconnects", function()
      local l, s, rw = p:lock("jobs"), p:semaphore("pool", 1), p:rwlock("cfg")
      local h, t, u = assert(l:try_acquire()), assert(s:try_acquire()), assert(rw:try_acquire_upgradeable_read())
      local pid = p:backend_pid()
      assert.are.equal("t", sql(("SELECT pg_terminate_backend(%d)"):format(pid)))
      H.eventually(function() return h:is_lost() end, 5, "the handle reports lost")
      for _, x in ipairs({ h, t, u }) do
        assert.is_true(x:is_lost())
        assert.is_false(x:is_held())
        assert.is_truthy(tostring(x):find("released", 1, true))
      end
      -- the server released them: another session takes them
      local q = wh.provider(opts)
      local h2 = assert(q:lock("jobs"):try_acquire())
      h2:release()
      H.assert_code("released", "cfg", u.try_upgrade, u)
      -- the provider connects again for new acquisitions
      local h3 = assert(l:try_acquire())
      assert.are_not.equal(pid, p:backend_pid())
      assert.is_true(h3:is_held())
      assert.is_false(h3:is_lost())
      assert.is_true(h:release())   -- a lost handle still releases (nothing to give back)
      assert.is_false(h:is_lost())
      assert.is_nil(q:lock("jobs"):try_acquire())
      h3:release()
      assert.is_truthy(q:lock("jobs"):try_acquire())
    end)

    it("a waiter whose session is terminated goes on waiting on a new one", function()
      local go = H.tmpdir() .. "/go"
      local c = spawn([[
        local h = assert(p:lock("jobs"):try_acquire())
        say("held")
        wait_file(ARGS.go, 60)
        h:release()
        say("released")
        T.sleep(30)
      ]], { go = go })
      c:said("held")
      local l = p:lock("jobs")
      local co = coroutine.create(function() return l:acquire_async(10, { sleep = yield }) end)
      assert.is_true((coroutine.resume(co)))
      local first = p:backend_pid()
      sql(("SELECT pg_terminate_backend(%d)"):format(first))
      H.sleep(0.05)
      assert.is_true((coroutine.resume(co))) -- notices, connects again, waits again
      H.touch(go)
      c:said("released")
      local h = H.drive_body(co, nil, 10)
      assert.is_true(h:is_held())
      assert.are_not.equal(first, p:backend_pid())
      assert.is_nil(raw:lock("jobs"):try_acquire())
    end)

    it("the server restarted while handles are held: they are lost; new acquisitions work", function()
      if not PGDIR then pending("WH_PG_DIR unset: cannot restart the cluster") return end
      local l = p:lock("jobs")
      local h = assert(l:try_acquire())
      local r = assert(p:rwlock("cfg"):try_acquire_read())
      local out = H.sh("scripts/pg-cluster.sh restart '" .. PGDIR .. "'; echo rc=$?")
      assert.is_truthy(out:find("rc=0", 1, true), out)
      assert.is_true(h:is_lost())
      assert.is_false(h:is_held())
      assert.is_true(r:is_lost())
      local h2 = H.eventually(function()
        local ok, x = pcall(l.try_acquire, l)
        return ok and x
      end, 10, "an acquisition after the restart")
      assert.is_true(h2:is_held())
      assert.is_false(h2:is_lost())
      assert.is_nil(wh.provider(opts):lock("jobs"):try_acquire())
      assert.is_true(h:release())
      h2:release()
    end)

    it("a provider that becomes garbage ends its session and so its holds", function()
      do
        local q = wh.provider(opts)
        local _ = assert(q:lock("jobs"):try_acquire())
      end
      for _ = 1, 4 do collectgarbage() end
      H.eventually(function() return p:lock("jobs"):try_acquire() end, 5, "the lock is free")
    end)

    it("a forked child gets a session of its own; the parent's holds stay", function()
      local h = assert(p:lock("jobs"):try_acquire())
      local dir = H.tmpdir()
      local pid = T.fork()
      if pid == 0 then
        local ok, err = pcall(function()
          assert(not h:is_held() and h:release() == false)
          local x = p:lock("other"):try_acquire()
          assert(x and x:is_held(), "no hold in the child")
          assert(p:lock("jobs"):try_acquire() == nil, "the parent's lock is free in the child")
        end)
        H.write_file(dir .. "/r", ok and "ok" or tostring(err))
        T.exit(0)
      end
      T.waitpid(pid, 30)
      assert.are.equal("ok", H.read_file(dir .. "/r"))
      assert.is_true(h:is_held())
      assert.is_nil(wh.provider(opts):lock("jobs"):try_acquire())
      assert.is_truthy(p:lock("other"):try_acquire())
    end)
  end)

  describe("connections", function()
    it("is made at the first use; a server that cannot be reached raises code os, ECONNREFUSED", function()
      local q = wh.provider({ backend = "postgres", conninfo = "postgresql://nobody@127.0.0.1:1/x?connect_timeout=2" })
      local l = q:lock("jobs")        -- nothing asked of the server yet
      local err = H.assert_code("os", "jobs", l.try_acquire, l)
      assert.are.equal(111, err.errno)
      assert.is_truthy(err.message:find("cannot connect", 1, true), err.message)
    end)

    it("checks the provider's options", function()
      H.assert_bad_argument(1, "provider", wh.provider, { backend = "postgres" })
      H.assert_bad_argument(1, "provider", wh.provider, { backend = "postgres", conninfo = 1 })
      H.assert_bad_argument(1, "provider", wh.provider, { backend = "postgres", conninfo = "x", dir = "/tmp" })
      H.assert_bad_argument(1, "provider", wh.provider, { backend = "postgres", conninfo = "x", namespace = "a b" })
      H.assert_bad_argument(2, "lock", p.lock, p, "x", { dir = "/tmp" })
      assert.are.equal("waithandles.Provider", getmetatable(p))
      assert.are.equal("waithandles.Lock", getmetatable(p:lock("x")))
    end)

    it("remove has nothing to remove: false", function()
      assert.is_false(p:remove("jobs"))
      H.assert_bad_argument(1, "remove", p.remove, p, 42)
    end)
  end)

  describe("events and fencing tokens, which this backend does not have", function()
    it("p:event raises code os, EOPNOTSUPP, naming the backend and what to use instead", function()
      local err = H.assert_code("os", "ready", p.event, p, "ready")
      assert.are.equal(95, err.errno)
      assert.is_truthy(err.message:find('backend "postgres" has no events', 1, true), err.message)
      assert.is_truthy(err.message:find('backend = "local"', 1, true), err.message)
      H.assert_code("os", "ready", p.event, p, "ready", { auto_reset = true })
      H.assert_bad_argument(1, "event", p.event, p, 42)
      H.assert_bad_argument(2, "event", p.event, p, "ready", 1)
      assert.is_nil(p:backend_pid())  -- asked nothing of the server
    end)

    it("handles have no token (nil), held or not, and info() has none", function()
      local lock, rw, sem = p:lock("ledger"), p:rwlock("table"), p:semaphore("pool", 2)
      local h = lock:acquire(5)
      assert.is_true(h:is_held())
      assert.is_nil(h.token)
      h:release()
      assert.is_nil(h.token)
      local t = sem:acquire(5)
      assert.is_nil(t.token)
      local w = rw:acquire_write(5)
      assert.is_nil(w.token)
      w:release()
      local u = rw:acquire_upgradeable_read(5)
      u:upgrade(5)
      assert.is_true(u.upgraded)
      assert.is_nil(u.token)
      assert.is_nil(lock:info().token)
      assert.is_nil(rw:info().token)
      assert.is_nil(sem:info().token)
      u:release()
      t:release()
    end)
  end)

  describe("async", function()
    it("never blocks: each resume of a waiting coroutine returns within milliseconds", function()
      local c = spawn([[
        local h = assert(p:lock("jobs"):try_acquire())
        say("held")
        T.sleep(0.5)
        h:release()
        say("released")
        T.sleep(30)
      ]])
      c:said("held")
      local l = p:lock("jobs")
      local worst, n = 0, 0
      local co = coroutine.create(function() return l:acquire_async(10) end)
      local h
      while true do
        local t0 = H.now()
        local ok, r = coroutine.resume(co)
        worst = math.max(worst, H.now() - t0)
        assert.is_true(ok, tostring(r))
        if coroutine.status(co) == "dead" then h = r break end
        n = n + 1
        H.sleep(r)
      end
      assert.is_true(h:is_held())
      assert.is_true(n > 5)
      assert.is_true(worst < 0.05, ("a resume took %.3f s"):format(worst))
    end)

    it("a call that needs the connection ends a wait just sent, even one the server had not begun", function()
      -- A cancel that reaches the server while it has not yet read the statement is dropped:
      -- the backend is stopped (SIGSTOP) while the wait is sent and while it is cancelled.
      local other = assert(raw:lock("busy"):try_acquire())
      local co = coroutine.create(function() return p:lock("busy"):acquire_async(20, { sleep = yield }) end)
      assert.is_true((coroutine.resume(co)))            -- its wait is in flight
      assert(p:lock("free1"):try_acquire()):release()   -- ends it; the waiter sends it again...
      local bpid = assert(p:backend_pid())
      if not T.kill(bpid, 19) then pending("cannot signal the server's backend") return end
      local ok, err = pcall(function()
        assert.is_true((coroutine.resume(co)))          -- ...to a backend that does not run
        local child = T.fork()
        if child == 0 then
          T.sleep(0.3)
          T.kill(bpid, 18)
          T.exit(0)
        end
        local t0 = H.now()
        local h = p:lock("free2"):try_acquire()         -- its cancel reaches a stopped backend
        local took = H.now() - t0
        T.waitpid(child, 10)
        assert.is_truthy(h, "the lock is free")
        assert.is_true(took < 3, ("the call waited %.1f s for the wait it cancelled"):format(took))
        h:release()
      end)
      T.kill(bpid, 18)
      assert(ok, err)
      other:release()
      local h = H.drive_body(co, nil, 10)
      assert.is_true(h:is_held())
    end)

    it("a handle collected while another wait is in flight is released soon", function()
      local other = assert(wh.provider(opts):lock("busy"):try_acquire())
      do local _ = assert(p:lock("jobs"):try_acquire()) end
      local co = coroutine.create(function() return p:lock("busy"):acquire_async(10, { sleep = yield }) end)
      assert.is_true((coroutine.resume(co)))
      for _ = 1, 3 do collectgarbage() end
      assert.is_true((coroutine.resume(co)))
      H.eventually(function()
        local h = raw:lock("jobs"):try_acquire()
        if h then h:release() end
        return h
      end, 5, "the collected handle's lock is free")
      other:release()
      local h = H.drive_body(co, nil, 10)
      assert.is_true(h:is_held())
    end)
  end)
end)
