-- Openers make progress against a remover that keeps removing the name: no
-- constructor fails, and exclusion holds (an independent witness: a
-- symbolic link that only one critical section at a time can create).
local H = require "helpers"

describe("opening a name that another process keeps removing", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  it("never fails, for 8 s of open/acquire/release by 2 processes, and keeps exclusion", function()
    local go, stop = dir .. "/go", dir .. "/stop"
    local remover = H.spawn([[
      wait_file(ARGS.go)
      local n, removed = 0, 0
      while not exists(ARGS.stop) do
        n = n + 1
        if wh.remove("x", { dir = ARGS.dir }) then removed = removed + 1 end
      end
      say("removed", removed, "of", n)
    ]], { dir = dir, go = go, stop = stop })
    local users = {}
    for i = 1, 2 do
      users[i] = H.spawn([[
        wait_file(ARGS.go)
        local rounds, errors, violations = 0, 0, 0
        while not exists(ARGS.stop) do
          local ok, err = pcall(function()
            local l = wh.lock("x", { dir = ARGS.dir })
            local h = l:acquire(5)
            if not pcall(T.symlink, "held", ARGS.witness) then violations = violations + 1 end
            os.remove(ARGS.witness)
            h:release()
          end)
          if not ok then
            errors = errors + 1
            io.stderr:write(tostring(err), "\n")
          end
          rounds = rounds + 1
          collectgarbage() -- closes the object, so that the remover can strike
        end
        say("rounds", rounds, "errors", errors, "violations", violations)
      ]], { dir = dir, go = go, stop = stop, witness = dir .. "/witness" })
    end
    H.touch(go)
    H.sleep(8)
    H.touch(stop)
    local l = remover:expect("^removed %d+ of %d+$", 20)
    local removed = tonumber(l:match("^removed (%d+)"))
    assert.is_true(removed > 10, "the remover removed the file only " .. removed .. " times")
    for i = 1, 2 do
      local line = users[i]:expect("^rounds", 20)
      local rounds, errors, violations = line:match("^rounds (%d+) errors (%d+) violations (%d+)$")
      assert.are.equal("0", errors, users[i]:output())
      assert.are.equal("0", violations)
      assert.is_true(tonumber(rounds) > 10, line)
      users[i]:ok()
    end
    remover:ok()
  end)
end)
