-- make bench-openresty: waithandles against the lua-resty-lock algorithm in
-- real nginx (Debian's nginx and lua module, on OpenResty's LuaJIT), 4
-- workers as nobody (when run as root), on 127.0.0.1 and a free high port,
-- loaded by wrk; every nginx is stopped by its master's PID.
--
--   1. locked counter: read a file, ngx.sleep(0.001), write it, under the lock, the wait
--      inside pcall; 4, 32 and 128 connections
--   2. a concurrency limit of 3 around a 5 ms upstream stand-in: a waithandles
--      semaphore against a shared-dict counter with polling
--   3. cache refresh: every second one worker refreshes a cached value (a file)
--      while the others serve it: waithandles try_acquire + rwlock against
--      resty-lock (a try-lock for the refresh, the lock around reads and writes)
--   4. a lock held 5 ms (ngx.sleep) per request at 1, 2, 16 and 60 connections: the
--      lock's busy share, and req/s at 60 against 1 (issue 21: ≥ 80 %)
--   and the recovery time when a worker is killed holding a lock.
--
-- The handlers are bench/openresty_workloads.lua, the baseline
-- bench/resty_lock_baseline.lua. BENCH_SECONDS (default 8) sets each run's length;
-- BENCH_ONLY (e.g. "1,3,crash") runs only those parts (the table then lacks the others).
local N = require "nginx"
local wh = require "waithandles"
local T = N.T

local SECONDS = tonumber(os.getenv("BENCH_SECONDS")) or 8
local IMPLS = { "wh", "rl" }
local ONLY = os.getenv("BENCH_ONLY")
local function part(p) return not ONLY or ("," .. ONLY .. ","):find("," .. p .. ",", 1, true) end
local NAME = { wh = "waithandles", rl = "resty-lock algorithm" }

if N.missing then
  io.stderr:write("bench-openresty: " .. N.missing .. "\n")
  os.exit(1)
end
if not N.have_wrk then
  io.stderr:write("bench-openresty: wrk is not installed\n")
  os.exit(1)
end

local started = T.now()
local function sh(cmd)
  local f = assert(io.popen(cmd .. " 2>&1"))
  local s = f:read("*a")
  f:close()
  return (s:gsub("%s+$", ""))
end

local WL = dofile(N.ROOT .. "/bench/openresty_workloads.lua") -- for write_value only
local work = sh("mktemp -d /dev/shm/wh-bench-openresty.XXXXXX")
assert(work:match("^/dev/shm/wh%-bench%-openresty%.%w+$"), work)
os.execute("chmod 0755 " .. work)
local lua_path, lua_cpath = N.module_copy(work)
os.execute(("cp %s/bench/openresty_workloads.lua %s/bench/resty_lock_baseline.lua %s/mod/ && chmod a+r %s/mod/*.lua")
  :format(N.ROOT, N.ROOT, work, work))
lua_path = work .. "/mod/?.lua;" .. lua_path

local current -- the running nginx, stopped on any error
local function fail(msg)
  N.stop_nginx(current)
  os.execute("rm -rf " .. work)
  error(msg, 2)
end

