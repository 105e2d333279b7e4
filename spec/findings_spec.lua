-- Findings of the fuzzers, the torture and the soak that are not fixed yet:
-- each is a reproducer, pending until the fix (the library is not changed
-- where they were found). Run them with WH_FINDINGS=1:
--   WH_FINDINGS=1 make test-one BUSTED_ARGS=spec/findings_spec.lua
-- Once one is fixed, turn its `finding` into an `it` (and drop its line from
-- fuzz/ubsan.supp if it has one).
local wh = require "waithandles"
local H = require "helpers"
local T = H.whtest

local finding = os.getenv("WH_FINDINGS") == "1" and it or pending

-- The 64-bit word at `offset` of a file, as whtest.word64 takes it: hex.
local function hex(n) return ("%x"):format(n) end

describe("findings not fixed yet", function()
  after_each(H.cleanup)

  -- Found by fuzz_object (UBSan: signed integer overflow, csrc/ops.c:108, wh_attempt; the same
  -- expression is in wh_changed). An attempt decides whether a reclamation is due with
  -- `now - last_reclaim >= abandonment_check`, last_reclaim being a CLOCK_MONOTONIC time in
  -- the shared file. A value ahead of now makes the difference negative, and a far-away one
  -- overflows (undefined behaviour; in practice it wraps negative): either way no attempt
  -- ever reclaims the holds of dead processes, and a dead holder keeps the object until
  -- somebody calls info() or the monotonic clock catches up. A value ahead of now is what a
  -- lock directory on a persistent file system holds after a reboot (the clock starts again
  -- near 0): there a lock held when the machine went down stays held, for as long as the
  -- machine had been up before. Fix: treat a last_reclaim outside [0, now] as due.
  for _, case in ipairs({
    { what = "a reboot after 30 days of uptime", value = function()
      return hex(math.floor(T.now() * 1e9) + 30 * 86400 * 1000000000) end },
    { what = "a co-user's write of INT64_MIN (undefined behaviour)", value = function()
      return "8000000000000000" end },
  }) do
    finding("a dead holder's lock is reclaimed although last_reclaim is ahead of the clock ("
      .. case.what .. ")", function()
      local dir = H.tmpdir()
      local l = wh.lock("x", { dir = dir, abandonment_check = 0.01 })
      local c = H.lock_holder(dir, "x", 60)
      c:kill()
      c:wait()
      T.word64(l.path, 88, case.value()) -- last_reclaim (doc/FORMAT.md: offset 88)
      local h = l:try_acquire(1)
      assert.is_not_nil(h, "the dead holder's lock was not reclaimed within 1 s")
      h:release()
    end)
  end

  -- Found by the soak (scripts/soak.lua) under LuaJIT: objects that became garbage are not
  -- collected, because compiled traces keep them alive. Each object's methods are C closures
  -- over the object (csrc/ltypes.c, new_object_mt), and a trace that calls o:try_acquire()
  -- holds, as a constant, the closure it was specialised on, hence the object: its open
  -- descriptor, its mapping and its "in use" lock, so remove() of its name returns false for
  -- as long as the trace lives. Up to ~100 objects per call site (side traces), ~400 in the
  -- soak, until jit.flush() (or a trace flush) frees them. Programs that make objects for
  -- dynamic names (a lock per user, per request) in OpenResty keep that many descriptors and
  -- mappings, and cannot remove those names. Fix: methods that are not per-object closures
  -- (recognise the object by its metatable or a cookie in the userdata instead).
  finding("LuaJIT: objects that became garbage are collected although traces called their methods", function()
    if not rawget(_G, "jit") then return end
    local dir = H.tmpdir()
    local p = wh.provider({ dir = dir })
    for i = 1, 3000 do
      local o = p:lock("o" .. i)
      o:try_acquire():release()
    end
    collectgarbage()
    collectgarbage()
    local open = 0
    for i = 1, 3000 do
      if not p:remove("o" .. i) then open = open + 1 end
    end
    assert.are.equal(0, open, open .. " of 3000 garbage objects are still open (jit.flush() frees them)")
  end)

  -- Found by the torture (a 10-minute run: "a hold of RW2 was reported lost, but nothing was
  -- unlinked after it was taken", 131 ms after RW2's file was unlinked). An attempt checks that
  -- its file is still the object at the path (csrc/ops.c, wh_attempt_t: exactly for a waiter,
  -- every 4 ms otherwise) and only then takes the guard, which it waits for until the call's
  -- deadline while the guard's owner is alive (stopped, swapped out, or merely slow). A file
  -- removed during that wait is not looked at again: the hold is taken on it, lost from the
  -- start, and a newcomer takes the object at the path at the same time. Fix: look again
  -- after a guard wait that slept (or after any guard wait, for a waiter), before the state
  -- machine runs, and follow the path as an attempt that finds the file replaced does.
  finding("a hold is not taken on a file removed while the waiter waited for its guard", function()
    local dir = H.tmpdir()
    local l = wh.lock("x", { dir = dir })
    assert(l:try_acquire()):release()
    local path = l.path
    -- A process inside the guard section, stopped (as spec/stop_spec.lua plays it).
    local g = H.spawn([[
      local l = wh.lock("id" .. T.getpid(), { dir = ARGS.dir })
      local h = assert(l:try_acquire())
      assert(T.word64(ARGS.path, 64, T.word64(l.path, 128)) == "0", "the guard was not free")
      say("in guard")
      T.kill(T.getpid(), T.SIGSTOP)
    ]], { dir = dir, path = path })
    g:expect("in guard")
    local w = H.spawn([[
      local h = wh.lock("x", { dir = ARGS.dir }):acquire(20)
      say(h:is_lost() and "lost" or "kept")
      T.sleep(60)
    ]], { dir = dir })
    -- The waiter sleeps on the guard word once it has set its SLEEPERS bit (bit 63).
    H.eventually(function()
      local v = T.word64(path, 64)
      return #v == 16 and tonumber(v:sub(1, 1), 16) >= 8
    end, 10, "the waiter sleeps on the guard")
    assert(os.rename(path, path .. ".removed")) -- a cleaner: the object is no longer that file
    T.word64(path .. ".removed", 64, "0") -- the section ends
    local said = w:expect("^%a+$", 20)
    local other = H.probe_lock(dir, "x")
    g:kill()
    assert.are.equal("kept", said, "the waiter's hold was taken on the removed file")
    assert.are.equal("busy", other, "another process took the lock beside the waiter")
  end)
end)
