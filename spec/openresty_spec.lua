-- Real OpenResty-style workers: Debian's nginx with the lua module (on
-- OpenResty's LuaJIT). Inside a request, *_async waits with ngx.sleep and so
-- never blocks the worker's event loop; a worker that dies holding a lock
-- gives it back. Pending where nginx, its lua module, curl or the LuaJIT
-- build of the module is missing (CI installs them all).
local wh = require "waithandles"
local H = require "helpers"
local T = H.whtest

local N = require "nginx"
local missing, run, finished = N.missing, N.run, N.finished

local HANDLERS = [[
    location /hold {
      content_by_lua_block {
        local wh = require "waithandles"
        local dir = ngx.var.arg_dir
        local l = wh.lock("ngx", { dir = dir })
        local h = l:acquire_async(10)
        local f = io.open(dir .. "/holding", "w") f:write(ngx.worker.pid()) f:close()
        while not io.open(dir .. "/release", "r") do ngx.sleep(0.01) end
        h:release()
        ngx.say("A released")
      }
    }
    location /wait {
      content_by_lua_block {
        local wh = require "waithandles"
        local l = wh.lock("ngx", { dir = ngx.var.arg_dir })
        local h = l:acquire_async(20)
        ngx.say("B got ", tostring(h:is_held()), " in phase ", ngx.get_phase())
        h:release()
      }
    }
    location /count {
      content_by_lua_block {
        local wh = require "waithandles"
        local dir = ngx.var.arg_dir
        local l = wh.lock("counter", { dir = dir })
        for _ = 1, 10 do
          local h = l:acquire_async(30)
          local f = io.open(dir .. "/counter.txt", "r")
          local n = tonumber(f:read("*a"))
          f:close()
          ngx.sleep(0)                       -- give other requests a chance to interleave
          f = io.open(dir .. "/counter.txt", "w")
          f:write(tostring(n + 1))
          f:close()
          h:release()
        end
        ngx.say("counted")
      }
    }
]]

local TOKEN = N.TOKEN

local function start_nginx(dir, workers, o)
  o = o or {}
  o.handlers = o.handlers or HANDLERS
  return N.start_nginx(dir, workers, o)
end
local stop_nginx = N.stop_nginx

