-- The uncontended path makes no system calls (DESIGN.md "Acquire / release"):
-- strace -f -c counts every system call of a child interpreter that does
-- 100 000 try_acquire()+release() pairs; the total, interpreter start-up
-- included, must stay far below one per pair.
local H = require "helpers"

local PAIRS = 100000
local LIMIT = 2000

-- Can strace trace here? (missing, or ptrace not permitted)
local strace_ok
local function have_strace()
  if strace_ok == nil then
    strace_ok = H.sh("command -v strace >/dev/null && strace -f -c -o /dev/null true && echo usable"):find("usable", 1, true) ~= nil
  end
  return strace_ok
end

-- Runs `body` (Lua, sees DIR and N) under strace -f -c in a new interpreter;
-- returns the total number of system calls, the strace table and the output.
local function count_syscalls(dir, body)
  local script, report = dir .. "/inner.lua", dir .. "/strace.txt"
  local f = assert(io.open(script, "w"))
  f:write(("DIR = %q\nN = %d\nwh = require 'waithandles'\n"):format(dir, PAIRS), body,
    "\nio.stdout:write('pairs ', N, '\\n')\n")
  f:close()
  local out = H.sh(("timeout 120 strace -f -c -o '%s' %s '%s'"):format(report, H.lua, script))
  local tab = H.read_file(report) or ""
  local total
  for line in tab:gmatch("[^\n]+") do
    if line:match("total%s*$") then
      -- % time, seconds, usecs/call, calls, [errors], "total"
      local fields = {}
      for x in line:gmatch("%S+") do fields[#fields + 1] = x end
      total = tonumber(fields[4])
    end
  end
  return total, tab, out
end

local CASES = {
  { "lock: try_acquire() + release()", [[
    local l = wh.lock("sys", { dir = DIR })
    assert(l:try_acquire()):release() -- claims the registry slot
    for i = 1, N do
      local h = l:try_acquire()
      if h == nil then error("busy at pair " .. i) end
      if h:release() ~= true then error("not released at pair " .. i) end
    end
  ]] },
  { "lock: acquire() + release()", [[
    local l = wh.lock("sys", { dir = DIR })
    assert(l:try_acquire()):release()
    for i = 1, N do
      local h = l:acquire()
      if h:release() ~= true then error("not released at pair " .. i) end
    end
  ]] },
  { "lock: try_acquire_async() + release()", [[
    local l = wh.lock("sys", { dir = DIR })
    assert(l:try_acquire()):release()
    for i = 1, N do
      local h = l:try_acquire_async()
      if h == nil then error("busy at pair " .. i) end
      if h:release() ~= true then error("not released at pair " .. i) end
    end
  ]] },
  { "semaphore: try_acquire() + release()", [[
    local s = wh.semaphore("sys-s", 3, { dir = DIR })
    local other = assert(s:try_acquire()) -- one ticket stays taken
    for i = 1, N do
      local h = s:try_acquire()
      if h == nil then error("busy at pair " .. i) end
      if h:release() ~= true then error("not released at pair " .. i) end
    end
    other:release()
  ]] },
  { "rwlock: try_acquire_read() + release(), beside another reader", [[
    local rw = wh.rwlock("sys-rw", { dir = DIR })
    local other = assert(rw:try_acquire_read())
    for i = 1, N do
      local h = rw:try_acquire_read()
      if h == nil then error("busy at pair " .. i) end
      if h:release() ~= true then error("not released at pair " .. i) end
    end
    other:release()
  ]] },
  { "rwlock: try_acquire_write() + release()", [[
    local rw = wh.rwlock("sys-rw", { dir = DIR })
    assert(rw:try_acquire_write()):release()
    for i = 1, N do
      local h = rw:try_acquire_write()
      if h == nil then error("busy at pair " .. i) end
      if h:release() ~= true then error("not released at pair " .. i) end
    end
  ]] },
}

describe("system calls on the uncontended path", function()
  after_each(H.cleanup)

  for _, case in ipairs(CASES) do
    it(("%d x %s: far fewer than %d system calls in all"):format(PAIRS, case[1], LIMIT), function()
      if not have_strace() then
        pending("strace is missing or cannot trace here")
        return
      end
      local dir = H.tmpdir()
      local total, tab, out = count_syscalls(dir, case[2])
      assert(out:find("pairs " .. PAIRS, 1, true), "the traced child failed:\n" .. out)
      assert(total, "no strace summary:\n" .. tab .. "\n" .. out)
      assert(total < LIMIT, ("%d system calls for %d pairs:\n%s"):format(total, PAIRS, tab))
    end)
  end

  it(("%d x try_acquire() of a lock held by another live process: far fewer than %d system calls")
    :format(PAIRS, LIMIT), function()
    -- a busy object is checked for a dead holder at most once per abandonment_check
    if not have_strace() then
      pending("strace is missing or cannot trace here")
      return
    end
    local dir = H.tmpdir()
    local holder = H.spawn([[
      local h = wh.lock("busy", { dir = ARGS.dir }):acquire(5)
      say("held")
      T.sleep(120)
    ]], { dir = dir })
    local ok, err = pcall(function()
      holder:expect("held")
      local total, tab, out = count_syscalls(dir, [[
        local l = wh.lock("busy", { dir = DIR })
        for i = 1, N do
          if l:try_acquire() ~= nil then error("acquired a held lock at try " .. i) end
        end
      ]])
      assert(out:find("pairs " .. PAIRS, 1, true), "the traced child failed:\n" .. out)
      assert(total, "no strace summary:\n" .. tab .. "\n" .. out)
      assert(total < LIMIT, ("%d system calls for %d tries:\n%s"):format(total, PAIRS, tab))
    end)
    holder:kill()
    holder:wait()
    if not ok then error(err, 0) end
  end)

  it("the count can fail: 1000 rounds with an open+close each are seen as >= 2000 calls", function()
    if not have_strace() then
      pending("strace is missing or cannot trace here")
      return
    end
    local dir = H.tmpdir()
    local total, tab, out = count_syscalls(dir, [[
      local h = assert(wh.lock("sys", { dir = DIR }):try_acquire())
      for i = 1, 1000 do
        assert(io.open(DIR .. "/inner.lua", "r")):close()
      end
      h:release()
    ]])
    assert(out:find("pairs", 1, true), "the traced child failed:\n" .. out)
    assert(total and total >= 2000, ("only %s system calls:\n%s"):format(tostring(total), tab))
  end)
end)
