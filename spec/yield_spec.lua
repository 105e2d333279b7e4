-- Where an *_async call can yield, it yields (coroutine.yield, the default
-- sleep in a coroutine); where it cannot, it falls back to the blocking wait:
-- never "attempt to yield across a C-call boundary". The matrix: each context
-- a waiter may run in, times a lock, acquire_all and an upgrade; each cell
-- waits for a holder in another process, and must yield exactly where this Lua
-- version can.
local wh = require "waithandles"
local H = require "helpers"

-- PUC Lua 5.1 cannot yield across pcall, metamethods or for-iterators; every
-- version can across none of string.gsub's and table.sort's callbacks.
local can51 = not H.is_51
local CONTEXTS = {
  { "a coroutine", true, function(call) return call() end },
  { "pcall", can51, function(call)
    local ok, r = pcall(call)
    assert(ok, r)
    return r
  end },
  { "xpcall", can51, function(call)
    local ok, r = xpcall(call, debug.traceback)
    assert(ok, r)
    return r
  end },
  { "nested pcall", can51, function(call)
    local ok, r = pcall(function()
      local ok2, r2 = pcall(call)
      assert(ok2, r2)
      return r2
    end)
    assert(ok, r)
    return r
  end },
  { "a string.gsub callback", false, function(call)
    local r
    ("x"):gsub("x", function() r = call() end)
    return r
  end },
  { "a table.sort comparator", false, function(call)
    local r
    table.sort({ 2, 1 }, function(a, b)
      if r == nil then r = call() end
      return a < b
    end)
    return r
  end },
  { "an __index metamethod", can51, function(call)
    return setmetatable({}, { __index = function() return call() end }).x
  end },
  { "a for iterator", can51, function(call)
    local r
    for v in function(_, prev) if prev == nil then return call() end end do r = v end
    return r
  end },
  { "waithandles.using", true, function(call, dir)
    local other = assert(wh.lock("other", { dir = dir }):try_acquire())
    return wh.using(other, function() return call() end)
  end },
}

-- The holder: a child that holds what the call waits for until a waiter shows, then 50 ms.
local HOLDER = [[
local rw = wh.rwlock("rw", { dir = ARGS.dir })
local l = wh.lock("l", { dir = ARGS.dir })
local h, waited
if ARGS.what == "upgrade" then
  h = assert(rw:try_acquire_read())
  waited = function() return rw:info().waiting_writers >= 1 end
else
  h = assert(l:try_acquire())
  waited = function() return l:info().waiting >= 1 end
end
say("held")
local deadline = T.now() + 20
while not waited() do
  assert(T.now() < deadline, "nobody waited")
  T.sleep(0.002)
end
T.sleep(0.05)
h:release()
]]

local CALLS = {
  { "acquire_async", "lock", function(dir)
    local h = wh.lock("l", { dir = dir }):acquire_async(20)
    assert(h:is_held())
    return h
  end },
  { "acquire_all_async", "lock", function(dir)
    local h = wh.provider({ dir = dir }):acquire_all_async({ "l" }, 20)
    assert(h:is_held())
    return h
  end },
  { "upgrade_async", "upgrade", function(dir)
    local u = assert(wh.rwlock("rw", { dir = dir }):try_acquire_upgradeable_read())
    assert(u:upgrade_async(20))
    assert(u.upgraded)
    return u
  end },
}

describe("async calls yield exactly where the running coroutine can", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  for _, call in ipairs(CALLS) do
    for _, ctx in ipairs(CONTEXTS) do
      local name, yields, run = ctx[1], ctx[2], ctx[3]
      it(call[1] .. " inside " .. name .. (yields and ": yields" or ": blocks"), function()
        local c = H.spawn(HOLDER, { dir = dir, what = call[2] })
        c:expect("held")
        local co = coroutine.create(function() return run(function() return call[3](dir) end, dir) end)
        local h, n = H.drive_body(co, nil, 30)
        assert.is_truthy(h)
        h:release()
        if yields then
          assert.is_true(n >= 1, "it did not yield")
        else
          assert.are.equal(0, n, "it yielded where it cannot")
        end
        c:ok()
      end)
    end
    it(call[1] .. " in the main thread: blocks", function()
      local c = H.spawn(HOLDER, { dir = dir, what = call[2] })
      c:expect("held")
      local h = call[3](dir)
      h:release()
      c:ok()
    end)
  end

  it("inside pcall in a coroutine, acquire_all_async times out with the timeout error object", function()
    local h = assert(wh.lock("busy", { dir = dir }):try_acquire())
    local p = wh.provider({ dir = dir })
    local co = coroutine.create(function()
      return pcall(p.acquire_all_async, p, { "busy", "free" }, 0.3)
    end)
    local ok, _, r = H.drive_body(co, nil, 10)
    assert.is_false(ok)
    H.assert_error("timeout", nil, r[3])
    assert.are.equal(0, wh.lock("free", { dir = dir }):info().held)
    h:release()
  end)
end)
