-- waithandles in a libuv loop (luv): the `sleep` option suspends the waiting coroutine and a
-- luv timer resumes it, so a wait for a lock lets the loop run everything else. Four
-- coroutines of this process and four of a second one (this script again, started with
-- uv.spawn) add to one counter under one lock, each holding it across a sleep: were a wait
-- to block the thread, it would never see the lock that a coroutine of its own process holds
-- released. A repeating timer measures how long the loop ever went without running it.
--
--   lua examples/luv.lua            (Lua 5.1-5.4 or LuaJIT, with Debian's lua-luv;
--                                    WAITHANDLES_DIR chooses the lock directory)
local uv = require "luv"
local waithandles = require "waithandles"

local WORKERS, ROUNDS, HOLD = 4, 25, 0.002

-- A sleep for coroutine `co`: a one-shot timer resumes it. luv counts whole milliseconds;
-- rounding up keeps a 0.5 ms delay from becoming a busy loop. (Take `co` when the coroutine
-- starts: on PUC Lua 5.1 the library calls `sleep` inside a helper coroutine of its own.)
local function sleeper(co)
  return function(seconds)
    local t = uv.new_timer()
    t:start(math.max(1, math.ceil(seconds * 1000)), 0, function()
      t:close()
      local ok, err = coroutine.resume(co)
      if not ok then error(err, 0) end
    end)
    coroutine.yield()
  end
end

local peer_of = arg[1] == "--peer" and arg[2] -- the counter file, in the second process
local counter = peer_of or os.tmpname()
local lock = waithandles.lock("luv-example")

-- The counter file: the count, then a letter per increment: a (first process) or b (peer).
local function read_counter(path)
  local f = io.open(path, "r")
  local s = f and f:read("*a") or ""
  if f then f:close() end
  local n, history = s:match("^(%d+) (%a*)")
  return tonumber(n) or 0, history or ""
end

-- The peer: the same interpreter (the lowest arg index) runs this script with --peer.
local peer_status, peer_output = nil, {}
if not peer_of then
  local i = 0
  while arg[i - 1] do i = i - 1 end
  local out = uv.new_pipe(false)
  uv.spawn(arg[i], { args = { arg[0], "--peer", counter }, stdio = { nil, out, 2 } },
    function(code, signal)
      peer_status = code == 0 and signal == 0
      out:close()
    end)
  out:read_start(function(err, data)
    assert(not err, err)
    if data then peer_output[#peer_output + 1] = data end
  end)
end

local done, longest_gap = 0, 0
for _ = 1, WORKERS do
  local co = coroutine.create(function()
    local sleep = sleeper(coroutine.running())
    for _ = 1, ROUNDS do
      local h = lock:acquire_async(30, { sleep = sleep })
      local n, history = read_counter(counter)
      sleep(HOLD)                            -- holding the lock, others run (and are refused)
      local f = assert(io.open(counter, "w"))
      f:write(n + 1, " ", history, peer_of and "b" or "a")
      f:close()
      h:release()
    end
    done = done + 1
  end)
  assert(coroutine.resume(co))
end
local ticker, last = uv.new_timer(), uv.hrtime()
ticker:start(5, 5, function()                -- is the loop ever blocked?
  local t = uv.hrtime()
  longest_gap = math.max(longest_gap, (t - last) / 1e9)
  last = t
  if done == WORKERS then ticker:close() end
end)
uv.run()

local who = peer_of and "peer" or "first"
print(("%s: %d coroutines x %d rounds; the loop went at most %.1f ms without the ticker")
  :format(who, WORKERS, ROUNDS, longest_gap * 1000))
if not peer_of then
  io.write(table.concat(peer_output))
  assert(peer_status, "the peer failed")
  local total, history = read_counter(counter)
  os.remove(counter)
  assert(total == 2 * WORKERS * ROUNDS, ("lost increments: %d of %d"):format(total,
    2 * WORKERS * ROUNDS))
  local handovers = 0
  for i = 2, #history do
    if history:sub(i, i) ~= history:sub(i - 1, i - 1) then handovers = handovers + 1 end
  end
  print(("counter: %d, exact; the lock passed between the processes %d times")
    :format(total, handovers))
end
