# The two commands: `make run` (the main job: `nabla train` on the embedded digits) and `make test` (every test, on a
# sanitizer build and on a release build). `make bench` prints the benchmarks.
JOBS ?= 2
CMAKE ?= cmake

.PHONY: run test bench clean release asan

release:
	$(CMAKE) -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
	$(CMAKE) --build build/release -j$(JOBS)

asan:
	$(CMAKE) -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DNABLA_SANITIZE=ON >/dev/null
	$(CMAKE) --build build/asan -j$(JOBS)

# The main job builds only the library and the program, quietly (the compiler's output is shown on failure).
run:
	@$(CMAKE) -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
	@$(CMAKE) --build build/release --target nabla_cli -j$(JOBS) >build/release/build.log 2>&1 || \
		{ cat build/release/build.log; exit 1; }
	./build/release/nabla train

test: asan release
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --test-dir build/asan --output-on-failure -j$(JOBS)
	ctest --test-dir build/release --output-on-failure -j$(JOBS)

bench: release
	bash bench/run.sh build/release

clean:
	rm -rf build
