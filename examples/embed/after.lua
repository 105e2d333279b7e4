-- Run after leave.lua by the same host: the lock that script kept is free again, because
-- the host closed that script's lua_State. (Were it still held, it would be busy here
-- too: holds belong to the process, not to one lua_State.)
local waithandles = require "waithandles"
local h = waithandles.lock("embed-left"):try_acquire()
assert(h, "embed-left is still held after lua_close")
h:release()
print("after: embed-left is free")
