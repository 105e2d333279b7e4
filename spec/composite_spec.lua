-- Composite locks (API.md "Provider and composite locks"): p:try_acquire_all,
-- p:acquire_all and their _async forms. All or nothing, one shared deadline,
-- canonical (byte) order, composite handles.
local wh = require "waithandles"
local H = require "helpers"

local function bytes_less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- A child that takes the locks ARGS.hold, says "held", then answers each
-- "go" file (ARGS.go .. i) by saying which of ARGS.probe are free
-- ("free a busy b ..."), and releases everything after the last one.
local PROBER = [[
  local p = wh.provider { dir = ARGS.dir }
  local held = {}
  for i, n in ipairs(ARGS.hold or {}) do held[i] = assert(p:lock(n):try_acquire(), n) end
  say("held")
  for round = 1, ARGS.rounds or 1 do
    wait_file(ARGS.go .. round)
    local out = {}
    for _, n in ipairs(ARGS.probe or {}) do
      local h = p:lock(n):try_acquire()
      out[#out + 1] = (h and "free " or "busy ") .. n
      if h then h:release() end
    end
    say(table.concat(out, " "))
  end
]]

describe("composite locks", function()
  local dir, p
  before_each(function()
    dir = H.tmpdir()
    p = wh.provider { dir = dir }
  end)
  after_each(H.cleanup)

  local function prober(hold, probe, rounds)
    return H.spawn(PROBER, { dir = dir, hold = hold, probe = probe, go = dir .. "/go", rounds = rounds })
  end

  local function go(i)
    H.touch(dir .. "/go" .. i)
  end

  local function is_free(name)
    local h = p:lock(name):try_acquire()
    if h then h:release() end
    return h ~= nil
  end

  describe("the composite handle", function()
    it("holds every name until released: kind, is_held, tostring, release true then false", function()
      local c = prober(nil, { "a", "b", "c", "d" }, 2)
      c:expect("held")
      local h = p:try_acquire_all({ "c", "a", "b" })
      assert.is_truthy(h)
      assert.are.equal("composite", h.kind)
      assert.are.equal("string", type(h.name))
      assert.is_true(h:is_held())
      assert.is_truthy(tostring(h):match("^waithandles%.handle%(composite '.*', held%)$"), tostring(h))
      go(1)
      c:expect("busy a busy b busy c free d")
      -- not reentrant in this process either
      assert.is_nil(p:lock("b"):try_acquire())
      assert.is_nil(p:try_acquire_all({ "d", "a" }))
      assert.is_true(is_free("d"))
      assert.is_true(h:release())
      assert.is_false(h:is_held())
      assert.is_false(h:release())
      assert.is_truthy(tostring(h):match("^waithandles%.handle%(composite '.*', released%)$"), tostring(h))
      go(2)
      c:expect("free a free b free c free d")
      c:ok()
    end)

    it("takes the locks of the provider's dir", function()
      local h = p:acquire_all({ "a", "b" }, 5)
      assert.is_nil(wh.lock("a", { dir = dir }):try_acquire())
      assert.is_nil(wh.lock("b", { dir = dir }):try_acquire())
      assert.is_truthy(wh.lock("a", { dir = H.tmpdir() }):try_acquire())
      h:release()
      assert.is_truthy(wh.lock("a", { dir = dir }):try_acquire())
    end)

    it("shares objects with names that escape to the same file", function()
      local h = p:try_acquire_all({ "x/y", "z" })
      assert.is_truthy(h)
      assert.is_nil(p:lock("x_2Fy"):try_acquire())
      h:release()
      assert.is_true(is_free("x_2Fy"))
    end)

    it("is released when collected", function()
      do
        local h = p:try_acquire_all({ "a", "b" })
        assert.is_truthy(h)
      end
      collectgarbage()
      collectgarbage()
      assert.is_true(is_free("a"))
      assert.is_true(is_free("b"))
    end)

    it("is released at scope exit with <close> (Lua 5.4) and with waithandles.using", function()
      if H.is_54 then
        local chunk = assert(load([[
          local p, is_free = ...
          do
            local h <close> = p:acquire_all({ "a", "b" }, 5)
            assert(h:is_held())
            assert(not is_free("a") and not is_free("b"))
          end
          return is_free("a") and is_free("b")
        ]]))
        assert.is_true(chunk(p, is_free))
      end
      local r = wh.using(p:acquire_all({ "a", "b" }, 5), function(h, x)
        assert.are.equal("composite", h.kind)
        assert.is_false(is_free("a"))
        return x + 1
      end, 1)
      assert.are.equal(2, r)
      assert.is_true(is_free("a") and is_free("b"))
      assert.has_error(function()
        wh.using(p:acquire_all({ "a", "b" }, 5), function() error("boom", 0) end)
      end, "boom")
      assert.is_true(is_free("a") and is_free("b"))
    end)
  end)

  describe("all or nothing", function()
    for _, held in ipairs({ "a", "b", "c" }) do
      it("try_acquire_all returns nil while another process holds '" .. held .. "', and holds none of the others", function()
        local others = {}
        for _, n in ipairs({ "a", "b", "c" }) do if n ~= held then others[#others + 1] = n end end
        local c = prober({ held }, others, 2)
        c:expect("held")
        assert.is_nil(p:try_acquire_all({ "c", "b", "a" }))
        go(1)
        c:expect("free " .. others[1] .. " free " .. others[2])
        assert.is_nil(p:try_acquire_all({ "a", "b", "c" }, 0.2))
        assert.is_nil(p:try_acquire_all_async({ "a", "b", "c" }, 0.1, { sleep = H.sleep }))
        go(2)
        c:expect("free " .. others[1] .. " free " .. others[2])
        c:ok()
        -- once the holder exited, all of them can be taken
        local h = p:try_acquire_all({ "a", "b", "c" })
        assert.is_truthy(h)
        h:release()
      end)
    end

    it("acquire_all raises timeout within one shared deadline and holds nothing", function()
      local c = prober({ "c" }, { "a", "b" })
      c:expect("held")
      local err
      local took = H.time(function()
        err = H.assert_code("timeout", nil, function() p:acquire_all({ "a", "b", "c" }, 0.5) end)
      end)
      assert.is_true(took >= 0.4, "gave up after " .. took .. " s")
      assert.is_true(took < 5, "took " .. took .. " s")
      assert.are.equal("string", type(err.name))
      assert.is_truthy(tostring(err):find("timeout", 1, true))
      go(1)
      c:expect("free a free b")
      c:ok()
    end)

    it("one deadline covers the waits for several names", function()
      -- "a" is freed by its holder after the composite started waiting for
      -- it; "b" never is. The whole call must give up at its deadline, not
      -- wait a full timeout again for "b".
      local c = H.spawn([[
        local p = wh.provider { dir = ARGS.dir }
        local a, b = assert(p:lock("a"):try_acquire()), assert(p:lock("b"):try_acquire())
        say("held")
        local la = p:lock("a")
        while la:info().waiting == 0 do T.sleep(0.002) end
        T.sleep(1.6)
        a:release()
        say("released a")
        T.sleep(30)
      ]], { dir = dir })
      c:expect("held")
      local took = H.time(function()
        H.assert_code("timeout", nil, function() p:acquire_all({ "a", "b" }, 2.0) end)
      end)
      c:expect("released a")
      assert.is_true(took >= 1.9, "gave up after " .. took .. " s")
      -- separate deadlines would take 1.6 + 2.0 s
      assert.is_true(took < 2.8, "one deadline: took " .. took .. " s")
      assert.is_true(is_free("a"))
      c:kill()
      c:wait()
    end)

    it("acquire_all waits until every name is free", function()
      local c = H.spawn([[
        local p = wh.provider { dir = ARGS.dir }
        local l = p:lock("b")
        local h = assert(l:try_acquire())
        say("held")
        local deadline = T.now() + 20
        while l:info().waiting == 0 and T.now() < deadline do T.sleep(0.002) end
        h:release()
        say("released")
      ]], { dir = dir })
      c:expect("held")
      local h = p:acquire_all({ "c", "b", "a" }, 20)
      assert.is_truthy(h)
      c:expect("released")
      c:ok()
      assert.is_true(h:is_held())
      assert.is_false(is_free("a") or is_free("b") or is_free("c"))
      h:release()
    end)

    it("a cancelled wait raises cancelled and holds nothing", function()
      local blocker = p:lock("c"):try_acquire()
      local calls = 0
      H.assert_code("cancelled", nil, function()
        p:acquire_all({ "a", "b", "c" }, 20, { cancel = function() calls = calls + 1 return calls >= 3 end })
      end)
      assert.is_true(is_free("a") and is_free("b"))
      local tok = wh.cancel_token()
      H.assert_code("cancelled", nil, function()
        p:acquire_all_async({ "a", "b", "c" }, 20, { cancel = tok, sleep = function(d) tok:cancel() H.sleep(d) end })
      end)
      assert.is_true(is_free("a") and is_free("b"))
      blocker:release()
      -- an already cancelled token raises even though every name is free
      for _, m in ipairs({ "try_acquire_all", "acquire_all", "try_acquire_all_async", "acquire_all_async" }) do
        H.assert_code("cancelled", nil, function() p[m](p, { "a", "b" }, nil, { cancel = tok }) end)
        assert.is_true(is_free("a") and is_free("b"), m)
      end
    end)
  end)

  describe("async", function()
    it("acquire_all_async yields from a coroutine and completes when the last name is freed", function()
      local blocker = p:lock("b"):try_acquire()
      local h, n = H.drive_body(function() return p:acquire_all_async({ "a", "b", "c" }, 10) end, function(d, i)
        assert.are.equal("number", type(d))
        if i == 3 then blocker:release() end
      end)
      assert.is_true(n >= 3)
      assert.is_truthy(h)
      assert.are.equal("composite", h.kind)
      assert.is_false(is_free("a") or is_free("b") or is_free("c"))
      h:release()
      assert.is_true(is_free("a") and is_free("b") and is_free("c"))
    end)

    it("try_acquire_all_async returns nil at its timeout and acquire_all_async raises timeout", function()
      local blocker = p:lock("b"):try_acquire()
      local r, n = H.drive_body(function() return p:try_acquire_all_async({ "a", "b" }, 0.1) end)
      assert.is_nil(r)
      assert.is_true(n >= 1)
      local slept = 0
      H.assert_code("timeout", nil, function()
        p:acquire_all_async({ "a", "b" }, 0.1, { sleep = function(d) slept = slept + 1 H.sleep(d) end })
      end)
      assert.is_true(slept >= 1)
      assert.is_true(is_free("a"))
      blocker:release()
      local h = p:try_acquire_all_async({ "a", "b" })
      assert.is_truthy(h)
      h:release()
    end)
  end)

  describe("canonical order", function()
    it("takes the locks in byte order of their escaped names", function()
      local names = { "a b", "a", "B", "a-", "Z" }
      local escaped = {}
      for i, n in ipairs(names) do escaped[i] = { n = n, e = wh.safe_name(n) } end
      table.sort(escaped, function(x, y) return bytes_less(x.e, y.e) end)
      -- raw "a b" sorts before "a-", but its escaped name sorts after it
      local last = escaped[#escaped].n
      assert.are.equal("a b", last)
      local blocker = p:lock(last):try_acquire()
      local seen
      local h = p:acquire_all_async(names, 20, { sleep = function(d)
        if not seen then
          seen = {}
          for _, x in ipairs(escaped) do
            seen[#seen + 1] = x.n .. "=" .. p:lock(x.n):info().held
          end
          blocker:release()
        end
        H.sleep(d)
      end })
      assert.is_truthy(h)
      assert.are.equal("B=1 Z=1 a=1 a-=1 a b=1", table.concat(seen, " "))
      h:release()
    end)

    it("two processes taking overlapping sets in opposite orders both finish 100 rounds", function()
      local code = [[
        local p = wh.provider { dir = ARGS.dir }
        local log = assert(io.open(ARGS.log, "a"))
        log:setvbuf("no")
        local me = T.getpid()
        say("ready")
        wait_file(ARGS.go)
        for i = 1, 100 do
          local h = p:acquire_all(ARGS.names)
          log:write("in " .. me .. "\n")
          log:write("out " .. me .. "\n")
          assert(h:release())
        end
        say("done")
      ]]
      local log, gofile = dir .. "/log.txt", dir .. "/go"
      local c1 = H.spawn(code, { dir = dir, log = log, go = gofile, names = { "a", "b", "c" } })
      local c2 = H.spawn(code, { dir = dir, log = log, go = gofile, names = { "c", "b", "a" } })
      local c3 = H.spawn(code, { dir = dir, log = log, go = gofile, names = { "c", "x/y", "a" } })
      c1:expect("ready")
      c2:expect("ready")
      c3:expect("ready")
      H.touch(gofile)
      local deadline = H.now() + 60
      for _, c in ipairs({ c1, c2, c3 }) do
        c:expect("done", math.max(0, deadline - H.now()))
        c:ok()
      end
      local inside, lines = nil, 0
      for l in io.lines(log) do
        lines = lines + 1
        local what, pid = l:match("^(%a+) (%d+)$")
        if what == "in" then
          assert.is_nil(inside, "two holders of overlapping sets at line " .. lines)
          inside = pid
        else
          assert.are.equal(inside, pid)
          inside = nil
        end
      end
      assert.are.equal(600, lines)
      assert.is_true(is_free("a") and is_free("b") and is_free("c"))
    end)
  end)

  describe("arguments", function()
    local fns = { "try_acquire_all", "acquire_all", "try_acquire_all_async", "acquire_all_async" }

    it("rejects a non-table, an empty list, duplicates, aliases and non-strings", function()
      for _, f in ipairs(fns) do
        local call = function(...) return p[f](p, ...) end
        local want = "bad argument #1 to '" .. f .. "'"
        H.assert_argerror(want, function() call("a") end)
        H.assert_argerror(want, function() call(nil) end)
        H.assert_argerror(want, function() call(5) end)
        H.assert_argerror(want, function() call({}) end)
        H.assert_argerror(want, function() call({ "a", "b", "a" }) end)
        H.assert_argerror(want, function() call({ "a/b", "a_2Fb" }) end)
        H.assert_argerror(want, function() call({ "a", 5 }) end)
        H.assert_argerror(want, function() call({ "a", {} }) end)
        H.assert_argerror(want, function() call({ "a", true }) end)
        H.assert_argerror("bad argument #2 to '" .. f .. "'", function() call({ "a" }, -1) end)
        H.assert_argerror("bad argument #2 to '" .. f .. "'", function() call({ "a" }, "1") end)
        H.assert_argerror("bad argument #2 to '" .. f .. "'", function() call({ "a" }, 0 / 0) end)
        H.assert_argerror("bad argument #2 to '" .. f .. "'", function() call({ "a" }, { cancel = function() end }) end)
        H.assert_argerror("bad argument #3 to '" .. f .. "'", function() call({ "a" }, 1, { bogus = 1 }) end)
        H.assert_argerror("bad argument #3 to '" .. f .. "'", function() call({ "a" }, 1, { timeout = 1 }) end)
        H.assert_argerror("bad argument #4 to '" .. f .. "'", function() call({ "a" }, 1, nil, 1) end)
        H.assert_argerror("bad argument", function() p[f]({ "a" }) end) -- without the provider
        -- nothing stays held after a rejected call
        assert.is_true(is_free("a") and is_free("b") and is_free("a_2Fb"))
      end
    end)
  end)
end)
