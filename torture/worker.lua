-- A torture worker (torture/run.lua starts a dozen and more, on several Lua
-- versions): loops over the handful of names of torture/layout.lua taking
-- locks, semaphore tickets, read, write and upgradeable holds, upgrades and
-- acquire_all composites, blocking and async, with random timeouts and
-- cancellations, until the witness memory says stop. Every critical section
-- is checked by a witness outside the library (whtorture): the worker stores
-- what it holds in its own word, then looks at everybody else's; it reports
-- what it sees on stdout for the supervisor to judge:
--   OVERLAP t j h cs mode other_h other_cs other_mode   a conflicting holder
--   OVERCOUNT t j h cs max h:cs,h:cs,...                more tickets than max_count
--   LOST since t_end stopped cs,.. j,..                 a hold reported lost (is_lost)
--   OVERRUN form timeout elapsed / EARLY form timeout elapsed
--   ERROR form code message                             an error no call should raise
-- and it records in the witness memory the fencing token of each hold (h.token) as it enters
-- its critical section, for the supervisor to check that they increase (layout.lua).
-- Compatible with Lua 5.1 to 5.4 and LuaJIT. Usage (by run.lua):
--   lua worker.lua SLOT INCARNATION DIR WITNESS SEED
local wh = require "waithandles"
local T = require "whtest"
local W = require "whtorture"
local L = require "layout"

local K, DIR, WPATH, SEED = tonumber(arg[1]), arg[3], arg[4], tonumber(arg[5])
local BOUND = tonumber(os.getenv("WH_TORTURE_BOUND") or "") or 1.0
local P_DIE = tonumber(os.getenv("WH_TORTURE_P_DIE") or "") or 0.0005
local P_EXIT = tonumber(os.getenv("WH_TORTURE_P_EXIT") or "") or 0.0003
-- The torture's own test of the token check: now and then record a stale token (the one of an
-- earlier hold of the object) instead of the hold's own.
local STALE = tonumber(os.getenv("WH_TORTURE_STALE_TOKEN") or "") or 0
math.randomseed(SEED)
io.stdout:setvbuf("no")

local w = W.map(WPATH, L.NWORDS)
local now, sleep, floor, random = T.now, T.sleep, math.floor, math.random
local C = L.C
local STOPSEQ, IN_CALL, KILLED_AT = L.slot(K, L.STOPSEQ), L.slot(K, L.IN_CALL), L.slot(K, L.KILLED_AT)
local IS_54 = _VERSION == "Lua 5.4"
-- Lua 5.4: a handle released by <close> at the end of a scope.
local CLOSE_RUN = IS_54 and load("local hd, f = ... local x <close> = hd f(x)")

local function pack(...) return { n = select("#", ...), ... } end
local function us(t) return floor(t * 1e6) end
local function say(...)
  local t = { ... }
  for i = 1, select("#", ...) do t[i] = tostring(t[i]) end
  io.stdout:write(table.concat(t, " ") .. "\n") -- one write: a kill never leaves half a line
