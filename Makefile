# parley — build, test, benchmark, install.
#
#   make            library, CLI and test programs (build/)
#   make test       installs missing Debian packages, then runs every test
#   make bench      prints figures and writes build/bench.jsonl
#   make asan|ubsan|tsan   the test suite under a sanitizer (build/<name>/)
#   make fuzz       runs the libFuzzer targets for FUZZ_SECONDS each (clang)
#   make run        parleyd on 127.0.0.1:8080 with the built-in default (small) model set
#   make install    PREFIX=/usr/local DESTDIR=
#   make format-check

BUILD    ?= build
CC       ?= gcc
PREFIX   ?= /usr/local
DESTDIR  ?=
FUZZ_SECONDS ?= 60

BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS   := $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
# PCRE2 (text pre-tokenizer, core) and libopusfile (Ogg Opus uploads, proto)
# libwebsockets (WebSocket server), libsoxr (resampling), libopusenc (Ogg Opus answers)
DEP_CFLAGS  := $(shell pkg-config --cflags opusfile libopusenc 2>/dev/null)
DEP_LIBS    := $(shell pkg-config --libs opusfile 2>/dev/null || echo -lopusfile -lopus -logg) \
               -lopusenc -lopus -logg -lsoxr -lwebsockets -lpcre2-8 -lmicrohttpd -ljansson -lsystemd

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
        -Wcast-qual -Wno-unused-parameter
# Portable baseline: any x86-64. Faster kernels are chosen at run time (core/runtime/cpu.c)
# from files compiled with their own ISA flags below.
ARCH     := -march=x86-64 -mtune=generic
OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(ARCH) $(WARN) $(CFLAGS) $(EXTRA_CFLAGS) \
             -Icore -Iproto -Idaemon -Itests $(BLAS_CFLAGS) $(DEP_CFLAGS) -MMD -MP
LDLIBS   := $(BLAS_LIBS) $(DEP_LIBS) -lpthread -lm
LDFLAGS  ?=

AVX2_FLAGS   := -mavx2 -mfma -mf16c
AVX512_FLAGS := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mavx2 -mfma -mf16c

