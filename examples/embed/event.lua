-- Waits for another process: signals the auto-reset event "embed-ready" (the other process
-- waits on it), then waits up to 20 s for the manual-reset event "embed-go" that the other
-- process sets. Named events come with the core, like locks: nothing more to register.
local waithandles = require "waithandles"
local go = waithandles.event("embed-go")
waithandles.event("embed-ready", { auto_reset = true }):set()
assert(go:wait(20), "embed-go was not set in 20 s")
print("event: embed-go set by another process")
