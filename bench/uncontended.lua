-- One interpreter's uncontended acquire+release pairs, next to the floor and
-- the peers, all called from Lua the same way (a call to take, a method call
-- to give back). Run by bench.lua under each Lua version:
--
--   uncontended.lua DIR ITERATIONS ROUNDS  ->  lines "case ns ratio-to-floor"
--
-- Every case runs ROUNDS times, interleaved; a figure is the median over the
-- rounds of CPU time per iteration, and a ratio the median of each round's
-- ratio to the same round's floor (which cancels the machine's drift).

local wh = require "waithandles"
local floor = require "whfloor"
local B = require "whbench"

local dir, N, ROUNDS = arg[1], tonumber(arg[2]), tonumber(arg[3])
local clock = os.clock
local jit = rawget(_G, "jit")
print("version " .. (jit and jit.version or _VERSION):gsub(" ", "_"))

local function median(t)
  table.sort(t)
  return t[math.ceil(#t / 2)]
end

local function open(kind, name, n)
  if kind == "semaphore" then return wh.semaphore(name, n, { dir = dir }) end
  return wh[kind](name, { dir = dir })
end
local lock, sem, rw = open("lock", "u-lock"), open("semaphore", "u-sem", 2147483647),
  open("rwlock", "u-rw")
local new = floor.new

-- Semaphores with 1, 256 and 4096 tickets already held (by this process).
local held, tickets = {}, {}
for _, k in ipairs({ 1, 256, 4096 }) do
  tickets[k] = open("semaphore", "u-sem-" .. k, 2147483647)
  for _ = 1, k do held[#held + 1] = tickets[k]:try_acquire() end
end
local t1, t256, t4096 = tickets[1], tickets[256], tickets[4096]

local cases = {
  { "floor", function(n) for _ = 1, n do local u = new() u:release() end end },
  { "lock_try", function(n) for _ = 1, n do local h = lock:try_acquire() h:release() end end },
  { "lock_acquire", function(n) for _ = 1, n do local h = lock:acquire() h:release() end end },
  { "lock_acquire5", function(n) for _ = 1, n do local h = lock:acquire(5) h:release() end end },
  { "semaphore", function(n) for _ = 1, n do local h = sem:try_acquire() h:release() end end },
  { "read", function(n) for _ = 1, n do local h = rw:try_acquire_read() h:release() end end },
  { "write", function(n) for _ = 1, n do local h = rw:try_acquire_write() h:release() end end },
  { "upgradeable", function(n)
    for _ = 1, n do local h = rw:try_acquire_upgradeable_read() h:release() end
  end },
  { "upgrade", function(n)
    for _ = 1, n do
      local h = rw:try_acquire_upgradeable_read()
      if not h:try_upgrade() then error("try_upgrade failed on a free rwlock") end
      h:release()
    end
  end },
  { "tickets_1", function(n) for _ = 1, n do local h = t1:try_acquire() h:release() end end },
  { "tickets_256", function(n) for _ = 1, n do local h = t256:try_acquire() h:release() end end },
  { "tickets_4096", function(n) for _ = 1, n do local h = t4096:try_acquire() h:release() end end },
}

-- The peers, each a method call to take and one to give back.
for _, kind in ipairs({ "flock", "ofd", "cas" }) do
  local k = B.locker(kind, dir .. "/u-" .. kind)
  cases[#cases + 1] = { "c_" .. kind, function(n)
    for _ = 1, n do
      if not k:trylock() then error(kind .. " lock failed") end
      k:unlock()
    end
  end }
end
local has_lfs, lfs = pcall(require, "lfs")
if has_lfs then
  local fh = assert(io.open(dir .. "/u-lfs", "w"))
  local lock_, unlock = lfs.lock, lfs.unlock
  cases[#cases + 1] = { "lfs", function(n)
    for _ = 1, n do
      if not lock_(fh, "w") then error("lfs.lock failed") end
      unlock(fh)
    end
  end }
else
  print("skip lfs lua-filesystem_is_not_installed_for_this_version")
end

for _, c in ipairs(cases) do c[2](1) end -- every case works before it is timed

local samples = {}
for _, c in ipairs(cases) do samples[c[1]] = {} end
for _ = 1, ROUNDS do
  for _, c in ipairs(cases) do
    local n = c[1]:match("^c_ofd") and math.ceil(N / 2) or N -- the slow peers: fewer iterations
    if c[1] == "lfs" then n = math.ceil(N / 2) end
    collectgarbage()
    collectgarbage()
    local t = clock()
    c[2](n)
    local s = samples[c[1]]
    s[#s + 1] = (clock() - t) / n * 1e9
  end
end
local base = samples.floor
for _, c in ipairs(cases) do
  local s, ratios = samples[c[1]], {}
  for i = 1, #s do ratios[i] = s[i] / base[i] end
  print(("%s %.2f %.4f"):format(c[1], median(s), median(ratios)))
end
for _, h in ipairs(held) do h:release() end
