-- The baseline of `make bench-openresty`: what lua-resty-lock does, written
-- here from its documented algorithm (it is not packaged in Debian; none of
-- its code is copied):
--
--   * new(dict_name, opts): a lock object on a lua_shared_dict; options
--     exptime (30 s), timeout (5 s), step (0.001 s), ratio (2), max_step (0.5 s);
--   * lock(key): dict:add(key, true, exptime); while the key exists, ngx.sleep
--     (step, then step * ratio ..., at most max_step, never past the timeout)
--     and add again; returns the time waited, or nil and "timeout";
--     timeout = 0 makes it a try-lock;
--   * unlock(): dict:delete(key), unconditionally: after the expiry that may
--     free another worker's lock;
--   * expire(t): dict:replace(key, true, t or exptime) while it is held.
--
-- A lock held by a worker that dies stays until its expiry.
--
-- Also the other baseline: a concurrency limit as a shared-dict counter
-- (incr; over the limit, decr and poll again with the same back-off), what
-- lua-resty-limit-traffic's counters become when a caller must wait.
local ngx = ngx
local min = math.min

local M = {}
local Lock = {}
Lock.__index = Lock

function M.new(dict_name, opts)
  local dict = ngx.shared[dict_name]
  if not dict then return nil, "dictionary not found" end
  opts = opts or {}
  return setmetatable({
    dict = dict,
    exptime = opts.exptime or 30,
    timeout = opts.timeout or 5,
    step = opts.step or 0.001,
    ratio = opts.ratio or 2,
    max_step = opts.max_step or 0.5,
  }, Lock)
end

-- Calls attempt() until it returns true, sleeping between attempts as
-- lua-resty-lock does; returns the time slept, or nil and "timeout".
local function poll(self, attempt)
  local left, step, waited = self.timeout, self.step, 0
  while left > 0 do
    if step > left then step = left end
    ngx.sleep(step)
    waited = waited + step
    left = left - step
    local ok, err = attempt()
    if ok then return waited end
    if err then return nil, err end
    step = min(step * self.ratio, self.max_step)
  end
  return nil, "timeout"
end

function Lock:lock(key)
  if self.key then return nil, "locked" end
  local dict, exptime = self.dict, self.exptime
  local function attempt()
    local ok, err = dict:add(key, true, exptime)
    if ok then return true end
    if err ~= "exists" then return false, err end
    return false
  end
  local ok, err = attempt()
  local waited = 0
  if not ok then
    if err then return nil, err end
    waited, err = poll(self, attempt)
    if not waited then return nil, err end
  end
  self.key = key
  return waited
end

function Lock:unlock()
  local key = self.key
  if not key then return nil, "unlocked" end
  self.key = nil
  local ok, err = self.dict:delete(key)
  if not ok then return nil, err end
  return 1
end

function Lock:expire(t)
  if not self.key then return nil, "unlocked" end
  local ok, err = self.dict:replace(self.key, true, t or self.exptime)
  if not ok then return nil, err end
  return true
end

-- A counter of at most `limit` holders in a shared dict, waited for with the
-- same back-off; the caller leaves with leave(). A worker that dies inside
-- leaves its count behind for good (there is no expiry of an incr).
local Limit = {}
Limit.__index = Limit

function M.limit(dict_name, key, limit, opts)
  local self = M.new(dict_name, opts)
  self.key, self.limit = key, limit
  return setmetatable(self, Limit)
end

function Limit:enter()
  local dict, key, limit = self.dict, self.key, self.limit
  local function attempt()
    local n, err = dict:incr(key, 1, 0)
    if not n then return false, err end
    if n <= limit then return true end
    dict:incr(key, -1)
    return false
  end
  if attempt() then return 0 end
  return poll(self, attempt)
end

function Limit:leave()
  return self.dict:incr(self.key, -1)
end

return M
