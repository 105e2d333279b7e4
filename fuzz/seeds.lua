-- Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/), from the
-- layouts of doc/FORMAT.md: lua5.4 fuzz/seeds.lua. The seeds are checked in;
-- run this again only when the format changes.
local OBJ_MAGIC, REG_MAGIC, VERSION = "WAITHDL1", "WAITREG1", 2
local HDR, NWAIT, NSLOTS = 256, 128, 1024
local WAIT_OFF, SLOT_OFF = 256, 256 + 128 * 32
local LOCK, SEM, RW = 1, 2, 3

local function size_of(kind) return SLOT_OFF + (kind == LOCK and 0 or NSLOTS * 16) end

-- A byte buffer of n zeros with writes at offsets.
local function buffer(n)
  local b = { n = n, at = {} }
  function b.put(off, s) b.at[#b.at + 1] = { off, s } end
  function b.bytes()
    local parts, pos = {}, 0
    table.sort(b.at, function(x, y) return x[1] < y[1] end)
    for _, w in ipairs(b.at) do
      parts[#parts + 1] = string.rep("\0", w[1] - pos) .. w[2]
      pos = w[1] + #w[2]
    end
    parts[#parts + 1] = string.rep("\0", n - pos)
    return table.concat(parts)
  end
  return b
end

local function ident(slot, gen) return (gen << 16) | (slot + 1) end

-- An object file of `kind`; `state` adds holders and waiters.
local function object(kind, max, state)
  local b = buffer(size_of(kind))
  b.put(0, OBJ_MAGIC .. string.pack("<I4I4I4I4I4I4I4I4I8", VERSION, HDR, kind,
    kind == SEM and max or 1, kind == LOCK and 0 or NSLOTS, NWAIT,
    kind == LOCK and 0 or SLOT_OFF, WAIT_OFF, size_of(kind)))
  if state then state(b) end
  return b.bytes()
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function dir(t)
  local d = "fuzz/corpus/" .. t
  os.execute("mkdir -p " .. d)
  return d
end

-- ---- fuzz_object: byte 0 flags (kind | 4 shaped | 8 scribbler | 16 keep guard | 32 block),
-- byte 1 max_count - 1, then the file (or, shaped, the file from offset 64 on).
local d = dir("fuzz_object")
local holders = {
  [LOCK] = function(b)
    b.put(128, string.pack("<I8", ident(3, 7)))                 -- owner: a dead process
    b.put(WAIT_OFF, string.pack("<I8i8i8I4I4", ident(4, 9), 1, 1 << 62, 0x101, 5))
    b.put(80, string.pack("<I4I4", 1, 0))                        -- nwaiting
  end,
  [SEM] = function(b)
    b.put(144, string.pack("<I4", 3))                            -- total
    b.put(SLOT_OFF + 16 * 2, string.pack("<I8I4", ident(2, 5), 2))
    b.put(SLOT_OFF + 16 * 9, string.pack("<I8I4", ident(9, 1), 1))
    b.put(WAIT_OFF + 32, string.pack("<I8i8i8I4I4", ident(1, 3), 5, 1 << 40, 1, 8))
  end,
  [RW] = function(b)
    b.put(128, string.pack("<I8I8", ident(5, 2), ident(5, 2)))   -- upgraded holder
    b.put(WAIT_OFF, string.pack("<I8i8i8I4I4", ident(6, 4), 1, 1 << 62, 3, 2))
    b.put(WAIT_OFF + 64, string.pack("<I8i8i8I4I4", ident(7, 4), 1, 1 << 62, 5, 3))
    b.put(84, string.pack("<I4", 2))                             -- nwriters
    b.put(SLOT_OFF + 16 * 6, string.pack("<I8I4", ident(6, 4), 4))
    b.put(144, string.pack("<I4", 4))
  end,
}
for kind = 1, 3 do
  local max = kind == SEM and 3 or 1
  write(("%s/raw-fresh-%d"):format(d, kind), string.char(kind, max - 1) .. object(kind, max))
  write(("%s/raw-held-%d"):format(d, kind), string.char(kind, max - 1) .. object(kind, max, holders[kind]))
  write(("%s/raw-short-%d"):format(d, kind), string.char(kind, max - 1) .. object(kind, max):sub(1, HDR))
  -- Shaped: only the mutable part, without its trailing zeros (the target zero-fills).
  local shaped = object(kind, max, holders[kind]):sub(65):gsub("%z+$", "")
  write(("%s/shaped-%d"):format(d, kind), string.char(kind | 4, max - 1) .. shaped)
  write(("%s/shaped-scribbled-%d"):format(d, kind), string.char(kind | 4 | 8 | 32, max - 1) .. shaped)
  local guarded = string.pack("<I8", ident(11, 3) | (1 << 63)) .. shaped:sub(9)
  write(("%s/shaped-guard-%d"):format(d, kind), string.char(kind | 4 | 16, max - 1) .. guarded)
end
write(d .. "/raw-empty", "\1\0")
write(d .. "/raw-badmagic", "\1\0" .. ("X"):rep(300))
write(d .. "/raw-version1", "\3\0" .. object(RW, 1):sub(1, 300):gsub("^(WAITHDL1)\2", "%1\1"))

-- ---- fuzz_registry: byte 0 flags (1 scribbler, 2 two shards, 4 unlink after the claim),
-- byte 1 where the second shard starts (x 32), then the shard files.
d = dir("fuzz_registry")
local function shard(n, slots)
  local b = buffer(64 + 64 * 64)
  b.put(0, REG_MAGIC .. string.pack("<I4I4I4I4I4I4", VERSION, 64, n, 64, 64, 1))
  for i, gen in pairs(slots or {}) do b.put(64 + 64 * i, string.pack("<I8I4", gen, 4242)) end
  return b.bytes()
end
write(d .. "/empty", "\0\0")
write(d .. "/fresh", "\0\0" .. shard(0))
write(d .. "/used", "\0\0" .. shard(0, { [0] = 5, [1] = 9, [63] = (1 << 47) - 1 }))
write(d .. "/used-scribbled", "\1\0" .. shard(0, { [0] = 5, [2] = 1 }))
write(d .. "/two", "\2" .. string.char(4160 // 32 + 1) .. shard(0, { [0] = 3 }) .. string.rep("\0", 32 - 4160 % 32) .. shard(1, { [5] = 2 }))
write(d .. "/unlinked", "\4\0" .. shard(0, { [0] = 5 }))
write(d .. "/short", "\0\0" .. shard(0):sub(1, 64))
write(d .. "/wrong-shard", "\0\0" .. shard(3))

-- ---- fuzz_names: the bytes are the name.
d = dir("fuzz_names")
local names = { "", "jobs", ".", "..", ".hidden", "a/b", "_", "_41", "x_", "report 2024",
  "na\195\175ve", ("a"):rep(255), ("a"):rep(256), ("/"):rep(100), ("-"):rep(300), "\0", "a\0b",
  ("\255"):rep(86), "L1" }
for i, n in ipairs(names) do write(("%s/%02d"):format(d, i), n) end
print("seeds written to fuzz/corpus/")
