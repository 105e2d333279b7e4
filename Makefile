# waithandles — build, test, install. Every variable can be overridden:
#   make LUA_VERSION=5.1 test-one      make install PREFIX=/opt/x LUA_VERSION=luajit
# Never links liblua: the interpreter that loads the module provides it.

LUA_VERSION ?= 5.4
ifeq ($(LUA_VERSION),luajit)
LUA ?= luajit
LUA_INCDIR ?= /usr/include/luajit-2.1
LUA_ABI ?= 5.1
else
LUA ?= lua$(LUA_VERSION)
LUA_INCDIR ?= /usr/include/lua$(LUA_VERSION)
LUA_ABI ?= $(LUA_VERSION)
endif

CC ?= cc
CFLAGS ?= -O2 -g
WARNFLAGS ?= -Wall -Wextra -Werror
SANFLAGS ?=
CPPFLAGS ?=
LDFLAGS ?=
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
LIBDIR ?= $(PREFIX)/lib/lua/$(LUA_ABI)
LUADIR ?= $(PREFIX)/share/lua/$(LUA_ABI)
BUILD ?= build/$(LUA_VERSION)
BUSTED ?= /usr/bin/busted
RUNNER ?=
INSTALL ?= install

CORE_SRC := err names wait guard state observe dir registry object ops pending event inspect
LUA_SRC := lerr ltypes lhandle lacquire lwaiter levent llook lngx lcore
ALL_CFLAGS := -std=gnu11 -fPIC -fvisibility=hidden -D_GNU_SOURCE $(WARNFLAGS) $(CFLAGS) $(SANFLAGS) $(CPPFLAGS)
CORE_OBJ := $(CORE_SRC:%=$(BUILD)/obj/%.o)
LUA_OBJ := $(LUA_SRC:%=$(BUILD)/obj/%.o)
HEADERS := $(wildcard csrc/*.h)
MODULE := $(BUILD)/waithandles/core.so
PROCMOD := $(BUILD)/waithandles/proc.so
TESTMOD := $(BUILD)/whtest.so
FLOORMOD := $(BUILD)/whfloor.so
BENCHMOD := $(BUILD)/whbench.so
BENCHC := $(BUILD)/whcpair

# The postgres backend's libpq binding (waithandles.libpq), built only where libpq is installed.
PQ_INCDIR ?= $(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
PQ_LIBS ?= -lpq
PGMOD := $(if $(wildcard $(PQ_INCDIR)/libpq-fe.h),$(BUILD)/waithandles/libpq.so)

.PHONY: all test test-one test-c install uninstall clean demo demo-lua bench bench-quick bench-results model \
	bench-openresty bench-pg \
	torture torture-build fuzz soak
.PHONY: static embed

all: $(MODULE) $(PROCMOD) $(PGMOD)

$(BUILD)/obj/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LUA_OBJ): $(BUILD)/obj/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -I$(LUA_INCDIR) -c $< -o $@

# -z nodelete: the fork handlers must outlive any dlclose of the module.
$(MODULE): $(CORE_OBJ) $(LUA_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared $(SANFLAGS) $(LDFLAGS) -Wl,-z,nodelete -o $@ $^ -pthread -ldl

# The command-line tool's process control (bin/waithandle): a module of its own.
$(PROCMOD): csrc/proc.c csrc/compat.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -I$(LUA_INCDIR) -Icsrc -shared $(LDFLAGS) -o $@ $<

$(BUILD)/waithandles/libpq.so: csrc/pg/libpq.c csrc/compat.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -I$(LUA_INCDIR) -I$(PQ_INCDIR) -shared $(SANFLAGS) $(LDFLAGS) -o $@ $< $(PQ_LIBS)

# Test-only helper module (fork, kill, waitpid, pipes) and the benchmark floor.
$(TESTMOD): spec/whtest.c csrc/compat.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -I$(LUA_INCDIR) -Icsrc -shared -o $@ $<

$(FLOORMOD) $(BENCHMOD): $(BUILD)/%.so: bench/%.c csrc/compat.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -I$(LUA_INCDIR) -Icsrc -shared -o $@ $<

# The benchmark's peers measured in C, without Lua.
$(BENCHC): bench/whcpair.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -D_GNU_SOURCE $(WARNFLAGS) $(CFLAGS) $(SANFLAGS) -o $@ $<

# C hosts. `make static`: the module's objects as an archive, for a program that embeds Lua and
# links waithandles into itself (include/waithandles.h declares luaopen_waithandles_core). It
# is built for one Lua version, like core.so. `make embed`: the hosts of examples/embed, linked
# with it and with $(EMBED_LUALIB), Lua's static library by default.
STATIC := $(BUILD)/libwaithandles.a
INCDIR ?= $(PREFIX)/include
ifeq ($(LUA_VERSION),luajit)
EMBED_LUALIB ?= -l:libluajit-5.1.a
else
EMBED_LUALIB ?= -l:liblua$(LUA_VERSION).a
endif
EMBED := $(BUILD)/embed/host $(BUILD)/embed/threads

static: $(STATIC)

$(STATIC): $(CORE_OBJ) $(LUA_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	$(AR) rcs $@ $^

# The facade's source as a C array, for hosts that carry it inside (examples/embed/embed.h).
$(BUILD)/embed/facade.h: lua/waithandles/init.lua
	@mkdir -p $(dir $@)
	{ echo '/* lua/waithandles/init.lua, made into a C array by make */'; \
	  echo 'static const char wh_facade[] = {'; \
	  od -An -v -tx1 $< | sed 's/ \([0-9a-f][0-9a-f]\)/0x\1,/g'; echo '};'; } >$@.tmp
	mv $@.tmp $@

$(EMBED): $(BUILD)/embed/%: examples/embed/%.c examples/embed/embed.h include/waithandles.h \
		$(BUILD)/embed/facade.h $(STATIC)
	$(CC) -std=gnu11 -D_GNU_SOURCE $(WARNFLAGS) $(CFLAGS) $(SANFLAGS) -Iinclude -I$(BUILD)/embed \
	    -I$(LUA_INCDIR) $(LDFLAGS) -o $@ $< $(STATIC) $(EMBED_LUALIB) -lm -ldl -pthread

embed: $(EMBED)

# C unit and process tests (no Lua): one program per csrc/test/test_*.c, each printing TAP.
# The state machine tests link the state machine and the guard built a second time with test
# hooks (crash points; an action before a guard waiter sleeps); the process tests, the core.
# RUNNER runs each under a tool (valgrind).
CTEST_DIR := build/ctest$(if $(SANFLAGS),-san)
CTEST_CC = $(CC) -std=gnu11 -D_GNU_SOURCE $(WARNFLAGS) $(CFLAGS) $(SANFLAGS) -Icsrc
STATE_TESTS := test_guard test_state test_waits test_hostile test_crash test_random
PROC_TESTS := test_proc test_kill test_files
STATE_TEST_SRC := csrc/test/state_fixture.c csrc/state.c csrc/observe.c csrc/guard.c csrc/wait.c \
	csrc/names.c csrc/err.c
PROC_TEST_SRC := csrc/test/proc_fixture.c $(CORE_SRC:%=csrc/%.c)
CTESTS := $(STATE_TESTS:%=$(CTEST_DIR)/%) $(PROC_TESTS:%=$(CTEST_DIR)/%)

$(CTESTS): $(wildcard csrc/test/*.h) $(HEADERS)
$(CTEST_DIR)/test_crash: csrc/test/crash_cases.c

$(STATE_TESTS:%=$(CTEST_DIR)/%): $(CTEST_DIR)/%: csrc/test/%.c $(STATE_TEST_SRC)
	@mkdir -p $(dir $@)
	$(CTEST_CC) -DWH_CRASH_TEST -o $@ $(filter %.c,$^)

$(PROC_TESTS:%=$(CTEST_DIR)/%): $(CTEST_DIR)/%: csrc/test/%.c $(PROC_TEST_SRC)
	@mkdir -p $(dir $@)
	$(CTEST_CC) -o $@ $(filter %.c,$^) -pthread

test-c: $(CTESTS)
	@rc=0; for t in $(CTESTS); do echo "# $$t"; $(RUNNER) $$t || rc=1; done; exit $$rc

# The whole suite: set-up, build, C tests, specs; wider under CI=true. Ends with "N passed, M failed".
test:
	@scripts/deps.sh
	@scripts/test.sh

# The busted suite under one Lua version (used by scripts/test.sh).
test-one: $(MODULE) $(PROCMOD) $(PGMOD) $(TESTMOD)
	LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="$(BUILD)/?.so;;" \
	WH_LUA="$(LUA)" WH_BUILD="$(BUILD)" WH_LUA_VERSION="$(LUA_VERSION)" $(RUNNER) $(LUA) $(BUSTED) $(BUSTED_ARGS)

# The installed waithandle runs on $(LUA) and finds the module beside it: relative to its own
# directory when the module lies under PREFIX and the script in PREFIX/bin (the tree can move),
# else by absolute path; failing that, through LUA_PATH and LUA_CPATH.
bin_path = $(if $(and $(filter $(PREFIX)/bin,$(BINDIR)),$(filter $(PREFIX)/%,$(1))),../$(patsubst $(PREFIX)/%,%,$(1)),$(1))

install: $(MODULE) $(PROCMOD) $(STATIC)
	$(INSTALL) -d $(DESTDIR)$(LIBDIR)/waithandles $(DESTDIR)$(LUADIR)/waithandles
	$(INSTALL) -m 0755 $(MODULE) $(DESTDIR)$(LIBDIR)/waithandles/core.so
	$(INSTALL) -m 0755 $(PROCMOD) $(DESTDIR)$(LIBDIR)/waithandles/proc.so
	$(if $(PGMOD),$(INSTALL) -m 0755 $(PGMOD) $(DESTDIR)$(LIBDIR)/waithandles/libpq.so)
	$(INSTALL) -m 0644 lua/waithandles/*.lua $(DESTDIR)$(LUADIR)/waithandles/
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1
	@lua=$$(command -v $(LUA)) || { echo "install: no interpreter $(LUA) in PATH (set LUA=...)" >&2; exit 1; }; \
	sed -e "1s|.*|#!$$lua|" \
	    -e 's|^local LUADIR, LIBDIR = .*|local LUADIR, LIBDIR = "$(call bin_path,$(LUADIR))", "$(call bin_path,$(LIBDIR))"|' \
	    bin/waithandle >$(DESTDIR)$(BINDIR)/waithandle.tmp
	chmod 0755 $(DESTDIR)$(BINDIR)/waithandle.tmp
	mv $(DESTDIR)$(BINDIR)/waithandle.tmp $(DESTDIR)$(BINDIR)/waithandle
	$(INSTALL) -m 0644 doc/waithandle.1 $(DESTDIR)$(MANDIR)/man1/waithandle.1
	$(INSTALL) -m 0644 $(STATIC) $(DESTDIR)$(LIBDIR)/libwaithandles.a
	$(INSTALL) -d $(DESTDIR)$(INCDIR)
	$(INSTALL) -m 0644 include/waithandles.h $(DESTDIR)$(INCDIR)/waithandles.h

uninstall:
	rm -rf $(DESTDIR)$(LIBDIR)/waithandles $(DESTDIR)$(LUADIR)/waithandles
	rm -f $(DESTDIR)$(BINDIR)/waithandle $(DESTDIR)$(MANDIR)/man1/waithandle.1
	rm -f $(DESTDIR)$(LIBDIR)/libwaithandles.a $(DESTDIR)$(INCDIR)/waithandles.h

# The main job: six jobs under `waithandle -s 2`, one of them killed with SIGKILL.
demo:
	@scripts/deps.sh --quiet
	@$(MAKE) -s --no-print-directory all
	@LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="$(BUILD)/?.so;;" $(LUA) bench/demo-cli.lua

# The library's demo: six processes increment one counter under one lock.
demo-lua:
	@scripts/deps.sh --quiet
	@$(MAKE) -s --no-print-directory all
	@LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="$(BUILD)/?.so;;" $(LUA) bench/demo.lua

# make bench prints the table (bench/RESULTS.md says what it measures); bench-quick is a short
# run that only checks every row produced a number (make test runs it); bench-results (or
# BENCH_WRITE=1) also rewrites bench/RESULTS.md. The uncontended rows run under LuaJIT too
# when it and its headers are installed. make bench ends with make bench-pg.
bench bench-quick bench-results:
	@scripts/deps.sh --quiet
	@$(MAKE) -s --no-print-directory all $(FLOORMOD) $(TESTMOD) $(BENCHMOD) $(BENCHC)
	@jit=; if [ "$(LUA_VERSION)" != luajit ] && command -v luajit >/dev/null 2>&1 && \
	    [ -f /usr/include/luajit-2.1/lua.h ] && $(MAKE) -s --no-print-directory \
	    LUA_VERSION=luajit BUILD=build/luajit all build/luajit/whfloor.so build/luajit/whbench.so \
	    build/luajit/whtest.so; then jit=luajit; fi; \
	BENCH_MODE=$@ BENCH_LUAJIT=$$jit BENCH_BUILD="$(BUILD)" LUA_PATH="lua/?.lua;lua/?/init.lua;bench/?.lua;;" \
	    LUA_CPATH="$(BUILD)/?.so;;" $(LUA) bench/bench.lua
	@if [ $@ = bench ]; then echo; $(MAKE) -s --no-print-directory bench-pg; fi

# The postgres backend next to the local one (bench/pg.lua): a throwaway cluster, the rows, stop.
# make bench runs it too. Where libpq or the PostgreSQL server is missing, or the cluster cannot
# start, it says so and skips (exit 0).
bench-pg:
	@scripts/deps.sh --quiet
	@$(MAKE) -s --no-print-directory all $(TESTMOD)
	@if [ -z "$(PGMOD)" ]; then echo "bench-pg: skipped: no $(PQ_INCDIR)/libpq-fe.h (install libpq-dev)"; exit 0; fi; \
	d=$$(mktemp -d /tmp/waithandles-pg.XXXXXX) || exit 1; \
	if ! conninfo=$$(scripts/pg-cluster.sh start "$$d" 2>"$$d.err"); then \
	    echo "bench-pg: skipped: PostgreSQL did not start: $$(tail -1 "$$d.err")"; rm -rf "$$d" "$$d.err"; exit 0; fi; \
	rm -f "$$d.err"; trap 'scripts/pg-cluster.sh stop "$$d"' EXIT; \
	WH_PG_CONNINFO="$$conninfo" LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="$(BUILD)/?.so;;" \
	    $(LUA) bench/pg.lua

# waithandles against the lua-resty-lock algorithm in real nginx (4 workers, wrk): prints the
# table of README.md's "Using waithandles in OpenResty"; fails if the acceptance figures do not
# hold. BENCH_SECONDS sets each run's length (8 s).
bench-openresty:
	@scripts/deps.sh --quiet
	@scripts/deps-openresty.sh
	@$(MAKE) -s --no-print-directory LUA_VERSION=5.4 BUILD=build/5.4 all build/5.4/whtest.so
	@$(MAKE) -s --no-print-directory LUA_VERSION=luajit BUILD=build/luajit all
	@LUA_PATH="lua/?.lua;lua/?/init.lua;bench/?.lua;spec/?.lua;;" LUA_CPATH="build/5.4/?.so;;" \
	    lua5.4 bench/openresty.lua
# The torture (torture/run.lua): workers on several Lua versions under a chaos of kills, stops
# and unlinks, checked by witnesses outside the library, for DURATION seconds. The stop hook
# (an LD_PRELOAD of the tests, never of the library) widens the window into guard sections.
TORTURE_VERSIONS ?= 5.4 5.1 luajit
TORTURE_DEPS ?= lua5.1 liblua5.1-0-dev luajit2 libluajit2-5.1-dev
DURATION ?= 60
TORTUREMOD := $(BUILD)/whtorture.so
STOPSHIM := build/torture/stopshim.so

$(TORTUREMOD): torture/whtorture.c csrc/compat.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -I$(LUA_INCDIR) -Icsrc -shared -o $@ $<

$(STOPSHIM): torture/stopshim.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -D_GNU_SOURCE -fPIC $(WARNFLAGS) $(CFLAGS) -shared -o $@ $< -ldl

torture-build:
	@for v in 5.4 $(filter-out 5.4,$(TORTURE_VERSIONS)); do \
	    $(MAKE) -s --no-print-directory LUA_VERSION=$$v BUILD=build/$$v all build/$$v/whtest.so \
	        build/$$v/whtorture.so || exit 1; \
	done
	@$(MAKE) -s --no-print-directory $(STOPSHIM)

torture:
	@WH_DEPS_EXTRA="$(TORTURE_DEPS)" scripts/deps.sh --quiet
	@$(MAKE) -s --no-print-directory torture-build
	@WH_TORTURE_VERSIONS="$(TORTURE_VERSIONS)" WH_TORTURE_SHIM="$(CURDIR)/$(STOPSHIM)" \
	    LUA_PATH="torture/?.lua;;" LUA_CPATH="build/5.4/?.so;;" lua5.4 torture/run.lua $(DURATION)

# Fuzzing (fuzz/README.md): libFuzzer targets (clang, ASan, UBSan) for object files, registry
# shards and names, each for FUZZ_TIME seconds after its regression inputs; and the command-line
# tool's argument parser, from Lua. Prints TAP lines.
FUZZ_TIME ?= 30
FUZZ_CC ?= clang
# Signed overflow is recoverable only so that fuzz/ubsan.supp can suppress a known finding;
# halt_on_error=1 (fuzz/run.sh) makes every other report fatal.
FUZZ_FLAGS ?= -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-fsanitize-recover=signed-integer-overflow -fno-omit-frame-pointer
FUZZ_TARGETS := $(patsubst fuzz/%.c,build/fuzz/%,$(wildcard fuzz/fuzz_*.c))

build/fuzz/fuzz_%: fuzz/fuzz_%.c $(CORE_SRC:%=csrc/%.c) $(HEADERS) $(wildcard fuzz/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=gnu11 -D_GNU_SOURCE $(WARNFLAGS) $(FUZZ_FLAGS) -Icsrc -o $@ $< \
	    $(CORE_SRC:%=csrc/%.c) -pthread

fuzz:
	@WH_DEPS_EXTRA="libclang-rt-14-dev" scripts/deps.sh --quiet
	@$(MAKE) -s --no-print-directory $(FUZZ_TARGETS)
	@FUZZ_TIME=$(FUZZ_TIME) fuzz/run.sh

# The soak (scripts/soak.lua): long runs of ordinary use; descriptors, mappings, RSS and the Lua
# heap stay flat. SOAK_SCALE < 1 for a shorter run. Prints TAP lines.
SOAK_VERSIONS ?= $(LUA_VERSION)
SOAK_SCALE ?= 1
soak:
	@scripts/deps.sh --quiet
	@for v in $(SOAK_VERSIONS); do \
	    $(MAKE) -s --no-print-directory LUA_VERSION=$$v BUILD=build/$$v all build/$$v/whtest.so || exit 1; \
	    lua=$$(if [ $$v = luajit ]; then echo luajit; else echo lua$$v; fi); \
	    LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/$$v/?.so;;" $$lua scripts/soak.lua \
	        $(SOAK_SCALE) || exit 1; \
	done

# The protocol model (doc/FORMAT.md), checked exhaustively with spin; prints TAP lines.
model:
	@model/run.sh

clean:
	rm -rf build
