-- Several instances of this game share a save file on one machine. At most two instances
-- save at once (a waithandles semaphore of 2 tickets: saving is costly); the save file is
-- guarded by a reader-writer lock (loads share it, a write excludes everything). Waits never
-- stall a frame: they run in coroutines ("jobs") that acquire_async suspends between tries
-- (its sleep yields the delay to the frame loop), and love.update resumes each due job once
-- per frame.
--
--   WAITHANDLES_LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua" \
--   WAITHANDLES_LUA_CPATH="$PWD/build/luajit/?.so" love examples/love --id A
--
-- (make LUA_VERSION=luajit builds the module for LÖVE's LuaJIT.) Options: --id NAME,
-- --seconds S (then quit; default: play until closed), --save FILE (the shared save file),
-- --log FILE (frame times and holds, for spec/hosts_love_spec.lua).

-- Where the module is: LÖVE's LuaJIT searches package.path and package.cpath after the game.
for var, field in pairs({ WAITHANDLES_LUA_PATH = "path", WAITHANDLES_LUA_CPATH = "cpath" }) do
  local dirs = os.getenv(var)
  if dirs and dirs ~= "" then package[field] = dirs .. ";" .. package[field] end
end
local waithandles = require "waithandles"

local opt = { id = tostring(os.time() % 1000), seconds = math.huge,
  save = "/tmp/waithandles-love-save.txt" }
local slots = waithandles.semaphore("love-example-save-slots", 2)
local savefile = waithandles.rwlock("love-example-save-file")

local now = love.timer.getTime -- frame times; since the game started

-- The log's times come from the machine's monotonic clock, the same in every instance, so
-- that the spec can lay the instances' holds side by side.
local ffi = require "ffi"
ffi.cdef [[
struct waithandles_example_ts { long sec, nsec; };
int clock_gettime(int clock, struct waithandles_example_ts *ts);
]]
local ts = ffi.new("struct waithandles_example_ts")
local function clock()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.sec) + tonumber(ts.nsec) * 1e-9
end
local jobs = {}         -- coroutines: { co =, wake =, what = }
local waiting = 0       -- jobs inside an acquire_async
local status = {}       -- what each kind of job is doing, for love.draw
local stats = { frames = 0, max_frame = 0, max_frame_waiting = 0, waiting_frames = 0,
  max_update = 0, max_try = 0, saves = 0, loads = 0, torn = 0 }
local holds = {}        -- { what, t0, t1 }: held from t0 (after acquiring) to t1 (before release)
local started, last_frame, quitting

