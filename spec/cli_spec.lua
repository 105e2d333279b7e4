-- The command-line tool (bin/waithandle), installed into a temporary prefix by
-- `make install` for the Lua version under test and run as a real process
-- under that version's interpreter: exit codes, timeouts, the semaphore limit
-- and reader-writer exclusion with witnesses of their own, signals, SIGKILL
-- of the tool, info, list and remove, awkward names, and that --help, the
-- manual page and the README agree.
local H = require "helpers"
local wh = require "waithandles"
local whtest = H.whtest

-- A wait in a command's shell script: until the file $1/go exists or the
-- directory $1 is gone (after_each removes it), 20 s at most.
local WAIT_GO = 'n=0; while [ -d "$1" ] && [ ! -e "$1/go" ] && [ $n -lt 2000 ]; do '
  .. 'sleep 0.01; n=$((n+1)); done'

-- The signals a process ignores (from /proc/self/status), by number 1-4.
local function ignored_signals()
  local status = H.read_file("/proc/self/status") or ""
  local mask = tonumber((status:match("SigIgn:%s*(%x+)") or "0"):sub(-1), 16)
  local out = {}
  for sig = 1, 4 do out[sig] = math.floor(mask / 2 ^ (sig - 1)) % 2 == 1 end
  return out
end

