-- Shared by the specs of the hosts users embed the module in (spec/hosts_*_spec.lua):
-- LÖVE, cqueues, luv, C hosts. Builds with make, finds packages, runs commands.
local H = require "helpers"
local T = H.whtest

local M = {}

local function pwd()
  local p = io.popen("pwd")
  local d = p:read("*l")
  p:close()
  return d
end

M.ROOT = pwd()
M.VERSION = os.getenv("WH_LUA_VERSION") or "5.4"
M.VERSIONS = { "5.1", "5.2", "5.3", "5.4", "luajit" }

-- True if cmd is in PATH.
function M.have(cmd)
  local r = os.execute("command -v " .. cmd .. " >/dev/null 2>&1")
  return r == true or r == 0 -- Lua 5.2+ or 5.1
end

-- Specs that start real hosts, whichever Lua runs busted, run in one run of the suite: the
-- plain one that `make test` always does (Lua 5.4, no sanitizer, no GC stress). nil if this
-- is that run, else the reason to skip.
function M.not_plain_run()
  if M.VERSION ~= "5.4" then return "runs in the Lua 5.4 run of the suite" end
  if os.getenv("LD_PRELOAD") or os.getenv("WH_GCSTRESS") == "1" then
    return "runs in the plain run of the suite"
  end
  return nil
end

-- make with `args` (a string), a plain build whatever make runs these specs (make exports its
-- command-line variables, e.g. a sanitizer build's BUILD and SANFLAGS). Returns success and
-- the output.
function M.make(args)
  local out = H.sh("{ cd '" .. M.ROOT .. "' && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u LD_PRELOAD"
    .. " make -s --no-print-directory SANFLAGS= " .. args .. " 2>&1; echo \"make: $?\"; }")
  local rc = out:match("make: (%d+)\n?$")
  return rc == "0", out
end

-- The build of the module for Lua `v` (made if missing): the directory for LUA_CPATH, or nil
-- and the reason.
function M.module_for(v)
  local inc = v == "luajit" and "/usr/include/luajit-2.1/lua.h" or ("/usr/include/lua" .. v .. "/lua.h")
  if not H.exists(inc) then return nil, "no headers for Lua " .. v end
  local ok, out = M.make(("LUA_VERSION=%s BUILD=build/%s all"):format(v, v))
  if not ok then return nil, "make LUA_VERSION=" .. v .. " failed:\n" .. out end
  return M.ROOT .. "/build/" .. v
end

-- LUA_PATH and LUA_CPATH (a table for H.spawn's env) for the module of Lua `v`.
function M.paths(v)
  return {
    LUA_PATH = M.ROOT .. "/lua/?.lua;" .. M.ROOT .. "/lua/?/init.lua;;",
    LUA_CPATH = M.ROOT .. "/build/" .. v .. "/?.so;;",
  }
end

-- Runs argv (with environment `env`, a table) to its end, at most `timeout` s (default 60):
-- its exit status ({code=} or {signal=}) and its output (stdout and stderr). Never under the
-- sanitizer runtime that the specs may run with: hosts are not instrumented.
function M.run(argv, env, timeout)
  local c = M.start(argv, env)
  local st = c:wait(timeout or 60)
  return st, c:output()
end

-- Starts argv like M.run, as an H.spawn_argv child (child:line(), child:wait(), cleanup).
function M.start(argv, env)
  local cmd = { "env", "-u", "LD_PRELOAD" }
  for k, v in pairs(env or {}) do cmd[#cmd + 1] = k .. "=" .. v end
  for _, a in ipairs(argv) do cmd[#cmd + 1] = a end
  return H.spawn_argv(cmd)
end

M.now, M.sleep = T.now, T.sleep

return M
