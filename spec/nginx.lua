-- Real nginx for the specs and the OpenResty benchmark: Debian's nginx with
-- its lua module (on OpenResty's LuaJIT) and our LuaJIT build of the module.
-- Needs only whtest (no busted), so bench/openresty.lua uses it as well.
--
--   local N = require "nginx"
--   if N.missing then ... end                -- why nginx cannot run here, or nil
--   local ngx, port = N.start_nginx(dir, 4, { handlers = [[ location ... ]] })
--   local r = N.wrk(("http://127.0.0.1:%d/x"):format(port), 32, 3)
--   N.stop_nginx(ngx)                        -- by its master's PID
local T = require "whtest"

local N = { T = T }

N.MODULES = "/usr/lib/nginx/modules"

local function have(cmd)
  local r = os.execute("command -v " .. cmd .. " >/dev/null 2>&1")
  return r == true or r == 0 -- Lua 5.2+ or 5.1
end
N.have = have

local function exists(p)
  local f = io.open(p, "r")
  if f then f:close() return true end
  return false
end

local function read_file(p)
  local f = io.open(p, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end
N.exists, N.read_file, N.write_file = exists, read_file, write_file

local function repo_root()
  local p = io.popen("pwd")
  local d = p:read("*l")
  p:close()
  return d
end

N.ROOT = repo_root()
N.LUAJIT_MODULE = N.ROOT .. "/build/luajit/waithandles/core.so"

-- Builds the LuaJIT module if the LuaJIT headers are there; true if it exists.
local function luajit_module()
  if exists("/usr/include/luajit-2.1/lua.h") then
    -- A plain build, whatever make runs these specs (make exports its
    -- command-line variables, e.g. a sanitizer build's BUILD and SANFLAGS).
    os.execute("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u LD_PRELOAD make -s --no-print-directory"
      .. " LUA_VERSION=luajit BUILD=build/luajit SANFLAGS= all >/dev/null 2>&1")
  end
  return exists(N.LUAJIT_MODULE)
end

-- Why nginx cannot run here (a sentence for pending()), or nil.
if not (have("nginx") and have("curl")) then
  N.missing = "nginx or curl is not installed"
elseif not exists(N.MODULES .. "/ngx_http_lua_module.so") then
  N.missing = "libnginx-mod-http-lua is not installed"
elseif not luajit_module() then
  N.missing = "the LuaJIT build of the module is missing (libluajit2-5.1-dev)"
end
N.have_wrk = have("wrk")
N.is_root = T.geteuid() == 0

-- A process with its stdout and stderr on a pipe. Never under the sanitizer runtime the specs
-- may run with (LD_PRELOAD): nginx and curl are not instrumented, and curl hangs with it.
function N.run(argv)
  local cmd = { "env", "-u", "LD_PRELOAD" }
  for _, a in ipairs(argv) do cmd[#cmd + 1] = a end
  local pid, fd = T.spawn(cmd)
  return { pid = pid, fd = fd, out = "" }
end

-- Reads what p printed until it exits (or `timeout`); returns its output, or nil if still running.
-- Then p.status is its exit status ({ code = } or { signal = }).
function N.finished(p, timeout)
  if p.done then return p.out end
  local deadline = T.now() + (timeout or 0)
  repeat
    local data = T.read(p.fd, math.max(0, math.min(0.05, deadline - T.now())))
    if data == "" then
      p.status = T.waitpid(p.pid, 5) -- { code = } or { signal = }
      T.close(p.fd)
      p.done = true
      return p.out
    end
    if data then p.out = p.out .. data end
  until T.now() >= deadline
  return nil
end

-- curl's body of url (nil if it did not finish within timeout + 5 s).
function N.get(url, timeout)
  local p = N.run({ "curl", "-s", "-m", tostring(timeout or 10), url })
  return N.finished(p, (timeout or 10) + 5)
end

-- Each caller picks its own ports, and its nginx answers /ping with its own token: two suites
-- running at once never talk to each other's servers.
math.randomseed(T.getpid() * 7919 + math.floor(T.now() * 1000) % 1000003)
N.TOKEN = ("pong %d %d"):format(T.getpid(), math.random(1, 1e9))

-- A copy of the module (Lua and the LuaJIT core.so) under dir/mod that any user can read, for
-- workers running as nobody (the checkout itself may be private). Returns lua_path, lua_cpath.
function N.module_copy(dir)
  local mod = dir .. "/mod"
  os.execute(("mkdir -p %s/waithandles && cp %s/lua/waithandles/*.lua %s/waithandles/ && cp %s %s/waithandles/")
    :format(mod, N.ROOT, mod, N.LUAJIT_MODULE, mod))
  os.execute("chmod -R a+rX " .. mod)
  return mod .. "/?.lua;" .. mod .. "/?/init.lua", mod .. "/?.so"
end

-- Starts nginx in the foreground (daemon off) with `workers` worker processes, in dir, on
-- 127.0.0.1 and a free high port; returns it ({ pid = the master's, conf =, dir =, port = })
-- and its port. o: user (the workers' user; root if we are root, by default), main (more of
-- the main block), http (more of the http block), server (more of the server block),
-- lua_path and lua_cpath (where the module is), handlers (the locations), connections
-- (worker_connections, default 256), wrapper (an argv run in front of nginx, e.g. valgrind),
-- start_timeout (how long it may take to answer /ping, default 10 s; then an error).
function N.start_nginx(dir, workers, o)
  o = o or {}
  for _ = 1, 20 do
    local port = 20000 + math.random(0, 20000)
    local conf = dir .. "/nginx.conf"
    write_file(conf, table.concat({
      "worker_processes " .. workers .. ";",
      "daemon off;",
      o.user and ("user " .. o.user .. ";") or (N.is_root and "user root;" or ""),
      "error_log " .. dir .. "/error.log " .. (o.log_level or "info") .. ";",
      "pid " .. dir .. "/nginx.pid;",
      "load_module " .. N.MODULES .. "/ndk_http_module.so;",
      "load_module " .. N.MODULES .. "/ngx_http_lua_module.so;",
      o.main or "",
      "events { worker_connections " .. (o.connections or 256) .. "; }",
      "http {",
      "  access_log off;",
      "  client_body_temp_path " .. dir .. "/tmp; proxy_temp_path " .. dir .. "/tmp;",
      "  fastcgi_temp_path " .. dir .. "/tmp; uwsgi_temp_path " .. dir .. "/tmp;",
      "  scgi_temp_path " .. dir .. "/tmp;",
      ('  lua_package_path "%s;;";'):format(o.lua_path
        or (N.ROOT .. "/lua/?.lua;" .. N.ROOT .. "/lua/?/init.lua")),
      ('  lua_package_cpath "%s;;";'):format(o.lua_cpath or (N.ROOT .. "/build/luajit/?.so")),
      o.http or "",
      "  server {",
      "    listen 127.0.0.1:" .. port .. ";",
      "    location /ping { content_by_lua_block { ngx.say(\"" .. N.TOKEN .. "\") } }",
      o.server or "",
      o.handlers or "",
      "  }",
      "}",
    }, "\n"):gsub("%$PORT", tostring(port)))
    os.execute("mkdir -p " .. dir .. "/tmp")
    local argv = {}
    for _, a in ipairs(o.wrapper or {}) do argv[#argv + 1] = a end
    for _, a in ipairs({ "nginx", "-p", dir, "-c", conf }) do argv[#argv + 1] = a end
    local ngx = N.run(argv)
    ngx.conf, ngx.dir, ngx.port = conf, dir, port
    local deadline = T.now() + (o.start_timeout or 10)
    while T.now() < deadline do
      local ping = N.run({ "curl", "-s", "-m", "2", ("http://127.0.0.1:%d/ping"):format(port) })
      if N.finished(ping, 3) == N.TOKEN .. "\n" then return ngx, port end
      if N.finished(ngx, 0.05) then break end -- exited: port in use, or a bad config
    end
    if not ngx.done then
      T.kill(ngx.pid, T.SIGKILL)
      N.finished(ngx, 5)
    end
    if not (read_file(dir .. "/error.log") or ""):find("Address already in use", 1, true) then
      error("nginx did not start:\n" .. (ngx.out or "") .. (read_file(dir .. "/error.log") or ""))
    end
  end
  error("no free port for nginx")
end

-- Stops nginx started by start_nginx, by its master's PID: SIGTERM, then SIGKILL after 10 s.
function N.stop_nginx(ngx)
  if ngx and not ngx.done then
    T.kill(ngx.pid, T.SIGTERM)
    if not N.finished(ngx, 10) then
      T.kill(ngx.pid, T.SIGKILL)
      N.finished(ngx, 5)
    end
  end
end

-- The PIDs of a process's children (nginx's workers), sorted.
function N.children(pid)
  local s = read_file(("/proc/%d/task/%d/children"):format(pid, pid)) or ""
  local t = {}
  for p in s:gmatch("%d+") do t[#t + 1] = tonumber(p) end
  table.sort(t)
  return t
end

-- True while process pid exists (and is not a zombie).
function N.alive(pid)
  local s = read_file(("/proc/%d/stat"):format(pid))
  return s ~= nil and not s:match("^%d+ %b() Z")
end

local function unit(n, u)
  n = tonumber(n)
  if not n then return nil end
  return u == "us" and n / 1e6 or u == "ms" and n / 1e3 or u == "m" and n * 60 or n
end

-- Runs wrk (2 threads, --latency); returns its figures: requests, rps, non2xx, socket_errors,
-- timeouts, and p50, p75, p90, p99, max latency in seconds (out: wrk's output). o.timeout: wrk's
-- own request timeout (default 2 s: slower requests count as timeouts, not in the latencies).
function N.wrk(url, connections, seconds, o)
  o = o or {}
  local p = N.run({ "wrk", "-t" .. (o.threads or 2), "-c" .. connections, "-d" .. seconds .. "s",
    "--timeout", (o.timeout or 2) .. "s", "--latency", url })
  local out = assert(N.finished(p, seconds + 60), "wrk did not finish")
  local r = { out = out }
  r.requests = tonumber(out:match("(%d+) requests in"))
  r.non2xx = tonumber(out:match("Non%-2xx or 3xx responses: (%d+)")) or 0
  local c, rd, wr, to = out:match("Socket errors: connect (%d+), read (%d+), write (%d+), timeout (%d+)")
  r.socket_errors = c and (c + rd + wr + to) or 0
  r.timeouts = tonumber(to) or 0
  r.max = unit(out:match("Latency%s+%S+%s+%S+%s+([%d.]+)(%a+)"))
  for _, q in ipairs({ 50, 75, 90, 99 }) do
    r["p" .. q] = unit(out:match(q .. "%%%s+([%d.]+)(%a+)"))
  end
  r.rps = tonumber(out:match("Requests/sec:%s+([%d.]+)"))
  return r
end

return N
