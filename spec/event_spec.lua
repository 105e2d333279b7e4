-- Named events across processes: a manual-reset set wakes every waiter and
-- stays set; an auto-reset set lets exactly one wait return; a waiter that
-- dies leaves nothing behind.
local wh = require "waithandles"
local H = require "helpers"
local T = H.whtest

describe("events", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  local function waiter(name, auto, how)
    local c = H.spawn([[
      local ev = wh.event(ARGS.name, { dir = ARGS.dir, auto_reset = ARGS.auto })
      say("waiting")
      local ok
      if ARGS.how == "async" then ok = ev:wait_async(30, { sleep = T.sleep }) else ok = ev:wait(30) end
      say("woke", tostring(ok), stamp())
      T.sleep(30)
    ]], { dir = dir, name = name, auto = auto, how = how })
    c:expect("waiting")
    return c
  end

  it("start reset (or set with initial), report is_set and info, and time out with false", function()
    local ev = wh.event("e", { dir = dir })
    assert.are.equal("event", ev.kind)
    assert.is_false(ev.auto_reset)
    assert.is_false(ev:is_set())
    assert.is_false(ev:wait(0))
    local took = H.time(function() assert.is_false(ev:wait(0.05)) end)
    assert.is_true(took >= 0.05 and took < 2, took)
    assert.is_false(ev:wait_async(0.05, { sleep = T.sleep }))
    local i = ev:info()
    assert.are.same({ "e", "event", false, false }, { i.name, i.kind, i.set, i.auto_reset })
    local s = wh.event("s", { dir = dir, initial = true })
    assert.is_true(s:is_set())
    assert.is_true(wh.inspect("s", { dir = dir }).set)
    -- initial counts only for the process that makes the file
    assert.is_true(wh.event("s", { dir = dir, initial = false }):is_set())
  end)

  it("manual-reset: one set wakes every waiter in other processes, blocking and async alike", function()
    local ws = {}
    for i = 1, 4 do ws[i] = waiter("m", false, i % 2 == 0 and "async" or "blocking") end
    H.sleep(0.2) -- they are all waiting
    local ev = wh.event("m", { dir = dir })
    local t0 = H.now()
    ev:set()
    for i = 1, 4 do
      local at = tonumber(ws[i]:expect("^woke true"):match("([%d.]+)$"))
      assert.is_true(at - t0 < 1, "waiter " .. i .. " woke " .. (at - t0) .. " s after the set")
    end
    assert.is_true(ev:is_set())
    assert.is_true(ev:wait(0))
    ev:reset()
    assert.is_false(ev:is_set())
  end)

  it("manual-reset: a set followed at once by a reset still wakes those who waited", function()
    local ws = { waiter("p", false, "blocking"), waiter("p", false, "async") }
    H.sleep(0.2)
    local ev = wh.event("p", { dir = dir })
    ev:set()
    ev:reset()
    ws[1]:expect("^woke true")
    ws[2]:expect("^woke true")
  end)

  it("auto-reset: each set lets exactly one of several waiters through", function()
    local ws = {}
    for i = 1, 3 do ws[i] = waiter("a", true, i == 2 and "async" or "blocking") end
    H.sleep(0.2)
    local ev = wh.event("a", { dir = dir, auto_reset = true })
    local woke = 0
    local function count()
      for _, w in ipairs(ws) do
        while true do
          local l = w:line(0.01)
          if not l then break end
          if l:match("^woke true") then woke = woke + 1 end
        end
      end
      return woke
    end
    for n = 1, 3 do
      ev:set()
      H.eventually(function() return count() >= n end, 10, n .. " waiters through")
      H.sleep(0.2)
      assert.are.equal(n, count(), "set #" .. n .. " let more than one through")
      assert.is_false(ev:is_set())
    end
    -- set with nobody waiting: the next wait takes it, the one after does not
    ev:set()
    ev:set()
    assert.is_true(ev:wait(0))
    assert.is_false(ev:wait(0))
  end)

  it("a waiter killed while it waits leaves nothing behind", function()
    local w = waiter("k", true, "blocking")
    H.sleep(0.1)
    w:kill(T.SIGKILL)
    w:wait()
    local ev = wh.event("k", { dir = dir, auto_reset = true })
    ev:set()
    assert.is_true(ev:is_set(), "the dead waiter took the signal")
    local p = H.spawn([[ say(tostring(wh.event("k", { dir = ARGS.dir, auto_reset = true }):wait(5))) ]],
      { dir = dir })
    p:said("true")
    p:ok()
  end)

  it("a waiter follows the name when a cleaner removes or replaces the file under it", function()
    local ws = { waiter("rm", false, "blocking"), waiter("rm", false, "async") }
    local path = dir .. "/rm"
    assert.is_true(os.remove(path))
    H.sleep(0.1)
    -- a set of the file now at the path (made by this set) wakes those who waited on the old one
    wh.event("rm", { dir = dir }):set()
    ws[1]:expect("^woke true")
    ws[2]:expect("^woke true")
    -- replaced by rename (a new inode at the path) while it waits: an event opened before
    -- sets the file now at the path
    local again = { waiter("rm2", false, "blocking") }
    local ev2 = wh.event("rm2", { dir = dir })
    H.write_file(path .. "2.new", H.read_file(path .. "2"))
    assert.is_true(os.rename(path .. "2.new", path .. "2"))
    H.sleep(0.1)
    ev2:set()
    again[1]:expect("^woke true")
  end)

  it("is a kind of its own: a lock or another reset mode of the name is a mismatch", function()
    wh.event("x", { dir = dir })
    H.assert_code("mismatch", "x", wh.lock, "x", { dir = dir })
    H.assert_code("mismatch", "x", wh.event, "x", { dir = dir, auto_reset = true })
    wh.lock("y", { dir = dir })
    H.assert_code("mismatch", "y", wh.event, "y", { dir = dir })
  end)

  it("checks its arguments and honours cancellation", function()
    local ev = wh.event("c", { dir = dir })
    H.assert_bad_argument(2, "event", wh.event, "c", { dir = dir, auto_reset = "yes" })
    H.assert_bad_argument(2, "event", wh.event, "c", { dir = dir, bogus = 1 })
    H.assert_bad_argument(1, "wait", ev.wait, ev, -1)
    H.assert_bad_argument(2, "wait", ev.wait, ev, 1, { timeout = 1 })
    H.assert_bad_argument(1, "set", ev.set, 5)
    local tok = wh.cancel_token()
    tok:cancel()
    H.assert_code("cancelled", "c", ev.wait, ev, 1, { cancel = tok })
    local n = 0
    H.assert_code("cancelled", "c", ev.wait, ev, 10, { cancel = function() n = n + 1 return n > 2 end })
    H.assert_code("cancelled", "c", ev.wait_async, ev, 10,
      { sleep = T.sleep, cancel = function() n = n + 1 return n > 5 end })
  end)

  it("wait_async yields in a coroutine until another process sets it", function()
    local ev = wh.event("y", { dir = dir })
    local co = coroutine.create(function() return ev:wait_async(10) end)
    local ok, d = coroutine.resume(co)
    assert.is_true(ok and type(d) == "number", tostring(d))
    local setter = H.spawn([[ T.sleep(0.1) wh.event("y", { dir = ARGS.dir }):set() say("set") ]], { dir = dir })
    local r, n = H.drive_body(co, nil, 10)
    assert.is_true(r)
    assert.is_true(n >= 1)
    setter:said("set")
    setter:ok()
  end)
end)
