-- The contract (API.md) that every backend keeps, one spec body per behaviour, run once per
-- backend: "local" (files in a lock directory) and "postgres" (advisory locks; needs
-- WH_PG_CONNINFO, which scripts/test.sh sets after starting a throwaway cluster). Each test
-- gets a fresh provider (a new lock directory, or a new namespace of keys); child processes
-- make theirs from the same options (ARGS.opts). Behaviour that only one backend has is in
-- that backend's own specs (lock_spec, ..., pg_spec); doc/POSTGRES.md lists what differs.
local wh = require "waithandles"
local H = require "helpers"
local T = H.whtest

local CONNINFO = os.getenv("WH_PG_CONNINFO")
local unique = 0

local BACKENDS = {
  {
    name = "local",
    opts = function() return { backend = "local", dir = H.tmpdir() } end,
  },
  {
    name = "postgres",
    opts = function()
      unique = unique + 1
      return { backend = "postgres", conninfo = CONNINFO,
        namespace = ("t%d-%d-%d"):format(T.getpid(), unique, math.floor(H.now() * 1000) % 100000) }
    end,
  },
}

-- Child prelude: p, the provider made from ARGS.opts.
local P = "local p = wh.provider(ARGS.opts)\n"

local function yield(d) coroutine.yield(d) end
local function nap(d) H.sleep(d) end