-- Starts nginx for one workload and implementation in a fresh directory.
local function serve(name, impl, refresher)
  local dir = work .. "/" .. name .. "-" .. impl
  os.execute(("mkdir -p %s && chmod 0755 %s"):format(dir, dir))
  N.write_file(dir .. "/counter.txt", "0")
  WL.write_value(dir .. "/cache.dat", 0, 0)
  N.write_file(dir .. "/holder", "")
  os.execute(("chmod 0666 %s/counter.txt %s/cache.dat %s/holder"):format(dir, dir, dir))
  local locks = dir .. "/locks"
  local ngx, port = N.start_nginx(dir, 4, {
    user = N.is_root and "nobody nogroup" or nil,
    log_level = "warn",
    connections = 1024,
    lua_path = lua_path,
    lua_cpath = lua_cpath,
    http = table.concat({
      "  lua_shared_dict locks 1m;",
      "  lua_shared_dict stats 1m;",
      "  init_by_lua_block {",
      "    WL = require 'openresty_workloads'",
      ("    WL.setup{ dir = %q, locks = %q }"):format(dir, locks),
      "  }",
      refresher and ("  init_worker_by_lua_block { WL.start_refresher(%q) }"):format(impl) or "",
    }, "\n"),
    handlers = [[
      location /counter { content_by_lua_block { WL.counter(ngx.var.arg_impl) } }
      location /limit { content_by_lua_block { WL.limit(ngx.var.arg_impl) } }
      location /hold5 { content_by_lua_block { WL.hold5(ngx.var.arg_impl) } }
      location /serve { content_by_lua_block { WL.serve(ngx.var.arg_impl) } }
      location /hold { content_by_lua_block { WL.hold(ngx.var.arg_impl) } }
      location /wait { content_by_lua_block { WL.wait(ngx.var.arg_impl, tonumber(ngx.var.arg_holder)) } }
      location /stats { content_by_lua_block { WL.stats() } }
    ]],
  })
  current = ngx
  return { ngx = ngx, port = port, dir = dir, locks = locks, impl = impl,
    url = function(path) return ("http://127.0.0.1:%d%s?impl=%s"):format(port, path, impl) end }
end

local function stop(s)
  N.stop_nginx(s.ngx)
  current = nil
end

local function stats(s)
  local out = N.get(s.url("/stats"), 10) or ""
  local t = {}
  for k, v in out:gmatch("([%w_]+) (%d+)") do t[k] = tonumber(v) end
  return t
end

-- Waits until the in-flight requests are done (the figures stop changing).
local function settle(s)
  local last, same = nil, 0
  local deadline = T.now() + 60
  while T.now() < deadline do
    local st = stats(s)
    local key = ("%s/%s"):format(st.done, st.counter)
    if key == last then
      same = same + 1
      if same >= 2 then return st end
    else
      same = 0
    end
    last = key
    T.sleep(0.3)
  end
  return stats(s)
end

