local wh = require "waithandles"
local H = require "helpers"
local vectors = require "names_vectors"

describe("safe_name", function()
  after_each(H.cleanup)

  it("matches the file-format test vectors", function()
    for i, v in ipairs(vectors) do
      assert.are.equal(v[2], wh.safe_name(v[1]), "vector " .. i)
    end
  end)

  it("returns only [A-Za-z0-9._-], never starts with '.', at most 255 bytes, and is idempotent", function()
    local inputs = { "", ".", "..", "../../etc/passwd", "/", "a\0b", ("\\"):rep(1000), ("q"):rep(10000) }
    for b = 0, 255 do inputs[#inputs + 1] = string.char(b) .. "x" .. string.char(b) end
    for _, s in ipairs(inputs) do
      local n = wh.safe_name(s)
      assert.is_truthy(n:match("^[A-Za-z0-9._-]+$"), n)
      assert.are_not.equal(".", n:sub(1, 1))
      assert.is_true(#n >= 1 and #n <= 255)
      assert.are.equal(n, wh.safe_name(n))
    end
  end)

  it("leaves valid names unchanged and keeps case", function()
    assert.are.equal("Jobs", wh.safe_name("Jobs"))
    assert.are.equal("jobs", wh.safe_name("jobs"))
    assert.are.equal(("x"):rep(255), wh.safe_name(("x"):rep(255)))
  end)

  it("maps different invalid names to different names", function()
    local seen = {}
    local inputs = { "", "a/b", "a:b", "a b", "a\0b", "_", ".a", "/a", ("y"):rep(300), ("y"):rep(301) }
    for b = 0, 255 do inputs[#inputs + 1] = "?" .. string.char(b) end
    for _, s in ipairs(inputs) do
      if s ~= "_" then
        local n = wh.safe_name(s)
        assert.is_nil(seen[n], ("%q and %q"):format(tostring(seen[n]), s))
        seen[n] = s
      end
    end
  end)

  it("rejects non-strings with an argument error", function()
    assert.has_error(function() wh.safe_name(42) end, "bad argument #1 to 'safe_name' (string expected, got number)")
    assert.has_error(function() wh.safe_name(nil) end)
    assert.has_error(function() wh.safe_name("a", "b") end)
  end)

  it("names objects: obj.name is the escaped name, obj.path lies inside dir", function()
    local parent = H.tmpdir()
    local dir = parent .. "/d"
    os.execute("mkdir -m 0755 " .. dir)
    assert.are.equal("directory", (H.whtest.stat(dir) or {}).type)
    local hostile = { "../x", "/", "a\0b", ("\\"):rep(1000), "", ("z"):rep(10000), "..", "/etc/passwd" }
    for _, name in ipairs(hostile) do
      local l = wh.lock(name, { dir = dir })
      assert.are.equal(wh.safe_name(name), l.name)
      assert.are.equal(dir .. "/" .. l.name, l.path)
      local st = H.whtest.stat(l.path)
      assert.are.equal("file", st and st.type)
      assert.is_truthy(l:try_acquire())
    end
    -- nothing was created outside dir
    local ls = io.popen("ls -A " .. parent)
    assert.are.equal("d\n", ls:read("*a"))
    ls:close()
  end)

  it("an invalid name shares its object with the valid name it escapes to", function()
    local dir = H.tmpdir()
    local a = wh.lock("a/b", { dir = dir })
    local b = wh.lock("a_2Fb", { dir = dir })
    local h = a:try_acquire()
    assert.is_truthy(h)
    assert.is_nil(b:try_acquire())
    h:release()
    assert.is_truthy(b:try_acquire())
  end)

  it("exact_name accepts valid names and raises invalid_name otherwise", function()
    local dir = H.tmpdir()
    assert.are.equal("ok.name-1", wh.lock("ok.name-1", { dir = dir, exact_name = true }).name)
    for _, bad in ipairs({ "", ".x", "a/b", ("x"):rep(256), "a b" }) do
      local ok, err = pcall(wh.lock, bad, { dir = dir, exact_name = true })
      assert.is_false(ok)
      assert.are.equal("table", type(err))
      assert.are.equal("invalid_name", err.code)
      assert.are.equal(bad, err.name)
      assert.is_truthy(tostring(err):find("invalid_name", 1, true))
    end
  end)
end)
