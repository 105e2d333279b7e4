-- Fuzzes the command-line tool's argument parser (bin/waithandle, a Lua
-- script, hence no libFuzzer) with random argument vectors, in-process: the
-- script runs with os.exit, its output and the library stubbed, and stops
-- where it would start to work. For every vector it must end in one of the
-- documented ways and never with a Lua error:
--   * exit 0 after --help or --version;
--   * exit 2 (usage) with one line on stderr, "waithandle: ... (try 'waithandle --help')";
--   * reach the acquisition with a name, a non-empty command, a timeout in
--     [0, 2147483.647] or none, a ticket count in [1, 2^31-1] for -s, an exit
--     code in [0, 255]; or reach info/list/remove with the right operands.
-- Usage: lua fuzz/cli.lua [seconds=10] [seed]. Prints executions and a TAP line.
local SECONDS = tonumber(arg[1]) or 10
local SEED = tonumber(arg[2]) or os.time()
math.randomseed(SEED)
local random = math.random
local clock = os.clock

local f = assert(io.open("bin/waithandle", "rb"))
local src = f:read("*a"):gsub("^#![^\n]*\n", "")
f:close()

-- ---- the sandbox ------------------------------------------------------------

local EXIT = {}
local run -- what the current execution recorded
local function sink() return { write = function(self, ...)
  local t = { ... }
  for i = 1, select("#", ...) do run.out[#run.out + 1] = tostring(t[i]) end
  return self
end } end

local env = setmetatable({}, { __index = _G })
local stderr, stdout = sink(), sink()
stderr.write = function(self, ...)
  run.err[#run.err + 1] = table.concat({ ... })
  return self
end
env.io = { stderr = stderr, stdout = stdout, open = io.open }
env.print = function(...) run.out[#run.out + 1] = table.concat({ ... }, "\t") end
env.package = { path = "", cpath = "" }
env.os = { exit = function(code) error({ [EXIT] = true, code = code }, 0) end, getenv = os.getenv,
  time = os.time, clock = os.clock }

-- The library: each entry point records what it was given and fails like an object error.
local function stop_at(what)
  return function(...)
    run.reached = { what = what, args = { ... } }
    error({ code = "os", message = "stopped by the fuzzer" }, 0)
  end
end
local wh = { _VERSION = "waithandles 0.0.0", inspect = stop_at("inspect"), list = stop_at("list"),
  remove = stop_at("remove"), _slot_fd = function() return 3 end }
env.require = function(name)
  if name == "waithandles" then return wh end
  if name == "waithandles.proc" then
    -- run(wh, o) asks for it first: its options are the second local of the caller.
    local _, o = debug.getlocal(2, 2)
    run.reached = { what = "run", o = o }
    error({ [EXIT] = true, code = "reached" }, 0)
  end
  error("unexpected require " .. tostring(name))
end

local chunk
if setfenv then
  chunk = assert(loadstring(src, "=waithandle"))
  setfenv(chunk, env)
else
  chunk = assert(load(src, "=waithandle", "t", env))
end

-- ---- random argument vectors ---------------------------------------------------

local OPTS = { "-s", "-r", "-w", "-u", "-t", "-n", "-E", "-v", "-q", "-h", "-V", "--semaphore",
  "--read", "--write", "--upgradeable", "--timeout", "--nonblock", "--conflict-exit-code",
  "--dir", "--exact-name", "--verbose", "--quiet", "--json", "--bogus", "-x", "-", "--", "-nv",
  "-rw", "-t5", "-s3", "-Ewhat", "-E7", "--timeout=", "--timeout=1", "--dir=", "--dir=/tmp",
  "--json=1", "--read=x", "-tn", "-qv", "-s", "--semaphore=2", "-ns4", "--=", "---", "-h", "--help",
  "-V", "--version" }
local VALUES = { "0", "1", "5", "-1", "1e400", "nan", "inf", "-inf", "0x10", "2147483.647",
  "2147483.648", "2147483647", "2147483648", "1.5", " 1", "1 ", "", "abc", "256", "255", "-0",
  "1e-400", "0.0001", "9007199254740993" }
local WORDS = { "info", "list", "remove", "jobs", "a b", "", "/x", ".", "..", "true", "echo", "sh",
  "-c", "x_y", "L1" }

local function junk()
  local t = {}
  for i = 1, random(0, 6) do t[i] = string.char(random(0, 255)) end
  return table.concat(t)
end

local function vector()
  local argv = {}
  for i = 1, random(0, 9) do
    local r = random()
    argv[i] = r < 0.45 and OPTS[random(#OPTS)] or r < 0.7 and VALUES[random(#VALUES)]
      or r < 0.95 and WORDS[random(#WORDS)] or junk()
  end
  return argv
end

local function show(argv)
  local t = {}
  for i, a in ipairs(argv) do t[i] = ("%q"):format(a) end
  return "waithandle " .. table.concat(t, " ")
end

-- ---- checks ----------------------------------------------------------------------

local MAX_SECONDS, MAX_COUNT = 2147483.647, 2147483647

local function integer_in(n, lo, hi) return type(n) == "number" and n >= lo and n <= hi and n == math.floor(n) end

-- nil if the outcome is a documented one, else why not.
local function wrong(argv, ok, err)
  if ok then return "the script ended without exiting" end
  if type(err) ~= "table" or not err[EXIT] then return "Lua error: " .. tostring(err) end
  local r = run.reached
  if err.code == "reached" then
    local o = r.o
    if type(o) ~= "table" or type(o.name) ~= "string" then return "no name" end
    if type(o.command) ~= "table" or #o.command == 0 then return "no command" end
    for _, c in ipairs(o.command) do if type(c) ~= "string" then return "a command word not a string" end end
    if o.timeout ~= nil and not (type(o.timeout) == "number" and o.timeout >= 0 and o.timeout <= MAX_SECONDS) then
      return "timeout " .. tostring(o.timeout)
    end
    if o.mode == "semaphore" and not integer_in(o.max_count, 1, MAX_COUNT) then
      return "max_count " .. tostring(o.max_count)
    end
    if not integer_in(o.code, 0, 255) then return "exit code " .. tostring(o.code) end
    return nil, "run"
  end
  if err.code == 125 and r then
    local n = #r.args
    if r.what == "list" then return nil, "list" end
    if type(r.args[1]) ~= "string" then return r.what .. " without a NAME" end
    return nil, r.what, n
  end
  if err.code == 0 then
    if #run.out == 0 then return "exit 0 without output" end
    return nil, "help/version"
  end
  if err.code == 2 then
    if #run.err ~= 1 or not run.err[1]:find("^waithandle: .*%(try 'waithandle %-%-help'%)\n$")
      and not run.err[1]:find("^waithandle: ") then
      return "usage error without its one message: " .. table.concat(run.err, "|")
    end
    return nil, "usage"
  end
  return "exit " .. tostring(err.code) .. " (" .. table.concat(run.err, "|") .. ")"
end

-- ---- the loop -----------------------------------------------------------------------

local seen = {}
local n, failures = 0, 0
local start = clock()
while clock() - start < SECONDS do
  local argv = vector()
  argv[0] = "waithandle"
  run = { out = {}, err = {} }
  env.arg = argv
  local ok, err = pcall(chunk)
  local why, outcome = wrong(argv, ok, err)
  n = n + 1
  if why then
    failures = failures + 1
    if failures <= 10 then print(("not ok - %s: %s"):format(show(argv), why)) end
  else
    seen[outcome] = (seen[outcome] or 0) + 1
  end
end
local parts = {}
for k, v in pairs(seen) do parts[#parts + 1] = k .. " " .. v end
table.sort(parts)
print(("# cli fuzz (%s, seed %d): %d executions in %.0f s: %s"):format(
  rawget(_G, "jit") and jit.version or _VERSION, SEED, n,
  clock() - start, table.concat(parts, ", ")))
print((failures == 0 and "ok" or "not ok") .. " - waithandle's argument parser: " .. n ..
  " random command lines, " .. failures .. " undocumented outcomes")
os.exit(failures == 0 and 0 or 1)
