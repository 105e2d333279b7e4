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

CORE_SRC := err names wait guard state dir registry object ops pending inspect
LUA_SRC := lerr ltypes lhandle lacquire llook lngx lcore
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

.PHONY: all test test-one test-c install uninstall clean demo demo-lua bench bench-quick bench-results bench-pg model

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

# C unit and process tests (no Lua). The state machine and the guard are built a second time
# with test hooks (crash points; an action before a guard waiter sleeps).
CTEST_DIR := build/ctest$(if $(SANFLAGS),-san)
STATE_TEST_SRC := csrc/test/test_state.c csrc/state.c csrc/guard.c csrc/wait.c csrc/names.c csrc/err.c
$(CTEST_DIR)/test_state: $(STATE_TEST_SRC) csrc/test/harness.h $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -D_GNU_SOURCE -DWH_CRASH_TEST $(WARNFLAGS) $(CFLAGS) $(SANFLAGS) -Icsrc -o $@ $(STATE_TEST_SRC)

$(CTEST_DIR)/test_proc: csrc/test/test_proc.c csrc/test/harness.h $(CORE_SRC:%=csrc/%.c) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -D_GNU_SOURCE $(WARNFLAGS) $(CFLAGS) $(SANFLAGS) -Icsrc -o $@ csrc/test/test_proc.c $(CORE_SRC:%=csrc/%.c) -pthread

test-c: $(CTEST_DIR)/test_state $(CTEST_DIR)/test_proc
	$(CTEST_DIR)/test_state
	$(CTEST_DIR)/test_proc

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

install: $(MODULE) $(PROCMOD)
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

uninstall:
	rm -rf $(DESTDIR)$(LIBDIR)/waithandles $(DESTDIR)$(LUADIR)/waithandles
	rm -f $(DESTDIR)$(BINDIR)/waithandle $(DESTDIR)$(MANDIR)/man1/waithandle.1

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

# The protocol model (doc/FORMAT.md), checked exhaustively with spin; prints TAP lines.
model:
	@model/run.sh

clean:
	rm -rf build
