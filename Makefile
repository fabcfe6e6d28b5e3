# softgate build. Plain GNU Make: per-file ISA flags are one line each, the
# cross build is CC=..., and nothing beyond make and a C11 compiler is needed.
#
#   make                 library (static + shared), CLI, test runner
#   make test            the test suite under every ISA level this CPU has
#   make sanitize        the suite built with AddressSanitizer + UBSan
#   make arm64           cross-build for arm64 and run the suite under qemu
#   make check           test + sanitize (+ arm64 when the cross compiler exists)
#   make bench           the softmax benchmark
#   make demo            fit and plot the mixture-of-experts demo (main job)
#   make install PREFIX=/usr/local

CC       ?= cc
BUILD    ?= build
PREFIX   ?= /usr/local
OPT      ?= -O2
CFLAGS_BASE = -std=c11 $(OPT) -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
              -D_POSIX_C_SOURCE=200809L -fPIC -pthread -Iinclude -Isrc
CFLAGS_LIB  = $(CFLAGS_BASE) -fvisibility=hidden
# OpenBLAS provides CBLAS and LAPACK (Debian: libopenblas-dev).
BLAS_LIBS ?= -lopenblas
LDLIBS   = $(BLAS_LIBS) -lm -pthread
# The CLI binary links OpenBLAS statically when its archive and libgfortran's
# are found (Debian: libopenblas-dev, libgfortran-12-dev) and a trial link
# with them succeeds (the archive of an OpenMP or foreign OpenBLAS build may
# need more): the dynamic relocation of libopenblas.so and libgfortran.so
# costs about 1.5 ms of CPU at every start, a third of a small `softgate
# fit`. Otherwise (the arm64 cross build has no libgfortran.a), and for the
# library, -lopenblas. STATIC_BLAS=0 turns the attempt off.
STATIC_BLAS ?= 1
ifeq ($(BLAS_LIBS)$(STATIC_BLAS),-lopenblas1)
OPENBLAS_A := $(wildcard $(shell $(CC) -print-file-name=libopenblas.a))
GFORTRAN_A := $(wildcard $(shell $(CC) -print-file-name=libgfortran.a))
QUADMATH_A := $(wildcard $(shell $(CC) -print-file-name=libquadmath.a))
ifneq ($(and $(OPENBLAS_A),$(GFORTRAN_A)),)
BLAS_PROBE := char cblas_sgemm(void); char dposv_(void); int main(void) { return cblas_sgemm() + dposv_(); }
STATIC_BLAS_LIBS := $(shell echo '$(BLAS_PROBE)' | $(CC) -x c - -x none -o /dev/null $(OPENBLAS_A) $(GFORTRAN_A) \
    $(QUADMATH_A) -lm -pthread >/dev/null 2>&1 && echo '$(OPENBLAS_A) $(GFORTRAN_A) $(QUADMATH_A)')
endif
endif
CLI_BLAS_LIBS ?= $(or $(STATIC_BLAS_LIBS),$(BLAS_LIBS))
CLI_LDLIBS = $(CLI_BLAS_LIBS) -lm -pthread
EXTRA_CFLAGS ?=
EXTRA_LDFLAGS ?=

