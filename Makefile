# Makefile — builds the engine library (src/), tools, tests, benchmarks and fuzzers.
# `make run` builds, makes a tiny model and runs one prompt through ds4; `make test` installs its own dependencies (Debian
# packages, a pinned Python venv in .venv/), builds, and runs every test; `make asan` runs the
# same C tests under ASan+UBSan in build-asan/, `make tsan` the threaded ones under TSan in
# build-tsan/. CUDA is never needed by these targets; `make cuda` builds the CUDA backend,
# its GPU test and bench into build/cuda/ with nvcc.

BUILD    ?= build
CC       ?= cc
ARCH     ?= -march=native
OPT      ?= -O3
SAN      ?=
WARN     := -Wall -Wextra -Werror
CPPFLAGS += -Iinclude -Isrc -D_GNU_SOURCE
ALLFLAGS  = -std=c11 $(WARN) $(OPT) $(ARCH) -g $(SAN) $(CFLAGS)
LDLIBS   += -lm -lpthread
# PCRE2 (the tokenizer's pre-tokenizer regex) for everything; libedit (line editing) for ds4.
CPPFLAGS += $(shell pkg-config --cflags libpcre2-8 2>/dev/null)
LDLIBS   += $(shell pkg-config --libs libpcre2-8 2>/dev/null || echo -lpcre2-8)
EDIT_CFLAGS := $(shell pkg-config --cflags libedit 2>/dev/null)
EDIT_LIBS   := $(shell pkg-config --libs libedit 2>/dev/null || echo -ledit)
PYTHON   ?= .venv/bin/python

# Per-ISA kernel variants get their instruction set here, whatever ARCH says; the runtime
# dispatcher only calls them on CPUs that have it.
ISA_avx2   := -mavx2 -mfma -mf16c -mno-avx512f
ISA_avx512 := -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni

