#!/bin/sh
# Runs each fuzzer for SECONDS on a scratch copy of its seed corpus (under
# BUILD/corpus/<target>, where new inputs are also written), with its
# dictionary; a crash, a sanitizer report, a leak, a timeout or a violated
# invariant fails the run, and the input is left under BUILD/artifacts/<target>/.
#   sh fuzz/run.sh BUILD SECONDS [target ...]     (targets: safetensors idx csv einsum ops)
set -u
build=$1
secs=$2
shift 2
targets=${*:-safetensors idx csv einsum ops}
here=$(cd "$(dirname "$0")" && pwd)
status=0
for t in $targets; do
    work=$build/corpus/$t
    art=$build/artifacts/$t
    log=$build/fuzz_$t.log
    rm -rf "$work"
    mkdir -p "$work" "$art"
    cp "$here/corpus/$t"/* "$work"/
    dict=
    [ -f "$here/dict/$t.dict" ] && dict=-dict=$here/dict/$t.dict
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "$build/fuzz_$t" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -max_len=4096 \
        -print_final_stats=1 -artifact_prefix="$art/" $dict "$work" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    if [ $rc -ne 0 ]; then
        echo "fuzz_$t: FAILED after ${execs:-?} runs (log $log, input under $art/):"
        grep -v '^#\|^INFO\|^MS:\|^base unit' "$log" | tail -40
        status=1
    else
        echo "fuzz_$t: ok, ${execs:-?} runs in ${secs} s, corpus $(ls "$work" | wc -l) inputs"
    fi
done
exit $status