describe("inside OpenResty (nginx + lua module)", function()
  local ngx, port, dir
  local function url(path) return ("http://127.0.0.1:%d%s?dir=%s"):format(port, path, dir) end
  local function get(path, ...)
    local argv = { "curl", "-s", "-S", "-m", "30" }
    for _, p in ipairs({ path, ... }) do argv[#argv + 1] = url(p) end
    return run(argv)
  end

  before_each(function()
    if missing then return end
    dir = H.tmpdir()
    os.execute("chmod 0755 " .. dir)
  end)
  after_each(function()
    stop_nginx(ngx)
    ngx = nil
    H.cleanup()
  end)

  it("a request waiting in acquire_async does not block its worker", function()
    if missing then return pending(missing) end
    ngx, port = start_nginx(dir, 1)
    local a = get("/hold")
    H.eventually(function() return H.exists(dir .. "/holding") end, 10, "request A holds the lock")
    local b = get("/wait")
    local l = wh.lock("ngx", { dir = dir })
    H.eventually(function() return l:info().waiting == 1 end, 10, "request B waits")
    -- The only worker serves another request while B waits for the lock.
    local c = get("/ping")
    assert.are.equal(TOKEN .. "\n", finished(c, 10))
    assert.is_nil(finished(a, 0), "A finished before it was told to release")
    assert.is_nil(finished(b, 0), "B got the lock while A held it")
    H.touch(dir .. "/release")
    assert.are.equal("A released\n", finished(a, 10))
    assert.are.equal("B got true in phase content\n", finished(b, 10))
    assert.are.equal(0, l:info().held)
  end)

  it("requests in two workers keep a counter exact", function()
    if missing then return pending(missing) end
    ngx, port = start_nginx(dir, 2)
    H.write_file(dir .. "/counter.txt", "0")
    local clients = {}
    for i = 1, 8 do clients[i] = get("/count", "/count", "/count", "/count", "/count") end
    for i = 1, 8 do
      assert.are.equal(("counted\n"):rep(5), finished(clients[i], 60),
        "client " .. i .. "; nginx error log:\n" .. (H.read_file(dir .. "/error.log") or ""))
    end
    assert.are.equal("400", H.read_file(dir .. "/counter.txt"))
  end)

  it("a worker killed while it holds a lock gives it back", function()
    if missing then return pending(missing) end
    ngx, port = start_nginx(dir, 1)
    local a = get("/hold")
    -- The file exists before the pid is written: wait for the pid.
    local worker
    H.eventually(function()
      worker = tonumber(H.read_file(dir .. "/holding") or "")
      return worker
    end, 10, "request A holds the lock")
    local l = wh.lock("ngx", { dir = dir })
    assert.are.equal(worker, l:info().holders[1].pid)
    assert.is_nil(l:try_acquire())
    local t0 = T.now()
    T.kill(worker, T.SIGKILL)
    local h = l:acquire(20)
    assert.is_true(T.now() - t0 < 2, "took " .. (T.now() - t0) .. " s")
    assert.is_true(h:is_held())
    finished(a, 10)
    h:release()
  end)
end)

-- Many requests per worker contend, their handlers written the common way
-- (the wait wrapped in pcall), the master as root opening the objects in
-- init_by_lua and the workers as nobody: every request gets the lock within
-- its own bound, no worker blocks itself, no update is lost.
local WRK = N.have_wrk
local wrk = N.wrk

describe("inside OpenResty under load (wrk, 4 workers)", function()
  local ngx, port, dir
  after_each(function()
    stop_nginx(ngx)
    ngx = nil
    H.cleanup()
  end)

  it("handlers that wait inside pcall never block their worker; the counter is exact", function()
    if missing then return pending(missing) end
    if not WRK then return pending("wrk is not installed") end
    dir = H.tmpdir()
    os.execute("chmod 0755 " .. dir)
    -- The module where the workers' user can read it.
    local lua_path, lua_cpath = N.module_copy(dir)
    H.write_file(dir .. "/counter.txt", "0")
    os.execute("chmod 0666 " .. dir .. "/counter.txt")
    local locks = dir .. "/locks"
    ngx, port = start_nginx(dir, 4, {
      user = H.is_root and "nobody nogroup" or nil,
      lua_path = lua_path,
      lua_cpath = lua_cpath,
      http = table.concat({
        "  lua_shared_dict stats 1m;",
        "  init_by_lua_block {",
        "    WH = require 'waithandles'",
        ("    LOCK = WH.lock('counter', { dir = %q })"):format(locks),
        ("    COUNTER = %q"):format(dir .. "/counter.txt"),
        "  }",
      }, "\n"),
      handlers = [[
        location /count {
          content_by_lua_block {
            local ok, err = pcall(function()
              local h = LOCK:acquire_async(10)
              local f = io.open(COUNTER, "r")
              local n = tonumber(f:read("*a"))
              f:close()
              ngx.sleep(0.001)
              f = io.open(COUNTER, "w")
              f:write(tostring(n + 1))
              f:close()
              h:release()
              ngx.shared.stats:incr("done", 1, 0)
            end)
            if not ok then
              ngx.status = 500
              ngx.say(tostring(err))
              return
            end
            ngx.say("ok")
          }
        }
        location /done {
          content_by_lua_block { ngx.say(ngx.shared.stats:get("done") or 0) }
        }
      ]],
    })
    local url = ("http://127.0.0.1:%d"):format(port)
    for _, c in ipairs({ 4, 32, 128 }) do
      local r = wrk(url .. "/count", c, 3)
      if os.getenv("WH_FIGURES") then
        io.stderr:write(("# %d connections: %.0f req/s, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n")
          :format(c, r.rps, r.p50 * 1e3, r.p99 * 1e3, r.max * 1e3))
      end
      assert.is_truthy(r.requests, r.out)
      assert.is_true(r.requests > 20, c .. " connections: only " .. r.requests .. " requests\n" .. r.out)
      assert.are.equal(0, r.non2xx, r.out .. (H.read_file(dir .. "/error.log") or ""))
      assert.are.equal(0, r.socket_errors, r.out)
      assert.is_true(r.max < 10, "a request took " .. r.max .. " s\n" .. r.out)
    end
    -- In-flight requests end; then every completed increment is in the file, none lost.
    local done
    H.eventually(function()
      local p = run({ "curl", "-s", "-m", "5", url .. "/done" })
      local a = tonumber(finished(p, 10))
      local b = tonumber(H.read_file(dir .. "/counter.txt"))
      done = a
      return a and a == b and a > 0 and wh.lock("counter", { dir = locks }):info().held == 0
    end, 20, "the counter matches the completed increments")
    assert.is_true(done > 40)
  end)
end)

-- A hold taken in a request ends with the request, however it ends: the
-- garbage collector is stopped in these workers, so only the request's end
-- can give the holds back.
describe("inside OpenResty, a hold ends with its request", function()
  local ngx, port, dir
  after_each(function()
    stop_nginx(ngx)
    ngx = nil
    H.cleanup()
  end)

  local function serve()
    dir = H.tmpdir()
    os.execute("chmod 0755 " .. dir)
    ngx, port = start_nginx(dir, 1, {
      http = table.concat({
        "  lua_check_client_abort on;",
        "  init_worker_by_lua_block { collectgarbage('stop') }",
        "  init_by_lua_block {",
        "    WH = require 'waithandles'",
        ("    DIR = %q"):format(dir .. "/locks"),
        "    function HOLD(name, opts)",
        "      opts = opts or {}",
        "      opts.dir = DIR",
        "      KEEP = KEEP or {}",
        "      KEEP[#KEEP + 1] = WH.lock(name, opts):acquire_async(5) -- referenced: no GC either",
        "      return KEEP[#KEEP]",
        "    end",
        "  }",
      }, "\n"),
      handlers = [[
        location /error { content_by_lua_block { HOLD("error") error("boom") } }
        location /exit { content_by_lua_block { HOLD("exit") ngx.exit(204) } }
        location /exec { content_by_lua_block { HOLD("exec") ngx.exec("/ping") } }
        location /return { content_by_lua_block { HOLD("return") ngx.say("bye") } }
        location /abort { content_by_lua_block { HOLD("abort") ngx.sleep(30) ngx.say("late") } }
        location /worker { content_by_lua_block { HOLD("worker", { scope = "worker" }) ngx.say("kept") } }
        location /timer {
          content_by_lua_block {
            ngx.timer.at(0, function() HOLD("timer") error("timer fails") end)
            ngx.say("started")
          }
        }
      ]],
    })
  end

  local function request(path, timeout)
    local p = run({ "curl", "-s", "-o", "/dev/null", "-m", tostring(timeout or 10),
      ("http://127.0.0.1:%d%s"):format(port, path) })
    finished(p, (timeout or 10) + 5)
  end

  for _, how in ipairs({ "error", "exit", "exec", "return", "abort", "timer" }) do
    it("(" .. how .. ") and is free again within 100 ms of its end", function()
      if missing then return pending(missing) end
      serve()
      request("/" .. how, how == "abort" and 0.5 or nil)
      local l = wh.lock(how, { dir = dir .. "/locks" })
      local t0 = H.now()
      H.eventually(function() return l:info().held == 0 end, 5, "the hold ends")
      local took = H.now() - t0
      -- The abort is seen when nginx notices the closed connection.
      assert.is_true(took < (how == "abort" and 1 or 0.1), how .. ": held " .. took .. " s more")
      assert.are.equal(0, l:info().waiting)
    end)
  end

  it("(scope = \"worker\") outlives its request", function()
    if missing then return pending(missing) end
    serve()
    request("/worker")
    H.sleep(0.2)
    assert.are.equal(1, wh.lock("worker", { dir = dir .. "/locks" }):info().held)
  end)
end)

describe("inside OpenResty, a limiter whose requests sometimes fail while holding", function()
  local ngx
  after_each(function()
    stop_nginx(ngx)
    ngx = nil
    H.cleanup()
  end)

  it("keeps serving: every failed request's ticket comes back", function()
    if missing then return pending(missing) end
    if not WRK then return pending("wrk is not installed") end
    local dir = H.tmpdir()
    os.execute("chmod 0755 " .. dir)
    local port
    ngx, port = start_nginx(dir, 4, {
      http = table.concat({
        "  init_worker_by_lua_block { collectgarbage('stop') math.randomseed(ngx.worker.pid()) }",
        "  init_by_lua_block {",
        ("    SEM = require('waithandles').semaphore('limit', 3, { dir = %q })"):format(dir .. "/locks"),
        "  }",
      }, "\n"),
      handlers = [[
        location /work {
          content_by_lua_block {
            local t = SEM:acquire_async(5)
            ngx.sleep(0.005)
            if math.random() < 0.1 then error("the upstream failed") end
            t:release()
            ngx.say("ok")
          }
        }
      ]],
    })
    local r = wrk(("http://127.0.0.1:%d/work"):format(port), 16, 3)
    assert.is_truthy(r.requests, r.out)
    local ok = r.requests - r.non2xx
    -- 3 tickets x 5 ms: up to 600 per second; a stalled limiter serves a handful.
    assert.is_true(ok > 300, "only " .. ok .. " requests served\n" .. r.out)
    assert.is_true(r.non2xx > 10, "no request failed?\n" .. r.out)
    assert.are.equal(0, r.socket_errors, r.out)
    assert.is_true(r.max < 5, r.out)
    H.eventually(function()
      return wh.semaphore("limit", 3, { dir = dir .. "/locks" }):info().held == 0
    end, 5, "every ticket is back")
  end)
end)
