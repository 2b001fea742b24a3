# The two commands: `make run` (the main job: `nabla train` on the embedded digits) and `make test` (every test, on a
# sanitizer build and on a release build, each on both kernel sets, then the threaded test under ThreadSanitizer). `make bench` prints the
# benchmarks; `make fuzz` runs the fuzzers (clang).
JOBS ?= 2
CMAKE ?= cmake

.PHONY: run test bench clean release asan tsan fuzz

release:
	$(CMAKE) -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
	$(CMAKE) --build build/release -j$(JOBS)

asan:
	$(CMAKE) -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DNABLA_SANITIZE=ON >/dev/null
	$(CMAKE) --build build/asan -j$(JOBS)

# ThreadSanitizer: only the threaded test (tests/test_threads.c: the worker pool at 2-4 threads, two application
# threads training at once), on a build of its own; any report fails it.
tsan:
	$(CMAKE) -S . -B build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNABLA_TSAN=ON -DNABLA_BENCH=OFF -DNABLA_EXAMPLES=OFF >/dev/null
	$(CMAKE) --build build/tsan --target test_threads -j$(JOBS)
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 ctest --test-dir build/tsan -R '^test_threads$$' --output-on-failure

# libFuzzer targets (fuzz/, clang): each runs FUZZ_SECONDS on a scratch copy of its corpus under ASan+UBSan.
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
fuzz:
	$(CMAKE) -S . -B build/fuzz -DCMAKE_C_COMPILER=$(FUZZ_CC) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNABLA_FUZZ=ON \
		-DNABLA_TESTS=OFF -DNABLA_BENCH=OFF -DNABLA_EXAMPLES=OFF >/dev/null
	$(CMAKE) --build build/fuzz --target fuzz_all -j$(JOBS)
	sh fuzz/run.sh build/fuzz $(FUZZ_SECONDS)

# The main job builds only the library and the program, quietly (the compiler's output is shown on failure).
run:
	@$(CMAKE) -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
	@$(CMAKE) --build build/release --target nabla_cli -j$(JOBS) >build/release/build.log 2>&1 || \
		{ cat build/release/build.log; exit 1; }
	./build/release/nabla train

# Every suite runs twice: on the fast CPU kernels and on the reference kernels (NABLA_KERNELS=reference).
test: asan release
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --test-dir build/asan --output-on-failure -j$(JOBS)
	NABLA_KERNELS=reference ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --test-dir build/asan --output-on-failure -j$(JOBS)
	ctest --test-dir build/release --output-on-failure -j$(JOBS)
	NABLA_KERNELS=reference ctest --test-dir build/release --output-on-failure -j$(JOBS)
	$(MAKE) --no-print-directory tsan

bench: release
	bash bench/run.sh build/release

clean:
	rm -rf build
