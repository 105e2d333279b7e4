-- The documentation that ships with the module (issue 20):
--  * every public name the module exports is in doc/API.md;
--  * every code block marked runnable in README.md and doc/*.md runs, under
--    the interpreter of this run, against a fresh lock directory;
--  * no Markdown link in a tracked file points outside the repository;
--  * _VERSION, the rockspec and the newest release in CHANGELOG.md agree.
--
-- A runnable block is a fenced block whose info string is "lua runnable",
-- optionally followed by the Lua versions it is for (5.1 5.2 5.3 5.4
-- luajit): "lua runnable 5.4" for one that uses <close>. Without versions it
-- must run under all of them. It runs in its own process, with
-- WAITHANDLES_DIR set to a new empty directory, and passes if it exits 0.
local wh = require "waithandles"
local H = require "helpers"

local VERSION_TAGS = { ["5.1"] = true, ["5.2"] = true, ["5.3"] = true, ["5.4"] = true,
  luajit = true }
local THIS_VERSION = rawget(_G, "jit") and "luajit" or _VERSION:match("%d+%.%d+")

local function read(path) return assert(H.read_file(path)) end

local function lines_of(cmd)
  local t = {}
  for l in H.sh(cmd):gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- The repository's files: those git tracks or would add that are there (a
-- list), and the set of those it tracks; without git, every file outside build/.
local function tracked()
  local files, set = {}, {}
  for _, f in ipairs(lines_of("git ls-files --cached --others --exclude-standard 2>/dev/null")) do
    if H.exists(f) then files[#files + 1] = f end
  end
  for _, f in ipairs(lines_of("git ls-files 2>/dev/null")) do set[f] = true end
  if #files == 0 then
    files = lines_of("find . -path ./build -prune -o -path ./.git -prune -o -type f -print | sed 's|^\\./||'")
    for _, f in ipairs(files) do set[f] = true end
  end
  return files, set
end

-- Markdown ----------------------------------------------------------------------

-- The fenced code blocks of Markdown text (info string, first line number,
-- code) and its other lines (number, text), for links and headings.
local function parse_markdown(text)
  local blocks, prose, open = {}, {}, nil
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    local indent, fence, info = line:match("^( *)(```+)%s*(.-)%s*$")
    if not fence then indent, fence, info = line:match("^( *)(~~~+)%s*(.-)%s*$") end
    if open then
      if fence and #fence >= #open.fence and info == "" and fence:sub(1, 1) == open.fence:sub(1, 1) then
        open.code = table.concat(open.lines, "\n") .. "\n"
        blocks[#blocks + 1] = open
        open = nil
      else
        open.lines[#open.lines + 1] = line:sub(1, #open.indent) == open.indent
          and line:sub(#open.indent + 1) or line
      end
    elseif fence and #indent <= 3 then
      open = { fence = fence, indent = indent, info = info, line = n + 1, lines = {} }
    else
      prose[#prose + 1] = { n = n, text = line }
    end
  end
  return blocks, prose
end

-- A line without its inline code spans.
local function strip_code_spans(line)
  return (line:gsub("(`+).-%1", ""))
end

-- GitHub's anchor for a heading: lower case, punctuation dropped, spaces to
-- hyphens; a repeated anchor gets -1, -2, ...
local function anchors_of(prose)
  local set, count = {}, {}
  for _, l in ipairs(prose) do
    local title = l.text:match("^#+%s+(.-)%s*#*%s*$")
    if title then
      title = title:gsub("%[(.-)%]%b()", "%1")
      local a = title:lower():gsub("[^%w%s_%-\128-\255]", ""):gsub("%s", "-")
      if count[a] then
        count[a] = count[a] + 1
        set[a .. "-" .. count[a]] = true
      else
        count[a] = 0
        set[a] = true
      end
    end
  end
  return set
end

-- Inline links, images and reference definitions outside code: { n, target }.
local function links_of(prose)
  local out = {}
  for _, l in ipairs(prose) do
    local text = strip_code_spans(l.text)
    for target in text:gmatch("%]%(%s*<?([^%s%)>]*)>?[^%)]*%)") do
      out[#out + 1] = { n = l.n, target = target }
    end
    local def = text:match("^%s*%[[^%]]+%]:%s*<?([^%s>]+)")
    if def then out[#out + 1] = { n = l.n, target = def } end
  end
  return out
end

-- "a/b/../c" -> "a/c"; nil if it leaves the repository.
local function normalize(path)
  local parts = {}
  for p in path:gmatch("[^/]+") do
    if p == ".." then
      if #parts == 0 then return nil end
      parts[#parts] = nil
    elseif p ~= "." then
      parts[#parts + 1] = p
    end
  end
  return table.concat(parts, "/")
end

-- The public names of the module -------------------------------------------------

local HIDDEN_META = { __index = true, __name = true, __metatable = true, __mode = true }

-- The names a user can reach on v: its own string keys (a table), the keys
-- behind its metatable's __index (tables, followed through their own
-- __index; a function is searched through the tables among its upvalues),
-- and its metamethods. Names that start with "_" are private, but for
-- _VERSION and metamethods.
local function public_names(v)
  local names, seen = {}, {}
  local function add(k)
    if type(k) == "string" and (k:sub(1, 1) ~= "_" or k == "_VERSION") then names[k] = true end
  end
  local function index(ix)
    if ix == nil or seen[ix] then return end
    seen[ix] = true
    if type(ix) == "table" then
      for k in pairs(ix) do add(k) end
      local mt = debug.getmetatable(ix)
      if mt then index(rawget(mt, "__index")) end
    elseif type(ix) == "function" then
      for i = 1, 255 do
        local name, up = debug.getupvalue(ix, i)
        if name == nil then break end
        if type(up) == "table" then index(up) end
      end
    end
  end
  if type(v) == "table" then
    for k in pairs(v) do add(k) end
  end
  local mt = debug.getmetatable(v)
  if mt then
    for k in pairs(mt) do
      if type(k) == "string" and k:sub(1, 2) == "__" and not HIDDEN_META[k] then names[k] = true end
    end
    index(rawget(mt, "__index"))
  end
  return names
end

-- All the code of a Markdown file: fenced blocks and inline code spans.
local function code_text(text)
  local blocks, prose = parse_markdown(text)
  local parts = {}
  for _, b in ipairs(blocks) do parts[#parts + 1] = b.code end
  for _, l in ipairs(prose) do
    for _, span in l.text:gmatch("(`+)(.-)%1") do parts[#parts + 1] = span end
  end
  return table.concat(parts, "\n")
end

describe("doc/API.md", function()
  after_each(H.cleanup)
  local code = code_text(read("doc/API.md"))

  -- Whether name is a whole word of the reference's code.
  local function documented(name)
    local pattern = name:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")
    return code:find("%f[%w_]" .. pattern .. "%f[^%w_]") ~= nil
  end

  -- Every value a user gets from the module, by what it is.
  local function exports()
    local dir = H.tmpdir()
    local p = wh.provider{ dir = dir }
    local lock, sem, rw = p:lock("l"), p:semaphore("s", 2), p:rwlock("rw")
    local up = rw:acquire_upgradeable_read()
    local held = lock:acquire()
    local file = dir .. "/file"
    H.write_file(file, "")
    return {
      { "the module", wh },
      { "a lock", lock }, { "a semaphore", sem }, { "a reader-writer lock", rw },
      { "lock:info()", lock:info() }, { "semaphore:info()", sem:info() },
      { "rwlock:info()", rw:info() }, { "info().holders[i]", rw:info().holders[1] },
      { "a lock handle", held }, { "a semaphore handle", sem:acquire() },
      { "a read handle", rw:acquire_read() }, { "an upgradeable read handle", up },
      { "a write handle", p:rwlock("rw2"):acquire_write() },
      { "a composite handle", p:acquire_all({ "a", "b" }) },
      { "a provider", p }, { "a cancel token", wh.cancel_token() },
      { "an error object", H.raised(lock.acquire, lock, 0) },
      { "an os error object", H.raised(p.lock, p, "x", { dir = file }) },
    }, up
  end

  it("names every public function, method, field and metamethod", function()
    local values, up = exports()
    local missing = {}
    for _, e in ipairs(values) do
      for name in pairs(public_names(e[2])) do
        if not documented(name) then missing[#missing + 1] = e[1] .. ": " .. name end
      end
    end
    -- Fields that an __index function computes, which no walk can list.
    assert.are.equal(false, up.upgraded)
    if not documented("upgraded") then missing[#missing + 1] = "a handle: upgraded" end
    table.sort(missing)
    if #missing > 0 then error("not in doc/API.md:\n" .. table.concat(missing, "\n"), 0) end
  end)

  it("names every error code", function()
    -- The codes of the contract, and those of the C core's table of names.
    local codes = { "timeout", "cancelled", "released", "invalid_state", "invalid_name",
      "mismatch", "corrupt", "unsafe", "os" }
    local f = io.open("csrc/err.c", "rb")
    local table_of_names = f and f:read("*a"):match("names%[%]%s*=%s*(%b{})")
    if f then f:close() end
    for c in (table_of_names or ""):gmatch('"([%w_]+)"') do
      if c ~= "ok" then codes[#codes + 1] = c end
    end
    for _, c in ipairs(codes) do
      assert.is_truthy(documented(c), "error code " .. c .. " is not in doc/API.md")
    end
  end)
end)

describe("runnable blocks", function()
  after_each(H.cleanup)
  local files = tracked()
  for _, file in ipairs(files) do
    if file == "README.md" or file:match("^doc/[^/]+%.md$") then
      local blocks = parse_markdown(read(file))
      for _, b in ipairs(blocks) do
        local lang, tags = b.info:match("^(%S+)%s+runnable%s*(.-)$")
        if lang then
          local wanted, unknown = tags == "", {}
          for t in tags:gmatch("%S+") do
            if not VERSION_TAGS[t] then unknown[#unknown + 1] = t end
            if t == THIS_VERSION then wanted = true end
          end
          if #unknown > 0 or lang ~= "lua" then
            it(("%s:%d is marked runnable correctly"):format(file, b.line), function()
              error(("a runnable block must be lua, for versions among 5.1 5.2 5.3 5.4 luajit; "
                .. "got %q"):format(b.info))
            end)
          elseif wanted then
            it(("%s:%d runs"):format(file, b.line), function()
              local work, dir = H.tmpdir(), H.tmpdir()
              -- Blank lines first, so that errors name the line in the Markdown file.
              H.write_file(work .. "/block.lua", ("\n"):rep(b.line - 1) .. b.code)
              H.write_file(work .. "/run.lua", ("local f = assert(io.open(%q)) local s = f:read('*a') "
                .. "f:close() assert((loadstring or load)(s, %q))()"):format(work .. "/block.lua",
                "@" .. file))
              local out = H.sh(("WAITHANDLES_DIR='%s' timeout 60 %s '%s' 2>&1; echo \"exit=$?\"")
                :format(dir, H.lua, work .. "/run.lua"))
              assert.is_truthy(out:find("exit=0\n$"), file .. ":" .. b.line .. " failed:\n" .. out)
            end)
          end
        end
      end
    end
  end
end)

describe("links in tracked Markdown files", function()
  local files, set = tracked()
  local dirs = {}
  for f in pairs(set) do
    local d = f:match("^(.*)/[^/]+$")
    while d do
      dirs[d] = true
      d = d:match("^(.*)/[^/]+$")
    end
  end
  local anchors = {}
  local function anchors_in(path)
    if not anchors[path] then
      local _, prose = parse_markdown(read(path))
      anchors[path] = anchors_of(prose)
    end
    return anchors[path]
  end

  for _, file in ipairs(files) do
    if file:match("%.md$") then
      it(file .. " links only inside the repository or to http(s) addresses", function()
        local _, prose = parse_markdown(read(file))
        local bad = {}
        local base = file:match("^(.*)/[^/]+$")
        for _, l in ipairs(links_of(prose)) do
          local t = l.target
          local path, anchor = t:match("^([^#]*)#?(.*)$")
          local why
          if t:match("^https?://") then
            why = nil
          elseif t:match("^%a[%w+.-]*:") or t:sub(1, 1) == "/" then
            why = "points outside the repository"
          elseif path == "" then
            if anchor ~= "" and not anchors_in(file)[anchor] then why = "no such heading" end
          else
            local target = normalize((base and base .. "/" or "") .. path)
            if target == nil then
              why = "leaves the repository"
            elseif not set[target] and not dirs[target] then
              why = "is not a tracked file"
            elseif anchor ~= "" and target:match("%.md$") and not anchors_in(target)[anchor] then
              why = "no such heading in " .. target
            end
          end
          if why then bad[#bad + 1] = ("%s:%d: %s %s"):format(file, l.n, t, why) end
        end
        if #bad > 0 then error(table.concat(bad, "\n"), 0) end
      end)
    end
  end
end)

describe("version", function()
  local files = tracked()
  local version = wh._VERSION:match("^waithandles (%d+%.%d+%.%d+)$")

  it("_VERSION is 'waithandles X.Y.Z'", function()
    assert.is_truthy(version, wh._VERSION)
  end)

  it("agrees with the rockspec's file name, version and tag, and with the docs", function()
    local specs = {}
    for _, f in ipairs(files) do
      if f:match("^waithandles%-%d[^/]*%.rockspec$") then specs[#specs + 1] = f end
    end
    assert.are.equal(1, #specs, "one release rockspec: " .. table.concat(specs, " "))
    local v, rev = specs[1]:match("^waithandles%-(%d+%.%d+%.%d+)%-(%d+)%.rockspec$")
    assert.are.equal(version, v, specs[1])
    local text = read(specs[1])
    assert.are.equal(v .. "-" .. rev, text:match('\nversion%s*=%s*"([^"]+)"'))
    assert.are.equal("v" .. v, text:match('tag%s*=%s*"([^"]+)"'))
    -- Every rockspec file name and _VERSION value that the documentation
    -- mentions is this one (the changelog names the old ones).
    for _, f in ipairs(files) do
      if f:match("%.md$") and f ~= "CHANGELOG.md" then
        local text = read(f)
        for m in text:gmatch("waithandles%-%d+%.%d+%.%d+%-%d+%.rockspec") do
          assert.are.equal(specs[1], m, f .. " names another rockspec")
        end
        for m in text:gmatch('"waithandles %d+%.%d+%.%d+"') do
          assert.are.equal('"' .. wh._VERSION .. '"', m, f .. " shows another _VERSION")
        end
      end
    end
  end)

  it("is the newest release in CHANGELOG.md, below an Unreleased section", function()
    local headings = {}
    for h in read("CHANGELOG.md"):gmatch("\n## ([^\n]+)") do headings[#headings + 1] = h end
    assert.is_truthy(headings[1] and headings[1]:match("^%[Unreleased%]"), "## [Unreleased] first")
    local newest = headings[2] and headings[2]:match("^%[(%d+%.%d+%.%d+)%] %- %d%d%d%d%-%d%d%-%d%d$")
    assert.are.equal(version, newest, "the first release heading: ## [X.Y.Z] - YYYY-MM-DD")
  end)
end)
