-- A C host that links waithandles statically (examples/embed, `make embed`), under every Lua
-- it can link: the headers and the static library of Lua 5.1-5.4 (liblua5.X-dev) and LuaJIT
-- (libluajit2-5.1-dev). In it, scripts contend with a separate process and wait for its named
-- event, lua_close releases what a script left held, and several lua_States in threads of the
-- process share objects under a witness in C. Runs in the plain Lua 5.4 run of the suite (it does not depend on the
-- Lua that runs busted).
local H = require "helpers"
local X = require "hosts"

local EXAMPLES = X.ROOT .. "/examples/embed"

-- Why Lua `v` cannot be linked here, or nil.
local function unlinkable(v)
  local inc = v == "luajit" and "/usr/include/luajit-2.1/lua.h" or ("/usr/include/lua" .. v .. "/lua.h")
  local lib = v == "luajit" and "libluajit-5.1.a" or ("liblua" .. v .. ".a")
  if not H.exists(inc) then return "no " .. inc end
  if not H.sh("cc -print-file-name=" .. lib):find("/", 1, true) then return "no " .. lib end
  return nil
end

local skip = X.not_plain_run()

describe("a C host linking libwaithandles.a", function()
  after_each(H.cleanup)

  for _, v in ipairs(X.VERSIONS) do
    local why = skip or unlinkable(v)
    local lua = v == "luajit" and "LuaJIT" or ("Lua " .. v)
    local bin = X.ROOT .. "/build/" .. v .. "/embed/"
    local function build()
      local ok, out = X.make(("LUA_VERSION=%s BUILD=build/%s embed"):format(v, v))
      assert(ok, "make embed LUA_VERSION=" .. v .. " failed:\n" .. out)
    end

    if why then
      pending(("%s: %s"):format(lua, why), function() end)
    else
      it(lua .. ": scripts in the host and a lua process keep one counter exact", function()
        build()
        local dir = H.tmpdir()
        local counter = dir .. "/counter"
        -- Both start while the lock is held here, so they contend from their first round.
        local held = require("waithandles").lock("embed-counter", { dir = dir }):acquire(5)
        local env = { WAITHANDLES_DIR = dir, COUNTER_FILE = counter, ROUNDS = "150" }
        local host = X.start({ bin .. "host", EXAMPLES .. "/counter.lua" }, env)
        local lua_env = X.paths(X.VERSION)
        for k, x in pairs(env) do lua_env[k] = x end
        local peer = X.start({ H.lua, EXAMPLES .. "/counter.lua" }, lua_env)
        local lock = require("waithandles").lock("embed-counter", { dir = dir })
        H.eventually(function() return lock:info().waiting >= 2 end, 10, "both processes waiting")
        held:release()
        local st = host:wait(60)
        assert.are.same({ code = 0 }, st, host:output())
        assert.is_truthy(host:output():find("counter: 150 increments", 1, true), host:output())
        st = peer:wait(60)
        assert.are.same({ code = 0 }, st, peer:output())
        assert.are.equal("300", H.read_file(counter))
      end)

      it(lua .. ": lua_close releases what a script left held", function()
        build()
        local dir = H.tmpdir()
        local st, out = X.run({ bin .. "host", EXAMPLES .. "/leave.lua", EXAMPLES .. "/after.lua" },
          { WAITHANDLES_DIR = dir })
        assert.are.same({ code = 0 }, st, out)
        assert.is_truthy(out:find("leave: holding embed-left", 1, true), out)
        assert.is_truthy(out:find("after: embed-left is free", 1, true), out)
      end)

      it(lua .. ": a script in the host waits for an event that another process sets", function()
        build()
        local dir = H.tmpdir()
        local w = require "waithandles"
        local ready = w.event("embed-ready", { auto_reset = true, dir = dir })
        local go = w.event("embed-go", { dir = dir })
        local host = X.start({ bin .. "host", EXAMPLES .. "/event.lua" }, { WAITHANDLES_DIR = dir })
        assert.is_true(ready:wait(20), host:output())
        go:set()
        local st = host:wait(30)
        assert.are.same({ code = 0 }, st, host:output())
        assert.is_truthy(host:output():find("event: embed-go set by another process", 1, true),
          host:output())
      end)

      -- The core knows where a coroutine can yield: in a host linked with LuaJIT's archive
      -- too, whose lua_isyieldable it finds by a weak reference (no dlsym, which sees only
      -- exported symbols). PUC 5.1 cannot yield through pcall; 5.2 leaves it to the facade.
      it(lua .. ": the core tells where a coroutine of the host can yield", function()
        build()
        local dir = H.tmpdir()
        H.write_file(dir .. "/y.lua", [[
          local core = require "waithandles.core"
          local function co(f) return coroutine.wrap(f)() end
          print(("yieldable main %s co %s co-pcall %s"):format(tostring(core.yieldable()),
            tostring(co(function() return core.yieldable() end)),
            tostring(co(function() return select(2, pcall(core.yieldable)) end))))
        ]])
        local st, out = X.run({ bin .. "host", dir .. "/y.lua" }, { WAITHANDLES_DIR = dir })
        assert.are.same({ code = 0 }, st, out)
        local want = ({ ["5.1"] = "false co true co-pcall false",
          ["5.2"] = "nil co nil co-pcall nil" })[v] or "false co true co-pcall true"
        assert.are.equal("yieldable main " .. want, out:match("yieldable[^\n]*"), out)
      end)

      it(lua .. ": lua_States in 4 threads share a lock, a semaphore and an rwlock",
        function()
          build()
          local dir = H.tmpdir()
          local st, out = X.run({ bin .. "threads", "4", "150" }, { WAITHANDLES_DIR = dir })
          assert.are.same({ code = 0 }, st, out)
          local counter, most_lock, most_sem, most_read, most_write, violations = out:match(
            "counter (%d+/%d+) most lock (%d+) sem (%d+) read (%d+) write (%d+) violations (%d+)")
          assert.are.equal("600/600", counter, out)
          assert.are.equal("1", most_lock, out)
          assert.is_true(tonumber(most_sem) <= 2, out)
          assert.are.equal("1", most_write, out)
          assert.is_true(tonumber(most_read) >= 1, out)
          assert.are.equal("0", violations, out)
        end)
    end
  end

  -- On the 5.1 ABI (PUC 5.1, LuaJIT) the core once cached what dlsym found for LuaJIT's
  -- lua_isyieldable in plain statics, which the lua_States of a host's threads wrote and read
  -- at once: a data race. It now takes it from weak references (wh_lua_yieldable in
  -- csrc/lcore.c) and keeps no state. (CI also runs the 5.4 and 5.1 builds of the threads
  -- host under TSan, scripts/test.sh.)
  for _, v in ipairs({ "5.1", "luajit" }) do
    local why = skip or unlinkable(v) or (not X.have("clang") and "no clang")
      or (not H.sh("clang -print-file-name=libclang_rt.tsan-$(uname -m).a"):find("/", 1, true)
        and "no ThreadSanitizer runtime (libclang-rt-14-dev, which scripts/deps.sh installs for CI)")
    local lua = v == "luajit" and "LuaJIT" or ("Lua " .. v)
    local title = lua .. ": lua_States in 8 threads are free of data races under ThreadSanitizer"
    if why then
      pending(("%s: %s"):format(title, why), function() end)
    else
      it(title, function()
        local build = "build/tsan-" .. v
        local ok, out = X.make("CC=clang LUA_VERSION=" .. v .. " BUILD=" .. build
          .. " 'SANFLAGS=-fsanitize=thread -fno-omit-frame-pointer' embed")
        assert(ok, out)
        local st
        st, out = X.run({ X.ROOT .. "/" .. build .. "/embed/threads", "8", "50" },
          { WAITHANDLES_DIR = H.tmpdir(), TSAN_OPTIONS = "halt_on_error=1:exitcode=66" })
        assert.are.same({ code = 0 }, st, out)
        assert.is_falsy(out:find("ThreadSanitizer", 1, true), out)
        assert.is_truthy(out:find("violations 0", 1, true), out)
      end)
    end
  end

  if not skip and not unlinkable("5.4") then
    it("make install puts libwaithandles.a and waithandles.h where a host builds with them", function()
      local prefix = H.tmpdir()
      local ok, out = X.make("LUA_VERSION=5.4 BUILD=build/5.4 install PREFIX=" .. prefix)
      assert(ok, out)
      assert.is_true(H.exists(prefix .. "/include/waithandles.h"))
      assert.is_true(H.exists(prefix .. "/lib/lua/5.4/libwaithandles.a"))
      -- Only the installed header and archive (and the facade's array, from the build).
      out = H.sh(("cc -std=gnu11 -Wall -Wextra -Werror -I%s/include -I%s/build/5.4/embed "
        .. "-I/usr/include/lua5.4 -o %s/host %s/host.c %s/lib/lua/5.4/libwaithandles.a "
        .. "-l:liblua5.4.a -lm -ldl -pthread && echo built"):format(prefix, X.ROOT, prefix,
        EXAMPLES, prefix))
      assert.is_truthy(out:find("built", 1, true), out)
      local st
      st, out = X.run({ prefix .. "/host", EXAMPLES .. "/leave.lua", EXAMPLES .. "/after.lua" },
        { WAITHANDLES_DIR = H.tmpdir() })
      assert.are.same({ code = 0 }, st, out)
    end)
  end
end)
