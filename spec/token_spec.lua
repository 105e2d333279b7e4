-- Fencing tokens: every exclusive hold (lock, write, upgrade) and every
-- semaphore ticket gets a number that strictly increases per object, across
-- processes, crashes and takeovers, and that a re-created file continues.
local wh = require "waithandles"
local H = require "helpers"
local T = H.whtest

describe("fencing tokens", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  it("increase with every exclusive hold and ticket; reads and upgradeable reads have none", function()
    local l = wh.lock("l", { dir = dir })
    local h = l:acquire()
    local t = h.token
    assert.are.equal("number", type(t))
    assert.is_true(t > 0 and t < 2 ^ 53 and t == math.floor(t))
    h:release()
    assert.are.equal(t + 1, l:acquire().token)
    local s = wh.semaphore("s", 3, { dir = dir })
    local a, b = s:acquire(), s:acquire()
    assert.are.equal(a.token + 1, b.token)
    assert.are.equal(b.token, s:info().token)
    local rw = wh.rwlock("rw", { dir = dir })
    local r = rw:acquire_read()
    assert.is_nil(r.token)
    r:release()
    local w = rw:acquire_write()
    local tw = w.token
    w:release()
    local u = rw:acquire_upgradeable_read()
    assert.is_nil(u.token)
    assert.is_true(u:try_upgrade())
    assert.are.equal(tw + 1, u.token)
  end)

  it("strictly increase across processes, and past a holder killed with SIGKILL", function()
    local seen = {}
    local function take(n)
      local c = H.spawn([[
        local l = wh.lock("x", { dir = ARGS.dir, abandonment_check = 0.01 })
        for i = 1, ARGS.n do
          local h = l:acquire(10)
          say("token", string.format("%.0f", h.token))
          h:release()
        end
      ]], { dir = dir, n = n })
      return c
    end
    local cs = { take(50), take(50) }
    local killed = H.spawn([[
      local h = wh.lock("x", { dir = ARGS.dir }):acquire(10)
      say("token", string.format("%.0f", h.token))
      T.sleep(60)
    ]], { dir = dir })
    local kt = tonumber(killed:expect("^token"):match("%d+$"))
    killed:kill(T.SIGKILL)
    killed:wait()
    local all = { kt }
    for _, c in ipairs(cs) do
      local last
      for _ = 1, 50 do
        local v = tonumber(c:expect("^token"):match("%d+$"))
        assert.is_true(last == nil or v > last, "tokens of one process went back")
        last = v
        all[#all + 1] = v
      end
      c:ok()
    end
    local l = wh.lock("x", { dir = dir })
    local h = l:acquire(10)
    for _, v in ipairs(all) do
      assert.is_nil(seen[v], "token " .. v .. " handed out twice")
      seen[v] = true
      assert.is_true(h.token > v)
    end
    assert.are.equal(101, #all)
  end)

  it("of a re-created file exceed those of the file it replaces", function()
    local l = wh.lock("r", { dir = dir })
    local t = l:acquire().token
    collectgarbage()
    l = nil -- luacheck: ignore
    collectgarbage()
    assert.is_true(wh.remove("r", { dir = dir }))
    T.sleep(0.001)
    assert.is_true(wh.lock("r", { dir = dir }):acquire().token > t)
  end)
end)
