package = "waithandles"
version = "0.1.0-1"
source = {
   url = "git+https://github.com/waithandles/waithandles.git",
   tag = "v0.1.0",
}
description = {
   summary = "Machine-wide, crash-safe named locks, semaphores and reader-writer locks",
   detailed = [[
Cross-process named locks, semaphores and upgradeable reader-writer locks for
Lua on Linux, in shared memory, that are never left stuck when a holder
crashes: timeouts, cancellation, self-releasing handles and coroutine-friendly
waits that never block an event loop (OpenResty included).
]],
   homepage = "https://github.com/waithandles/waithandles",
   license = "MIT",
}
supported_platforms = { "linux" }
dependencies = {
   "lua >= 5.1",
}
build = {
   type = "builtin",
   modules = {
      ["waithandles"] = "lua/waithandles/init.lua",
      -- The postgres backend's Lua side; its C module (waithandles.libpq) needs libpq: make install.
      ["waithandles.pg"] = "lua/waithandles/pg.lua",
      ["waithandles.core"] = {
         sources = {
            "csrc/err.c", "csrc/names.c", "csrc/wait.c", "csrc/guard.c", "csrc/state.c",
            "csrc/observe.c", "csrc/dir.c", "csrc/registry.c", "csrc/object.c", "csrc/ops.c",
            "csrc/pending.c", "csrc/event.c", "csrc/inspect.c",
            "csrc/lerr.c", "csrc/ltypes.c", "csrc/lhandle.c", "csrc/lacquire.c", "csrc/lwaiter.c",
            "csrc/lcore.c", "csrc/levent.c", "csrc/llook.c", "csrc/lngx.c",
         },
         defines = { "_GNU_SOURCE" },
         incdirs = { "csrc" },
         libraries = { "pthread", "dl" },
      },
      ["waithandles.proc"] = {
         sources = { "csrc/proc.c" },
         defines = { "_GNU_SOURCE" },
         incdirs = { "csrc" },
      },
   },
   install = {
      bin = { waithandle = "bin/waithandle" },
   },
}
