-- Openers make progress against a remover that keeps removing the name: no
-- constructor fails, and exclusion holds (an independent witness: a
-- symbolic link that only one critical section at a time can create).
local H = require "helpers"

describe("opening a name that another process keeps removing", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  -- Runs until the remover has removed the file 50 times and each opener has made 50 rounds
  -- (a slow machine takes longer, not fewer), 120 s at most.
  it("never fails, over open/acquire/release by 2 processes, and keeps exclusion", function()
    local go, stop = dir .. "/go", dir .. "/stop"
    local remover = H.spawn([[
      wait_file(ARGS.go)
      local n, removed = 0, 0
      while not exists(ARGS.stop) do
        n = n + 1
        if wh.remove("x", { dir = ARGS.dir }) then
          removed = removed + 1
          if removed == 50 then io.open(ARGS.go .. ".remover", "w"):close() end
        end
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
          if rounds == 50 then io.open(ARGS.go .. ".user" .. ARGS.i, "w"):close() end
          collectgarbage() -- closes the object, so that the remover can strike
        end
        say("rounds", rounds, "errors", errors, "violations", violations)
      ]], { dir = dir, go = go, stop = stop, witness = dir .. "/witness", i = i })
    end
    H.touch(go)
    H.eventually(function()
      return H.exists(go .. ".remover") and H.exists(go .. ".user1") and H.exists(go .. ".user2")
    end, 120, "50 removals and 50 rounds of each opener")
    H.touch(stop)
    local l = remover:expect("^removed %d+ of %d+$", 20)
    local removed = tonumber(l:match("^removed (%d+)"))
    assert.is_true(removed >= 50, "the remover removed the file only " .. removed .. " times")
    for i = 1, 2 do
      local line = users[i]:expect("^rounds", 20)
      local rounds, errors, violations = line:match("^rounds (%d+) errors (%d+) violations (%d+)$")
      assert.are.equal("0", errors, users[i]:output())
      assert.are.equal("0", violations)
      assert.is_true(tonumber(rounds) >= 50, line)
      users[i]:ok()
    end
    remover:ok()
  end)
end)
