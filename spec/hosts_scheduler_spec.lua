-- examples/scheduler.lua as a spec: 100 coroutines of a scheduler of one's own contend for a
-- lock with acquire_async, which yields the delay (coroutine.yield); they are served one at a
-- time, roughly in the order they came.
local H = require "helpers"
local X = require "hosts"

local chunk = assert(loadfile(X.ROOT .. "/examples/scheduler.lua"))

describe("examples/scheduler.lua", function()
  after_each(H.cleanup)

  it("serves 100 coroutines one at a time, roughly in order, through coroutine.yield(delay)",
    function()
      local S = chunk("module")
      local order, yields, most = S.contend({ n = 100, dir = H.tmpdir() })
      S.check(order, yields, most, 100)
    end)

  it("runs as a program", function()
    -- The interpreter of this run, with its LUA_PATH and LUA_CPATH (and sanitizer, if any).
    local c = H.spawn_argv({ "env", "WAITHANDLES_DIR=" .. H.tmpdir(), H.lua,
      X.ROOT .. "/examples/scheduler.lua" })
    local st = c:wait(60)
    assert.are.same({ code = 0 }, st, c:output())
    assert.is_truthy(c:output():find("100 coroutines served in", 1, true), c:output())
  end)
end)