-- A small JSON reader, to check what --json prints (objects and arrays become tables).
local function decode_json(s)
  local pos = 1
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local function char() return s:sub(pos, pos) end
  local function expect(c)
    assert(char() == c, ("JSON: %q expected at %d in %s"):format(c, pos, s))
    pos = pos + 1
  end
  local ESC = { n = "\n", t = "\t", r = "\r", b = "\b", f = "\f" }
  local function str()
    local out = {}
    expect('"')
    while char() ~= '"' do
      assert(char() ~= "", "JSON: unterminated string in " .. s)
      if char() == "\\" then
        local e = s:sub(pos + 1, pos + 1)
        if e == "u" then
          out[#out + 1] = string.char(tonumber(s:sub(pos + 2, pos + 5), 16))
          pos = pos + 6
        else
          out[#out + 1] = ESC[e] or e
          pos = pos + 2
        end
      else
        out[#out + 1] = char()
        pos = pos + 1
      end
    end
    pos = pos + 1
    return table.concat(out)
  end
  local value
  local function items(close, one)
    local t = {}
    pos = pos + 1
    ws()
    if char() == close then
      pos = pos + 1
      return t
    end
    while true do
      one(t)
      ws()
      if char() == close then
        pos = pos + 1
        return t
      end
      expect(",")
    end
  end
  function value()
    ws()
    local c = char()
    if c == "{" then
      return items("}", function(t)
        ws()
        local k = str()
        ws()
        expect(":")
        t[k] = value()
      end)
    elseif c == "[" then
      return items("]", function(t) t[#t + 1] = value() end)
    elseif c == '"' then
      return str()
    end
    for word, v in pairs({ ["true"] = true, ["false"] = false, null = "null" }) do
      if s:sub(pos, pos + #word - 1) == word then
        pos = pos + #word
        return v
      end
    end
    local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    assert(num and num ~= "", ("JSON: value expected at %d in %s"):format(pos, s))
    pos = pos + #num
    return tonumber(num)
  end
  local v = value()
  ws()
  assert(pos > #s, "JSON: trailing text in " .. s)
  return v
end

describe("waithandle (the command-line tool)", function()
  local version = os.getenv("WH_LUA_VERSION") or "5.4"
  local prefix, tool, dir, work, runs

  setup(function()
    prefix = whtest.mkdtemp()
    local build = os.getenv("WH_BUILD") or ("build/" .. version)
    local out = H.sh(("make -s --no-print-directory install PREFIX=%s LUA_VERSION=%s BUILD=%s")
      :format(prefix, version, build))
    tool = prefix .. "/bin/waithandle"
    assert(H.exists(tool), "make install did not install bin/waithandle:\n" .. out)
  end)

  teardown(function() os.execute("rm -rf '" .. prefix .. "'") end)

  before_each(function()
    dir, work, runs = H.tmpdir(), H.tmpdir(), 0
  end)

  after_each(H.cleanup)

  -- Starts `waithandle --dir <dir> args...` (`pre`: words before it, e.g. env); its stderr
  -- goes to a file, its stdout to the child's pipe.
  local function start(args, pre)
    runs = runs + 1
    local err = ("%s/err-%d"):format(work, runs)
    local argv = { "sh", "-c", 'e=$1; shift; exec "$@" 2>"$e"', "sh", err }
    for _, a in ipairs(pre or {}) do argv[#argv + 1] = a end
    for _, a in ipairs({ tool, "--dir", dir }) do argv[#argv + 1] = a end
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local c = H.spawn_argv(argv)
    c.err_path = err
    return c
  end

  -- Waits for a started tool: its exit status (128+N if it died of signal N), stdout, stderr.
  local function finish(c, timeout)
    local st = c:wait(timeout or 30)
    return st.code or 128 + st.signal, c.buf, H.read_file(c.err_path) or ""
  end

  local function run(args, pre) return finish(start(args, pre)) end

  -- A tool holding `name` (with options `opts`) while its command waits for work/go; the
  -- command has touched work/<tag> once it runs.
  local function holding(opts, name, tag)
    local args = {}
    for _, a in ipairs(opts) do args[#args + 1] = a end
    for _, a in ipairs({ name, "--", "sh", "-c", 'touch "$1/$2"; ' .. WAIT_GO, "sh", work, tag }) do
      args[#args + 1] = a
    end
    local c = start(args)
    H.await(c, function() return H.exists(work .. "/" .. tag) end, tag .. " to run", 20)
    return c
  end

  local function go() H.touch(work .. "/go") end

  describe("exit status", function()
    it("is the command's, with or without --, and the command's output passes through", function()
      local code, out = run({ "job", "--", "sh", "-c", "echo hello; exit 5" })
      assert.are.equal(5, code)
      assert.are.equal("hello\n", out)
      assert.are.equal(0, (run({ "job", "sh", "-c", "exit 0" })))
      assert.are.equal(3, (run({ "job", "sh", "-c", "exit 3" })))
    end)

    it("is 128+N when the command dies of signal N", function()
      assert.are.equal(143, (run({ "job", "--", "sh", "-c", "kill -TERM $$" })))
      assert.are.equal(137, (run({ "job", "--", "sh", "-c", "kill -KILL $$" })))
    end)

    it("is 127 for a command that is not found, 126 for one that cannot be run", function()
      local code, _, err = run({ "job", "--", "no-such-command-here" })
      assert.are.equal(127, code)
      assert.truthy(err:find("cannot run 'no-such-command-here'", 1, true), err)
      H.write_file(work .. "/not-executable", "echo hi\n")
      code, _, err = run({ "job", "--", work .. "/not-executable" })
      assert.are.equal(126, code)
      assert.truthy(err:find("cannot run", 1, true), err)
    end)

    it("is 2 with a one-line hint on stderr for every usage error", function()
      local cases = {
        {}, { "-x", "a", "true" }, { "--bogus", "a", "true" }, { "-s", "0", "a", "true" },
        { "-s", "2.5", "a", "true" }, { "-s", "x", "a", "true" }, { "-t", "-1", "a", "true" },
        { "-t", "nan", "a", "true" }, { "-t", "2147484", "a", "true" }, { "-E", "256", "a", "true" },
        { "-r", "-w", "a", "true" }, { "-s", "2", "-u", "a", "true" }, { "a" }, { "a", "--" },
        { "-t" }, { "--read=yes", "a", "true" }, { "--json", "a", "true" }, { "info" },
        { "info", "a", "b" }, { "list", "x" }, { "remove" }, { "-s", "2", "info", "a" },
        { "-n", "list" }, { "--json", "remove", "a" }, { "event" }, { "event", "set" },
        { "event", "bogus", "a" }, { "event", "set", "a", "b" }, { "event", "set", "a", "-t", "1" },
        { "event", "reset", "a", "-E", "3" }, { "--auto-reset", "a", "true" },
        { "--json", "event", "set", "a" }, { "--auto-reset", "info", "a" },
      }
      for _, args in ipairs(cases) do
        local code, out, err = run(args)
        local what = table.concat(args, " ")
        assert.are.equal(2, code, what)
        assert.are.equal("", out, what)
        assert.truthy(err:match("^waithandle: [^\n]+ %(try 'waithandle %-%-help'%)\n$"), what .. ": " .. err)
      end
    end)

    it("is 2 for --exact-name with a name that needs escaping, 0 with a valid one", function()
      local code, _, err = run({ "--exact-name", "a b", "true" })
      assert.are.equal(2, code)
      assert.truthy(err:find("not a valid exact name", 1, true), err)
      assert.are.equal(0, (run({ "--exact-name", "a.b-c_1", "true" })))
      assert.truthy(H.exists(dir .. "/a.b-c_1"))
    end)

    it("is 125 when the NAME is another kind of object", function()
      assert.are.equal(0, (run({ "-s", "2", "pool", "true" })))
      local code, _, err = run({ "-s", "3", "pool", "true" })
      assert.are.equal(125, code)
      assert.truthy(err:find("max_count 2", 1, true), err)
      assert.are.equal(125, (run({ "-r", "pool", "true" })))
    end)
  end)

  describe("while another process holds NAME", function()
    it("-t 0 exits 1 at once without running the command, -E 7 exits 7, -q says nothing", function()
      local holder = H.lock_holder(dir, "job", 60)
      local code, err
      local took = H.time(function()
        code, _, err = run({ "-t", "0", "job", "--", "touch", work .. "/ran" })
      end)
      assert.are.equal(1, code)
      assert.is_true(took < 5, "took " .. took .. " s")
      assert.is_false(H.exists(work .. "/ran"))
      assert.truthy(err:find("held by pid " .. holder.pid, 1, true), err)
      assert.are.equal(7, (run({ "-t", "0", "-E", "7", "job", "--", "true" })))
      assert.are.equal(7, (run({ "-nE7", "job", "true" })))
      code, _, err = run({ "-n", "-q", "job", "true" })
      assert.are.equal(1, code)
      assert.are.equal("", err)
    end)

    it("-t SECONDS gives up after about that long", function()
      H.lock_holder(dir, "job", 60)
      local code
      local took = H.time(function() code = run({ "-t", "0.5", "job", "true" }) end)
      assert.are.equal(1, code)
      assert.is_true(took >= 0.45 and took < 10, "took " .. took .. " s")
    end)

    it("waits (forever by default, or within -t) and runs the command once it is free", function()
      local holder = H.lock_holder_until_waited(dir, "job", 0.2)
      local code, _, err = run({ "-v", "job", "--", "touch", work .. "/ran" })
      assert.are.equal(0, code, err)
      assert.truthy(H.exists(work .. "/ran"))
      holder:expect("released")
      holder:ok()
      assert.truthy(err:find("waiting for lock 'job', held by pid " .. holder.pid, 1, true), err)
      assert.truthy(err:find("acquired lock 'job' after", 1, true), err)
      holder = H.lock_holder_until_waited(dir, "job", 0.2)
      assert.are.equal(0, (run({ "-t", "20", "job", "true" })))
      holder:ok()
    end)
  end)

  describe("holds", function()
    it("a semaphore ticket: never more than N of 8 concurrent commands run at once", function()
      -- Each command takes one of two marker files with O_EXCL (set -C) while it runs: with
      -- at most two running, one is always free; a third at once would find none.
      local script = [[
set -C
if (: >"$1/m1") 2>/dev/null; then m=m1; elif (: >"$1/m2") 2>/dev/null; then m=m2
else echo "three at once" >>"$1/violations"; exit 3; fi
echo $m >>"$1/log"
sleep 0.3
rm -f "$1/$m"
]]
      local cs = {}
      for i = 1, 8 do cs[i] = start({ "-s", "2", "pool", "--", "sh", "-c", script, "sh", work }) end
      for i = 1, 8 do
        local code, _, err = finish(cs[i])
        assert.are.equal(0, code, err)
      end
      assert.is_nil(H.read_file(work .. "/violations"))
      local log = H.read_file(work .. "/log")
      local _, n = log:gsub("\n", "")
      assert.are.equal(8, n)
      -- The limit was reached, not merely respected: some command ran while another did.
      assert.truthy(log:find("m2", 1, true), log)
    end)

    it("a read lock shared with readers and -u, excluding writers; a writer waits for it", function()
      local reader = holding({ "-r" }, "cfg", "reading")
      assert.are.equal(0, (run({ "-r", "-t", "0", "cfg", "true" })))
      assert.are.equal(0, (run({ "-u", "-t", "0", "cfg", "true" })))
      assert.are.equal(1, (run({ "-w", "-t", "0", "cfg", "true" })))
      -- The writer's command checks that the reader's command has been let go.
      local writer = start({ "-w", "cfg", "--", "sh", "-c", 'test -e "$1/go" && touch "$1/wrote"',
        "sh", work })
      H.eventually(function() return wh.inspect("cfg", { dir = dir }).waiting_writers == 1 end, 20,
        "the writer waits")
      -- Writer preference: new readers wait behind the waiting writer.
      assert.are.equal(1, (run({ "-r", "-t", "0", "cfg", "true" })))
      go()
      assert.are.equal(0, (finish(reader)))
      assert.are.equal(0, (finish(writer)))
      assert.truthy(H.exists(work .. "/wrote"))
      assert.are.equal(0, (run({ "-w", "-t", "0", "cfg", "true" })))
    end)
  end)

  describe("signals", function()
    -- Started through env so that the signal is not ignored on entry, whoever runs the specs.
    local DEFAULT = { "env", "--default-signal=HUP,INT,QUIT,TERM" }

    for _, s in ipairs({ { "TERM", 15 }, { "INT", 2 }, { "HUP", 1 }, { "QUIT", 3 } }) do
      it("SIG" .. s[1] .. " sent to waithandle reaches the command", function()
        local script = 'trap "echo got ' .. s[1] .. '; exit 42" ' .. s[1] .. '; touch "$1/ready"; '
          .. WAIT_GO
        local c = start({ "job", "--", "sh", "-c", script, "sh", work }, DEFAULT)
        H.await(c, function() return H.exists(work .. "/ready") end, "the command to run", 20)
        whtest.kill(c.pid, s[2])
        local code, out = finish(c)
        assert.are.equal(42, code)
        assert.are.equal("got " .. s[1] .. "\n", out)
      end)
    end

    it("SIGINT ends a waithandle that waits for NAME at once, holding nothing", function()
      H.lock_holder(dir, "job", 60)
      local c = start({ "job", "--", "touch", work .. "/ran" }, DEFAULT)
      H.eventually(function() return wh.inspect("job", { dir = dir }).waiting == 1 end, 20,
        "waithandle to wait")
      whtest.kill(c.pid, 2)
      assert.are.equal(128 + 2, (finish(c, 10)))
      assert.is_false(H.exists(work .. "/ran"))
    end)

    it("one that kills the command makes waithandle exit 128+N", function()
      local c = start({ "job", "--", "sh", "-c", 'touch "$1/ready"; exec sleep 30', "sh", work },
        DEFAULT)
      H.await(c, function() return H.exists(work .. "/ready") end, "the command to run", 20)
      whtest.kill(c.pid, whtest.SIGTERM)
      assert.are.equal(143, (finish(c)))
      assert.are.equal("acquired", H.probe_lock(dir, "job"))
    end)

    it("one ignored at the start stays ignored: waithandle lives, the command inherits it", function()
      -- The command reports whether it ignores SIGQUIT (bit 4 of SigIgn's last hex digit).
      local script = 'touch "$1/ready"; ' .. WAIT_GO .. '; '
        .. 'case $(sed -n "s/^SigIgn:.*\\(.\\)$/\\1/p" /proc/$$/status) in '
        .. '[4567cdef]) echo ignored;; *) echo caught;; esac'
      local c = start({ "job", "--", "sh", "-c", script, "sh", work }, { "env", "--ignore-signal=QUIT" })
      H.await(c, function() return H.exists(work .. "/ready") end, "the command to run", 20)
      -- Delivered at once (waithandle sleeps in waitpid): had it not been ignored, waithandle
      -- would die of it before the command could end.
      whtest.kill(c.pid, 3)
      go()
      local code, out = finish(c)
      assert.are.equal(0, code)
      assert.are.equal("ignored\n", out)
    end)
  end)

  it("killed with SIGKILL: the hold stays while the command runs and goes soon after", function()
    local c = holding({}, "job", "started")
    c:kill(whtest.SIGKILL)
    assert.are.same({ signal = whtest.SIGKILL }, c:wait())
    -- The command still runs and still holds the lock for the dead waithandle.
    assert.are.equal("busy", H.probe_lock(dir, "job"))
    assert.are.equal(1, (run({ "-n", "job", "true" })))
    local i = wh.inspect("job", { dir = dir })
    assert.are.equal(1, i.held)
    assert.are.equal(c.pid, i.holders[1].pid)
    local code, out = run({ "info", "job" })
    assert.are.equal(0, code)
    assert.truthy(out:find("holder: " .. c.pid .. " (exited; a process it started holds on)", 1,
      true), out)
    -- The lock file stays in use too: remove refuses.
    assert.are.equal(1, (run({ "remove", "job" })))
    go()
    H.eventually(function() return H.probe_lock(dir, "job") == "acquired" end, 5,
      "the lock to be free after the command ended")
  end)

  describe("info, list and remove", function()
    it("info shows kind, state and the holders with their commands, as text and JSON", function()
      local c1, c2 = holding({ "-s", "3" }, "pool", "one"), holding({ "-s", "3" }, "pool", "two")
      local code, out = run({ "info", "pool" })
      assert.are.equal(0, code)
      for _, want in ipairs({ "name: pool\n", "kind: semaphore\n", "max_count: 3\n", "held: 2\n",
        "waiting: 0\n", "path: " .. dir .. "/pool\n" }) do
        assert.truthy(out:find(want, 1, true), want .. " in:\n" .. out)
      end
      for _, c in ipairs({ c1, c2 }) do
        assert.truthy(out:find("holder: " .. c.pid .. " [^\n]*waithandle[^\n]* pool"), out)
      end
      code, out = run({ "info", "--json", "pool" })
      assert.are.equal(0, code)
      local t = decode_json(out)
      assert.are.equal("pool", t.name)
      assert.are.equal("semaphore", t.kind)
      assert.are.equal(3, t.max_count)
      assert.are.equal(2, t.held)
      assert.are.equal(2, #t.holders)
      local pids = { [t.holders[1].pid] = true, [t.holders[2].pid] = true }
      assert.are.same({ [c1.pid] = true, [c2.pid] = true }, pids)
      assert.truthy(t.holders[1].command:find("waithandle", 1, true))
      go()
      finish(c1)
      finish(c2)
      t = decode_json(select(2, run({ "info", "pool", "--json" })))
      assert.are.equal(0, t.held)
      assert.are.equal(0, #t.holders)
    end)

    it("info of an rwlock shows its fields; info of no object exits 1", function()
      local r = holding({ "-r" }, "cfg", "reading")
      local t = decode_json(select(2, run({ "info", "cfg", "--json" })))
      assert.are.equal("rwlock", t.kind)
      assert.are.equal(1, t.readers)
      assert.is_false(t.writer)
      assert.are.equal(0, t.waiting_writers)
      go()
      finish(r)
      local code, out, err = run({ "info", "nothing" })
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.truthy(err:find("no object 'nothing'", 1, true), err)
    end)

    it("list shows every object with kind and state, as text and JSON, not the registry", function()
      local holder = H.lock_holder(dir, "solo", 60)
      local sem = holding({ "-s", "2" }, "pool", "ticket")
      assert.are.equal(0, (run({ "-r", "cfg", "true" })))
      local code, out = run({ "list" })
      assert.are.equal(0, code)
      local lines = {}
      for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.are.equal(3, #lines, out)
      assert.truthy(lines[1]:match("^cfg +rwlock +free$"), lines[1])
      assert.truthy(lines[2]:match("^pool +semaphore +1 of 2 tickets held by pid " .. sem.pid .. "$"),
        lines[2])
      assert.truthy(lines[3]:match("^solo +lock +held by pid " .. holder.pid .. "$"), lines[3])
      local t = decode_json(select(2, run({ "list", "--json" })))
      assert.are.equal(3, #t)
      assert.are.same({ "cfg", "pool", "solo" }, { t[1].name, t[2].name, t[3].name })
      assert.are.same({ "rwlock", "semaphore", "lock" }, { t[1].kind, t[2].kind, t[3].kind })
      assert.are.equal(holder.pid, t[3].holders[1].pid)
      go()
      finish(sem)
    end)

    it("list of a directory that does not exist is empty; a stray file shows as such", function()
      local code, out = run({ "--dir", dir .. "/nowhere", "list" })
      assert.are.equal(0, code)
      assert.are.equal("", out)
      H.write_file(dir .. "/notes.txt", "hello")
      code, out = run({ "list" })
      assert.are.equal(0, code)
      assert.truthy(out:match("^notes%.txt +%? +not an object: "), out)
    end)

    it("remove removes a free object, refuses one in use, and says when there is none", function()
      assert.are.equal(0, (run({ "job", "true" })))
      local holder = H.lock_holder(dir, "held", 60)
      local code, _, err = run({ "remove", "held" })
      assert.are.equal(1, code)
      assert.truthy(err:find("in use", 1, true), err)
      assert.truthy(H.exists(dir .. "/held"))
      assert.are.equal(0, (run({ "remove", "job" })))
      assert.is_false(H.exists(dir .. "/job"))
      code, _, err = run({ "remove", "job" })
      assert.are.equal(1, code)
      assert.truthy(err:find("no object 'job'", 1, true), err)
      holder:kill()
    end)
  end)

  describe("event", function()
    it("wait exits 1 when not set in time (-E CODE, -q), and 0 once another process sets it", function()
      local code, _, err = run({ "event", "wait", "ready", "-t", "0.05" })
      assert.are.equal(1, code)
      assert.truthy(err:find("event 'ready' not set within 0.05 s", 1, true), err)
      code, _, err = run({ "-E", "7", "-q", "event", "wait", "ready", "-n" })
      assert.are.equal(7, code)
      assert.are.equal("", err)
      local waiters = {}
      for i = 1, 3 do waiters[i] = start({ "event", "wait", "ready", "-v" }) end
      H.eventually(function() return wh.inspect("ready", { dir = dir }) ~= nil end, 10, "the file")
      H.sleep(0.1)
      for _, c in ipairs(waiters) do
        local alive = whtest.waitpid(c.pid, 0)
        assert.is_nil(alive, "a waiter ended before the set")
      end
      assert.are.equal(0, (run({ "event", "set", "ready" })))
      for _, c in ipairs(waiters) do
        local wcode, _, werr = finish(c, 10)
        assert.are.equal(0, wcode)
        assert.truthy(werr:find("event 'ready' set after", 1, true), werr)
      end
      assert.are.equal(0, (run({ "event", "wait", "ready", "-n" })), "a manual-reset event stays set")
      assert.are.equal(0, (run({ "event", "reset", "ready" })))
      assert.are.equal(1, (run({ "-q", "event", "wait", "ready", "-n" })))
    end)

    it("--auto-reset makes an event that lets one wait through per set; it keeps that mode", function()
      assert.are.equal(0, (run({ "event", "set", "job", "--auto-reset" })))
      assert.are.equal(0, (run({ "event", "set", "job" })), "the mode of the file is used")
      assert.are.equal(0, (run({ "event", "wait", "job", "-n" })))
      assert.are.equal(1, (run({ "-q", "event", "wait", "job", "-n" })))
      assert.is_true(wh.inspect("job", { dir = dir }).auto_reset)
      local code, _, err = run({ "event", "set", "manual" })
      assert.are.equal(0, code, err)
      code, _, err = run({ "event", "set", "manual", "--auto-reset" })
      assert.are.equal(125, code)
      assert.truthy(err:find("manual-reset event, not an auto-reset event", 1, true), err)
      assert.are.equal(0, (run({ "lk", "true" })))
      code, _, err = run({ "event", "set", "lk" })
      assert.are.equal(125, code)
      assert.truthy(err:find("'lk' in " .. dir .. " is a lock", 1, true), err)
    end)

    it("info and list show whether it is set, as text and JSON", function()
      assert.are.equal(0, (run({ "event", "set", "e" })))
      assert.are.equal(0, (run({ "event", "reset", "a", "--auto-reset" })))
      local code, out = run({ "info", "e" })
      assert.are.equal(0, code)
      assert.truthy(out:find("kind: event\nauto_reset: false\nset: true\n"), out)
      code, out = run({ "info", "a", "--json" })
      assert.are.same({ name = "a", path = dir .. "/a", kind = "event", auto_reset = true,
        set = false }, decode_json(out))
      code, out = run({ "list" })
      assert.truthy(out:find("\na +event +reset %(auto%-reset%)\n") or out:find("^a +event +reset %(auto%-reset%)\n"), out)
      assert.truthy(out:find("\ne +event +set %(manual%-reset%)\n"), out)
    end)
  end)

  describe("names", function()
    it("with spaces and slashes name the object the library names so", function()
      local name = "my jobs/nightly backup"
      assert.are.equal(0, (run({ name, "--", "true" })))
      assert.truthy(H.exists(dir .. "/" .. wh.safe_name(name)))
      H.lock_holder(dir, name, 60)
      assert.are.equal(1, (run({ "-n", name, "true" })))
      local code, out = run({ "info", name })
      assert.are.equal(0, code)
      assert.truthy(out:find("name: " .. wh.safe_name(name) .. "\n", 1, true), out)
    end)

    it("that are subcommand words are names after --", function()
      for _, word in ipairs({ "list", "info", "remove", "event" }) do
        assert.are.equal(0, (run({ "--", word, "--", "touch", work .. "/" .. word })))
        assert.truthy(H.exists(dir .. "/" .. word))
        assert.truthy(H.exists(work .. "/" .. word))
      end
      assert.are.equal(0, (run({ "-n", "--", "list", "true" })))
    end)
  end)

  describe("installation", function()
    it("runs on this Lua version's interpreter and finds the module installed beside it", function()
      local code, out = run({ "--version" }, { "env", "-u", "LUA_PATH", "-u", "LUA_CPATH" })
      assert.are.equal(0, code)
      local jit = rawget(_G, "jit")
      assert.are.equal(("waithandle (%s, %s)\n"):format(wh._VERSION, jit and jit.version or _VERSION),
        out)
      assert.are.equal(4, (run({ "job", "sh", "-c", "exit 4" }, { "env", "-u", "LUA_PATH", "-u",
        "LUA_CPATH" })))
      local f = assert(io.open(tool, "r"))
      local shebang = f:read("*l")
      f:close()
      assert.truthy(shebang:match("^#!/.*" .. H.lua:gsub("%.", "%%.") .. "$"), shebang)
    end)

    it("--help matches the README's section and the manual page", function()
      local code, help = run({ "--help" })
      assert.are.equal(0, code)
      assert.truthy(help:find("^Usage: waithandle "), help)
      local readme = assert(H.read_file("README.md"))
      assert.truthy(readme:find(help, 1, true), "README.md must hold `waithandle --help` verbatim")
      local man = assert(H.read_file("doc/waithandle.1"))
      local function longs(text, dash)
        local set = {}
        for o in text:gmatch(dash .. dash .. "(%a[%w" .. dash .. "]*)") do
          set[(o:gsub("\\%-", "-"))] = true
        end
        return set
      end
      local in_help, in_man = longs(help, "%-"), longs(man, "\\%-")
      assert.are.same(in_help, in_man)
      for o in help:gmatch("\n  %-(%a),") do
        assert.truthy(man:find("\\-" .. o, 1, true), "-" .. o .. " in the manual page")
      end
    end)
  end)
end)