ARCH := $(shell $(CC) -dumpmachine)
# Every .c under src/<part>/ is library source. Files named *_avx2.c and
# *_avx512.c are x86-64 kernels, *_neon.c arm64 kernels; each is compiled
# only for its architecture (and with its ISA flags, below).
ALL_LIB_SRC = $(sort $(wildcard src/*/*.c))
X86_SRC     = $(filter %_avx2.c %_avx512.c,$(ALL_LIB_SRC))
ARM_SRC     = $(filter %_neon.c,$(ALL_LIB_SRC))
LIB_SRC     = $(filter-out $(X86_SRC) $(ARM_SRC),$(ALL_LIB_SRC))
ifneq (,$(findstring x86_64,$(ARCH)))
LIB_SRC += $(X86_SRC)
endif
ifneq (,$(findstring aarch64,$(ARCH)))
LIB_SRC += $(ARM_SRC)
endif

# ISA flags for the files that need them, and for no other file.
FLAGS_avx2   = -mavx2 -mfma
FLAGS_avx512 = -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma
isa_flags = $(if $(findstring _avx512,$(1)),$(FLAGS_avx512),$(if $(findstring _avx2,$(1)),$(FLAGS_avx2)))

CLI_SRC   = $(sort $(wildcard cli/*.c bench/*.c))
TEST_SRC  = $(wildcard tests/*.c)

LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  = $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ = $(TEST_SRC:%.c=$(BUILD)/%.o)
DEPS     = $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d)

SOVERSION = 0
all: $(BUILD)/libsoftgate.a $(BUILD)/libsoftgate.so $(BUILD)/softgate $(BUILD)/softgate_tests \
     $(BUILD)/examples/softmax_basic

$(BUILD)/src/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_LIB) $(call isa_flags,$<) $(EXTRA_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(EXTRA_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libsoftgate.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libsoftgate.so: $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libsoftgate.so.$(SOVERSION) $(EXTRA_LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/softgate: $(CLI_OBJ) $(BUILD)/libsoftgate.a
	$(CC) $(EXTRA_LDFLAGS) -o $@ $^ $(CLI_LDLIBS)

$(BUILD)/examples/%: $(BUILD)/examples/%.o $(BUILD)/libsoftgate.a
	$(CC) $(EXTRA_LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/softgate_tests: $(TEST_OBJ) $(BUILD)/libsoftgate.a
	$(CC) $(EXTRA_LDFLAGS) -o $@ $^ $(LDLIBS)

# Under RUNNER (qemu for the arm64 build) the CLI reports the ISA levels
# that the emulated CPU has; the suite runs once per level.
RUNNER ?=

test: all
	$(RUNNER) $(BUILD)/examples/softmax_basic
	@set -e; for isa in $$($(RUNNER) $(BUILD)/softgate info --isa-levels); do \
	  echo "== tests, $(BUILD), SOFTGATE_ISA=$$isa"; \
	  SOFTGATE_ISA=$$isa $(RUNNER) $(BUILD)/softgate_tests $(TEST_ARGS); \
	done
	RUNNER="$(RUNNER)" sh tests/cli_test.sh $(BUILD)/softgate

sanitize:
	$(MAKE) test BUILD=build-san OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined"

ARM64_CC ?= aarch64-linux-gnu-gcc
# The arm64 binaries run on Debian's multiarch arm64 libraries (libc6:arm64,
# pulled in by libopenblas-dev:arm64), loader included. Not with
# -L /usr/aarch64-linux-gnu: that mixes the cross package's loader with the
# multiarch libc (a different build), and threads then hang at start-up.
arm64:
	$(MAKE) test BUILD=build-arm64 CC=$(ARM64_CC) RUNNER="qemu-aarch64" TEST_ARGS="--quick"

REQUIRE_ARM64 ?=
check: test sanitize
	@if command -v $(ARM64_CC) >/dev/null && command -v qemu-aarch64 >/dev/null; then \
	  $(MAKE) arm64; \
	elif [ -n "$(REQUIRE_ARM64)" ]; then \
	  echo "== arm64 required but $(ARM64_CC) or qemu-aarch64 is missing" >&2; exit 1; \
	else echo "== arm64 skipped: $(ARM64_CC) or qemu-aarch64 missing"; fi

bench: all
	$(BUILD)/softgate bench softmax

# Fits the Old Faithful mixture of experts and writes ./softgate-demo.svg.
demo: all
	$(BUILD)/softgate demo

install: all
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin
	install -d $(DESTDIR)$(PREFIX)/include/softgate
	install -m 644 include/softgate.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 include/softgate/*.h $(DESTDIR)$(PREFIX)/include/softgate/
	install -m 644 $(BUILD)/libsoftgate.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libsoftgate.so $(DESTDIR)$(PREFIX)/lib/libsoftgate.so.$(SOVERSION)
	ln -sf libsoftgate.so.$(SOVERSION) $(DESTDIR)$(PREFIX)/lib/libsoftgate.so
	install -m 755 $(BUILD)/softgate $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(shell sed -n 's/.*SG_VERSION_STRING "\(.*\)"/\1/p' include/softgate.h)|' \
	  softgate.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/softgate.pc

clean:
	rm -rf build build-san build-arm64

.PHONY: all test sanitize arm64 check bench demo install clean
-include $(DEPS)