LIB_SRCS   := $(shell find src -name '*.c' | sort)
LIB_OBJS   := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
LIB        := $(BUILD)/libds4.a
TOOL_SRCS  := $(wildcard tools/*.c)
TOOLS      := $(TOOL_SRCS:tools/%.c=$(BUILD)/bin/%)
TEST_SRCS  := $(wildcard tests/test_*.c)
TESTS      := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
BENCH_SRCS := $(filter-out bench/cuda_%.c,$(wildcard bench/*.c))
BENCHES    := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)
FUZZ_SRCS  := $(wildcard fuzz/*_fuzz.c)
FUZZ_REPLAY:= $(FUZZ_SRCS:fuzz/%_fuzz.c=$(BUILD)/fuzz/%_replay)
HEADERS    := $(shell find include src tests -name '*.h')

.PHONY: test-cuda all lib tools tests bench cuda validate-cuda run test test-style test-c test-py test-fuzz asan tsan fuzz fuzz-run deps venv clean

all: lib tools tests bench $(FUZZ_REPLAY)

lib: $(LIB)
tools: $(TOOLS)
tests: $(TESTS)
bench: $(BENCHES)

$(BUILD)/obj/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLFLAGS) $(ISA_$(lastword $(subst _, ,$(basename $(notdir $<))))) -c $< -o $@

$(LIB): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/%: tools/%.c $(LIB) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLFLAGS) $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/%.c $(LIB) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLFLAGS) $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/bench/%: bench/%.c $(LIB) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLFLAGS) -DDS4_BUILD_FLAGS='"$(CC) $(ALLFLAGS)"' \
	  -DDS4_GIT_COMMIT='"$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)"' \
	  $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/bin/ds4: CPPFLAGS += $(EDIT_CFLAGS)
$(BUILD)/bin/ds4: LDLIBS += $(EDIT_LIBS)
# The BPE trainer's text is embedded by the assembler (.incbin).
$(BUILD)/obj/src/tokenizer/bpe_text.o: data/bpe_text.txt

# Corpus replay: the fuzz target linked with a plain main() that runs every corpus file.
$(BUILD)/fuzz/%_replay: fuzz/%_fuzz.c fuzz/replay_main.c $(LIB) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLFLAGS) $< fuzz/replay_main.c $(LIB) $(LDLIBS) -o $@

# ---- CUDA backend (make cuda; never part of all/test) --------------------------------------
# The .cu files of src/backend/cuda/ into build/cuda/libds4_cuda.a for sm_80, sm_89 and sm_90a
# (wgmma-capable), the GPU tests tests/cuda/test_cuda_moe and test_cuda_forward,
# bench/cuda_moe_bench, and the tools with the CUDA backend: build/cuda/bin/ds4 and
# build/cuda/bin/ds4-logits (--backend cuda). Those link build/cuda/libds4_host.a, the engine
# library without src/backend/cuda_stub.c, with libds4_cuda.a. The tests skip without a
# device (make test-cuda runs them; CI does, to see them link and skip); tools/validate_cuda.sh
# checks the same .cu files offline (CI).
NVCC          ?= nvcc
CUDA_HOME     ?= $(patsubst %/bin/nvcc,%,$(shell command -v $(NVCC) 2>/dev/null))
CUDA_BUILD    := $(BUILD)/cuda
CUDA_GENCODE  ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_89,code=sm_89 \
                 -gencode arch=compute_90a,code=sm_90a
NVCCFLAGS     ?= -O3 -std=c++17 -lineinfo -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror
CUDA_TUNE     ?=# -D overrides of src/backend/cuda/tuning.cuh (bench sweeps)
CUDA_SRCS     := $(sort $(wildcard src/backend/cuda/*.cu))
CUDA_OBJS     := $(CUDA_SRCS:%.cu=$(CUDA_BUILD)/obj/%.o)
CUDA_LIB      := $(CUDA_BUILD)/libds4_cuda.a
CUDA_HEADERS  := $(wildcard src/backend/cuda/*.cuh src/backend/cuda/*.h) src/backend/backend.h
CUDA_CPPFLAGS := -I$(CUDA_HOME)/include
CUDA_LDLIBS   := -L$(CUDA_HOME)/lib64 -lcudart_static -lstdc++ -ldl -lrt -lpthread
CUDA_HOST_LIB := $(CUDA_BUILD)/libds4_host.a
CUDA_TOOLS    := $(CUDA_BUILD)/bin/ds4 $(CUDA_BUILD)/bin/ds4-logits

CUDA_TESTS    := $(CUDA_BUILD)/tests/test_cuda_moe $(CUDA_BUILD)/tests/test_cuda_moe_fused \
                 $(CUDA_BUILD)/tests/test_cuda_forward

cuda: $(CUDA_LIB) $(CUDA_TESTS) $(CUDA_BUILD)/bench/cuda_moe_bench $(CUDA_TOOLS)

# The GPU tests (each skips, exit 0, without a device: what CI checks) and the CUDA tools' CLI.
test-cuda: cuda
	@for t in $(CUDA_TESTS); do echo "== $$t"; $$t > $$t.log 2>&1; rc=$$?; \
	  grep -v '^ok ' $$t.log; [ $$rc -eq 0 ] || exit 1; done

$(CUDA_BUILD)/obj/%.o: %.cu $(CUDA_HEADERS) src/quant/blocks.h
	@mkdir -p $(dir $@)
	$(NVCC) $(CPPFLAGS) $(NVCCFLAGS) $(CUDA_TUNE) $(CUDA_GENCODE) -c $< -o $@

$(CUDA_LIB): $(CUDA_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(CUDA_HOST_LIB): $(filter-out $(BUILD)/obj/src/backend/cuda_stub.o,$(LIB_OBJS))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# Programs on the backend interface: the engine and the CUDA library resolve each other.
CUDA_LINK = -Wl,--start-group $(CUDA_HOST_LIB) $(CUDA_LIB) -Wl,--end-group $(CUDA_LDLIBS) $(LDLIBS)

$(CUDA_BUILD)/bin/%: tools/%.c $(CUDA_LIB) $(CUDA_HOST_LIB) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLFLAGS) $< $(CUDA_LINK) -o $@

$(CUDA_BUILD)/bin/ds4: CPPFLAGS += $(EDIT_CFLAGS)
$(CUDA_BUILD)/bin/ds4: LDLIBS += $(EDIT_LIBS)

$(CUDA_BUILD)/tests/test_cuda_forward: tests/cuda/test_cuda_forward.c $(CUDA_LIB) $(CUDA_HOST_LIB) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CUDA_CPPFLAGS) -Itests $(ALLFLAGS) $< $(CUDA_LINK) -o $@

$(CUDA_BUILD)/tests/%: tests/cuda/%.c $(CUDA_LIB) $(LIB) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CUDA_CPPFLAGS) -Itests $(ALLFLAGS) $< $(CUDA_LIB) $(LIB) $(CUDA_LDLIBS) $(LDLIBS) -o $@

$(CUDA_BUILD)/bench/%: bench/%.c $(CUDA_LIB) $(LIB) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CUDA_CPPFLAGS) $(ALLFLAGS) -DDS4_BUILD_FLAGS='"$(NVCC) $(NVCCFLAGS) $(CUDA_TUNE) $(CUDA_GENCODE); $(CC) $(ALLFLAGS)"' \
	  -DDS4_GIT_COMMIT='"$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)"' \
	  $< $(CUDA_LIB) $(LIB) $(CUDA_LDLIBS) $(LDLIBS) -o $@

validate-cuda:
	@tools/validate_cuda.sh

# ---- the newcomer's commands -------------------------------------------------------------
# make run: the tools, a tiny random-weight DS4 model with the real BPE vocabulary (made once,
# kept in models/), and one prompt through the ds4 CLI (random weights: the text is gibberish).
RUN_MODEL  ?= models/ds4-tiny.gguf
RUN_PROMPT ?= Tell me about Alice and the White Rabbit.
run: deps
	@$(MAKE) --no-print-directory tools
	@$(MAKE) --no-print-directory $(RUN_MODEL)
	$(BUILD)/bin/ds4 -m $(RUN_MODEL) -p "$(RUN_PROMPT)" -n 32

models/ds4-tiny.gguf: | $(BUILD)/bin/ds4-mkmodel
	@mkdir -p $(dir $@)
	$(BUILD)/bin/ds4-mkmodel $@ --preset tiny --vocab 4096

test: deps
	$(MAKE) all
	$(MAKE) test-style test-c test-fuzz
	$(MAKE) test-py

test-style: lib
	@tools/check_style.sh $(LIB)

test-c: tests
	@tests/run_c_tests.sh $(BUILD)/tests

test-fuzz: $(FUZZ_REPLAY)
	@for r in $(FUZZ_REPLAY); do n=$$(basename $$r _replay); $$r fuzz/corpus/$$n || exit 1; done

# The first test-py on a machine builds the llama-cpp-python wheel (tests/reference/
# test_llamacpp_ref.py): about 8 min on 2 cores, then cached in ~/.cache/ds4-wheels.
test-py: tools tests venv
	@tools/ensure_ref_venv.sh
	@tools/ensure_llama_wheel.sh
	DS4_BUILD=$(BUILD) $(PYTHON) -m pytest -q -rs tests/reference tests/cli

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" all
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(MAKE) BUILD=build-asan OPT="-O1 -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" test-c test-fuzz

# ThreadSanitizer over the multi-threaded code: the pool, the threaded matmul, the forward.
TSAN_TESTS := test_threadpool test_matmul test_forward
tsan:
	$(MAKE) BUILD=build-tsan OPT="-O1 -fno-omit-frame-pointer" SAN="-fsanitize=thread" \
	  $(TSAN_TESTS:%=build-tsan/tests/%)
	@for t in $(TSAN_TESTS); do TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/$$t > build-tsan/$$t.log 2>&1 \
	  && tail -1 build-tsan/$$t.log || { cat build-tsan/$$t.log; exit 1; }; done

# libFuzzer build (clang): `make fuzz-run FUZZ_SECONDS=60`.
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_LIB := src/ds4_error.c $(shell find src/gguf src/quant -name '*.c' | sort)
fuzz: $(FUZZ_SRCS)
	@mkdir -p build-fuzz
	for f in $(FUZZ_SRCS); do n=$$(basename $$f .c); \
	  $(FUZZ_CC) $(CPPFLAGS) -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined \
	    $$f $(FUZZ_LIB) -lm -lpthread -o build-fuzz/$$n || exit 1; done

fuzz-run: fuzz
	@for f in $(FUZZ_SRCS); do n=$$(basename $$f .c); c=$${n%_fuzz}; \
	  mkdir -p build-fuzz/corpus-$$c; \
	  build-fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 \
	    build-fuzz/corpus-$$c fuzz/corpus/$$c || exit 1; done

deps:
	@tools/ensure_deps.sh

venv: .venv/.stamp
.venv/.stamp: requirements-dev.txt
	@tools/ensure_venv.sh
	@touch $@

clean:
	rm -rf build build-asan build-tsan build-fuzz
