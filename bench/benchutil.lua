-- Helpers of the benchmark: statistics, latency histograms, child processes
-- and the files they report through. Plain Lua 5.1-5.4 / LuaJIT.

local T = require "whtest"

local U = {}

function U.sorted(t)
  local s = {}
  for i = 1, #t do s[i] = t[i] end
  table.sort(s)
  return s
end

-- The q-quantile (0..1) of a list, nearest rank; nil for an empty list.
function U.quantile(t, q)
  if #t == 0 then return nil end
  local s = U.sorted(t)
  return s[math.max(1, math.ceil(q * #s))]
end

function U.median(t) return U.quantile(t, 0.5) end

function U.max(t)
  local m
  for i = 1, #t do if m == nil or t[i] > m then m = t[i] end end
  return m
end

function U.min(t)
  local m
  for i = 1, #t do if m == nil or t[i] < m then m = t[i] end end
  return m
end

-- Most / fewest of a list of counts (infinite if some count is 0).
function U.fairness(counts)
  local least = U.min(counts)
  return least > 0 and U.max(counts) / least or math.huge
end

-- ---- latency histograms: 16 buckets per doubling (about 4 % wide) ----------

local LOG2 = math.log(2)

function U.hist_add(h, seconds)
  local ns = seconds * 1e9
  local b = ns >= 1 and math.floor(math.log(ns) / LOG2 * 16) or 0
  h[b] = (h[b] or 0) + 1
end

function U.hist_merge(into, h)
  for b, n in pairs(h) do into[b] = (into[b] or 0) + n end
end

-- The q-quantile of a histogram, in seconds (the bucket's geometric middle).
function U.hist_quantile(h, q)
  local keys, total = {}, 0
  for b, n in pairs(h) do
    keys[#keys + 1] = b
    total = total + n
  end
  if total == 0 then return nil end
  table.sort(keys)
  local want, seen = math.max(1, math.ceil(q * total)), 0
  for _, b in ipairs(keys) do
    seen = seen + h[b]
    if seen >= want then return 2 ^ ((b + 0.5) / 16) / 1e9 end
  end
end

-- ---- child processes --------------------------------------------------------

-- Forks; the child runs fn(...) and exits (status 1, with the error on stderr,
-- if fn raised). Returns the child's pid.
function U.spawn(fn, ...)
  local pid = T.fork()
  if pid == 0 then
    local ok, err = pcall(fn, ...)
    if not ok then
      io.stderr:write("bench child: ", tostring(err), "\n")
      io.stderr:flush()
    end
    T.exit(ok and 0 or 1)
  end
  return pid
end

-- Waits for every pid; returns how many did not exit with status 0.
function U.wait_all(pids, timeout)
  local bad = 0
  for _, pid in ipairs(pids) do
    local st = T.waitpid(pid, timeout or 120)
    if st == nil then
      T.kill(pid, T.SIGKILL)
      T.waitpid(pid, 5)
      bad = bad + 1
    elseif st.code ~= 0 then
      bad = bad + 1
    end
  end
  return bad
end

-- A child reports a list of numbers (and a histogram) through its own file.
function U.put(path, list, hist)
  local f = assert(io.open(path, "w"))
  f:write(table.concat(list, " "), "\n")
  for b, n in pairs(hist or {}) do f:write(b, " ", n, "\n") end
  f:close()
end

-- Returns the list and the histogram written by put, or nil if there is no file.
function U.get(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local list, hist = {}, {}
  local first = f:read("*l") or ""
  for x in first:gmatch("%S+") do list[#list + 1] = tonumber(x) end
  for line in f:lines() do
    local b, n = line:match("^(%S+) (%S+)$")
    if b then hist[tonumber(b)] = tonumber(n) end
  end
  f:close()
  return list, hist
end

-- Sleeps in short steps until cond() is true; false if it never became true.
function U.wait_until(cond, timeout, step)
  local deadline = T.now() + (timeout or 30)
  while not cond() do
    if T.now() > deadline then return false end
    T.sleep(step or 0.001)
  end
  return true
end

-- Output of a shell command, without the trailing newline.
function U.sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a") or ""
  p:close()
  return (out:gsub("%s+$", ""))
end

return U
