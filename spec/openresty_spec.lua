-- Real OpenResty-style workers: Debian's nginx with the lua module (on
-- OpenResty's LuaJIT). Inside a request, *_async waits with ngx.sleep and so
-- never blocks the worker's event loop; a worker that dies holding a lock
-- gives it back. Pending where nginx, its lua module, curl or the LuaJIT
-- build of the module is missing (CI installs them all).
local wh = require "waithandles"
local H = require "helpers"
local T = H.whtest

local MODULES = "/usr/lib/nginx/modules"

local function have(cmd)
  local r = os.execute("command -v " .. cmd .. " >/dev/null 2>&1")
  return r == true or r == 0 -- Lua 5.2+ or 5.1
end

local function repo_root()
  local p = io.popen("pwd")
  local d = p:read("*l")
  p:close()
  return d
end

local ROOT = repo_root()
local LUAJIT_MODULE = ROOT .. "/build/luajit/waithandles/core.so"

-- Builds the LuaJIT module if the LuaJIT headers are there; true if it exists.
local function luajit_module()
  if H.exists("/usr/include/luajit-2.1/lua.h") then
    -- A plain build, whatever make runs these specs (make exports its
    -- command-line variables, e.g. a sanitizer build's BUILD and SANFLAGS).
    os.execute("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u LD_PRELOAD make -s --no-print-directory"
      .. " LUA_VERSION=luajit BUILD=build/luajit SANFLAGS= all >/dev/null 2>&1")
  end
  return H.exists(LUAJIT_MODULE)
end

local missing
if not (have("nginx") and have("curl")) then
  missing = "nginx or curl is not installed"
elseif not H.exists(MODULES .. "/ngx_http_lua_module.so") then
  missing = "libnginx-mod-http-lua is not installed"
elseif not luajit_module() then
  missing = "the LuaJIT build of the module is missing (libluajit2-5.1-dev)"
end

-- A process with its stdout on a pipe, like H.spawn's children but any command.
-- Never under the sanitizer runtime the specs may run with (LD_PRELOAD): nginx
-- and curl are not instrumented, and curl hangs with it preloaded.
local function run(argv)
  local cmd = { "env", "-u", "LD_PRELOAD" }
  for _, a in ipairs(argv) do cmd[#cmd + 1] = a end
  local pid, fd = T.spawn(cmd)
  return { pid = pid, fd = fd, out = "" }
end

-- Reads what p printed until it exits (or `timeout`); returns its output, or nil if still running.
local function finished(p, timeout)
  local deadline = T.now() + (timeout or 0)
  repeat
    local data = T.read(p.fd, math.max(0, math.min(0.05, deadline - T.now())))
    if data == "" then
      T.waitpid(p.pid, 5)
      T.close(p.fd)
      p.done = true
      return p.out
    end
    if data then p.out = p.out .. data end
  until T.now() >= deadline
  return nil
end

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

-- Each suite picks its own ports, and its nginx answers /ping with its own token: two suites
-- running at once never talk to each other's servers.
math.randomseed(T.getpid() * 7919 + math.floor(T.now() * 1000) % 1000003)
local TOKEN = ("pong %d %d"):format(T.getpid(), math.random(1, 1e9))

-- Starts nginx with `workers` worker processes in dir; returns it and its port. o: user (the
-- workers' user, root if we are root by default), http (more of the http block), lua_path and
-- lua_cpath (where the module is), handlers (the locations).
local function start_nginx(dir, workers, o)
  o = o or {}
  for attempt = 1, 20 do
    local port = 20000 + math.random(0, 20000)
    local conf = dir .. "/nginx.conf"
    H.write_file(conf, table.concat({
      "worker_processes " .. workers .. ";",
      "daemon off;",
      o.user and ("user " .. o.user .. ";") or (H.is_root and "user root;" or ""),
      "error_log " .. dir .. "/error.log info;",
      "pid " .. dir .. "/nginx.pid;",
      "load_module " .. MODULES .. "/ndk_http_module.so;",
      "load_module " .. MODULES .. "/ngx_http_lua_module.so;",
      "events { worker_connections 256; }",
      "http {",
      "  access_log off;",
      "  client_body_temp_path " .. dir .. "/tmp; proxy_temp_path " .. dir .. "/tmp;",
      "  fastcgi_temp_path " .. dir .. "/tmp; uwsgi_temp_path " .. dir .. "/tmp;",
      "  scgi_temp_path " .. dir .. "/tmp;",
      ('  lua_package_path "%s;;";'):format(o.lua_path or (ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua")),
      ('  lua_package_cpath "%s;;";'):format(o.lua_cpath or (ROOT .. "/build/luajit/?.so")),
      o.http or "",
      "  server {",
      "    listen 127.0.0.1:" .. port .. ";",
      "    location /ping { content_by_lua_block { ngx.say(\"" .. TOKEN .. "\") } }",
      o.handlers or HANDLERS,
      "  }",
      "}",
    }, "\n"))
    os.execute("mkdir -p " .. dir .. "/tmp")
    local ngx = run({ "nginx", "-p", dir, "-c", conf })
    local deadline = T.now() + 10
    while T.now() < deadline do
      local ping = run({ "curl", "-s", "-m", "2", ("http://127.0.0.1:%d/ping"):format(port) })
      if finished(ping, 3) == TOKEN .. "\n" then return ngx, port end
      if finished(ngx, 0.05) then break end -- exited: port in use, or a bad config
    end
    if not ngx.done then
      T.kill(ngx.pid, T.SIGKILL)
      finished(ngx, 5)
    end
    if not (H.read_file(dir .. "/error.log") or ""):find("Address already in use", 1, true) then
      error("nginx did not start:\n" .. (ngx.out or "") .. (H.read_file(dir .. "/error.log") or ""))
    end
  end
  error("no free port for nginx")
end

local function stop_nginx(ngx)
  if ngx and not ngx.done then
    T.kill(ngx.pid, T.SIGTERM)
    if not finished(ngx, 10) then
      T.kill(ngx.pid, T.SIGKILL)
      finished(ngx, 5)
    end
  end
end

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
local WRK = have("wrk")

-- Runs wrk; returns its figures: requests, errors (non-2xx, socket errors), latency max (s).
local function wrk(url, connections, seconds)
  local p = run({ "wrk", "-t2", "-c" .. connections, "-d" .. seconds .. "s", "--latency", url })
  local out = assert(finished(p, seconds + 60), "wrk did not finish")
  local function unit(n, u)
    n = tonumber(n)
    return u == "us" and n / 1e6 or u == "ms" and n / 1e3 or u == "m" and n * 60 or n
  end
  local r = { out = out }
  r.requests = tonumber(out:match("(%d+) requests in"))
  r.non2xx = tonumber(out:match("Non%-2xx or 3xx responses: (%d+)")) or 0
  local c, rd, wr, to = out:match("Socket errors: connect (%d+), read (%d+), write (%d+), timeout (%d+)")
  r.socket_errors = c and (c + rd + wr + to) or 0
  r.max = unit(out:match("Latency%s+%S+%s+%S+%s+([%d.]+)(%a+)"))
  r.p50 = unit(out:match("50%%%s+([%d.]+)(%a+)"))
  r.p99 = unit(out:match("99%%%s+([%d.]+)(%a+)"))
  r.rps = tonumber(out:match("Requests/sec:%s+([%d.]+)"))
  return r
end

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
    local mod = dir .. "/mod"
    os.execute(("mkdir -p %s/waithandles && cp %s/lua/waithandles/*.lua %s/waithandles/ && cp %s %s/waithandles/")
      :format(mod, ROOT, mod, LUAJIT_MODULE, mod))
    os.execute("chmod -R a+rX " .. mod)
    H.write_file(dir .. "/counter.txt", "0")
    os.execute("chmod 0666 " .. dir .. "/counter.txt")
    local locks = dir .. "/locks"
    ngx, port = start_nginx(dir, 4, {
      user = H.is_root and "nobody nogroup" or nil,
      lua_path = mod .. "/?.lua;" .. mod .. "/?/init.lua",
      lua_cpath = mod .. "/?.so",
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
