-- The world misbehaves: a cleaner (systemd-tmpfiles, logind RemoveIPC, a
-- user's rm) unlinks registry files and object files under live processes,
-- and other users share the directory. Never two holders of what is not lost
-- (an independent witness: a symbolic link only one critical section at a
-- time can create), lost holds reported, and each user gets the documented
-- outcome.
local wh = require "waithandles"
local H = require "helpers"
local T = H.whtest

-- Child code: take `name` (lock, semaphore ticket or rwlock write, per ARGS.kind) and make
-- the witness while holding; helpers shared by the children below.
local TAKE = [[
local function object(name)
  if ARGS.kind == "semaphore" then return wh.semaphore(name, 1, { dir = ARGS.dir, abandonment_check = 0.01 }) end
  if ARGS.kind == "rwlock" then return wh.rwlock(name, { dir = ARGS.dir, abandonment_check = 0.01 }) end
  return wh.lock(name, { dir = ARGS.dir, abandonment_check = 0.01 })
end
local function try(o, t)
  if ARGS.kind == "rwlock" then return o:try_acquire_write(t) end
  return o:try_acquire(t)
end
local function witness_in()
  if not pcall(T.symlink, "x", ARGS.witness) then say("VIOLATION") os.exit(1) end
end
local function witness_out() os.remove(ARGS.witness) end
-- Tries `name` for `seconds`, each hold witnessed; returns how many it got.
local function keep_trying(name, seconds)
  local o, got, stop = object(name), 0, T.now() + seconds
  while T.now() < stop do
    local x = try(o)
    if x then witness_in() got = got + 1 witness_out() x:release() end
    T.sleep(0.005)
  end
  return got
end
]]

describe("outside interference", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  describe("a registry file unlinked under live processes", function()
    for _, kind in ipairs({ "lock", "semaphore", "rwlock" }) do
      it("(" .. kind .. ") never gives one object to two holders; the old holds are reported lost", function()
        local args = { dir = dir, kind = kind, witness = dir .. "/witness", go = dir .. "/go",
          exit_a = dir .. "/exit-a", release_d = dir .. "/release-d" }
        -- A and B take a slot each (a hold on another object), in the first registry file.
        local a = H.spawn(TAKE .. [[
          local h = assert(try(object("a")))
          say("registered")
          wait_file(ARGS.exit_a, 60)
        ]], args)
        a:expect("registered")
        local b = H.spawn(TAKE .. [[
          local h = assert(try(object("b")))
          say("registered")
          wait_file(ARGS.go, 60)
          say("lost", tostring(h:is_lost()), tostring(h:is_held()))
          say("B got", keep_trying("L", 1))
        ]], args)
        b:expect("registered")
        assert.is_true(os.remove(dir .. "/.registry-00"))
        -- D comes later: a new registry file, a new identity; it holds L.
        local d = H.spawn(TAKE .. [[
          local h = assert(try(object("L")))
          witness_in()
          say("holding")
          wait_file(ARGS.release_d, 60)
          witness_out()
          assert(not h:is_lost(), "D's hold was reported lost")
          h:release()
          say("released")
        ]], args)
        d:expect("holding")
        H.touch(args.exit_a)
        a:ok()
        H.touch(args.go)
        -- B (the old file) and E (a newcomer) try L for a second while D holds it.
        local e = H.spawn(TAKE .. [[ say("E got", keep_trying("L", 1)) ]], args)
        b:said("lost true false")
        b:expect("B got 0", 20)
        e:expect("E got 0", 20)
        H.touch(args.release_d)
        d:expect("released")
        d:ok()
        b:ok()
        e:ok()
        -- And L is usable again by anyone.
        local p = H.spawn(TAKE .. [[ say(try(object("L")) and "acquired" or "busy") ]], args)
        p:said("acquired")
        p:ok()
      end)
    end
  end)

  describe("an object file unlinked under its holder and waiters", function()
    for _, kind in ipairs({ "lock", "semaphore", "rwlock" }) do
      it("(" .. kind .. ") blocking, async and try waiters move to the file at the path; the old hold is lost", function()
        local args = { dir = dir, kind = kind, witness = dir .. "/witness", stop = dir .. "/stop" }
        local obj = ({ lock = wh.lock, rwlock = wh.rwlock })[kind]
        local path = (kind == "semaphore" and wh.semaphore("L", 1, { dir = dir }) or obj("L", { dir = dir })).path
        local holder = H.spawn(TAKE .. [[
          local h = assert(try(object("L")))
          witness_in()
          say("holding")
          wait_file(ARGS.dir .. "/removed", 60)
          local t0 = T.now()
          while h:is_held() do assert(T.now() < t0 + 1, "still held") T.sleep(0.001) end
          say("lost", tostring(h:is_lost()))
          witness_out()
          say("release", tostring(h:release()))
        ]], args)
        holder:expect("holding")
        local waiters = {}
        for _, how in ipairs({ "blocking", "async", "try" }) do
          waiters[#waiters + 1] = H.spawn(TAKE .. [[
            local l = object("L")
            say("waiting")
            local got = 0
            while not exists(ARGS.stop) do
              local h
              local rw = ARGS.kind == "rwlock"
              if ARGS.how == "blocking" then
                if rw then h = l:try_acquire_write(0.05) else h = l:try_acquire(0.05) end
              elseif ARGS.how == "async" then
                local o = { sleep = T.sleep }
                if rw then h = l:try_acquire_write_async(0.05, o) else h = l:try_acquire_async(0.05, o) end
              else
                h = try(l)
                T.sleep(0.003)
              end
              if h then witness_in() got = got + 1 T.sleep(0.002) witness_out() h:release() end
            end
            say("got", got)
          ]], { dir = dir, kind = kind, how = how, witness = args.witness, stop = args.stop })
          waiters[#waiters]:expect("waiting")
        end
        H.sleep(0.1)
        assert.is_true(os.remove(path))
        H.touch(dir .. "/removed")
        holder:said("lost true")
        holder:said("release true")
        holder:ok()
        H.sleep(1) -- the waiters take the new file's object in turn, with the witness
        H.touch(args.stop)
        local total = 0
        for _, w in ipairs(waiters) do
          total = total + tonumber(w:expect("^got %d+$", 20):match("%d+"))
          w:ok()
        end
        assert.is_true(total > 3, "the waiters got the new object only " .. total .. " times")
        assert.is_truthy(H.exists(path), "the object was made again at its path")
      end)
    end
  end)

  describe("registry files", function()
    it("are made with modes from the directory, never from an object's mode", function()
      local shared = dir .. "/shared"
      os.execute("mkdir -m 01777 " .. shared) -- as the default directory is made
      local l = wh.lock("private", { dir = shared, mode = 384 }) -- 0600
      assert.is_truthy(l:try_acquire())
      assert.are.equal(438, T.stat(shared .. "/.registry-00").mode % 512)
      assert.are.equal(384, T.stat(l.path).mode % 512)
      local private = dir .. "/private"
      os.execute("mkdir -m 0700 " .. private)
      assert.is_truthy(wh.lock("x", { dir = private, mode = 438 }):try_acquire())
      assert.are.equal(384, T.stat(private .. "/.registry-00").mode % 512)
    end)
  end)

  describe("another user (run as root)", function()
    local shared
    before_each(function()
      shared = dir .. "/shared"
      os.execute("chmod 0755 " .. dir)
      os.execute("mkdir -m 01777 " .. shared) -- as the default directory is made
      assert.is_truthy(wh.lock("root-first", { dir = shared, mode = 384 }):try_acquire())
    end)

    it("uses the directory after root's private object, but not that object", function()
      if not H.is_root then return pending("needs root") end
      local c = H.spawn_as("nobody", [[
        local ok, err = pcall(wh.lock, "root-first", { dir = ARGS.dir })
        say(ok and "opened" or (err.code .. " " .. tostring(err.errno)))
        local h = wh.lock("everyone", { dir = ARGS.dir }):try_acquire()
        say(h and "acquired" or "busy")
      ]], { dir = shared })
      c:said("os 13")
      c:said("acquired")
      c:ok()
      -- Exclusion across users on a shared object.
      local mine = assert(wh.lock("everyone", { dir = shared }):try_acquire())
      local c2 = H.spawn_as("nobody", [[
        say(wh.lock("everyone", { dir = ARGS.dir }):try_acquire() and "acquired" or "busy")
      ]], { dir = shared })
      c2:said("busy")
      c2:ok()
      mine:release()
    end)

    it("gets corrupt for a file planted by another user, unsafe for a directory squatted by one", function()
      if not H.is_root then return pending("needs root") end
      local c = H.spawn_as("nobody", [[
        local f = assert(io.open(ARGS.dir .. "/planted", "w"))
        f:write(("junk"):rep(100))
        f:close()
        say("done")
      ]], { dir = shared })
      c:said("done")
      c:ok()
      H.assert_code("corrupt", "planted", wh.lock, "planted", { dir = shared })
      os.execute("mkdir -m 0777 " .. dir .. "/squat && chown nobody " .. dir .. "/squat")
      H.assert_code("unsafe", "x", wh.lock, "x", { dir = dir .. "/squat" })
    end)

    it("skips a registry file planted by a user with a narrow mode and takes a slot elsewhere", function()
      if not H.is_root then return pending("needs root") end
      local fresh = dir .. "/fresh"
      os.execute("mkdir -m 01777 " .. fresh)
      local c = H.spawn_as("nobody", [[
        local f = assert(io.open(ARGS.dir .. "/.registry-00", "w"))
        f:close()
        os.execute("chmod 0600 " .. ARGS.dir .. "/.registry-00")
        say("planted")
      ]], { dir = fresh })
      c:said("planted")
      c:ok()
      local d = H.spawn_as("daemon", [[
        local h = wh.lock("x", { dir = ARGS.dir }):try_acquire()
        say(h and "acquired" or "busy")
      ]], { dir = fresh })
      d:said("acquired")
      d:ok()
    end)
  end)
end)