end
local function count(name, d) w:add(C[name], d or 1) end
local function pick(t) return t[random(#t)] end

-- ---- objects ----------------------------------------------------------------

local AC = pick({ 0.005, 0.02, 0.05 })
local P = wh.provider({ dir = DIR, abandonment_check = AC })
local function open(j)
  local o = L.OBJECTS[j]
  if o.kind == "lock" then return P:lock(o.name) end
  if o.kind == "semaphore" then return P:semaphore(o.name, o.max) end
  return P:rwlock(o.name)
end
local OBJ = {}
for j = 1, #L.OBJECTS do OBJ[j] = open(j) end

-- ---- dying on purpose, inside waits ---------------------------------------------

-- Called by the cancel and sleep functions, i.e. inside acquisition loops, with a mark
-- registered: now and then the process kills itself there (the supervisor is told when).
local function maybe_die()
  if random() < P_DIE then
    count("self_kills")
    w:set(KILLED_AT, us(now()))
    T.kill(T.getpid(), T.SIGKILL)
    sleep(10)
  end
end

local function real_sleep(d)
  maybe_die()
  sleep(d)
end

-- ---- the witness ------------------------------------------------------------------

-- What a critical section without the hold uses as its handle (WH_TORTURE_SABOTAGE).
local FAKE = { kind = "fake", is_lost = function() return false end,
  release = function() return true end }

local function conflicts(kind, mine, other)
  if kind == "lock" then return true end
  return mine == L.EXCL or other == L.EXCL or (mine == L.UPG and other == L.UPG)
end

-- Stores holder h's entry for object j, then looks at everybody else's.
local function look(j, h, cs, mode)
  local o = L.OBJECTS[j]
  local mine = L.entry(j, h)
  local t = us(now()) -- before the look: an entry seen is one its holder had not cleared by t
  local seen = w:scan(L.entry(j, 0), L.NH, mine)
  if o.kind == "semaphore" then
    if #seen / 2 + 1 > o.max then
      local list = {}
      for i = 1, #seen, 2 do
        local v = seen[i + 1]
        list[#list + 1] = (seen[i] - L.entry(j, 0)) .. ":" .. floor(v / 16)
      end
      say("OVERCOUNT", t, j, h, cs, o.max, table.concat(list, ","))
    end
    return
  end
  for i = 1, #seen, 2 do
    local v = seen[i + 1]
    local om = v % 16
    if conflicts(o.kind, mode, om) then
      say("OVERLAP", t, j, h, cs, mode, seen[i] - L.entry(j, 0), (v - om) / 16, om)
    end
  end
end

-- ---- fencing tokens ------------------------------------------------------------------

-- The handles of a composite (acquire_all) by name. The API gives a composite no token, only
-- its locks' handles; it does not hand those out, so the torture reads them where the C core
-- keeps them (the composite's user value) -- test-only knowledge of the internals.
local function composite_parts(hd)
  local uv
  if debug.getuservalue then uv = debug.getuservalue(hd, 1) end
  if type(uv) ~= "table" and debug.getfenv then uv = debug.getfenv(hd) end
  local by = {}
  for _, x in ipairs(type(uv) == "table" and uv or {}) do by[x.name] = x end
  return by
end

-- The token of each hold of handle hd over specs (nil where a hold has none), read at once:
-- a lock's or a write's handle may show its object's next token once released.
local function tokens_of(hd, specs)
  local t = {}
  if hd.kind == "composite" then
    local by = composite_parts(hd)
    for i, s in ipairs(specs) do
      local part = by[L.OBJECTS[s[1]].name]
      t[i] = part and part.token
      if not part then
        count("errors")
        say("ERROR", "composite", "internals", "no handle of " .. L.OBJECTS[s[1]].name .. " in it")
      end
    end
  elseif hd ~= FAKE then
    t[1] = hd.token
  end
  return t
end

local last_token = {} -- by object: the latest token this process recorded (for STALE)

-- Records the token of critical section rec (its hold's, or that of its upgrade), checking
-- that a hold that must have one has one, and that one that must not has none.
local function record_token(rec, token, must)
  if rec.fake then return end
  if must ~= (token ~= nil) or (token and not (token > 0 and token < 2 ^ 53
      and token == floor(token))) then
    count("errors")
    say("ERROR", "token", L.MODE_NAME[rec.mode], "a hold of " .. L.OBJECTS[rec.j].name
      .. " has token " .. tostring(token))
    return
  end
  if not token then return end
  local j, t = rec.j, token
  if STALE > 0 and last_token[j] and random() < STALE then
    t = last_token[j]
    count("tokens_planted")
  end
  last_token[j] = t
  count("tokens_recorded")
  w:set(L.token_word(rec.cs), t)
end

-- `since`: the earliest time the hold could have been taken on a file (or under a registry
-- identity) that was already unlinked. The library looks at both within a few milliseconds
-- before it takes a hold (and again after any wait for the guard), so that is now, unless the
-- worker was stopped, or preempted for more than PREEMPTED seconds, since its call began
-- (between the look and the hold), or the call took several holds one after another
-- (acquire_all): then it is when the call began. `c0`: NEXT_CS before that call began.
local PREEMPTED = 0.02
-- `token`: the hold's fencing token (nil: none); `fake`: no hold (WH_TORTURE_SABOTAGE).
local function enter(lane, j, mode, since, c0, token, fake)
  local h = K * L.LANES + lane
  local cs = w:add(L.NEXT_CS, 1)
  local rec = { j = j, h = h, cs = cs, e = L.entry(j, h), mode = mode, since = since, fake = fake }
  w:set(L.token_word(cs), 0)
  record_token(rec, token, mode == L.EXCL or mode == L.TICKET)
  w:set(L.before_word(cs), c0)
  w:set(L.start_word(cs), us(since))
  w:set(L.tag_word(cs), cs * L.TAG + h * 16 + j) -- the record is whole
  w:set(rec.e, cs * 16 + mode)
  look(j, h, cs, mode)
  return rec
end

local function upgrade_entry(rec, token)
  rec.mode = L.EXCL
  record_token(rec, token, true)
  w:set(rec.e, rec.cs * 16 + L.EXCL)
  look(rec.j, rec.h, rec.cs, L.EXCL)
end

-- Ends the critical sections recs of handle hd: the entries go first, then is_lost (so a hold
-- lost while its entry was visible is reported lost), then the outcome is recorded.
local function leave(recs, hd, t0, s0)
  for _, r in ipairs(recs) do w:set(r.e, 0) end
  local lost = hd:is_lost()
  for _, r in ipairs(recs) do
    w:set(L.outcome_word(r.cs), r.cs * 4 + (lost and L.LOST or L.OK))
  end
  if lost then
    count("lost")
    local js, css = {}, {}
    for _, r in ipairs(recs) do js[#js + 1] = r.j css[#css + 1] = r.cs end
    say("LOST", us(recs[1].since), us(now()), w:get(STOPSEQ) ~= s0 and 1 or 0, table.concat(css, ","),
      table.concat(js, ","))
  end
end

-- ---- timed calls --------------------------------------------------------------------

local TIMEOUTS = { 0.001, 0.005, 0.02, 0.05, 0.1, 0.3 }

-- An upgrade of a hold that was lost meanwhile (its file or registry shard unlinked) fails
-- with one of these codes; the caller checks is_lost().
local LOST_UPGRADE = { released = true, os = true, invalid_state = true }

-- Calls f(...) for a wait of `timeout` seconds (nil: forever) that a cancellation may end at
-- cancel_at; returns "got" and the result, or "busy", "timeout", "cancelled", "refused" (an
-- upgrade, above), "error". Checks that the wait ended by its deadline (or cancellation) plus
-- BOUND and did not give up early, unless this process was stopped meanwhile.
-- Seconds this process has spent runnable but not running (Linux schedstat): preemption.
local function run_delay()
  local f = io.open("/proc/self/schedstat")
  if not f then return 0 end
  local line = f:read("*l")
  f:close()
  return (line and tonumber(line:match("^%d+ (%d+)")) or 0) / 1e9
end

-- Run delay at the start of each coroutine's (or the main lane's) latest call.
local call_delay = setmetatable({}, { __mode = "k" })
local MAIN = {}
local function lane_key() return coroutine.running() or MAIN end

local function timed(form, timeout, cancel_at, f, ...)
  call_delay[lane_key()] = run_delay()
  local s0 = w:get(STOPSEQ)
  local c0 = w:get(L.NEXT_CS)
  local t0 = now()
  w:add(IN_CALL, 1)
  local r = pack(pcall(f, ...))
  w:add(IN_CALL, -1)
  local t1 = now()
  local outcome, v = "got", r[2]
  if not r[1] then
    local code = type(v) == "table" and v.code
    if code == "timeout" or code == "cancelled" then
      outcome = code
    elseif form:find("^upgrade_") and LOST_UPGRADE[code] then
      outcome = "refused"
    else
      outcome = "error"
      count("errors")
      say("ERROR", form, tostring(code), (tostring(type(v) == "table" and v.message or v):gsub("\n", " ")))
    end
  elseif v == nil or v == false then
    outcome = "busy"
  end
  if outcome == "timeout" or (outcome == "busy" and timeout and timeout > 0) then count("timeouts")
  elseif outcome == "busy" then count("busy")
  elseif outcome == "cancelled" then count("cancelled") end
  if w:get(STOPSEQ) == s0 then
    local by = timeout and t0 + timeout or math.huge
    if cancel_at and cancel_at < by then by = cancel_at end
    if by < math.huge then
      count("overrun_checked")
      local over = t1 - by
      if over > 0 then w:max(L.MAX_OVERRUN, us(over)) end
      if over > BOUND then say("OVERRUN", form, timeout, t1 - t0) end
    end
    if cancel_at then count("cancel_checked") end
    if (outcome == "timeout" or outcome == "busy") and timeout and t1 < t0 + timeout - 0.001 then
      w:add(L.EARLY, 1)
      say("EARLY", form, timeout, t1 - t0)
    end
    if outcome == "cancelled" and cancel_at and t1 < cancel_at - 0.001 then
      w:add(L.EARLY, 1)
      say("EARLY", form .. "(cancelled)", cancel_at - t0, t1 - t0)
    end
  end
  return outcome, v, t0, s0, c0
end

-- The arguments of one acquisition: form, timeout, options, and when a cancellation ends it.
-- lane 0 waits blocking or async with a real sleep function; other lanes are coroutines of a
-- burst whose async waits yield (the default sleep).
local LANE0_FORMS = { "try0", "try0", "try_t", "acq_t", "acq_t", "try_async", "acq_async",
  "acq_async", "acq_inf" }
local LANE_FORMS = { "try0", "try_async", "acq_async", "acq_async" }

local function plan(lane)
  local form = pick(lane == 0 and LANE0_FORMS or LANE_FORMS)
  if form == "acq_inf" and random() < 0.7 then form = "acq_t" end
  local timeout = form == "try0" and 0 or form ~= "acq_inf" and pick(TIMEOUTS) or nil
  local opts, cancel_at
  local async = form:find("async") ~= nil
  if form ~= "try0" and random() < 0.2 then
    cancel_at = now() + (timeout or 0.3) * random()
  end
  if lane == 0 and async then
    opts = {}
    if cancel_at and random() < 0.5 then
      -- A token, cancelled by the sleep function once it is time.
      local tok = wh.cancel_token()
      local at = cancel_at
      opts.cancel = tok
      opts.sleep = function(d)
        real_sleep(d)
        if now() >= at then tok:cancel() end
      end
    else
      opts.sleep = real_sleep
    end
  end
  if cancel_at and not (opts and opts.cancel) then
    opts = opts or {}
    local at = cancel_at
    opts.cancel = function()
      if lane == 0 then maybe_die() end
      return now() >= at
    end
  end
  if lane == 0 then
    count(form == "try0" and "call_try0" or async and "call_async_sleep" or "call_blocking")
  else
    count(form == "try0" and "call_try0" or "call_async_yield")
  end
  return form, timeout, opts, cancel_at
end

local SUFFIX = { try0 = "", try_t = "", acq_t = "", acq_inf = "", try_async = "_async",
  acq_async = "_async" }
local function method(form, base)
  local try = (form == "try0" or form == "try_t" or form == "try_async") and "try_" or ""
  return try .. base .. SUFFIX[form]
end

-- One acquisition of object `o` by method base ("acquire", "acquire_read", ...).
local function acquire(lane, o, base)
  local form, timeout, opts, cancel_at = plan(lane)
  local f = o[method(form, base)]
  if form == "try0" then return timed(form, 0, nil, f, o) end
  return timed(form, timeout, cancel_at, f, o, timeout, opts)
end

-- ---- critical sections --------------------------------------------------------------

local function hold_time()
  local r = random()
  if r < 0.6 then return 0 end
  if r < 0.95 then return 0.0005 + 0.0025 * random() end
  return 0.01 + 0.04 * random()
end

local function pause(lane, d)
  if lane == 0 then
    if d > 0 then sleep(d) end
  else
    coroutine.yield(d)
  end
end

-- Lane coroutines publish what they hold, so an abandoned one can be accounted for.
local lanes_state = {}

-- The critical section of handle hd over `specs` ({ {j, mode}, ... }), then its release by
-- one of the ways a handle ends (unless `wrapped`: using() or <close> releases it); `upg` (an
-- upgradeable read) may be upgraded inside. t0, s0, c0: of the call that took the hold (timed).
local function critical(lane, hd, specs, t0, s0, c0, upg, kind, wrapped)
  local recs = {}
  -- Preempted for long since the call began (an overloaded machine) counts as stopped: the
  -- look and the hold may be that far apart.
  local preempted = run_delay() - (call_delay[lane_key()] or math.huge) > PREEMPTED
  if preempted then count("preempted_calls") end
  local since = (#specs > 1 or preempted or w:get(STOPSEQ) ~= s0) and t0 or now()
  local tokens = tokens_of(hd, specs)
  for i, s in ipairs(specs) do
    recs[i] = enter(lane, s[1], s[2], since, c0, tokens[i], hd == FAKE)
  end
  local st = lanes_state[lane]
  if st then st.hd, st.recs, st.t0, st.s0 = hd, recs, t0, s0 end
  count("cs_" .. kind)
  pause(lane, hold_time())
  if upg and random() < 0.6 then
    local form, timeout, opts, cancel_at = plan(lane)
    local outcome, err = timed("upgrade_" .. form, timeout, cancel_at,
      hd[method(form, "upgrade")], hd, timeout, opts)
    if outcome == "got" then
      upgrade_entry(recs[1], hd.token)
      count("cs_upgrade")
      pause(lane, hold_time())
    elseif outcome == "refused" then
      if hd:is_lost() then
        count("upgrades_of_lost")
      else
        count("errors")
        say("ERROR", "upgrade of a hold that is not lost:", tostring(err.code),
          (tostring(err.message):gsub("\n", " ")))
      end
    end
  end
  if st then st.hd, st.recs = nil, nil end
  leave(recs, hd, t0, s0)
  if lane == 0 and random() < P_EXIT then
    count("exits_holding")
    os.exit(0) -- no release, no finaliser: the process's end gives the hold back
  end
  if wrapped then return end
  local how = lane == 0 and random() or 0
  if how < 0.9 then
    hd:release()
  elseif how < 0.95 then
    count("released_gc")
    return "drop" -- the caller drops the handle and collects
  else
    hd:release()
  end
end

local SABOTAGE = tonumber(os.getenv("WH_TORTURE_SABOTAGE") or "") or 0

local function single(lane, j, base, mode, kind)
  local o = OBJ[j]
  if random() < SABOTAGE then -- the torture's own test: a critical section without the hold
    critical(lane, FAKE, { { j, mode } }, now(), w:get(STOPSEQ), w:get(L.NEXT_CS), false, kind,
      true)
    return
  end
  local outcome, hd, t0, s0, c0 = acquire(lane, o, base)
  if outcome ~= "got" then return end
  if lane == 0 and random() < 0.05 then
    -- waithandles.using: released whether the function returns or raises.
    count("released_using")
    wh.using(hd, function(x) critical(0, x, { { j, mode } }, t0, s0, c0, false, kind, true) end)
    return
  end
  if lane == 0 and IS_54 and random() < 0.05 then
    count("released_close")
    CLOSE_RUN(hd, function(x) critical(0, x, { { j, mode } }, t0, s0, c0, false, kind, true) end)
    return
  end
  if critical(lane, hd, { { j, mode } }, t0, s0, c0, mode == L.UPG, kind) == "drop" then
    hd = nil
    collectgarbage()
  end
end

local function op_lock(lane) single(lane, pick(L.LOCKS), "acquire", L.EXCL, "lock") end
local function op_ticket(lane) single(lane, pick(L.SEMAPHORES), "acquire", L.TICKET, "ticket") end
local function op_rw(lane)
  local j, r = pick(L.RWLOCKS), random()
  if r < 0.45 then single(lane, j, "acquire_read", L.READ, "read")
  elseif r < 0.75 then single(lane, j, "acquire_write", L.EXCL, "write")
  else single(lane, j, "acquire_upgradeable_read", L.UPG, "upgradeable") end
end

local function op_composite(lane)
  local pool = { 1, 2, 3, 4 }
  local names, specs = {}, {}
  for _ = 1, random(2, 3) do
    local j = table.remove(pool, random(#pool))
    names[#names + 1] = L.OBJECTS[j].name
    specs[#specs + 1] = { j, L.EXCL }
  end
  local form, timeout, opts, cancel_at = plan(lane)
  local m = method(form, "acquire_all")
  local outcome, hd, t0, s0, c0
  if form == "try0" then
    outcome, hd, t0, s0, c0 = timed("all_" .. form, 0, nil, P[m], P, names)
  else
    outcome, hd, t0, s0, c0 = timed("all_" .. form, timeout, cancel_at, P[m], P, names, timeout,
      opts)
  end
  if outcome ~= "got" then return end
  if critical(lane, hd, specs, t0, s0, c0, false, "composite") == "drop" then
    hd = nil
    collectgarbage()
  end
end

-- ---- async bursts: coroutines in one process ----------------------------------------

local LANE_OPS = { op_lock, op_lock, op_ticket, op_rw, op_rw, op_composite }

-- 2 or 3 coroutines run async acquisitions that yield (the default sleep) under a small
-- scheduler; now and then one is abandoned where it stands (waiting or holding) and
-- collected, which withdraws its mark or releases its hold.
local function burst()
  local lanes = {}
  for lane = 1, random(2, L.LANES - 1) do
    local st = {}
    lanes_state[lane] = st
    st.co = coroutine.create(function()
      for _ = 1, random(1, 3) do pick(LANE_OPS)(lane) end
    end)
    st.wake, st.lane = now(), lane
    lanes[#lanes + 1] = st
  end
  local live = #lanes
  while live > 0 do
    local e
    for _, x in ipairs(lanes) do
      if not x.done and (e == nil or x.wake < e.wake) then e = x end
    end
    local d = e.wake - now()
    if d > 0 then sleep(d) end
    if e.started and random() < 0.02 then
      count("abandoned")
      if e.recs then leave(e.recs, e.hd, e.t0, e.s0) end
      e.co, e.hd, e.recs, e.done = nil, nil, nil, true
      live = live - 1
      collectgarbage()
    else
      e.started = true
      local ok, v = coroutine.resume(e.co)
      if not ok then error(v, 0) end
      if coroutine.status(e.co) == "dead" then
        e.done = true
        live = live - 1
      else
        e.wake = now() + (type(v) == "number" and v or 0)
      end
    end
  end
  for lane = 1, L.LANES - 1 do lanes_state[lane] = nil end
end

-- ---- the rest: objects made and dropped, info() ---------------------------------------

local function op_misc()
  local r = random()
  if r < 0.5 then
    local j = random(#L.OBJECTS)
    local o = open(j)
    count("objects_created")
    local base = L.OBJECTS[j].kind == "rwlock" and "acquire_read" or "acquire"
    local outcome, hd, t0, s0, c0 = timed("fresh_try0", 0, nil, o["try_" .. base], o)
    if outcome == "got" then
      local mode = L.OBJECTS[j].kind == "lock" and L.EXCL or L.OBJECTS[j].kind == "semaphore"
        and L.TICKET or L.READ
      local kind = mode == L.EXCL and "lock" or mode == L.TICKET and "ticket" or "read"
      critical(0, hd, { { j, mode } }, t0, s0, c0, false, kind)
    end
    o = nil
    collectgarbage()
  else
    local o = OBJ[random(#L.OBJECTS)]
    local ok, err = pcall(o.info, o)
    if not ok then
      count("errors")
      say("ERROR info", tostring(type(err) == "table" and err.code),
        tostring(type(err) == "table" and err.message or err))
    end
  end
end

-- ---- main loop ----------------------------------------------------------------------

while w:get(L.STOP) == 0 do
  if us(now()) - w:get(L.HEARTBEAT) > 15e6 then
    say("the supervisor is gone")
    os.exit(3)
  end
  local r = random()
  if r < 0.24 then op_lock(0)
  elseif r < 0.42 then op_ticket(0)
  elseif r < 0.70 then op_rw(0)
  elseif r < 0.84 then op_composite(0)
  elseif r < 0.96 then burst()
  else op_misc() end
end
say("BYE")
os.exit(0)
