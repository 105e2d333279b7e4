-- waithandles in every phase of real nginx (Debian's nginx and lua module, on
-- OpenResty's LuaJIT), as doc/API.md's "OpenResty" section says: *_async
-- waits with ngx.sleep in rewrite, access, content and timers; try_* works
-- in the phases that cannot yield, where *_async falls back to the blocking
-- wait; a request aborted while it waits leaves nothing behind; nginx -s
-- reload with a hold in flight; objects made by the master as root, used by
-- workers as nobody. Pending where nginx cannot run (spec/nginx.lua says why).
local wh = require "waithandles"
local H = require "helpers"
local N = require "nginx"
local T = H.whtest

local missing = N.missing

local function url(port, path) return ("http://127.0.0.1:%d%s"):format(port, path) end

-- curl in the background; N.finished(p, t) gives what it printed.
local function get(port, path, timeout)
  return N.run({ "curl", "-s", "-S", "-m", tostring(timeout or 30), url(port, path) })
end

-- The globals every configuration below shares: the lock directory and a
-- report(name, text) that writes dir/report-<name> (for phases that cannot answer).
local function prelude(dir, more)
  return table.concat({
    "  init_by_lua_block {",
    "    WH = require 'waithandles'",
    ("    DIR = %q"):format(dir),
    ("    LOCKS = %q"):format(dir .. "/locks"),
    "    function report(name, text)",
    "      local f = assert(io.open(DIR .. '/report-' .. name, 'w'))",
    "      f:write(text)",
    "      f:close()",
    "    end",
    more or "",
    "  }",
  }, "\n")
end

local function report(dir, name) return H.read_file(dir .. "/report-" .. name) end

local function error_log(dir) return "\nnginx error log:\n" .. (H.read_file(dir .. "/error.log") or "") end

describe("OpenResty phases", function()
  local ngx, port, dir
  before_each(function()
    if missing then return end
    dir = H.tmpdir()
    os.execute("chmod 0755 " .. dir)
  end)
  after_each(function()
    N.stop_nginx(ngx)
    ngx = nil
    H.cleanup()
  end)

  it("acquire_async yields with ngx.sleep in rewrite, access, content, ngx.timer.at and ngx.timer.every",
    function()
      if missing then return pending(missing) end
      ngx, port = N.start_nginx(dir, 1, {
        http = prelude(dir, [[
          L = WH.lock("phases", { dir = LOCKS })
          -- Waits for the lock; says in which phase it got it, and how long it waited.
          function WAIT()
            ngx.update_time()
            local t0 = ngx.now()
            local h = L:acquire_async(20)
            ngx.update_time()
            local s = ("%s got %s"):format(ngx.get_phase(), tostring(h:is_held()))
            h:release()
            return s
          end
        ]]) .. [[
          init_worker_by_lua_block {
            local started = false
            ngx.timer.every(0.02, function()
              if started or not io.open(DIR .. "/go", "r") then return end
              started = true
              report("every", WAIT())
            end)
          }
        ]],
        handlers = [[
          location /rewrite {
            rewrite_by_lua_block { ngx.ctx.r = WAIT() }
            content_by_lua_block { ngx.say(ngx.ctx.r) }
          }
          location /access {
            access_by_lua_block { ngx.ctx.r = WAIT() }
            content_by_lua_block { ngx.say(ngx.ctx.r) }
          }
          location /content { content_by_lua_block { ngx.say(WAIT()) } }
          location /at {
            content_by_lua_block {
              assert(ngx.timer.at(0, function() report("at", WAIT()) end))
              ngx.say("started")
            }
          }
        ]],
      })
      local lock = wh.lock("phases", { dir = dir .. "/locks" })
      local held = lock:acquire()
      local r = { rewrite = get(port, "/rewrite"), access = get(port, "/access"),
        content = get(port, "/content") }
      assert.are.equal("started\n", N.finished(get(port, "/at"), 10))
      H.touch(dir .. "/go")
      H.eventually(function() return lock:info().waiting == 5 end, 10, "five waiters" .. error_log(dir))
      -- The only worker answers while all five wait: none of them blocks it.
      local t0 = H.now()
      assert.are.equal(N.TOKEN .. "\n", N.finished(get(port, "/ping"), 10))
      assert.is_true(H.now() - t0 < 1, "ping took " .. (H.now() - t0) .. " s")
      for name, p in pairs(r) do assert.is_nil(N.finished(p, 0), name .. " got the lock while we held it") end
      held:release()
      for name, p in pairs(r) do
        assert.are.equal(name .. " got true\n", N.finished(p, 10), name .. error_log(dir))
      end
      H.eventually(function() return report(dir, "at") and report(dir, "every") end, 10,
        "the timers' reports" .. error_log(dir))
      assert.are.equal("timer got true", report(dir, "at"))
      assert.are.equal("timer got true", report(dir, "every"))
      H.eventually(function() return lock:info().held == 0 end, 5, "all released")
      assert.are.equal(0, lock:info().waiting)
    end)

  -- PROBE(where) in a phase that cannot yield: try_acquire of a free and of a busy object,
  -- acquire_async of a free one (returns at once) and of a busy one (waits blocking, then
  -- raises "timeout": it never calls ngx.sleep, which these phases forbid).
  local PROBE = [[
    FREE = WH.lock("free", { dir = LOCKS })
    BUSY = WH.lock("busy", { dir = LOCKS })
    function PROBE(where)
      local out = {}
      local h = FREE:try_acquire()
      out[#out + 1] = "try free " .. tostring(h ~= nil and h:is_held())
      if h then h:release() end
      out[#out + 1] = "try busy " .. tostring(BUSY:try_acquire())
      h = FREE:acquire_async(1)
      out[#out + 1] = "async free " .. tostring(h:is_held())
      h:release()
      ngx.update_time()
      local t0 = ngx.now()
      local ok, err = pcall(BUSY.acquire_async, BUSY, 0.2)
      ngx.update_time()
      local waited = ngx.now() - t0
      out[#out + 1] = ("async busy %s %s %s"):format(tostring(ok),
        type(err) == "table" and err.code or tostring(err),
        tostring(waited >= 0.15 and waited < 2))
      out[#out + 1] = "in " .. ngx.get_phase()
      report(where, table.concat(out, "; "))
    end
  ]]
  local function probed(phase)
    return ("try free true; try busy nil; async free true; async busy false timeout true; in %s")
      :format(phase)
  end

  it("try_* works in init_worker, set, header_filter, body_filter, log and balancer; *_async there waits blocking",
    function()
      if missing then return pending(missing) end
      -- Held before nginx starts, so that init_worker finds it busy.
      local busy = wh.lock("busy", { dir = dir .. "/locks" }):acquire()
      ngx, port = N.start_nginx(dir, 1, {
        http = prelude(dir, PROBE) .. [[
          init_worker_by_lua_block { PROBE("init_worker") }
          upstream backend {
            server 0.0.0.1;  # replaced by the balancer
            balancer_by_lua_block {
              PROBE("balancer")
              assert(require("ngx.balancer").set_current_peer("127.0.0.1", $PORT))
            }
          }
        ]],
        handlers = [[
          location /set {
            set_by_lua_block $probe { PROBE("set") return "done" }
            content_by_lua_block { ngx.say(ngx.var.probe) }
          }
          location /filters {
            header_filter_by_lua_block { PROBE("header_filter") }
            body_filter_by_lua_block { if ngx.arg[2] then PROBE("body_filter") end }
            log_by_lua_block { PROBE("log") }
            content_by_lua_block { ngx.say("filtered") }
          }
          location /balanced { proxy_pass http://backend/ping; }
        ]],
      })
      assert.are.equal("done\n", N.finished(get(port, "/set"), 10))
      assert.are.equal("filtered\n", N.finished(get(port, "/filters"), 10))
      assert.are.equal(N.TOKEN .. "\n", N.finished(get(port, "/balanced"), 10), error_log(dir))
      for _, phase in ipairs({ "init_worker", "set", "header_filter", "body_filter", "log", "balancer" }) do
        H.eventually(function() return report(dir, phase) end, 5, phase .. error_log(dir))
        assert.are.equal(probed(phase), report(dir, phase), phase .. error_log(dir))
      end
      busy:release()
      assert.are.equal(0, wh.lock("free", { dir = dir .. "/locks" }):info().held)
    end)

  it("a request aborted by its client while it waits leaves no mark behind", function()
    if missing then return pending(missing) end
    ngx, port = N.start_nginx(dir, 1, {
      http = "  lua_check_client_abort on;\n" .. prelude(dir, [[
        L = WH.lock("aborted", { dir = LOCKS })
      ]]),
      handlers = [[
        location /wait {
          content_by_lua_block {
            local h = L:acquire_async(20)
            report("wait", "acquired")          -- never: the client is gone before
            h:release()
          }
        }
        location /try { content_by_lua_block { local h = L:try_acquire() ngx.say(tostring(h ~= nil)) } }
      ]],
    })
    local lock = wh.lock("aborted", { dir = dir .. "/locks" })
    local held = lock:acquire()
    local waiters = {}
    for i = 1, 3 do waiters[i] = get(port, "/wait", 1.5) end
    H.eventually(function() return lock:info().waiting == 3 end, 5, "three waiters" .. error_log(dir))
    for i = 1, 3 do N.finished(waiters[i], 10) end -- curl gave up after 1.5 s
    local t0 = H.now()
    H.eventually(function() return lock:info().waiting == 0 end, 2, "the marks are gone" .. error_log(dir))
    assert.is_true(H.now() - t0 < 1, "the marks stayed " .. (H.now() - t0) .. " s")
    held:release()
    -- Nobody comes before a newcomer, and no aborted request takes the lock later.
    assert.are.equal("true\n", N.finished(get(port, "/try"), 10))
    H.sleep(0.3)
    assert.are.equal(0, lock:info().held)
    assert.is_nil(report(dir, "wait"))
  end)

  it("nginx -s reload with a hold in flight: the old worker finishes, new workers acquire", function()
    if missing then return pending(missing) end
    ngx, port = N.start_nginx(dir, 2, {
      http = prelude(dir, [[
        L = WH.lock("reload", { dir = LOCKS })
      ]]),
      handlers = [[
        location /hold {
          content_by_lua_block {
            local h = L:acquire_async(10)
            report("holding", tostring(ngx.worker.pid()))
            while not io.open(DIR .. "/release", "r") do ngx.sleep(0.01) end
            h:release()
            ngx.say("released by ", ngx.worker.pid())
          }
        }
        location /wait {
          content_by_lua_block {
            local h = L:acquire_async(20)
            ngx.say("got ", tostring(h:is_held()), " in ", ngx.worker.pid())
            h:release()
          }
        }
      ]],
    })
    local lock = wh.lock("reload", { dir = dir .. "/locks" })
    local old = N.children(ngx.pid)
    assert.are.equal(2, #old)
    local a = get(port, "/hold")
    local holder
    H.eventually(function()
      holder = tonumber(report(dir, "holding") or "")
      return holder
    end, 10, "the first request holds the lock")
    local rl = N.run({ "nginx", "-p", dir, "-c", ngx.conf, "-s", "reload" })
    local said = N.finished(rl, 10)
    assert.are.equal(0, rl.status and rl.status.code, tostring(said))
    -- Two new workers.
    local new
    H.eventually(function()
      new = {}
      for _, pid in ipairs(N.children(ngx.pid)) do
        local is_old = false
        for _, o in ipairs(old) do is_old = is_old or o == pid end
        if not is_old then new[#new + 1] = pid end
      end
      return #new == 2
    end, 10, "new workers" .. error_log(dir))
    -- The idle old worker leaves; the one with the request in flight stays until it ends.
    for _, pid in ipairs(old) do
      if pid ~= holder then
        H.eventually(function() return not N.alive(pid) end, 10, "the idle old worker exits")
      end
    end
    assert.is_true(N.alive(holder), "the old worker left before its request ended")
    local b = get(port, "/wait")
    H.eventually(function() return lock:info().waiting == 1 end, 10, "a new worker waits" .. error_log(dir))
    assert.is_nil(N.finished(a, 0))
    H.touch(dir .. "/release")
    assert.are.equal("released by " .. holder .. "\n", N.finished(a, 10))
    said = N.finished(b, 10)
    local by = tonumber((said or ""):match("^got true in (%d+)\n$"))
    assert.is_truthy(by, tostring(said) .. error_log(dir))
    assert.is_truthy(by == new[1] or by == new[2],
      ("acquired by %d, not a new worker (old %s, new %s)"):format(by, table.concat(old, " "), table.concat(new, " ")))
    H.eventually(function() return not N.alive(holder) end, 10, "the old worker exits")
    assert.are.equal(0, lock:info().held)
  end)

  it("objects made by the master as root serve workers running as nobody", function()
    if missing then return pending(missing) end
    if not H.is_root then return pending("needs root (the master as root, workers as nobody)") end
    local lua_path, lua_cpath = N.module_copy(dir)
    local locks = dir .. "/locks" -- made by the master
    ngx, port = N.start_nginx(dir, 2, {
      user = "nobody nogroup",
      lua_path = lua_path,
      lua_cpath = lua_cpath,
      http = table.concat({
        "  init_by_lua_block {",
        "    local WH = require 'waithandles'",
        ("    local o = { dir = %q }"):format(locks),
        "    L, S, RW = WH.lock('m-lock', o), WH.semaphore('m-sem', 2, o), WH.rwlock('m-rw', o)",
        "    -- Taken and given back in the master: the files and the registry are root's.",
        "    L:acquire(1):release() S:acquire(1):release() RW:acquire_write(1):release()",
        ("    DIR = %q"):format(locks),
        "  }",
      }, "\n"),
      handlers = [[
        location /use {
          content_by_lua_block {
            local WH = require "waithandles"
            local l, s = L:acquire_async(5), S:acquire_async(5)
            local r = RW:acquire_read_async(5)
            local u = RW:acquire_upgradeable_read_async(5)
            r:release()
            u:upgrade_async(5)
            local own = WH.lock("m-worker", { dir = DIR }):acquire_async(5)   -- a new file
            ngx.say("ok ", ngx.worker.pid())
            l:release() s:release() u:release() own:release()
          }
        }
      ]],
    })
    for _, name in ipairs({ "m-lock", "m-sem", "m-rw" }) do
      assert.are.equal(0, T.stat(locks .. "/" .. name).uid, name .. " is root's")
    end
    local pids = {}
    for _ = 1, 6 do
      local said = N.finished(get(port, "/use"), 10)
      local pid = tonumber((said or ""):match("^ok (%d+)\n$"))
      assert.is_truthy(pid, tostring(said) .. error_log(dir))
      pids[pid] = true
    end
    for pid in pairs(pids) do
      local uid = tonumber(H.read_file("/proc/" .. pid .. "/status"):match("\nUid:%s+(%d+)"))
      assert.are_not.equal(0, uid, "worker " .. pid .. " runs as root")
    end
    assert.are_not.equal(0, T.stat(locks .. "/m-worker").uid)
    assert.are.equal(0, wh.lock("m-lock", { dir = locks }):info().held)
  end)

  it("the guide's limiter: a ticket taken in access_by_lua lasts through proxy_pass and comes back at the end",
    function()
      if missing then return pending(missing) end
      ngx, port = N.start_nginx(dir, 2, {
        http = prelude(dir, "LIMIT = WH.semaphore('backend', 2, { dir = LOCKS })") .. [[
          upstream backend { server 127.0.0.1:$PORT; }
        ]],
        handlers = [[
          location /slow { content_by_lua_block { ngx.sleep(0.3) ngx.say("slow") } }
          location /api {
            access_by_lua_block {
              local ok, t = pcall(LIMIT.acquire_async, LIMIT, 5)
              if not ok then return ngx.exit(503) end
              ngx.ctx.ticket = t           -- referenced until the request ends
              collectgarbage()
            }
            proxy_pass http://backend/slow;
          }
        ]],
      })
      local sem = wh.semaphore("backend", 2, { dir = dir .. "/locks" })
      local t0 = H.now()
      local c = {}
      for i = 1, 4 do c[i] = get(port, "/api") end
      H.eventually(function()
        local i = sem:info()
        return i.held == 2 and i.waiting == 2
      end, 5, "two through, two waiting")
      for i = 1, 4 do assert.are.equal("slow\n", N.finished(c[i], 10), error_log(dir)) end
      assert.is_true(H.now() - t0 >= 0.55, "four requests of 0.3 s, two at a time, took " .. (H.now() - t0))
      H.eventually(function() return sem:info().held == 0 end, 1, "every ticket back")
    end)

  it("50 requests of 4 workers wait (wait_async) for one refresher's set; all get the value, no worker blocks",
    function()
      if missing then return pending(missing) end
      ngx, port = N.start_nginx(dir, 4, {
        http = prelude(dir, [[
          READY = WH.event("refreshed", { dir = LOCKS })
          VALUE = DIR .. "/value"
        ]]) .. "\n  lua_shared_dict counts 1m;",
        handlers = [[
          location /wait {
            content_by_lua_block {
              ngx.shared.counts:incr("waiting", 1, 0)
              if not READY:wait_async(30) then return ngx.say("timeout") end
              local f = assert(io.open(VALUE))
              ngx.say("got ", f:read("*a"))
              f:close()
            }
          }
          location /waiting { content_by_lua_block { ngx.say(ngx.shared.counts:get("waiting")) } }
          location /refresh {
            content_by_lua_block {
              local f = assert(io.open(VALUE .. ".tmp", "w"))
              f:write("v1")
              f:close()
              assert(os.rename(VALUE .. ".tmp", VALUE))
              READY:set()
              ngx.say("set")
            }
          }
        ]],
      })
      local ev = wh.event("refreshed", { dir = dir .. "/locks" })
      local waiters, waiting = {}, nil
      for i = 1, 50 do waiters[i] = get(port, "/wait", 40) end
      H.eventually(function()
        waiting = N.finished(get(port, "/waiting", 5), 10)
        return waiting == "50\n"
      end, 20, function() return "50 requests waiting, not " .. tostring(waiting) .. error_log(dir) end)
      -- meanwhile every worker serves: /ping from several connections answers at once
      for _ = 1, 8 do
        assert.are.equal(N.TOKEN .. "\n", N.finished(get(port, "/ping", 5), 10), error_log(dir))
      end
      for i = 1, 50 do assert.is_nil(N.finished(waiters[i], 0), "request " .. i .. " ended before the set") end
      assert.are.equal("set\n", N.finished(get(port, "/refresh"), 10), error_log(dir))
      for i = 1, 50 do
        assert.are.equal("got v1\n", N.finished(waiters[i], 10), "request " .. i .. error_log(dir))
      end
      assert.is_true(ev:is_set())
    end)

  -- The request scope at the edges of a request. nginx runs a request's cleanups
  -- (ngx_http_free_request) *before* its log phase, then destroys the request's pool: a hold
  -- taken in log_by_lua is not bound (it lasts until released), and a binding whose cleanup
  -- nginx never runs must not leave the handle pointing into the freed pool (csrc/lngx.c).
  -- set_by_lua and balancer_by_lua run for the request: their holds end with it.
  -- phases: { [phase] = holds left once the request has ended }
  local function scoped_holds(phases)
    ngx, port = N.start_nginx(dir, 1, {
      http = prelude(dir, [[
        KEEP = {}      -- referenced, and no garbage collection: only the request's end releases
        function HOLD(name)
          KEEP[#KEEP + 1] = assert(WH.lock(name, { dir = LOCKS }):try_acquire())
          ngx.log(ngx.NOTICE, "taken in ", name)
        end
      ]]) .. [[
        init_worker_by_lua_block { collectgarbage("stop") }
        upstream backend {
          server 0.0.0.1;
          balancer_by_lua_block {
            HOLD("balancer")
            assert(require("ngx.balancer").set_current_peer("127.0.0.1", $PORT))
          }
        }
      ]],
      handlers = [[
        location /scoped {
          set_by_lua_block $x { HOLD("set") return "1" }
          log_by_lua_block { HOLD("log") }
          proxy_pass http://backend/ping;
        }
      ]],
    })
    assert.are.equal(N.TOKEN .. "\n", N.finished(get(port, "/scoped"), 10), error_log(dir))
    for phase, left in pairs(phases) do
      local l = wh.lock(phase, { dir = dir .. "/locks" })
      H.eventually(function() return error_log(dir):find("taken in " .. phase, 1, true) end, 10,
        "no hold taken in " .. phase)
      H.eventually(function() return l:info().held == left end, 10,
        "the hold taken in " .. phase .. ": " .. left .. " expected once the request ended")
      -- and it stays so: the log phase's hold is not given back later either
      assert.are.equal(left, l:info().held, phase)
    end
  end

  it("holds taken in set_by_lua and balancer_by_lua end with their request; one taken in log_by_lua lasts",
    function()
      if missing then return pending(missing) end
      scoped_holds({ set = 0, balancer = 0, log = 1 })
    end)

  it("a handle bound in log_by_lua (a cleanup nginx never runs) is released without touching freed memory (valgrind)", function()
    if missing then return pending(missing) end
    if not N.have("valgrind") then return pending("valgrind is not installed") end
    ngx, port = N.start_nginx(dir, 1, {
      main = "master_process off;",
      wrapper = { "valgrind", "-q", "--error-limit=no", "--log-file=" .. dir .. "/valgrind.log" },
      start_timeout = 60,
      http = prelude(dir, "L = WH.lock('logged', { dir = LOCKS })"),
      handlers = [[
        location /take {
          content_by_lua_block { ngx.say("taken") }
          log_by_lua_block {  -- bound by hand: the facade does not bind in the log phase
            KEEP = L:try_acquire()
            BOUND = require("waithandles.core").ngx_bind(KEEP)
          }
        }
        location /release { content_by_lua_block { ngx.say(tostring(BOUND), " ", tostring(KEEP:release())) } }
      ]],
    })
    assert.are.equal("taken\n", N.finished(get(port, "/take"), 30))
    local logged = wh.lock("logged", { dir = dir .. "/locks" })
    H.eventually(function() return logged:info().held == 1 end, 30, "held after the request")
    assert.are.equal("true true\n", N.finished(get(port, "/release"), 30))
    N.stop_nginx(ngx)
    ngx = nil
    local log = H.read_file(dir .. "/valgrind.log") or ""
    assert.is_nil(log:find("Invalid", 1, true), log)
  end)
end)
