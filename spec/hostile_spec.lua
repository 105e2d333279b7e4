-- Bad files and hostile input (API.md "Details"): every case runs in a child
-- interpreter, which must end normally (never a crash or a hang) and report
-- the documented error code; planted files are left as they were; nothing is
-- created outside the lock directory; no descriptor leaks.
local H = require "helpers"
local wh = require "waithandles"
local T = H.whtest

-- Seconds since the epoch of the last modification (coreutils stat, no links followed).
local function mtime(p)
  return tonumber(H.sh("stat -c %Y '" .. p .. "'"):match("%d+"))
end

local function ls(dir)
  local names = {}
  for n in H.sh("ls -A1 '" .. dir .. "'"):gmatch("[^\n]+") do names[#names + 1] = n end
  table.sort(names)
  return names
end

local function u32le(n)
  return string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 16777216) % 256)
end

local function u64le(n)
  return u32le(n % 4294967296) .. u32le(math.floor(n / 4294967296))
end

-- s with the bytes at offset off (0-based) replaced by b.
local function patch(s, off, b)
  return s:sub(1, off) .. b .. s:sub(off + #b + 1)
end

-- Deterministic garbage (Park-Miller; exact in doubles and integers alike).
local function garbage(n, seed)
  local x, t = seed or 12345, {}
  for i = 1, n do
    x = (x * 16807) % 2147483647
    t[i] = string.char(x % 256)
  end
  local s = table.concat(t)
  if s:sub(1, 8) == "WAITHDL1" then s = "X" .. s:sub(2) end
  return s
end

-- The child: open the object described by ARGS and try it once; say the outcome:
-- "acquired <held while held>", "busy", "error <code>" (+ "message ..."), or "raw <string error>".
local TRY = [[
  local function open(a)
    local opts = { dir = a.dir }
    if a.kind == "semaphore" then return wh.semaphore(a.name, a.max or 1, opts) end
    if a.kind == "rwlock" then return wh.rwlock(a.name, opts) end
    return wh.lock(a.name, opts)
  end
  local ok, r = pcall(function()
    local o = open(ARGS)
    local h
    if ARGS.kind == "rwlock" then h = o:try_acquire_write() else h = o:try_acquire() end
    if not h then return "busy" end
    local held = o:info().held
    if h:release() ~= true then return "release failed" end
    return "acquired " .. held
  end)
  if ok then
    say(r)
  elseif type(r) == "table" then
    say("error " .. tostring(r.code))
    say("message " .. tostring(r.message))
  else
    say("raw " .. tostring(r))
  end
]]

-- Runs TRY in a child; asserts it ended normally; returns its first line and all it said.
local function try_in_child(args)
  local c = H.spawn(TRY, args)
  local line = c:line(20)
  local st = c:wait(20)
  local out = c:output()
  assert(st.code == 0, ("the child did not end normally (%s); it said:\n%s"):format(
    st.code and ("exit " .. st.code) or ("signal " .. tostring(st.signal)), out))
  return line, out
end

local function expect_code(want, args, what)
  local line, out = try_in_child(args)
  local ok = false
  if type(want) == "table" then
    for _, w in ipairs(want) do ok = ok or line == w end
  else
    ok = line == want
  end
  assert(ok, ("%s: expected %s, got:\n%s"):format(what or args.name,
    type(want) == "table" and table.concat(want, " or ") or want, out))
  return line
end

-- Plants `bytes` as the object file `name` of kind k in dir: a child opening
-- it must report `want`, and the file must be left as it was.
local function refused(dir, name, k, bytes, want)
  H.write_file(dir .. "/" .. name, bytes)
  expect_code(want, { dir = dir, name = name, kind = k.kind, max = k.max })
  assert(H.read_file(dir .. "/" .. name) == bytes, name .. " was changed")
end

local KINDS = {
  { kind = "lock" },
  { kind = "semaphore", max = 3 },
  { kind = "rwlock" },
}

-- Bytes of a valid, unheld object file of each kind (made by a child, which
-- exits, so no process has them mapped).
local templates
local function template(kind)
  if templates == nil then
    local dir = H.tmpdir()
    local c = H.spawn([[
      for _, k in ipairs({ "lock", "semaphore", "rwlock" }) do
        local o
        if k == "lock" then o = wh.lock("t-" .. k, { dir = ARGS.dir })
        elseif k == "semaphore" then o = wh.semaphore("t-" .. k, 3, { dir = ARGS.dir })
        else o = wh.rwlock("t-" .. k, { dir = ARGS.dir }) end
        local h = k == "rwlock" and o:try_acquire_write() or o:try_acquire()
        assert(h:release())
      end
      say("made")
    ]], { dir = dir })
    c:expect("made")
    c:ok()
    templates = {}
    for _, k in ipairs({ "lock", "semaphore", "rwlock" }) do
      templates[k] = assert(H.read_file(dir .. "/t-" .. k))
      assert(#templates[k] >= 256)
    end
  end
  return templates[kind]
end

describe("hostile files", function()
  after_each(H.cleanup)

  describe("a bad object file", function()
    it("of garbage, whatever its size, gives corrupt and is left as it was", function()
      local dir = H.tmpdir()
      for _, k in ipairs(KINDS) do
        for i, size in ipairs({ 1, 7, 8, 100, 255, 256, 257, 4096, 4353, 70000 }) do
          local name = ("g-%s-%d"):format(k.kind, size)
          refused(dir, name, k, garbage(size, i * 7919 + #k.kind), "error corrupt")
        end
      end
    end)

    it("truncated inside its header gives corrupt and is left as it was", function()
      local dir = H.tmpdir()
      for _, k in ipairs(KINDS) do
        local valid = template(k.kind)
        for _, len in ipairs({ 1, 8, 12, 64, 128, 200, 255 }) do
          local name = ("t-%s-%d"):format(k.kind, len)
          refused(dir, name, k, valid:sub(1, len), "error corrupt")
        end
      end
    end)

    it("truncated after a whole valid header is completed (a creator's unfinished file) or corrupt", function()
      local dir = H.tmpdir()
      for _, k in ipairs(KINDS) do
        local valid = template(k.kind)
        for _, len in ipairs({ 256, 257, 300, math.floor(#valid / 2), #valid - 1 }) do
          local name = ("c-%s-%d"):format(k.kind, len)
          H.write_file(dir .. "/" .. name, valid:sub(1, len))
          local line = expect_code({ "acquired 1", "error corrupt" },
            { dir = dir, name = name, kind = k.kind, max = k.max }, name)
          local size = #H.read_file(dir .. "/" .. name)
          if line == "acquired 1" then
            assert.are.equal(#valid, size)
            -- and it keeps working, in another process too
            expect_code("acquired 1", { dir = dir, name = name, kind = k.kind, max = k.max }, name)
          else
            assert.are.equal(len, size)
          end
        end
      end
    end)

    it("that is empty (its creator died before initialising it) is initialised and usable", function()
      local dir = H.tmpdir()
      for _, k in ipairs(KINDS) do
        local name = "e-" .. k.kind
        H.write_file(dir .. "/" .. name, "")
        expect_code("acquired 1", { dir = dir, name = name, kind = k.kind, max = k.max })
        assert.are.equal(#template(k.kind), #H.read_file(dir .. "/" .. name))
      end
      -- and it excludes across processes like any lock
      local l = wh.lock("e-lock", { dir = dir })
      local h = l:try_acquire()
      assert.is_truthy(h)
      expect_code("busy", { dir = dir, name = "e-lock", kind = "lock" })
      h:release()
    end)

    it("with a wrong magic gives corrupt", function()
      local dir = H.tmpdir()
      for _, k in ipairs(KINDS) do
        local valid = template(k.kind)
        for i, magic in ipairs({ "XAITHDL1", "WAITHDL2", "WAITREG1", ("\0"):rep(8), ("\255"):rep(8) }) do
          local name = ("m-%s-%d"):format(k.kind, i)
          refused(dir, name, k, patch(valid, 0, magic), "error corrupt")
        end
      end
    end)

    it("of another format version (u32 at offset 8) gives mismatch", function()
      local dir = H.tmpdir()
      for _, k in ipairs(KINDS) do
        local valid = template(k.kind)
        assert.are.equal(u32le(require("waithandles.core").format_version), valid:sub(9, 12))
        for _, v in ipairs({ 0, 1, 3, 256, 4294967295 }) do
          local name = ("v-%s-%d"):format(k.kind, v)
          refused(dir, name, k, patch(valid, 8, u32le(v)), "error mismatch")
        end
      end
    end)

    it("of another kind or another max_count gives mismatch", function()
      local dir = H.tmpdir()
      local made = H.spawn([[
        assert(wh.lock("is-lock", { dir = ARGS.dir }):try_acquire()):release()
        assert(wh.semaphore("is-sem3", 3, { dir = ARGS.dir }):try_acquire()):release()
        assert(wh.rwlock("is-rw", { dir = ARGS.dir }):try_acquire_read()):release()
        say("made")
      ]], { dir = dir })
      made:expect("made")
      made:ok()
      local cases = {
        { "is-lock", "semaphore", 1 }, { "is-lock", "rwlock" },
        { "is-sem3", "lock" }, { "is-sem3", "rwlock" }, { "is-sem3", "semaphore", 4 },
        { "is-sem3", "semaphore", 1 },
        { "is-rw", "lock" }, { "is-rw", "semaphore", 1 },
      }
      for _, c in ipairs(cases) do
        expect_code("error mismatch", { dir = dir, name = c[1], kind = c[2], max = c[3] },
          c[1] .. " as " .. c[2] .. (c[3] and ("(" .. c[3] .. ")") or ""))
      end
      -- the right kind still works
      expect_code("acquired 1", { dir = dir, name = "is-sem3", kind = "semaphore", max = 3 })
    end)

    it("used by another kind in the same process gives mismatch", function()
      local dir = H.tmpdir()
      local c = H.spawn([[
        local l = wh.lock("same", { dir = ARGS.dir })
        local h = assert(l:try_acquire())
        for _, f in ipairs({
          function() return wh.semaphore("same", 1, { dir = ARGS.dir }):try_acquire() end,
          function() return wh.rwlock("same", { dir = ARGS.dir }):try_acquire_read() end,
        }) do
          local ok, err = pcall(f)
          say(ok and "no error" or (type(err) == "table" and err.code or tostring(err)))
        end
        local s = wh.semaphore("sem2", 2, { dir = ARGS.dir })
        local t = assert(s:try_acquire())
        local ok, err = pcall(function() return wh.semaphore("sem2", 5, { dir = ARGS.dir }):try_acquire() end)
        say(ok and "no error" or (type(err) == "table" and err.code or tostring(err)))
        h:release()
        t:release()
      ]], { dir = dir })
      assert.are.equal("mismatch", c:line(10))
      assert.are.equal("mismatch", c:line(10))
      assert.are.equal("mismatch", c:line(10))
      c:ok()
    end)

    it("with inconsistent layout fields gives corrupt", function()
      local dir = H.tmpdir()
      -- offsets: header_size 12, kind 16, max_count 20, nslots 24, nwait 28,
      -- slot_off 32, wait_off 36, file_size 40 (u64)
      local cases = {
        { "lock", 12, u32le(255) }, { "lock", 12, u32le(0) }, { "lock", 16, u32le(0) },
        { "lock", 16, u32le(5) }, { "lock", 16, u32le(99) }, { "lock", 20, u32le(2) },
        { "lock", 24, u32le(1024) }, { "lock", 28, u32le(0) }, { "lock", 28, u32le(100000000) },
        { "lock", 32, u32le(4096) }, { "lock", 36, u32le(0) }, { "lock", 36, u32le(4294967295) },
        { "lock", 40, u64le(0) }, { "lock", 40, u64le(2 ^ 40) }, { "lock", 40, u64le(100) },
        { "semaphore", 20, u32le(0) }, { "semaphore", 20, u32le(2147483648) },
        { "semaphore", 24, u32le(0) }, { "semaphore", 24, u32le(4294967295) },
        { "semaphore", 32, u32le(7) }, { "semaphore", 40, u64le(2 ^ 50) },
        { "rwlock", 20, u32le(3) }, { "rwlock", 24, u32le(2000) }, { "rwlock", 36, u32le(12) },
      }
      for i, c in ipairs(cases) do
        local name = ("f-%d"):format(i)
        H.write_file(dir .. "/" .. name, patch(template(c[1]), c[2], c[3]))
        expect_code("error corrupt", { dir = dir, name = name, kind = c[1], max = c[1] == "semaphore" and 3 or nil },
          ("%s with offset %d patched"):format(c[1], c[2]))
      end
      -- another valid kind id in a file of the wrong layout: not a valid file of either kind
      for i, c in ipairs({ { "lock", 2 }, { "lock", 3 }, { "lock", 4 }, { "rwlock", 1 }, { "semaphore", 3 } }) do
        local name = ("k-%d"):format(i)
        H.write_file(dir .. "/" .. name, patch(template(c[1]), 16, u32le(c[2])))
        expect_code({ "error corrupt", "error mismatch" },
          { dir = dir, name = name, kind = c[1], max = c[1] == "semaphore" and 3 or nil })
      end
    end)

    it("with random bytes in its shared state never crashes or hangs a process", function()
      local dir = H.tmpdir()
      local code = [[
        local function open(a)
          local opts = { dir = a.dir, abandonment_check = 0.02 }
          if a.kind == "semaphore" then return wh.semaphore(a.name, 3, opts) end
          if a.kind == "rwlock" then return wh.rwlock(a.name, opts) end
          return wh.lock(a.name, opts)
        end
        local function try(f, ...)
          local ok, r = pcall(f, ...)
          if ok and r ~= nil and type(r) ~= "boolean" and r.release then pcall(r.release, r) end
          if not ok and type(r) ~= "table" then error("a raw error: " .. tostring(r)) end
        end
        local o = open(ARGS)
        local t0 = T.now()
        if ARGS.kind == "rwlock" then
          try(o.try_acquire_read, o)
          try(o.try_acquire_write, o)
          try(function()
            local u = o:try_acquire_upgradeable_read()
            if u then u:try_upgrade(0.05) u:release() end
          end)
          try(o.acquire_write, o, 0.1)
          try(o.acquire_read_async, o, 0.1, { sleep = function(s) T.sleep(s) end })
        else
          try(o.try_acquire, o)
          try(o.acquire, o, 0.1)
          try(o.acquire_async, o, 0.1, { sleep = function(s) T.sleep(s) end })
        end
        try(o.info, o)
        -- after info() (which repairs what it can), one more round
        if ARGS.kind == "rwlock" then try(o.acquire_write, o, 0.1) else try(o.acquire, o, 0.1) end
        say("survived", T.now() - t0)
      ]]
      for _, k in ipairs(KINDS) do
        local valid = template(k.kind)
        for seed = 1, 6 do
          local name = ("z-%s-%d"):format(k.kind, seed)
          -- keep the immutable header (64 bytes), scramble everything after it
          H.write_file(dir .. "/" .. name, valid:sub(1, 64) .. garbage(#valid - 64, seed * 104729))
          local c = H.spawn(code, { dir = dir, name = name, kind = k.kind })
          local line = c:line(20)
          local st = c:wait(20)
          assert(st.code == 0 and line and line:match("^survived"),
            ("%s: %s; it said:\n%s"):format(name, st.code and ("exit " .. st.code) or ("signal " .. tostring(st.signal)), c:output()))
          assert(tonumber(line:match("survived (%S+)")) < 10, name .. " took " .. line)
        end
      end
    end)
  end)

  describe("a planted link or special file", function()
    it("a symbolic link at obj.path is never followed: unsafe, and its target is untouched", function()
      local dir, elsewhere = H.tmpdir(), H.tmpdir()
      local target = elsewhere .. "/precious"
      H.write_file(target, "precious data\n")
      os.execute("touch -d @1000000000 '" .. target .. "'")
      assert.are.equal(1000000000, mtime(target))
      for _, k in ipairs(KINDS) do
        local name = "link-" .. k.kind
        assert.is_true(T.symlink(target, dir .. "/" .. name))
        expect_code("error unsafe", { dir = dir, name = name, kind = k.kind, max = k.max })
        assert.are.equal("link", T.stat(dir .. "/" .. name).type)
      end
      assert.are.equal("precious data\n", H.read_file(target))
      assert.are.equal(1000000000, mtime(target))
      assert.are.equal("file", T.stat(target).type)
    end)

    it("a symbolic link to a valid lock file elsewhere is not followed either", function()
      local dir, elsewhere = H.tmpdir(), H.tmpdir()
      H.write_file(elsewhere .. "/real", template("lock"))
      os.execute("touch -d @1000000000 '" .. elsewhere .. "/real'")
      assert.is_true(T.symlink(elsewhere .. "/real", dir .. "/ln"))
      expect_code("error unsafe", { dir = dir, name = "ln", kind = "lock" })
      assert(H.read_file(elsewhere .. "/real") == template("lock"), "the target was changed")
      assert.are.equal(1000000000, mtime(elsewhere .. "/real"))
    end)

    it("a dangling symbolic link is not followed: unsafe, and nothing is created at its target", function()
      local dir, elsewhere = H.tmpdir(), H.tmpdir()
      assert.is_true(T.symlink(elsewhere .. "/new", dir .. "/dangling"))
      expect_code("error unsafe", { dir = dir, name = "dangling", kind = "lock" })
      assert.is_nil(T.stat(elsewhere .. "/new"))
      assert.are.same({}, ls(elsewhere))
    end)

    it("a FIFO at obj.path gives unsafe without hanging", function()
      local dir = H.tmpdir()
      for _, k in ipairs(KINDS) do
        local name = "fifo-" .. k.kind
        assert.is_true(T.mkfifo(dir .. "/" .. name))
        local t0 = T.now()
        expect_code("error unsafe", { dir = dir, name = name, kind = k.kind, max = k.max })
        assert.is_true(T.now() - t0 < 10)
        assert.are.equal("other", T.stat(dir .. "/" .. name).type)
      end
    end)

    it("a directory at obj.path is refused, never a crash", function()
      local dir = H.tmpdir()
      os.execute("mkdir '" .. dir .. "/adir'")
      expect_code({ "error unsafe", "error corrupt", "error os" }, { dir = dir, name = "adir", kind = "lock" })
      assert.are.equal("directory", T.stat(dir .. "/adir").type)
    end)

    it("planted registry files give an error at the first acquisition, never a crash", function()
      local cases = {
        { "garbage", "error corrupt" },
        { "other version", "error mismatch" },
        { "symlink", "error unsafe" },
        { "fifo", "error unsafe" },
      }
      for _, case in ipairs(cases) do
        local dir, elsewhere = H.tmpdir(), H.tmpdir()
        local reg = dir .. "/.registry-00"
        if case[1] == "garbage" then
          H.write_file(reg, garbage(4160, 99))
        elseif case[1] == "other version" then
          -- a registry shard as another version would write it: magic, version 3, zeros
          H.write_file(reg, "WAITREG1" .. u32le(3) .. ("\0"):rep(4148))
        elseif case[1] == "symlink" then
          H.write_file(elsewhere .. "/t", "keep")
          assert.is_true(T.symlink(elsewhere .. "/t", reg))
        else
          assert.is_true(T.mkfifo(reg))
        end
        expect_code(case[2], { dir = dir, name = "x", kind = "lock" }, "registry " .. case[1])
        if case[1] == "symlink" then assert.are.equal("keep", H.read_file(elsewhere .. "/t")) end
      end
    end)
  end)

  describe("a bad lock directory", function()
    it("that is a symbolic link gives unsafe, and nothing is created in its target", function()
      local base = H.tmpdir()
      os.execute("mkdir -m 0700 '" .. base .. "/real'")
      assert.is_true(T.symlink(base .. "/real", base .. "/link"))
      for _, d in ipairs({ base .. "/link", base .. "/link/", base .. "/link//" }) do
        expect_code("error unsafe", { dir = d, name = "x", kind = "lock" }, d)
      end
      assert.are.same({}, ls(base .. "/real"))
    end)

    it("that is world-writable without the sticky bit gives unsafe, and nothing is created in it", function()
      local base = H.tmpdir()
      local d = base .. "/ww"
      os.execute("mkdir '" .. d .. "'")
      assert.is_true(T.chmod(d, 511)) -- 0777
      for _, k in ipairs(KINDS) do
        expect_code("error unsafe", { dir = d, name = "x", kind = k.kind, max = k.max })
      end
      assert.are.same({}, ls(d))
      -- with the sticky bit it is fine (like /tmp)
      assert.is_true(T.chmod(d, 1023)) -- 01777
      expect_code("acquired 1", { dir = d, name = "x", kind = "lock" })
    end)

    it("owned by another user (neither root nor us) gives unsafe", function()
      if not H.is_root then
        pending("needs root to chown")
        return
      end
      local base = H.tmpdir()
      local d = base .. "/theirs"
      os.execute("mkdir -m 0755 '" .. d .. "'")
      assert.is_true(T.chown(d, 65534, 65534))
      expect_code("error unsafe", { dir = d, name = "x", kind = "lock" })
      assert.are.same({}, ls(d))
    end)

    it("that is a regular file gives unsafe or os, and the file is untouched", function()
      local base = H.tmpdir()
      H.write_file(base .. "/plain", "keep me")
      for _, d in ipairs({ base .. "/plain", base .. "/plain/sub" }) do
        expect_code({ "error unsafe", "error os" }, { dir = d, name = "x", kind = "lock" }, d)
      end
      assert.are.equal("keep me", H.read_file(base .. "/plain"))
      assert.are.equal("file", T.stat(base .. "/plain").type)
    end)

    it("that is a FIFO gives unsafe or os without hanging", function()
      local base = H.tmpdir()
      assert.is_true(T.mkfifo(base .. "/fifo"))
      local t0 = T.now()
      expect_code({ "error unsafe", "error os" }, { dir = base .. "/fifo", name = "x", kind = "lock" })
      assert.is_true(T.now() - t0 < 10)
      assert.are.equal("other", T.stat(base .. "/fifo").type)
    end)
  end)

  describe("hostile names", function()
    it("stay inside dir: ../x, /, NUL, 1000 backslashes, empty, 10 000 chars", function()
      local base = H.tmpdir()
      local dir = base .. "/locks"
      local names = { "../x", "/", "a\0b", ("\\"):rep(1000), "", ("n"):rep(10000), "..", ".",
        "../../../../../../tmp/wh-hostile-escape", "/etc/passwd", "x/../../y", "\0", ".registry-00" }
      local c = H.spawn([[
        for i, name in ipairs(ARGS.names) do
          for _, kind in ipairs({ "lock", "semaphore", "rwlock" }) do
            local o
            if kind == "lock" then o = wh.lock(name, { dir = ARGS.dir })
            elseif kind == "semaphore" then o = wh.semaphore(name .. "\1s", 2, { dir = ARGS.dir })
            else o = wh.rwlock(name .. "\1r", { dir = ARGS.dir }) end
            local h = kind == "rwlock" and o:try_acquire_write() or o:try_acquire()
            if not h then error("name " .. i .. " (" .. kind .. ") was busy") end
            if o.path ~= ARGS.dir .. "/" .. o.name then error("path " .. o.path) end
            say("path", o.path)
            h:release()
          end
        end
        say("done")
      ]], { dir = dir, names = names })
      local paths = {}
      while true do
        local l = c:line(20)
        assert(l, "the child stopped: " .. c:output())
        if l == "done" then break end
        paths[#paths + 1] = l:match("^path (.*)$")
      end
      c:ok()
      assert.are.equal(3 * #names, #paths)
      assert.are.same({ "locks" }, ls(base))
      assert.is_nil(T.stat("/tmp/wh-hostile-escape"))
      for _, n in ipairs(ls(dir)) do
        assert(n:match("^[A-Za-z0-9_-][A-Za-z0-9._-]*$") or n:match("^%.registry%-%d%d$"), n)
        assert(#n <= 255, n)
        assert.are.equal("file", T.stat(dir .. "/" .. n).type)
      end
      for _, p in ipairs(paths) do
        assert.are.equal(dir .. "/", p:sub(1, #dir + 1))
        assert.is_nil(p:sub(#dir + 2):find("/", 1, true), p)
      end
    end)
  end)

  describe("descriptors", function()
    it("do not leak over 200 create/acquire/release/collect cycles on one name", function()
      local dir = H.tmpdir()
      local c = H.spawn([[
        local dir = ARGS.dir
        local keep = wh.lock("leak", { dir = dir }) -- an object that stays open meanwhile
        local function cycle(i)
          local l = wh.lock("leak", { dir = dir })
          local h = l:acquire(1)
          if i % 2 == 0 then assert(h:release() == true) end -- odd: left to __gc
          local s = wh.semaphore("leak-s", 2, { dir = dir })
          local t = s:acquire(1)
          local rw = wh.rwlock("leak-rw", { dir = dir })
          local r = rw:acquire_read(1)
          if i % 3 == 0 then t:release() r:release() end
        end
        cycle(0)
        collectgarbage() collectgarbage()
        local n0 = T.nfds()
        for i = 1, 200 do
          cycle(i)
          collectgarbage() collectgarbage()
        end
        local n1 = T.nfds()
        keep = nil
        collectgarbage() collectgarbage()
        say("fds", n0, n1)
      ]], { dir = dir })
      local l = c:expect("^fds ")
      c:ok()
      local n0, n1 = l:match("^fds (%d+) (%d+)$")
      assert.are.equal(n0, n1)
    end)

    it("do not leak over 50 failed opens of each kind of bad file or directory", function()
      local dir, elsewhere = H.tmpdir(), H.tmpdir()
      H.write_file(dir .. "/corrupt", garbage(1000, 5))
      H.write_file(dir .. "/short", template("lock"):sub(1, 100))
      H.write_file(dir .. "/version", patch(template("lock"), 8, u32le(9)))
      assert.is_true(T.symlink(elsewhere .. "/t", dir .. "/link"))
      assert.is_true(T.mkfifo(dir .. "/fifo"))
      local ww = elsewhere .. "/ww"
      os.execute("mkdir '" .. ww .. "'")
      assert.is_true(T.chmod(ww, 511))
      assert.is_true(T.symlink(dir, elsewhere .. "/dirlink"))
      local c = H.spawn([[
        local cases = {
          { "corrupt", function() return wh.lock("corrupt", { dir = ARGS.dir }):try_acquire() end },
          { "short", function() return wh.lock("short", { dir = ARGS.dir }):try_acquire() end },
          { "version", function() return wh.lock("version", { dir = ARGS.dir }):try_acquire() end },
          { "link", function() return wh.lock("link", { dir = ARGS.dir }):try_acquire() end },
          { "fifo", function() return wh.lock("fifo", { dir = ARGS.dir }):try_acquire() end },
          { "mismatch", function() return wh.semaphore("kind", 2, { dir = ARGS.dir }):try_acquire() end },
          { "unsafe dir", function() return wh.lock("x", { dir = ARGS.ww }):try_acquire() end },
          { "dir link", function() return wh.lock("x", { dir = ARGS.dirlink }):try_acquire() end },
        }
        assert(wh.lock("kind", { dir = ARGS.dir }):try_acquire()):release()
        collectgarbage() collectgarbage()
        for _, case in ipairs(cases) do
          local codes = {}
          local function run()
            local ok, err = pcall(case[2])
            if ok then error(case[1] .. " did not fail") end
            codes[type(err) == "table" and err.code or tostring(err)] = true
          end
          run()
          collectgarbage() collectgarbage()
          local n0 = T.nfds()
          for i = 1, 50 do run() end
          collectgarbage() collectgarbage()
          local n1 = T.nfds()
          local list = {}
          for k in pairs(codes) do list[#list + 1] = k end
          table.sort(list)
          say(case[1] .. ":", n0, n1, table.concat(list, ","))
        end
        say("done")
      ]], { dir = dir, ww = ww, dirlink = elsewhere .. "/dirlink" })
      local want = {
        corrupt = "corrupt", short = "corrupt", version = "mismatch", link = "unsafe", fifo = "unsafe",
        mismatch = "mismatch", ["unsafe dir"] = "unsafe", ["dir link"] = "unsafe",
      }
      local seen = 0
      while true do
        local l = c:line(30)
        assert(l, "the child stopped: " .. c:output())
        if l == "done" then break end
        local case, n0, n1, codes = l:match("^(.-): (%d+) (%d+) (%S+)$")
        assert(case, l)
        assert.are.equal(want[case], codes, case)
        assert.are.equal(n0, n1, case .. " leaked descriptors")
        seen = seen + 1
      end
      c:ok()
      assert.are.equal(8, seen)
    end)
  end)
end)