CORE_SRC  := $(sort $(wildcard core/*/*.c))
PROTO_SRC := $(sort $(wildcard proto/*.c proto/*/*.c))
CLI_SRC   := daemon/parley.c $(sort $(wildcard daemon/cmd_*.c))
DAEMON_SRC := $(filter-out daemon/parley.c daemon/parleyd.c $(CLI_SRC),$(sort $(wildcard daemon/*.c)))
TEST_SRC  := $(sort $(wildcard tests/unit/*.c tests/ref/*.c)) tests/test_main.c
BENCH_SRC := $(sort $(wildcard tests/bench/*.c))

CORE_OBJ  := $(CORE_SRC:%.c=$(BUILD)/%.o)
PROTO_OBJ := $(PROTO_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ   := $(CLI_SRC:%.c=$(BUILD)/%.o)
DAEMON_OBJ := $(DAEMON_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ  := $(TEST_SRC:%.c=$(BUILD)/%.o)
BENCH_OBJ := $(BENCH_SRC:%.c=$(BUILD)/%.o)

LIB   := $(BUILD)/libparley.a
PROTO_LIB := $(BUILD)/libparley-proto.a
DAEMON_LIB := $(BUILD)/libparley-daemon.a
PARLEYD := $(BUILD)/parleyd
CLI   := $(BUILD)/parley
TESTS := $(BUILD)/parley-tests
BENCH := $(BUILD)/parley-bench

.PHONY: all test unit deps bench install uninstall run asan ubsan tsan fuzz fuzz-build fuzz-replay \
        format format-check clean

# parleyd is built once its main exists
PARLEYD_IF_ANY := $(if $(wildcard daemon/parleyd.c),$(PARLEYD))

all: $(LIB) $(PROTO_LIB) $(CLI) $(PARLEYD_IF_ANY) $(TESTS) $(BENCH)

$(BUILD)/%_avx2.o: %_avx2.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(AVX2_FLAGS) -c $< -o $@

$(BUILD)/%_avx512.o: %_avx512.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(AVX512_FLAGS) -c $< -o $@

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB): $(CORE_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(PROTO_LIB): $(PROTO_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(DAEMON_LIB): $(DAEMON_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(CLI): $(CLI_OBJ) $(DAEMON_LIB) $(PROTO_LIB) $(LIB)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(PARLEYD): $(BUILD)/daemon/parleyd.o $(DAEMON_LIB) $(PROTO_LIB) $(LIB)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(TESTS): $(TEST_OBJ) $(DAEMON_LIB) $(PROTO_LIB) $(LIB) | $(CLI) $(PARLEYD_IF_ANY)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BENCH): $(BENCH_OBJ) $(BUILD)/tests/unit/testd.o $(DAEMON_LIB) $(LIB)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

# ---- tests ---------------------------------------------------------------------------------

deps:
	@deploy/install-deps.sh

# The README's test command. Unit tests (every kernel level this CPU has), golden tests
# against PyTorch, the fuzz corpus replay, then the same suite under ASan and UBSan.
test: deps
	@tests/run.sh

unit: $(TESTS) $(CLI)
	$(TESTS)

bench: $(BENCH) $(CLI) $(PARLEYD_IF_ANY)
	$(BENCH) --json $(BUILD)/bench.jsonl

# ---- sanitizers ----------------------------------------------------------------------------

SAN_OPT := -O1 -g -fno-omit-frame-pointer
asan:
	$(MAKE) BUILD=build/asan CFLAGS="$(SAN_OPT)" \
	    EXTRA_CFLAGS="-fsanitize=address" LDFLAGS="-fsanitize=address" \
	    build/asan/parley-tests build/asan/parley
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 build/asan/parley-tests
ubsan:
	$(MAKE) BUILD=build/ubsan CFLAGS="$(SAN_OPT)" \
	    EXTRA_CFLAGS="-fsanitize=undefined -fno-sanitize-recover=all" \
	    LDFLAGS="-fsanitize=undefined" build/ubsan/parley-tests build/ubsan/parley
	UBSAN_OPTIONS=print_stacktrace=1 build/ubsan/parley-tests
tsan:
	$(MAKE) BUILD=build/tsan CFLAGS="$(SAN_OPT)" \
	    EXTRA_CFLAGS="-fsanitize=thread" LDFLAGS="-fsanitize=thread" build/tsan/parley-tests
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" build/tsan/parley-tests

# ---- fuzzing (clang + libFuzzer) -----------------------------------------------------------

FUZZ_SRC := $(sort $(wildcard tests/fuzz/*_fuzz.c))
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all

fuzz-build:
	$(MAKE) BUILD=build/fuzz CC=clang CFLAGS="-O1 -g" \
	    EXTRA_CFLAGS="-fsanitize=fuzzer-no-link $(FUZZ_SAN)" \
	    build/fuzz/libparley-daemon.a build/fuzz/libparley-proto.a build/fuzz/libparley.a
	$(MAKE) $(FUZZ_BIN)
build/fuzz/%: tests/fuzz/%.c build/fuzz/libparley-daemon.a build/fuzz/libparley-proto.a \
              build/fuzz/libparley.a
	clang -std=c11 -D_GNU_SOURCE -g -O1 -Icore -Iproto -Idaemon -Itests $(DEP_CFLAGS) \
	    -fsanitize=fuzzer $(FUZZ_SAN) $^ $(LDLIBS) -o $@
# The corpora replayed without libFuzzer (any compiler; tests/run.sh runs them under ASan).
REPLAY_BIN = $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz-replay/%)
fuzz-replay: $(REPLAY_BIN)
$(BUILD)/fuzz-replay/%: $(BUILD)/tests/fuzz/%.o $(BUILD)/tests/fuzz/replay.o $(DAEMON_LIB) \
                        $(PROTO_LIB) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

fuzz: fuzz-build
	@for f in $(FUZZ_BIN); do \
	    name=$$(basename $$f _fuzz); mkdir -p build/fuzz/corpus-$$name; \
	    echo "fuzzing $$name for $(FUZZ_SECONDS) s"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -max_len=65536 build/fuzz/corpus-$$name \
	        tests/fuzz/corpus/$$name || exit 1; \
	done

# ---- install -------------------------------------------------------------------------------

SYSCONFDIR  ?= /etc
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
install: $(CLI) $(PARLEYD) $(LIB)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(SYSCONFDIR)/parley
	install -m 755 $(CLI) $(DESTDIR)$(PREFIX)/bin/parley
	install -m 755 $(PARLEYD) $(DESTDIR)$(PREFIX)/bin/parleyd
	install -m 644 $(LIB) $(DESTDIR)$(PREFIX)/lib/libparley.a
	sed -e 's|/usr/bin/parleyd|$(PREFIX)/bin/parleyd|' -e 's|/etc/parley/|$(SYSCONFDIR)/parley/|' \
	    systemd/parleyd.service >$(DESTDIR)$(UNITDIR)/parleyd.service
	chmod 644 $(DESTDIR)$(UNITDIR)/parleyd.service
	install -m 644 systemd/parleyd.socket $(DESTDIR)$(UNITDIR)/parleyd.socket
	install -m 644 systemd/parleyd.sysusers $(DESTDIR)$(SYSUSERSDIR)/parleyd.conf
	install -m 644 systemd/parleyd.tmpfiles $(DESTDIR)$(TMPFILESDIR)/parleyd.conf
	[ -e $(DESTDIR)$(SYSCONFDIR)/parley/parleyd.conf ] || \
	    install -m 644 deploy/parleyd.conf $(DESTDIR)$(SYSCONFDIR)/parley/parleyd.conf
	install -d $(DESTDIR)$(PREFIX)/share/parley/web/lib
	install -m 644 web/*.html web/*.js web/*.css $(DESTDIR)$(PREFIX)/share/parley/web/
	install -m 644 web/lib/*.js $(DESTDIR)$(PREFIX)/share/parley/web/lib/
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/parley $(DESTDIR)$(PREFIX)/bin/parleyd \
	    $(DESTDIR)$(PREFIX)/lib/libparley.a $(DESTDIR)$(UNITDIR)/parleyd.service \
	    $(DESTDIR)$(UNITDIR)/parleyd.socket $(DESTDIR)$(SYSUSERSDIR)/parleyd.conf \
	    $(DESTDIR)$(TMPFILESDIR)/parleyd.conf
	rm -rf $(DESTDIR)$(PREFIX)/share/parley/web

# ---- run -----------------------------------------------------------------------------------

# parleyd on 127.0.0.1:8080 with the built-in default model set: small random-weight models
# in the released layouts, made by the golden generators and converted by deploy/convert.py.
run: deps
	$(MAKE) -j$(shell nproc) $(PARLEYD)
	@for g in lm stok voice; do /usr/bin/python3 tests/golden/$${g}_torch.py build/golden || exit 1; done
	$(PARLEYD) --models-lm=build/golden/lm_tiny_f32.gguf \
	    --models-tokenizer=build/golden/stok_a.gguf --models-decoder=build/golden/voice_decoder.gguf

# ---- style ---------------------------------------------------------------------------------

FORMAT_SRC = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FORMAT_SRC)
format-check:
	@clang-format --dry-run --Werror $(FORMAT_SRC) && echo "format-check: $(words $(FORMAT_SRC)) files conform"

clean:
	rm -rf build

-include $(CORE_OBJ:.o=.d) $(PROTO_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(DAEMON_OBJ:.o=.d) $(BUILD)/daemon/parleyd.d $(TEST_OBJ:.o=.d) $(BENCH_OBJ:.o=.d)
