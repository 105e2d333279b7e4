-- waithandles in a cqueues event loop: the `sleep` option is cqueues.sleep, so a coroutine
-- waiting for a lock lets the loop run everything else. Four coroutines of this process and
-- four of a second one (this script again, with --peer) add to one counter under one lock,
-- each holding it across a cqueues.sleep: were a wait to block the thread, it would never
-- see the lock that a coroutine of its own process holds released. A ticker coroutine
-- measures how long the loop ever went without running it.
--
--   lua examples/cqueues.lua        (Lua 5.1-5.4 or LuaJIT, with Debian's lua-cqueues;
--                                    WAITHANDLES_DIR chooses the lock directory)
local cqueues = require "cqueues"
local waithandles = require "waithandles"

local WORKERS, ROUNDS, HOLD = 4, 25, 0.002

local peer_of = arg[1] == "--peer" and arg[2] -- the counter file, in the second process
local counter = peer_of or os.tmpname()
local lock = waithandles.lock("cqueues-example", { sleep = cqueues.sleep })

-- The counter file: the count, then a letter per increment: a (first process) or b (peer).
local function read_counter(path)
  local f = io.open(path, "r")
  local s = f and f:read("*a") or ""
  if f then f:close() end
  local n, history = s:match("^(%d+) (%a*)")
  return tonumber(n) or 0, history or ""
end

-- The lowest arg index is the interpreter: start the peer with the same one.
local peer
if not peer_of then
  local i = 0
  while arg[i - 1] do i = i - 1 end
  peer = assert(io.popen(("%s %s --peer %s"):format(arg[i], arg[0], counter), "r"))
end

local loop = cqueues.new()
local done, longest_gap = 0, 0
for w = 1, WORKERS do
  loop:wrap(function()
    for _ = 1, ROUNDS do
      local h = lock:acquire_async(30)       -- cqueues.sleep between tries
      local n, history = read_counter(counter)
      cqueues.sleep(HOLD)                    -- holding the lock, others run (and are refused)
      local f = assert(io.open(counter, "w"))
      f:write(n + 1, " ", history, peer_of and "b" or "a")
      f:close()
      h:release()
    end
    done = done + 1
  end)
end
loop:wrap(function()                         -- the ticker: is the loop ever blocked?
  local last = cqueues.monotime()
  while done < WORKERS do
    cqueues.sleep(0.005)
    local t = cqueues.monotime()
    longest_gap = math.max(longest_gap, t - last)
    last = t
  end
end)
assert(loop:loop())

local who = peer_of and "peer" or "first"
print(("%s: %d coroutines x %d rounds; the loop went at most %.1f ms without the ticker")
  :format(who, WORKERS, ROUNDS, longest_gap * 1000))
if peer then
  io.write(peer:read("*a"))
  assert(peer:close(), "the peer failed")
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
