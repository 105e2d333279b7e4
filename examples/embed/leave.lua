-- Takes the lock "embed-left" and keeps it: the host's lua_close releases it.
local waithandles = require "waithandles"
LEFT = assert(waithandles.lock("embed-left"):try_acquire(5), "embed-left is busy")
print("leave: holding embed-left at the end of the script")
