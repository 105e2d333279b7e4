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
    location /ping {
      content_by_lua_block { ngx.say("pong") }
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

-- Starts nginx with `workers` worker processes in dir; returns it and its port.
local function start_nginx(dir, workers)
  for attempt = 1, 20 do
    local port = 20000 + math.random(0, 20000)
    local conf = dir .. "/nginx.conf"
    H.write_file(conf, table.concat({
      "worker_processes " .. workers .. ";",
      "daemon off;",
      H.is_root and "user root;" or "",
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
      ('  lua_package_path "%s/lua/?.lua;%s/lua/?/init.lua;;";'):format(ROOT, ROOT),
      ('  lua_package_cpath "%s/build/luajit/?.so;;";'):format(ROOT),
      "  server {",
      "    listen 127.0.0.1:" .. port .. ";",
      HANDLERS,
      "  }",
      "}",
    }, "\n"))
    os.execute("mkdir -p " .. dir .. "/tmp")
    local ngx = run({ "nginx", "-p", dir, "-c", conf })
    local deadline = T.now() + 10
    while T.now() < deadline do
      local ping = run({ "curl", "-s", "-m", "2", ("http://127.0.0.1:%d/ping"):format(port) })
      if finished(ping, 3) == "pong\n" then return ngx, port end
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
    assert.are.equal("pong\n", finished(c, 10))
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
