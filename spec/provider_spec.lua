-- Providers (API.md "Provider and composite locks", "Constructors") and
-- removing objects (API.md "Removing objects").
local wh = require "waithandles"
local H = require "helpers"
local T = H.whtest

-- Whether a file is there (by stat, not H.exists: whether or not it can be opened).
local function exists(path)
  return T.stat(path) ~= nil
end

local function full_gc()
  for _ = 1, 4 do collectgarbage() end
end

local function quote(s)
  assert(not s:find("'", 1, true))
  return "'" .. s .. "'"
end

-- Runs `code` in a new interpreter through the shell, so that `shell` (e.g.
-- "umask 077;" or "WAITHANDLES_DIR=/x") can set its umask or environment;
-- LUA_PATH, LUA_CPATH and the working directory are inherited. Returns the
-- child's output (stdout and stderr) and its exit status.
local function run_shell(shell, code, args)
  local sdir = H.tmpdir()
  local script = sdir .. "/child.lua"
  local parts = { "ARGS = {" }
  for k, v in pairs(args or {}) do
    parts[#parts + 1] = ("[%q] = %q,"):format(k, v)
  end
  parts[#parts + 1] = "}\nwh = require 'waithandles'\nT = require 'whtest'\n"
  local f = assert(io.open(script, "w"))
  f:write(table.concat(parts, "\n"), code, "\nprint('child ok')\n")
  f:close()
  local p = assert(io.popen(("%s %s %s 2>&1; echo \"exit=$?\""):format(shell, H.lua, quote(script))))
  local out = p:read("*a")
  p:close()
  assert.is_truthy(out:find("child ok\nexit=0\n", 1, true), "the child failed:\n" .. out)
  return out
end

describe("provider", function()
  after_each(H.cleanup)

  describe("options", function()
    it("carries dir to p:lock, p:semaphore and p:rwlock", function()
      local dir = H.tmpdir()
      local p = wh.provider { dir = dir }
      local l, s, rw = p:lock("l"), p:semaphore("s", 3), p:rwlock("rw")
      assert.are.equal(dir .. "/l", l.path)
      assert.are.equal(dir .. "/s", s.path)
      assert.are.equal(dir .. "/rw", rw.path)
      assert.are.equal("lock", l.kind)
      assert.are.equal("semaphore", s.kind)
      assert.are.equal(3, s.max_count)
      assert.are.equal("rwlock", rw.kind)
      local hl, hs, hr = l:try_acquire(), s:try_acquire(), rw:try_acquire_write()
      assert.is_truthy(hl and hs and hr)
      for _, path in ipairs({ l.path, s.path, rw.path }) do
        assert.are.equal("file", T.stat(path).type)
      end
      -- the same names through the module-level constructors and the same dir are the same objects
      assert.is_nil(wh.lock("l", { dir = dir }):try_acquire())
      assert.is_nil(wh.rwlock("rw", { dir = dir }):try_acquire_read())
      assert.are.equal(1, wh.semaphore("s", 3, { dir = dir }):info().held)
      -- and another dir holds other objects
      assert.is_truthy(wh.provider({ dir = H.tmpdir() }):lock("l"):try_acquire())
    end)

    it("accepts a dir with trailing slashes", function()
      local dir = H.tmpdir()
      local l = wh.provider({ dir = dir .. "//" }):lock("x")
      assert.are.equal(dir .. "/x", l.path)
      local h = l:try_acquire()
      assert.is_nil(wh.lock("x", { dir = dir }):try_acquire())
      h:release()
    end)

    it("creates a missing lock directory", function()
      local dir = H.tmpdir() .. "/sub"
      assert.is_nil(T.stat(dir))
      local p = wh.provider { dir = dir }
      local l = p:lock("x")
      assert.is_truthy(l:try_acquire())
      assert.are.equal("directory", T.stat(dir).type)
      assert.are.equal(dir .. "/x", l.path)
      assert.are.equal("file", T.stat(l.path).type)
    end)

    it("creates files with exactly `mode`, not reduced by the umask (here 022)", function()
      local dir = H.tmpdir()
      for _, mode in ipairs({ 438, 420, 432, 384, 436 }) do -- 0666 0644 0660 0600 0664
        local p = wh.provider { dir = dir, mode = mode }
        local objs = { p:lock("l" .. mode), p:semaphore("s" .. mode, 2), p:rwlock("r" .. mode) }
        for _, o in ipairs(objs) do
          assert.are.equal(("%o"):format(mode), ("%o"):format(T.stat(o.path).mode), o.path)
        end
      end
      -- the default mode is 0666
      local l = wh.provider({ dir = dir }):lock("default")
      assert.are.equal("666", ("%o"):format(T.stat(l.path).mode))
    end)

    it("creates files with exactly `mode` under umask 077 and umask 000", function()
      local dir = H.tmpdir()
      run_shell("umask 077;", [[
        assert(wh.provider({ dir = ARGS.dir, mode = 438 }):lock("a"):try_acquire())
        assert(wh.provider({ dir = ARGS.dir }):semaphore("b", 2):try_acquire())
        assert(wh.lock("c", { dir = ARGS.dir, mode = 420 }):try_acquire())
      ]], { dir = dir })
      run_shell("umask 000;", [[
        assert(wh.provider({ dir = ARGS.dir, mode = 384 }):rwlock("d"):try_acquire_read())
      ]], { dir = dir })
      assert.are.equal("666", ("%o"):format(T.stat(dir .. "/a").mode))
      assert.are.equal("666", ("%o"):format(T.stat(dir .. "/b").mode))
      assert.are.equal("644", ("%o"):format(T.stat(dir .. "/c").mode))
      assert.are.equal("600", ("%o"):format(T.stat(dir .. "/d").mode))
    end)

    it("applies mode only to files it creates", function()
      local dir = H.tmpdir()
      local a = wh.provider({ dir = dir, mode = 384 }):lock("m")
      assert.are.equal("600", ("%o"):format(T.stat(a.path).mode))
      local b = wh.provider({ dir = dir, mode = 438 }):lock("m")
      assert.is_truthy(b:try_acquire())
      assert.are.equal("600", ("%o"):format(T.stat(a.path).mode))
    end)

    it("carries abandonment_check: a blocked wait checks its cancel function once per interval", function()
      local dir = H.tmpdir()
      -- Count the cancel checks of a blocking wait that times out after `t` seconds.
      local function checks(obj, t)
        local holder = wh.lock(obj.name, { dir = dir }):try_acquire()
        assert.is_truthy(holder)
        local n = 0
        assert.is_nil(obj:try_acquire(t, { cancel = function() n = n + 1 return false end }))
        holder:release()
        return n
      end
      local slow = wh.provider { dir = dir, abandonment_check = 60 }
      -- the default (0.1 s) would check about 10 times in 1 s
      assert.is_true(checks(slow:lock("a"), 1) <= 2)
      -- a per-object option overrides the provider's
      assert.is_true(checks(slow:lock("b", { abandonment_check = 0.01 }), 0.5) >= 10)
      local fast = wh.provider { dir = dir, abandonment_check = 0.01 }
      assert.is_true(checks(fast:lock("c"), 0.5) >= 10)
      assert.is_true(checks(fast:lock("d", { abandonment_check = 60 }), 1) <= 2)
    end)

    it("carries sleep to *_async calls; the object's and the call's sleep override it", function()
      local dir = H.tmpdir()
      local used = {}
      local function sleeper(tag)
        return function(d)
          used[tag] = (used[tag] or 0) + 1
          H.sleep(d)
        end
      end
      local p = wh.provider { dir = dir, sleep = sleeper("provider") }
      local holder = wh.lock("x", { dir = dir }):try_acquire()
      assert.is_nil(p:lock("x"):try_acquire_async(0.05))
      assert.is_true((used.provider or 0) > 0)
      used = {}
      assert.is_nil(p:lock("x", { sleep = sleeper("object") }):try_acquire_async(0.05))
      assert.is_nil(used.provider)
      assert.is_true((used.object or 0) > 0)
      used = {}
      assert.is_nil(p:lock("x", { sleep = sleeper("object") }):try_acquire_async(0.05, { sleep = sleeper("call") }))
      assert.is_nil(used.provider)
      assert.is_nil(used.object)
      assert.is_true((used.call or 0) > 0)
      used = {}
      local sh = p:semaphore("s", 1):try_acquire()
      H.assert_code("timeout", nil, function() p:semaphore("s", 1):acquire_async(0.05) end)
      assert.is_true((used.provider or 0) > 0)
      sh:release()
      holder:release()
    end)

    it("carries exact_name; a per-object option overrides it", function()
      local dir = H.tmpdir()
      local p = wh.provider { dir = dir, exact_name = true }
      assert.are.equal("ok-1", p:lock("ok-1").name)
      local err = H.assert_code("invalid_name", nil, function() p:lock("a/b") end)
      assert.are.equal("a/b", err.name)
      H.assert_code("invalid_name", nil, function() p:semaphore("a b", 2) end)
      H.assert_code("invalid_name", nil, function() p:rwlock(".x") end)
      local l = p:lock("a/b", { exact_name = false })
      assert.are.equal(wh.safe_name("a/b"), l.name)
      assert.are.equal(dir .. "/" .. wh.safe_name("a/b"), l.path)
    end)

    it("per-object dir and mode override the provider's", function()
      local d1, d2 = H.tmpdir(), H.tmpdir()
      local p = wh.provider { dir = d1, mode = 438 }
      local a = p:lock("a", { dir = d2 })
      assert.are.equal(d2 .. "/a", a.path)
      assert.is_true(exists(d2 .. "/a"))
      assert.is_false(exists(d1 .. "/a"))
      local b = p:semaphore("b", 2, { mode = 384 })
      assert.are.equal(d1 .. "/b", b.path)
      assert.are.equal("600", ("%o"):format(T.stat(b.path).mode))
      local c = p:rwlock("c", { dir = d2, mode = 416 })
      assert.are.equal("640", ("%o"):format(T.stat(d2 .. "/c").mode))
      -- and the provider's own options are unchanged afterwards
      assert.are.equal(d1 .. "/d", p:lock("d").path)
      assert.are.equal("666", ("%o"):format(T.stat(d1 .. "/d").mode))
      assert.is_truthy(a and c)
    end)

    it("rejects unknown option keys and bad values with argument errors", function()
      local dir = H.tmpdir()
      local bad = {
        { bogus = 1 }, { timeout = 1 }, { cancel = wh.cancel_token() }, { [1] = "x" },
        { dir = 5 }, { dir = "" }, { dir = "a\0b" }, { dir = true },
        { mode = -1 }, { mode = 4096 }, { mode = 1.5 }, { mode = "438" }, { mode = 0 / 0 },
        { abandonment_check = 0 }, { abandonment_check = -1 }, { abandonment_check = "1" },
        { abandonment_check = 0 / 0 },
        { sleep = 5 }, { sleep = "sleep" }, { exact_name = "yes" }, { exact_name = 1 },
      }
      local p = wh.provider { dir = dir }
      for _, o in ipairs(bad) do
        H.assert_argerror("bad argument #1 to 'provider'", function() wh.provider(o) end)
        local o2 = {}
        for k, v in pairs(o) do o2[k] = v end
        if o2.dir == nil then o2.dir = dir end
        H.assert_argerror("bad argument #2 to 'lock'", function() p:lock("x", o2) end)
        H.assert_argerror("bad argument #3 to 'semaphore'", function() p:semaphore("x", 2, o2) end)
        H.assert_argerror("bad argument #2 to 'rwlock'", function() p:rwlock("x", o2) end)
        H.assert_argerror("bad argument #2 to 'remove'", function() p:remove("x", o2) end)
        H.assert_argerror("bad argument #2 to 'lock'", function() wh.lock("x", o2) end)
      end
      H.assert_argerror("bad argument #1 to 'provider'", function() wh.provider(5) end)
      H.assert_argerror("bad argument #1 to 'provider'", function() wh.provider("dir") end)
      H.assert_argerror("bad argument #2 to 'provider'", function() wh.provider({ dir = dir }, 1) end)
      H.assert_argerror("bad argument #2 to 'lock'", function() p:lock("x", 5) end)
      H.assert_argerror("bad argument #1 to 'lock'", function() p:lock(5) end)
      H.assert_argerror("bad argument #1 to 'lock'", function() p:lock() end)
      H.assert_argerror("bad argument #3 to 'lock'", function() p:lock("x", nil, 1) end)
      H.assert_argerror("bad argument #2 to 'semaphore'", function() p:semaphore("x", 0) end)
      H.assert_argerror("bad argument #1 to 'remove'", function() p:remove(5) end)
      -- methods called without the provider
      H.assert_argerror("bad argument", function() p.lock("x") end)
      H.assert_argerror("bad argument", function() p.semaphore("x", 2) end)
      -- nothing was created by the rejected calls
      assert.is_nil(T.stat(dir .. "/x"))
      -- valid values are accepted
      local ok = wh.provider { dir = dir, mode = 0, abandonment_check = 2147483.647, exact_name = false,
        sleep = function() end }
      assert.are.equal(dir .. "/y", ok:lock("y", { mode = 438 }).path)
      assert.are.equal(dir .. "/z", wh.provider():lock("z", { dir = dir }).path)
      assert.are.equal(dir .. "/w", wh.provider(nil):lock("w", { dir = dir }).path)
    end)

    it("module-level constructors use a default provider whose dir is $WAITHANDLES_DIR", function()
      local envdir = H.tmpdir() .. "/env-locks"
      local other = H.tmpdir()
      local out = run_shell("WAITHANDLES_DIR=" .. quote(envdir), [[
        local l = wh.lock("l")
        assert(l.path == ARGS.envdir .. "/l", l.path)
        local s = wh.semaphore("s", 2)
        assert(s.path == ARGS.envdir .. "/s", s.path)
        local rw = wh.rwlock("rw")
        assert(rw.path == ARGS.envdir .. "/rw", rw.path)
        assert(wh.provider():lock("p").path == ARGS.envdir .. "/p")
        assert(wh.lock("o", { dir = ARGS.other }).path == ARGS.other .. "/o")
        local h = assert(l:try_acquire())
        assert(wh.lock("l"):try_acquire() == nil)
        assert(s:try_acquire() and rw:try_acquire_read())
        h:release()
        assert(wh.remove("l") == false)
        l, h = nil, nil
        collectgarbage() collectgarbage()
        assert(wh.remove("l") == true)
        assert(wh.remove("l") == false)
        print("paths ok")
      ]], { envdir = envdir, other = other })
      assert.is_truthy(out:find("paths ok", 1, true))
      assert.are.equal("directory", T.stat(envdir).type)
      assert.is_false(exists(envdir .. "/l"))
      for _, n in ipairs({ "s", "rw", "p" }) do
        assert.are.equal("file", T.stat(envdir .. "/" .. n).type, n)
      end
      assert.are.equal("file", T.stat(other .. "/o").type)
      -- the objects the child made are the ones a provider with that dir sees
      assert.are.equal(0, wh.provider({ dir = envdir }):semaphore("s", 2):info().held)
    end)
  end)

  describe("remove", function()
    it("removes an unused object's file and returns true; false for a missing name", function()
      local dir = H.tmpdir()
      local p = wh.provider { dir = dir }
      do
        local l, s, rw = p:lock("l"), p:semaphore("s", 3), p:rwlock("rw")
        l:try_acquire():release()
        assert.is_truthy(s and rw)
      end
      full_gc()
      for _, n in ipairs({ "l", "s", "rw" }) do
        assert.is_true(exists(dir .. "/" .. n))
        assert.is_true(p:remove(n), n)
        assert.is_false(exists(dir .. "/" .. n))
        assert.is_false(p:remove(n), n)
      end
      assert.is_false(p:remove("never-made"))
      assert.is_false(wh.remove("never-made", { dir = dir }))
      assert.is_false(wh.provider({ dir = dir .. "/missing" }):remove("x"))
      assert.is_nil(T.stat(dir .. "/missing"), "remove does not create the directory")
    end)

    it("returns false while this process has the object open, true once every user closed it", function()
      local dir = H.tmpdir()
      local p = wh.provider { dir = dir }
      local l = p:lock("x")
      assert.is_false(p:remove("x"))
      assert.is_false(wh.remove("x", { dir = dir }))
      local h = l:try_acquire()
      assert.is_false(p:remove("x"))
      -- a held handle keeps the object in use after the object is gone
      l = nil
      full_gc()
      assert.is_true(h:is_held())
      assert.is_false(p:remove("x"))
      assert.is_true(exists(dir .. "/x"))
      h:release()
      h = nil
      full_gc()
      assert.is_true(p:remove("x"))
      assert.is_false(exists(dir .. "/x"))
    end)

    it("returns true once the last handle and object are collected", function()
      local dir = H.tmpdir()
      local p = wh.provider { dir = dir }
      do
        local l = p:lock("x")
        local s = p:semaphore("y", 2)
        local h1, h2 = l:try_acquire(), s:try_acquire()
        assert.is_truthy(h1 and h2)
        assert.is_false(p:remove("x"))
        assert.is_false(p:remove("y"))
      end
      full_gc()
      assert.is_true(p:remove("x"))
      assert.is_true(wh.remove("y", { dir = dir }))
      assert.is_false(exists(dir .. "/x"))
      assert.is_false(exists(dir .. "/y"))
    end)

    it("returns false while another process has the object open, true after it exited", function()
      local dir = H.tmpdir()
      local p = wh.provider { dir = dir }
      local c = H.spawn([[
        local l = wh.lock("x", { dir = ARGS.dir })
        local s = wh.semaphore("s", 2, { dir = ARGS.dir })
        say("open")
        wait_file(ARGS.go)
      ]], { dir = dir, go = dir .. "/go" })
      c:expect("open")
      assert.is_false(p:remove("x"))
      assert.is_false(p:remove("s"))
      assert.is_false(wh.remove("x", { dir = dir }))
      assert.is_true(exists(dir .. "/x"))
      H.touch(dir .. "/go")
      c:ok()
      assert.is_true(p:remove("x"))
      assert.is_true(p:remove("s"))
      assert.is_false(exists(dir .. "/x"))
    end)

    it("returns true once a process that held the object was SIGKILLed", function()
      local dir = H.tmpdir()
      local p = wh.provider { dir = dir }
      local c = H.lock_holder(dir, "x", 60)
      assert.is_false(p:remove("x"))
      c:kill()
      assert.are.equal(T.SIGKILL, c:wait().signal)
      assert.is_true(p:remove("x"))
    end)

    it("never splits a name into two objects", function()
      local dir = H.tmpdir()
      local p = wh.provider { dir = dir }
      local c = H.spawn([[
        local l = wh.lock("n", { dir = ARGS.dir })
        local h = assert(l:try_acquire())
        say("held")
        wait_file(ARGS.go)
        h:release()
      ]], { dir = dir, go = dir .. "/go" })
      c:expect("held")
      -- refused while the child uses it: a new open still finds the child's object
      assert.is_false(p:remove("n"))
      assert.is_true(exists(dir .. "/n"))
      do
        local l = p:lock("n")
        assert.is_nil(l:try_acquire())
        H.touch(dir .. "/go")
        c:ok()
        assert.is_truthy(l:try_acquire(), "the child's release is seen through the same object")
        assert.is_false(p:remove("n"))
      end
      full_gc()
      assert.is_true(p:remove("n"))
      assert.is_false(exists(dir .. "/n"))
      -- a new open creates a fresh file, shared by every later user
      local l2 = p:lock("n")
      assert.are.equal("file", T.stat(dir .. "/n").type)
      local h = l2:try_acquire()
      assert.is_truthy(h)
      local c2 = H.spawn([[
        say(wh.lock("n", { dir = ARGS.dir }):try_acquire() and "got" or "busy")
      ]], { dir = dir })
      c2:expect("busy")
      c2:ok()
      h:release()
    end)

    it("a removed semaphore's name can be reused with another max_count", function()
      local dir = H.tmpdir()
      local p = wh.provider { dir = dir }
      do
        local s = p:semaphore("s", 3)
        s:try_acquire():release()
      end
      full_gc()
      assert.is_true(p:remove("s"))
      local s5 = p:semaphore("s", 5)
      local h5 = s5:try_acquire()
      assert.is_truthy(h5)
      assert.are.equal(5, s5:info().max_count)
      assert.are.equal(1, s5:info().held)
    end)

    it("escapes names like the constructors, and checks its arguments", function()
      local dir = H.tmpdir()
      local p = wh.provider { dir = dir }
      do
        p:lock("a/b"):try_acquire()
      end
      full_gc()
      assert.is_true(exists(dir .. "/a_2Fb"))
      assert.is_true(p:remove("a/b"))
      assert.is_false(exists(dir .. "/a_2Fb"))
      H.assert_code("invalid_name", nil, function() p:remove("a/b", { exact_name = true }) end)
      H.assert_code("invalid_name", nil, function() wh.remove("a/b", { dir = dir, exact_name = true }) end)
      H.assert_argerror("bad argument #1 to 'remove'", function() wh.remove(5, { dir = dir }) end)
      H.assert_argerror("bad argument #1 to 'remove'", function() wh.remove(nil, { dir = dir }) end)
      H.assert_argerror("bad argument #2 to 'remove'", function() wh.remove("x", { dir = dir, bogus = 1 }) end)
      H.assert_argerror("bad argument #2 to 'remove'", function() wh.remove("x", 5) end)
      H.assert_argerror("bad argument #3 to 'remove'", function() wh.remove("x", { dir = dir }, 1) end)
      H.assert_argerror("bad argument #3 to 'remove'", function() p:remove("x", nil, 1) end)
    end)
  end)
end)
