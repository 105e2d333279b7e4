-- What the torture's supervisor (torture/run.lua) and its workers
-- (torture/worker.lua) share: the objects, and the layout of the witness
-- memory (whtorture.map), a file of 64-bit words outside the lock directory
-- that only plain atomics touch.
local M = {}

-- The handful of names. Locks L1..L4 are taken alone and by acquire_all.
M.OBJECTS = {
  { name = "L1", kind = "lock" }, { name = "L2", kind = "lock" },
  { name = "L3", kind = "lock" }, { name = "L4", kind = "lock" },
  { name = "S2", kind = "semaphore", max = 2 }, { name = "S3", kind = "semaphore", max = 3 },
  { name = "RW1", kind = "rwlock" }, { name = "RW2", kind = "rwlock" },
}
M.LOCKS = { 1, 2, 3, 4 }
M.SEMAPHORES = { 5, 6 }
M.RWLOCKS = { 7, 8 }

M.MAX_WORKERS = 32
M.LANES = 4 -- lane 0: the worker's main thread; 1..3: coroutines of an async burst
M.NH = M.MAX_WORKERS * M.LANES -- holders per object

-- What a holder holds, in the low 4 bits of its entry (the rest: the critical section's id).
M.EXCL, M.UPG, M.READ, M.TICKET = 1, 2, 3, 4
M.MODE_NAME = { "exclusive", "upgradeable", "read", "ticket" }

-- Counters (global words). Keep the order: the supervisor prints them by name.
M.COUNTERS = {
  "cs_lock", "cs_ticket", "cs_read", "cs_write", "cs_upgradeable", "cs_upgrade", "cs_composite",
  "call_blocking", "call_async_sleep", "call_async_yield", "call_try0",
  "timeouts", "busy", "cancelled", "cancel_checked", "abandoned", "released_gc", "released_using",
  "released_close", "exits_holding", "self_kills", "lost", "errors", "overrun_checked",
  "objects_created", "upgrades_of_lost", "tokens_recorded", "tokens_planted", "preempted_calls",
}
M.C = {}
for i, n in ipairs(M.COUNTERS) do M.C[n] = 16 + i end

-- Global words.
M.STOP = 0 -- the workers finish their operation and exit
M.NEXT_CS = 1 -- source of critical-section ids
M.MAX_OVERRUN = 2 -- longest wait past its deadline (or past its cancellation), microseconds
M.EARLY = 3 -- waits that gave up before their deadline
M.HEARTBEAT = 4 -- the supervisor's latest loop (us): workers stop once it is 15 s old

-- Per worker slot k (0-based): 8 words.
M.SLOT_BASE = 128
M.STOPSEQ, M.KILLED_AT, M.IN_CALL = 0, 1, 2
function M.slot(k, field) return M.SLOT_BASE + 8 * k + field end

-- Holder entries: object j (1-based), holder h = k * LANES + lane.
M.ENTRY_BASE = M.SLOT_BASE + 8 * M.MAX_WORKERS
function M.entry(j, h) return M.ENTRY_BASE + (j - 1) * M.NH + h end

-- Critical sections: ring[cs % RING] = cs * 4 + (1 kept, 2 lost) once it ended, and when the
-- call that took its hold began (microseconds) in a second ring.
M.RING = 2 ^ 20
M.RING_BASE = M.ENTRY_BASE + #M.OBJECTS * M.NH
M.START_BASE = M.RING_BASE + M.RING
M.OK, M.LOST = 1, 2
function M.outcome_word(cs) return M.RING_BASE + cs % M.RING end
function M.start_word(cs) return M.START_BASE + cs % M.RING end

-- Fencing tokens (doc/API.md): each critical section records, at its entry, the token of its
-- hold (0 if it has none: reads, upgradeable reads not upgraded; an upgrade writes its token
-- later), the value of NEXT_CS before the call that took the hold began, and last its tag
-- (cs * TAG + h * 16 + j: the record is whole once the tag names cs).
M.TAG = 2048
M.TOKEN_BASE = M.START_BASE + M.RING
M.BEFORE_BASE = M.TOKEN_BASE + M.RING
M.TAG_BASE = M.BEFORE_BASE + M.RING
function M.token_word(cs) return M.TOKEN_BASE + cs % M.RING end
function M.before_word(cs) return M.BEFORE_BASE + cs % M.RING end
function M.tag_word(cs) return M.TAG_BASE + cs % M.RING end
assert(M.NH * 16 <= M.TAG and #M.OBJECTS < 16)

M.NWORDS = M.TAG_BASE + M.RING

return M