for _, B in ipairs(BACKENDS) do
  describe("conformance (" .. B.name .. ")", function()
    if B.name == "postgres" and not CONNINFO then
      it("needs PostgreSQL", function()
        pending("PostgreSQL did not start (WH_PG_CONNINFO unset): see scripts/pg-cluster.sh")
      end)
      return
    end

    local opts, p
    before_each(function()
      opts = B.opts()
      p = wh.provider(opts)
    end)
    after_each(H.cleanup)

    local function spawn(code, args)
      args = args or {}
      args.opts = opts
      return H.spawn(P .. code, args)
    end

    -- A child holding lock `name` until the file `go` exists (it says "held", then "released").
    local function holder(name, go)
      local c = spawn([[
        local h = assert(p:lock(ARGS.name):try_acquire())
        say("held")
        wait_file(ARGS.go, 60)
        h:release()
        say("released")
      ]], { name = name, go = go })
      c:said("held")
      return c
    end

    local function probe(name)
      local c = spawn([[
        local h = p:lock(ARGS.name):try_acquire()
        say(h and "acquired" or "busy")
        if h then h:release() end
      ]], { name = name })
      local l = c:line(10)
      c:ok()
      return l
    end

    local function probe_rw(rw, want)
      local c = spawn([[
        local rw = p:rwlock(ARGS.name)
        local r = rw:try_acquire_read()
        local u = rw:try_acquire_upgradeable_read()
        local w = rw:try_acquire_write()
        say(r and "read" or "no read", u and "upgradeable" or "no upgradeable", w and "write" or "no write")
      ]], { name = rw.name })
      c:said(want)
      c:ok()
    end

    local function rw_writer(rw, go)
      local c = spawn([[
        local rw = p:rwlock(ARGS.name)
        say("waiting")
        local h = rw:acquire_write(20)
        say("got")
        wait_file(ARGS.go, 60)
        h:release()
        say("released")
      ]], { name = rw.name, go = go })
      c:said("waiting")
      return c
    end

    local function rw_reader(rw, go)
      local c = spawn([[
        local rw = p:rwlock(ARGS.name)
        local h = rw:try_acquire_read()
        say(h and "held" or "refused")
        wait_file(ARGS.go, 60)
        h:release()
        say("released")
      ]], { name = rw.name, go = go })
      c:said("held")
      return c
    end

    describe("lock", function()
      it("try_acquire gives a held handle; a second attempt fails however it is made", function()
        local l = p:lock("jobs")
        local h = assert(l:try_acquire())
        assert.is_true(h:is_held())
        assert.is_false(h:is_lost())
        assert.are.equal("lock", h.kind)
        assert.are.equal("jobs", h.name)
        assert.are.equal("waithandles.handle(lock 'jobs', held)", tostring(h))
        assert.is_nil(l:try_acquire())
        assert.is_nil(p:lock("jobs"):try_acquire())
        assert.is_nil(l:try_acquire(0.05))
        assert.is_nil(l:try_acquire_async(0.05, { sleep = nap }))
        local ok, r = coroutine.resume(coroutine.create(function() return l:try_acquire() end))
        assert.is_true(ok)
        assert.is_nil(r)
        assert.are.equal("busy", probe("jobs"))
        local i = l:info()
        assert.are.equal(1, i.held)
        assert.are.equal(1, #i.holders)
        assert.are.equal("number", type(i.holders[1].pid))
        assert.is_true(h:release())
        assert.is_false(h:release())
        assert.is_false(h:is_held())
        assert.is_false(h:is_lost())
        assert.are.equal("waithandles.handle(lock 'jobs', released)", tostring(h))
        assert.are.equal(0, l:info().held)
        assert.are.equal("acquired", probe("jobs"))
      end)

      it("names are escaped like safe_name; exact_name refuses a name that needs it", function()
        local l = p:lock("a/b c")
        assert.are.equal(wh.safe_name("a/b c"), l.name)
        local h = assert(l:try_acquire())
        assert.is_nil(p:lock(wh.safe_name("a/b c")):try_acquire())
        h:release()
        H.assert_code("invalid_name", "a b", function() p:lock("a b", { exact_name = true }):try_acquire() end)
      end)

      it("acquire raises a timeout error object naming the lock, after the timeout", function()
        local l = p:lock("jobs")
        local _h = assert(l:try_acquire())
        local err
        local dt = H.time(function() err = H.assert_code("timeout", "jobs", l.acquire, l, 0.2) end)
        assert.is_true(dt >= 0.19 and dt < 5, "raised after " .. dt .. " s")
        assert.is_truthy(tostring(err):find("^waithandles: timeout: "), tostring(err))
        dt = H.time(function() assert.is_nil(l:try_acquire(0.2)) end)
        assert.is_true(dt >= 0.19 and dt < 5, "returned after " .. dt .. " s")
        H.assert_code("timeout", "jobs", l.acquire, l, 0)
        H.assert_code("timeout", "jobs", l.acquire_async, l, 0.05, { sleep = nap })
      end)

      for _, m in ipairs({ "acquire", "acquire_async" }) do
        it(m .. " gets the lock as soon as another process releases it", function()
          local go = H.tmpdir() .. "/go"
          local c = holder("jobs", go)
          local l = p:lock("jobs", { abandonment_check = 0.05 })
          local t0
          -- The child releases once `go` exists: made by the cancel function (asked while the
          -- blocking form waits) or by a second coroutine (while the async form sleeps).
          local function let_go()
            if t0 == nil and H.now() - c.started > 0.2 then
              t0 = H.now()
              H.touch(go)
            end
            return false
          end
          c.started = H.now()
          local results = H.run({
            function() return l[m](l, 10, { cancel = let_go }) end,
            function()
              while t0 == nil do
                let_go()
                coroutine.yield(0.01)
              end
            end,
          })
          c:said("released")
          c:ok()
          assert.is_true(results[1][1], tostring(results[1][2]))
          local h = results[1][2]
          local dt = H.now() - t0
          assert.is_true(h:is_held())
          assert.is_true(dt < 1, ("took %.3f s after the release"):format(dt))
          h:release()
        end)
      end

      it("a holder killed with SIGKILL gives the lock back within 1 s", function()
        local c = spawn([[
          local h = assert(p:lock("jobs"):try_acquire())
          say("held")
          T.sleep(60)
        ]])
        c:said("held")
        local l = p:lock("jobs")
        assert.is_nil(l:try_acquire())
        c:kill(T.SIGKILL)
        local t0 = H.now()
        c:wait()
        local h = l:acquire(5)
        local dt = H.now() - t0
        assert.is_true(h:is_held())
        assert.is_true(dt < 1, ("took %.3f s"):format(dt))
      end)

      it("handles release at scope exit (<close>), when collected, and through using()", function()
        local l = p:lock("jobs")
        if H.is_54 then
          local chunk = assert(load([[
            local l = ...
            do
              local h <close> = l:acquire(5)
              assert(l:try_acquire() == nil)
            end
            local h = l:try_acquire()
            return h ~= nil and h:release()
          ]]))
          assert.is_true(chunk(l))
        end
        do local _ = assert(l:try_acquire()) end
        collectgarbage()
        collectgarbage()
        local h = l:try_acquire()
        assert.is_truthy(h, "not released when collected")
        h:release()
        assert.are.equal(3, wh.using(l:acquire(5), function(hh, a, b)
          assert.is_true(hh:is_held())
          return a + b
        end, 1, 2))
        assert.has_error(function() wh.using(l:acquire(5), function() error("boom", 0) end) end, "boom")
        h = l:try_acquire()
        assert.is_truthy(h)
        h:release()
      end)

      it("after fork, the child's copy of a handle is inert", function()
        local dir = H.tmpdir()
        local l = p:lock("jobs")
        local h = assert(l:try_acquire())
        local result = dir .. "/result"
        local pid = T.fork()
        if pid == 0 then
          local ok, err = pcall(function()
            assert(h:is_held() == false, "held in the child")
            assert(h:release() == false, "released in the child")
            assert(h:is_lost() == false, "lost in the child")
            if p.close then p:close() end
            h, l = nil, nil
            collectgarbage()
            collectgarbage()
          end)
          local f = io.open(result, "w")
          f:write(ok and "ok" or tostring(err))
          f:close()
          T.exit(0)
        end
        assert.is_truthy(T.waitpid(pid, 30))
        assert.are.equal("ok", H.read_file(result))
        assert.is_true(h:is_held())
        assert.are.equal("busy", probe("jobs"))
        assert.is_true(h:release())
        assert.are.equal("acquired", probe("jobs"))
      end)
    end)

    describe("arguments", function()
      local METHODS = { "try_acquire", "acquire", "try_acquire_async", "acquire_async" }

      it("bad timeouts, options and extra arguments raise argument errors, free or busy", function()
        local l = p:lock("jobs")
        local function check_all()
          for _, m in ipairs(METHODS) do
            for _, t in ipairs({ -1, 0 / 0, 2147483.648, "1", {}, true }) do
              H.assert_bad_argument(1, m, l[m], l, t)
            end
            for _, o in ipairs({ { timeout = 1 }, { bogus = 1 }, { cancel = 42 }, { sleep = "x" }, "opts" }) do
              H.assert_bad_argument(2, m, l[m], l, 0, o)
            end
            H.assert_bad_argument(3, m, l[m], l, 0, nil, "x")
          end
        end
        check_all()
        local h = assert(l:try_acquire())
        check_all()
        h:release()
        for _, m in ipairs(METHODS) do
          for _, t in ipairs({ 0, 0.5, 2147483.647, math.huge }) do
            local x = l[m](l, t, { cancel = wh.cancel_token(), sleep = function() end })
            assert.is_truthy(x, m .. "(" .. t .. ")")
            x:release()
          end
        end
        assert.are.equal(0, l:info().held)
      end)

      it("constructors check names, max_count and options", function()
        H.assert_bad_argument(1, "lock", p.lock, p, 42)
        H.assert_bad_argument(2, "lock", p.lock, p, "x", { bogus = 1 })
        H.assert_bad_argument(2, "lock", p.lock, p, "x", { cancel = wh.cancel_token() })
        H.assert_bad_argument(1, "rwlock", p.rwlock, p, nil)
        for _, n in ipairs({ 0, -1, 1.5, 2 ^ 31, 0 / 0, math.huge, "3", {} }) do
          H.assert_bad_argument(2, "semaphore", p.semaphore, p, "s", n)
        end
        H.assert_bad_argument(1, "provider", wh.provider, { backend = opts.backend, bogus = true })
        H.assert_bad_argument(1, "provider", wh.provider, { backend = "nosuch" })
        H.assert_bad_argument(1, "info", p:lock("x").info, p:lock("x"), 1)
      end)
    end)

    describe("cancellation", function()
      it("a cancelled token raises 'cancelled' at once from every form, even on a free object", function()
        local tok = wh.cancel_token()
        tok:cancel()
        local o = { cancel = tok }
        local l = p:lock("free")
        for _, m in ipairs({ "try_acquire", "acquire", "try_acquire_async", "acquire_async" }) do
          H.assert_error("cancelled", "free", H.catch(l[m], l, 5, o), m)
        end
        local rw = p:rwlock("rw")
        H.assert_error("cancelled", "rw", H.catch(rw.acquire_write, rw, nil, o))
        local u = assert(rw:try_acquire_upgradeable_read())
        H.assert_error("cancelled", "rw", H.catch(u.upgrade, u, nil, o))
        assert.is_false(u.upgraded)
        u:release()
        H.assert_error("cancelled", nil, H.catch(p.acquire_all, p, { "a", "b" }, nil, o))
        assert.are.equal(0, l:info().held)
        assert.is_truthy(l:try_acquire())
      end)

      it("a cancel function stops a blocking wait on a lock another process holds", function()
        local go = H.tmpdir() .. "/go"
        local c = holder("busy", go)
        local l = p:lock("busy", { abandonment_check = 0.05 })
        local calls = 0
        local err
        local dt = H.time(function()
          err = H.catch(l.acquire, l, 30, { cancel = function() calls = calls + 1 return calls >= 3 end })
        end)
        H.assert_error("cancelled", "busy", err)
        assert.are.equal(3, calls)
        assert.is_true(dt < 5, "took " .. dt .. " s")
        H.touch(go)
        c:said("released")
        c:ok()
        local h = l:acquire(5)
        assert.is_true(h:is_held())
      end)

      it("a token cancelled while an async wait sleeps withdraws the wait", function()
        local l = p:lock("later")
        local h = assert(l:try_acquire())
        local tok = wh.cancel_token()
        local results = H.run({
          function() return l:acquire_async(10, { cancel = tok }) end,
          function()
            coroutine.yield(0.1)
            tok:cancel()
            h:release()
          end,
        })
        assert.is_false(results[1][1])
        H.assert_error("cancelled", "later", results[1][2])
        assert.are.equal(0, l:info().held)
        local again = l:try_acquire()
        assert.is_truthy(again, "the cancelled wait took the lock")
        again:release()
        assert.are.equal("acquired", probe("later"))
      end)

      it("an error of a cancel function propagates unchanged", function()
        local l = p:lock("raise")
        local _h = assert(l:try_acquire())
        local e = {}
        local calls = 0
        local ok, err = pcall(l.acquire_async, l, 10, {
          cancel = function() calls = calls + 1 if calls == 3 then error(e) end end,
          sleep = function() end,
        })
        assert.is_false(ok)
        assert.is_true(rawequal(e, err))
      end)
    end)

    describe("async", function()
      it("in a coroutine, a busy object makes the wait yield a delay; resumed, it acquires", function()
        local l = p:lock("report")
        local held = assert(l:try_acquire())
        local co = coroutine.create(function() return l:acquire_async(5) end)
        local ok, d = coroutine.resume(co)
        assert.is_true(ok, tostring(d))
        assert.are.equal("suspended", coroutine.status(co))
        assert.is_true(type(d) == "number" and d > 0 and d <= 0.05, tostring(d))
        held:release()
        local h = H.drive_body(co, nil, 10)
        assert.is_true(h:is_held())
        h:release()
      end)

      it("the sleep option is called between polls", function()
        local l = p:lock("report")
        local held = assert(l:try_acquire())
        local slept = 0
        local h = l:acquire_async(5, { sleep = function()
          slept = slept + 1
          if slept == 2 then held:release() end
        end })
        assert.is_true(h:is_held())
        assert.is_true(slept >= 2)
      end)

      it("two coroutines waiting for two busy objects of one provider both get them", function()
        local a, b = p:lock("a"), p:lock("b")
        local ha, hb = assert(a:try_acquire()), assert(b:try_acquire())
        local other = wh.provider(opts)
        local oa, ob = other:lock("a"), other:lock("b")
        local results = H.run({
          function() return oa:acquire_async(10) end,
          function() return ob:acquire_async(10) end,
          function()
            coroutine.yield(0.1)
            hb:release()
            coroutine.yield(0.1)
            ha:release()
          end,
        })
        assert.is_true(results[1][1], tostring(results[1][2]))
        assert.is_true(results[2][1], tostring(results[2][2]))
        assert.is_true(results[1][2]:is_held() and results[2][2]:is_held())
        assert.is_nil(a:try_acquire())
        assert.is_nil(b:try_acquire())
      end)
    end)

    describe("semaphore", function()
      it("has max_count tickets, here and in other processes; info counts them", function()
        local s = p:semaphore("pool", 3)
        assert.are.equal(3, s.max_count)
        assert.are.equal("semaphore", s.kind)
        local t1, t2 = assert(s:try_acquire()), assert(s:acquire(1))
        assert.are.equal("semaphore", t1.kind)
        local i = s:info()
        assert.are.equal(2, i.held)
        assert.are.equal(3, i.max_count)
        local c = spawn([[
          local s = p:semaphore("pool", 3)
          local a = s:try_acquire()
          say(a and "got" or "busy")
          say(s:try_acquire() and "got" or "busy")
          say("held " .. s:info().held)
          wait_file(ARGS.go, 60)
          a:release()
          say("released")
        ]], { go = H.tmpdir() .. "/go" })
        c:said("got")
        c:said("busy")
        c:said("held 3")
        assert.is_nil(s:try_acquire())
        assert.is_nil(s:try_acquire(0.05))
        t1:release()
        local t3 = assert(s:try_acquire())
        assert.are.equal(3, s:info().held)
        t2:release()
        t3:release()
        assert.are.equal(1, s:info().held)
      end)

      it("a waiter gets a ticket released in another process", function()
        local s = p:semaphore("pool", 2)
        local go = H.tmpdir() .. "/go"
        local c = spawn([[
          local s = p:semaphore("pool", 2)
          local a, b = assert(s:try_acquire()), assert(s:try_acquire())
          say("held")
          wait_file(ARGS.go, 60)
          b:release()
          say("released")
          T.sleep(30)
        ]], { go = go })
        c:said("held")
        assert.is_nil(s:try_acquire())
        -- The cancel function (asked during the blocking wait) lets the child release.
        local h = s:acquire(10, { cancel = function()
          if not H.exists(go) then H.touch(go) end
          return false
        end })
        c:said("released")
        assert.is_true(h:is_held())
        assert.are.equal(2, s:info().held)
      end)
    end)

    describe("rwlock", function()
      it("readers share; a writer excludes everyone, here and in other processes", function()
        local rw = p:rwlock("cfg")
        local r1, r2 = assert(rw:try_acquire_read()), assert(rw:acquire_read(1))
        H.assert_rw_info(rw, { readers = 2 })
        assert.is_nil(rw:try_acquire_write())
        probe_rw(rw, "read upgradeable no write")
        r1:release()
        r2:release()
        H.assert_rw_info(rw, {})
        local w = assert(rw:try_acquire_write())
        assert.are.equal("write", w.kind)
        H.assert_rw_info(rw, { writer = true })
        assert.is_nil(rw:try_acquire_read())
        assert.is_nil(rw:try_acquire_upgradeable_read())
        assert.is_nil(p:rwlock("cfg"):try_acquire_write())
        probe_rw(rw, "no read no upgradeable no write")
        w:release()
        probe_rw(rw, "read upgradeable no write")
      end)

      it("writer preference: a writer waiting in another process keeps new readers out", function()
        local rw = p:rwlock("cfg")
        local r = assert(rw:try_acquire_read())
        local sig = H.tmpdir()
        local w = rw_writer(rw, sig .. "/go")
        H.waiting_writers(rw, 1)
        assert.is_nil(rw:try_acquire_read())
        assert.is_nil(rw:try_acquire_upgradeable_read())
        probe_rw(rw, "no read no upgradeable no write")
        r:release()
        w:said("got")
        H.assert_rw_info(rw, { writer = true })
        H.touch(sig .. "/go")
        w:said("released")
        w:ok()
        H.assert_rw_info(rw, {})
      end)

      it("an upgradeable read shares with readers, excludes writers and other upgradeable reads", function()
        local rw = p:rwlock("cfg")
        local r = assert(rw:try_acquire_read())
        local u = assert(rw:try_acquire_upgradeable_read())
        assert.are.equal("upgradeable_read", u.kind)
        assert.is_false(u.upgraded)
        H.assert_rw_info(rw, { readers = 2, upgradeable = true })
        assert.is_nil(rw:try_acquire_upgradeable_read())
        assert.is_nil(rw:try_acquire_write())
        assert.is_truthy(rw:try_acquire_read()):release()
        probe_rw(rw, "read no upgradeable no write")
        assert.is_false(u:try_upgrade())
        assert.is_false(u.upgraded)
        r:release()
        assert.is_true(u:try_upgrade())
        assert.is_true(u.upgraded)
        assert.are.equal("upgradeable_read", u.kind)
        H.assert_rw_info(rw, { writer = true, upgradeable = true })
        probe_rw(rw, "no read no upgradeable no write")
        H.assert_code("invalid_state", "cfg", u.upgrade, u)
        assert.is_true(u:release())
        H.assert_rw_info(rw, {})
        probe_rw(rw, "read upgradeable no write")
        local u2 = assert(rw:try_acquire_upgradeable_read())
        u2:release()
        H.assert_code("released", "cfg", u2.try_upgrade, u2)
      end)

      for _, m in ipairs({ "upgrade", "upgrade_async" }) do
        it(m .. " waits for a reader in another process, then succeeds", function()
          local rw = p:rwlock("cfg")
          local u = assert(rw:try_acquire_upgradeable_read())
          local sig = H.tmpdir()
          local r = rw_reader(rw, sig .. "/go")
          local slept = 0
          local ok = u[m](u, 10, { sleep = function(d)
            slept = slept + 1
            if slept == 1 then H.touch(sig .. "/go") end
            H.sleep(d)
          end, cancel = function()
            if m == "upgrade" and not H.exists(sig .. "/go") then H.touch(sig .. "/go") end
            return false
          end })
          r:said("released")
          r:ok()
          assert.is_true(u.upgraded)
          H.assert_rw_info(rw, { writer = true, upgradeable = true })
          u:release()
        end)
      end

      it("an upgrade passes a writer that waits for it (no deadlock)", function()
        local rw = p:rwlock("cfg")
        local u = assert(rw:try_acquire_upgradeable_read())
        local sig = H.tmpdir()
        local w = rw_writer(rw, sig .. "/go")
        H.waiting_writers(rw, 1)
        H.sleep(0.1)
        local dt = H.time(function() assert.is_true(u:try_upgrade(5)) end)
        assert.is_true(dt < 2, ("the upgrade took %.3f s"):format(dt))
        assert.is_nil(w:line(0))
        u:release()
        w:said("got")
        H.touch(sig .. "/go")
        w:said("released")
        w:ok()
        H.assert_rw_info(rw, {})
      end)

      it("an async upgrade whose handle is released while it waits raises released", function()
        local rw = p:rwlock("cfg")
        local sig = H.tmpdir()
        local r = rw_reader(rw, sig .. "/go")
        local u = assert(rw:try_acquire_upgradeable_read())
        local err = H.raised(u.upgrade_async, u, 10, { sleep = function(d)
          u:release()
          H.sleep(d)
        end })
        assert.are.equal("released", err.code)
        H.touch(sig .. "/go")
        r:said("released")
        r:ok()
        H.assert_rw_info(rw, {})
        probe_rw(rw, "read upgradeable no write")
      end)
    end)

    describe("acquire_all", function()
      it("takes all or nothing, in byte order, as one composite handle", function()
        local go = H.tmpdir() .. "/go"
        local c = holder("b", go)
        assert.is_nil(p:try_acquire_all({ "c", "b", "a" }))
        assert.is_nil(p:try_acquire_all({ "a", "b" }, 0.1))
        assert.are.equal("acquired", probe("a"))
        assert.are.equal("acquired", probe("c"))
        H.touch(go)
        c:said("released")
        c:ok()
        local h = p:acquire_all({ "c", "b", "a" }, 5)
        assert.are.equal("composite", h.kind)
        assert.are.equal("a+b+c", h.name)
        assert.are.same({ "a", "b", "c" }, h.names)
        assert.is_true(h:is_held())
        assert.are.equal("busy", probe("b"))
        assert.is_true(h:release())
        assert.is_false(h:release())
        assert.is_false(h:is_held())
        assert.are.equal("acquired", probe("b"))
        H.assert_bad_argument(1, "acquire_all", p.acquire_all, p, { "x", "x" })
        H.assert_bad_argument(1, "acquire_all", p.acquire_all, p, {})
      end)
    end)
  end)
end