local function spawn(what, f)
  jobs[#jobs + 1] = { co = coroutine.create(f), wake = 0, what = what }
end

local function running(what)
  for _, j in ipairs(jobs) do
    if j.what == what then return true end
  end
  return false
end

-- acquire_async with a sleep that yields to the frame loop, as coroutine.yield(delay) would
-- by itself, and times the tries in between: the work a wait does in a frame.
local function take(obj, method, timeout)
  local t = now()
  local function sleep(delay)
    stats.max_try = math.max(stats.max_try, now() - t)
    coroutine.yield(delay)
    t = now()
  end
  waiting = waiting + 1
  local h = obj[method](obj, timeout, { sleep = sleep })
  waiting = waiting - 1
  stats.max_try = math.max(stats.max_try, now() - t)
  return h
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- A save file is whole: "begin ID N", lines, "end ID N" (or there is none yet).
local function whole(s)
  if s == nil or s == "" then return true end
  local id, n = s:match("^begin (%S+) (%d+)\n")
  return id ~= nil and s:sub(-#("end " .. id .. " " .. n .. "\n")) == "end " .. id .. " " .. n .. "\n"
end

local function save_job()
  status.save = "waiting for a save slot"
  local ticket = take(slots, "acquire_async", 10)   -- at most 2 instances save at once
  local t0 = clock()
  status.save = "preparing the save"
  for _ = 1, 4 do coroutine.yield(0.015) end          -- costly work, over several frames
  status.save = "waiting for the save file"
  local w = take(savefile, "acquire_write_async", 10)
  local t1 = clock()
  status.save = "writing"
  if not whole(read_file(opt.save)) then stats.torn = stats.torn + 1 end
  stats.saves = stats.saves + 1
  local f = assert(io.open(opt.save, "wb"))
  f:write(("begin %s %d\n"):format(opt.id, stats.saves))
  f:close()
  coroutine.yield(0.005)                               -- written over two frames
  f = assert(io.open(opt.save, "ab"))
  f:write(("score %d\nend %s %d\n"):format(math.random(1000), opt.id, stats.saves))
  f:close()
  holds[#holds + 1] = { "write", t1, clock() }
  w:release()
  holds[#holds + 1] = { "slot", t0, clock() }
  ticket:release()
  status.save = "saved " .. stats.saves .. " times"
end

local function load_job()
  status.load = "waiting to read"
  local r = take(savefile, "acquire_read_async", 10)
  local t0 = clock()
  status.load = "reading"
  local s = read_file(opt.save)
  coroutine.yield(0.01)                                -- read over a frame or two
  if not whole(s) or read_file(opt.save) ~= s then stats.torn = stats.torn + 1 end
  stats.loads = stats.loads + 1
  holds[#holds + 1] = { "read", t0, clock() }
  r:release()
  status.load = "loaded " .. stats.loads .. " times"
end

local function write_log()
  if not opt.log then return end
  local f = assert(io.open(opt.log, "w"))
  for _, k in ipairs({ "frames", "max_frame", "max_frame_waiting", "waiting_frames",
    "max_update", "max_try", "saves", "loads", "torn" }) do
    f:write(k, " ", tostring(stats[k]), "\n")
  end
  for _, h in ipairs(holds) do f:write(("hold %s %.6f %.6f\n"):format(h[1], h[2], h[3])) end
  f:close()
end

function love.load(args)
  for i = 1, #args - 1 do
    local k = args[i]:match("^%-%-(%a+)$")
    if k then opt[k] = args[i + 1] end
  end
  opt.seconds = tonumber(opt.seconds)
  math.randomseed(os.time() + #opt.id * 7919)
  started, last_frame = now(), now()
end

local next_save, next_load = 0, 0

function love.update()
  local t = now()
  local frame = t - last_frame
  last_frame = t
  stats.frames = stats.frames + 1
  if stats.frames > 1 then -- the first frame includes the start
    stats.max_frame = math.max(stats.max_frame, frame)
    if waiting > 0 then
      stats.waiting_frames = stats.waiting_frames + 1
      stats.max_frame_waiting = math.max(stats.max_frame_waiting, frame)
    end
  end

  if t - started < opt.seconds then
    if t >= next_save and not running("save") then
      spawn("save", save_job)
      next_save = t + 0.05 + math.random() * 0.1
    end
    if t >= next_load and not running("load") then
      spawn("load", load_job)
      next_load = t + 0.02 + math.random() * 0.05
    end
  elseif #jobs == 0 and not quitting then
    quitting = true
    write_log()
    print(("%s: %d frames, the longest %.1f ms (%.1f ms while waiting, in %d frames; a try "
      .. "%.2f ms at most), %d saves, %d loads, %d torn"):format(opt.id, stats.frames,
      stats.max_frame * 1000, stats.max_frame_waiting * 1000, stats.waiting_frames,
      stats.max_try * 1000, stats.saves, stats.loads, stats.torn))
    love.event.quit(stats.torn == 0 and 0 or 1)
  end

  -- Each due job runs once per frame, until it yields the delay it wants next.
  for i = #jobs, 1, -1 do
    local j = jobs[i]
    if t >= j.wake then
      local ok, delay = coroutine.resume(j.co)
      if not ok then error(j.what .. ": " .. tostring(delay), 0) end
      if coroutine.status(j.co) == "dead" then
        table.remove(jobs, i)
      else
        j.wake = t + (type(delay) == "number" and delay or 0)
      end
    end
  end
  stats.max_update = math.max(stats.max_update, now() - t)
end

function love.draw()
  local g = love.graphics
  g.print(("instance %s   frame %.1f ms   longest %.1f ms"):format(opt.id,
    love.timer.getAverageDelta() * 1000, stats.max_frame * 1000), 10, 10)
  g.print("save: " .. (status.save or "-"), 10, 40)
  g.print("load: " .. (status.load or "-"), 10, 60)
  local s = read_file(opt.save)
  g.print("save file: " .. (s and s:gsub("\n", " | ") or "none"), 10, 90)
end