local rows = {}
local function load(s, path, connections, workload, check)
  N.wrk(s.url(path), 8, 1, { timeout = 30 }) -- warm-up: JIT, files, connections
  local st0 = stats(s)
  local r = N.wrk(s.url(path), connections, SECONDS, { timeout = 30, threads = math.min(2, connections) })
  if not r.requests then fail("wrk failed:\n" .. r.out) end
  -- The share of the run the lock (or the tickets) was held, from the handlers' own clocks.
  r.busy = ((stats(s).held_us or 0) - (st0.held_us or 0)) / (SECONDS * 1e6)
  r.workload, r.connections, r.impl = workload, connections, s.impl
  r.errors = r.non2xx + r.socket_errors
  rows[#rows + 1] = r
  io.stderr:write(("# %-22s %3d conn. %-21s %7.0f req/s  p50 %7.1f ms  p99 %8.1f ms  max %8.1f ms  errors %d\n")
    :format(workload, connections, NAME[s.impl], r.rps, r.p50 * 1e3, r.p99 * 1e3, r.max * 1e3, r.errors))
  return r
end

local recovery, hold5 = {}, {}
-- Whatever fails, the running nginx is stopped and the directory removed.
local ok, err = xpcall(function()

-- ---- 1. locked counter ----------------------------------------------------------

local W1 = "1. locked counter"
for _, impl in ipairs(part("1") and IMPLS or {}) do
  local s = serve("counter", impl)
  local runs = { load(s, "/counter", 4, W1), load(s, "/counter", 32, W1), load(s, "/counter", 128, W1) }
  local st = settle(s)
  local ok = st.done and st.done == st.counter and (st.violations or 0) == 0
  local check = ok and ("counter exact (%d)"):format(st.counter)
    or ("**counter %s, %s completed, %d overlaps**"):format(st.counter, st.done, st.violations or 0)
  for _, r in ipairs(runs) do r.check = ("lock held %.0f %%; %s"):format(r.busy * 100, check) end
  stop(s)
end

-- ---- 2. concurrency limit of 3 ----------------------------------------------------

local W2 = "2. limit of 3, 5 ms"
for _, impl in ipairs(part("2") and IMPLS or {}) do
  local s = serve("limit", impl)
  local r = load(s, "/limit", 32, W2)
  local st = settle(s)
  r.check = ("tickets in use %.0f %%; "):format(r.busy / 3 * 100)
    .. ((st.violations or 0) == 0 and "never more than 3 inside"
      or ("**%d times more than 3 inside**"):format(st.violations))
  stop(s)
end

-- ---- 3. cache refresh ---------------------------------------------------------------

local W3 = "3. cache refresh"
for _, impl in ipairs(part("3") and IMPLS or {}) do
  local s = serve("cache", impl, true)
  local st0 = stats(s)
  local r = load(s, "/serve", 32, W3)
  local st = settle(s)
  local refreshes = (st.refreshes or 0) - (st0.refreshes or 0)
  r.check = ((st.violations or 0) == 0 and "no torn read" or ("**%d torn reads**"):format(st.violations))
    .. (", %d refreshes"):format(refreshes)
  stop(s)
end

-- ---- 4. a lock held 5 ms -------------------------------------------------------------

local W4 = "4. lock held 5 ms"
for _, impl in ipairs(part("4") and IMPLS or {}) do
  local s = serve("hold5", impl)
  hold5[impl] = {}
  for _, c in ipairs({ 1, 2, 16, 60 }) do
    local r = load(s, "/hold5", c, W4)
    local st = settle(s)
    r.check = ("lock held %.0f %%; "):format(r.busy * 100)
      .. ((st.violations or 0) == 0 and "never two inside" or ("**%d overlaps**"):format(st.violations))
    hold5[impl][c] = r
  end
  stop(s)
end

-- ---- a worker killed holding the lock -------------------------------------------------

for _, impl in ipairs(part("crash") and IMPLS or {}) do
  local s = serve("crash", impl)
  local hold = N.run({ "curl", "-s", "-m", "120", s.url("/hold") })
  local holder
  local deadline = T.now() + 10
  while not holder and T.now() < deadline do
    holder = tonumber(N.read_file(s.dir .. "/holder") or "")
    if not holder then T.sleep(0.01) end
  end
  if not holder then fail("the lock was not taken") end
  -- A waiter in another worker (the holder's own answers 409 at once).
  local waiter
  for _ = 1, 50 do
    local w = N.run({ "curl", "-s", "-m", "120", "-w", "\n%{http_code}", s.url("/wait") .. "&holder=" .. holder })
    if not N.finished(w, 0.3) then
      waiter = w
      break
    end
  end
  if not waiter then fail("no waiter in another worker") end
  if impl == "wh" then
    local l = wh.lock("crash", { dir = s.locks })
    local until_ = T.now() + 5
    while l:info().waiting < 1 and T.now() < until_ do T.sleep(0.005) end
  end
  local t0 = T.now()
  T.kill(holder, T.SIGKILL)
  local out = N.finished(waiter, 100)
  local took = T.now() - t0
  if not (out and out:find("acquired", 1, true)) then fail("the waiter did not acquire: " .. tostring(out)) end
  recovery[impl] = took
  io.stderr:write(("# worker killed holding the lock: %s waiter acquires after %.3f s\n"):format(NAME[impl], took))
  N.finished(hold, 5)
  stop(s)
end

end, debug.traceback)
N.stop_nginx(current)
os.execute("rm -rf " .. work)
if not ok then error(err, 0) end

-- ---- the table ---------------------------------------------------------------------------

local function ms(x)
  if x == nil then return "–" end
  if x >= 1 then return ("%.2f s"):format(x) end
  x = x * 1e3
  return x >= 100 and ("%.0f ms"):format(x) or x >= 10 and ("%.1f ms"):format(x) or ("%.2f ms"):format(x)
end

local out = {}
local function say(s) out[#out + 1] = s end
local load1 = sh("cut -d' ' -f1-3 /proc/loadavg")
say(("`make bench-openresty`, %s: nginx %s with libnginx-mod-http-lua %s on LuaJIT (%s), 4 workers as %s, "
  .. "wrk -t2, %d s per run after a 1 s warm-up; %s CPUs, load average %s at the end; %.0f s in all.")
  :format(os.date("!%Y-%m-%d"), sh("nginx -v 2>&1 | sed 's|.*/||'"),
    sh("dpkg-query -W -f='${Version}' libnginx-mod-http-lua 2>/dev/null | sed 's/^1://; s/-.*//'"),
    sh("dpkg-query -W -f='${Version}' libluajit2-5.1-2 2>/dev/null | sed 's/-.*//'"),
    N.is_root and "nobody" or "the current user", SECONDS, sh("nproc"), load1, T.now() - started))
say("")
say("| workload | conn. | implementation | req/s | p50 | p90 | p99 | max | p99/p50 | errors | check |")
say("|---|---|---|---|---|---|---|---|---|---|---|")
for _, r in ipairs(rows) do
  say(("| %s | %d | %s | %.0f | %s | %s | %s | %s | %.1f | %d | %s |"):format(r.workload, r.connections,
    NAME[r.impl], r.rps, ms(r.p50), ms(r.p90), ms(r.p99), ms(r.max), r.p99 / r.p50, r.errors, r.check))
end
if recovery.wh then
  say("")
  say("| a worker is killed (SIGKILL) holding the lock | until a waiter in another worker has it | what bounds it |")
  say("|---|---|---|")
  say(("| waithandles | %.3f s | `abandonment_check` (0.1 s) |"):format(recovery.wh))
  say(("| resty-lock algorithm | %.3f s | the key's `exptime` (30 s) from when it was taken, plus the waiter's last poll (≤ 0.5 s) |"):format(recovery.rl))
end
say("")
local hold5_ok = true
if hold5.wh then
  local one, sixty = hold5.wh[1], hold5.wh[60]
  -- The library's part is the lock's idle time; req/s also counts how much longer each
  -- ngx.sleep(0.005) lasts in workers busy with 60 connections.
  hold5_ok = sixty.busy >= 0.8
  say(("Acceptance (workload 4, issue 21): at 60 connections the lock is held %.0f %% of the run "
    .. "(≥ 80 %%: %s); waithandles serves %.0f req/s there, %.0f %% of its 1-connection %.0f req/s.")
    :format(sixty.busy * 100, hold5_ok and "holds" or "FAILS", sixty.rps, sixty.rps / one.rps * 100,
    one.rps))
  say("")
end
local wh32, rl32
for _, r in ipairs(rows) do
  if r.workload == "1. locked counter" and r.connections == 32 then
    if r.impl == "wh" then wh32 = r else rl32 = r end
  end
end
if not (wh32 and rl32) then
  print(table.concat(out, "\n"))
  os.exit(hold5_ok and 0 or 1)
end
local ratio_ok = wh32.p99 <= 10 * wh32.p50
local lower_ok = wh32.p99 < rl32.p99
say(("Acceptance (workload 1, 32 connections): waithandles p99/p50 = %.1f (≤ 10: %s); p99 %s against "
  .. "the baseline's %s (lower: %s).")
  :format(wh32.p99 / wh32.p50, ratio_ok and "holds" or "FAILS", ms(wh32.p99), ms(rl32.p99),
    lower_ok and "holds" or "FAILS"))
print(table.concat(out, "\n"))
os.exit(ratio_ok and lower_ok and hold5_ok and 0 or 1)
