#!/usr/bin/env bash
# run_core.sh BUILD_DIR [--quick]
#
# Runs BUILD_DIR/bench_core (nabla), then bench/peer_torch.py (PyTorch CPU, with
# /usr/bin/python3) when torch imports, and, when OpenBLAS and a cblas.h are
# installed, a small sgemm helper compiled into a temporary directory. Prints
# every raw line, then one markdown table comparing the figures.
#
# The peers run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (for their
# command only), so that OpenBLAS picks its kernels for this CPU itself.
#
# Optional environment:
#   NABLA_OPENBLAS_LIB   libopenblas.so to use (default
#                        /usr/lib/x86_64-linux-gnu/libopenblas.so)
#   NABLA_CBLAS_DIR      directory holding the cblas.h that goes with it
#   NABLA_PEER_BLAS_DIR  directory put first on LD_LIBRARY_PATH for the PyTorch
#                        run, e.g. one holding OpenBLAS's libblas.so.3, when the
#                        system libblas.so.3 is the reference implementation
#                        (the peer prints which BLAS library it mapped)
set -u

if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 BUILD_DIR [--quick]" >&2
    exit 2
fi
BUILD_DIR=$1
shift
QUICK=()
for arg in "$@"; do
    case $arg in
    --quick) QUICK=(--quick) ;;
    *) echo "usage: $0 BUILD_DIR [--quick]" >&2; exit 2 ;;
    esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
BENCH="$BUILD_DIR/bench_core"
PY=/usr/bin/python3
if [ ! -x "$BENCH" ]; then
    echo "error: $BENCH not found; build first (cmake --build $BUILD_DIR)" >&2
    exit 2
fi

TMP=$(mktemp -d /tmp/nabla_bench_core.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
RAW="$TMP/raw.txt"
: >"$RAW"

echo "## nabla"
"$BENCH" "${QUICK[@]}" | tee -a "$RAW"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
    echo "# bench_core exited with status $status"
fi

echo
echo "## PyTorch"
PEER_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
if [ -n "${NABLA_PEER_BLAS_DIR:-}" ]; then
    PEER_ENV+=("LD_LIBRARY_PATH=$NABLA_PEER_BLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
fi
if [ -x "$PY" ] && "${PEER_ENV[@]}" "$PY" -c 'import torch' >/dev/null 2>&1; then
    echo "# peer run as: ${PEER_ENV[*]} $PY bench/peer_torch.py ${QUICK[*]}"
    "${PEER_ENV[@]}" "$PY" "$HERE/peer_torch.py" "${QUICK[@]}" | tee -a "$RAW"
else
    echo "# peer missing: '$PY -c \"import torch\"' fails; PyTorch columns are empty" | tee -a "$RAW"
fi

# ---------------------------------------------------------------------------
# Optional: single-thread OpenBLAS sgemm, the reference for the matmul target.
# ---------------------------------------------------------------------------
echo
echo "## OpenBLAS sgemm (single thread)"
OBLAS=${NABLA_OPENBLAS_LIB:-/usr/lib/x86_64-linux-gnu/libopenblas.so}
CBLAS_DIR=""
for d in ${NABLA_CBLAS_DIR:-} /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/x86_64-linux-gnu/openblas-openmp \
    /usr/include/x86_64-linux-gnu/openblas-serial /usr/include/openblas /usr/include/x86_64-linux-gnu /usr/include; do
    if [ -f "$d/cblas.h" ]; then CBLAS_DIR=$d; break; fi
done
CC_BIN=${CC:-cc}
if [ -e "$OBLAS" ] && [ -n "$CBLAS_DIR" ] && command -v "$CC_BIN" >/dev/null 2>&1; then
    cat >"$TMP/oblas_sgemm.c" <<'EOF'
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <cblas.h>
void openblas_set_num_threads(int n);
char *openblas_get_corename(void);
static double now_s(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
int main(int argc, char **argv) {
    double budget = argc > 1 ? atof(argv[1]) : 1.5;
    int min_reps = argc > 2 ? atoi(argv[2]) : 5;
    openblas_set_num_threads(1);
    printf("# OpenBLAS core: %s, 1 thread\n", openblas_get_corename());
    const int sizes[] = {256, 512, 1024};
    for (int s = 0; s < 3; s++) {
        int n = sizes[s];
        float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
        if (!a || !b || !c) return 1;
        for (long i = 0; i < (long)n * n; i++) { a[i] = (float)(i % 17) / 17.0f - 0.5f; b[i] = (float)(i % 13) / 13.0f - 0.5f; }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double times[200]; int reps = 0; double start = now_s();
        while (reps < 200 && (reps < min_reps || now_s() - start < budget)) {
            double t0 = now_s();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            times[reps++] = now_s() - t0;
        }
        qsort(times, reps, sizeof times[0], cmp);
        double med = reps % 2 ? times[reps / 2] : 0.5 * (times[reps / 2 - 1] + times[reps / 2]);
        printf("openblas matmul_gflops %d %.2f\n", n, 2.0 * n * n * n / med * 1e-9);
        free(a); free(b); free(c);
    }
    return 0;
}
EOF
    if "$CC_BIN" -O2 -std=c11 -I"$CBLAS_DIR" "$TMP/oblas_sgemm.c" -o "$TMP/oblas_sgemm" "$OBLAS" \
        -Wl,-rpath,"$(dirname "$(readlink -f "$OBLAS")")" 2>"$TMP/cc.err"; then
        if [ ${#QUICK[@]} -gt 0 ]; then OB_ARGS=(0.2 2); else OB_ARGS=(1.5 5); fi
        echo "# run as: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 (helper linked with $(readlink -f "$OBLAS"))"
        env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 "$TMP/oblas_sgemm" "${OB_ARGS[@]}" |
            tee -a "$RAW"
        # The same with the machine's OpenBLAS settings, for reference only.
        if [ -n "${OPENBLAS_CORETYPE:-}${OPENBLAS_L2_SIZE:-}" ]; then
            echo "# with the machine's settings (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-}), not in the table:"
            OPENBLAS_NUM_THREADS=1 "$TMP/oblas_sgemm" "${OB_ARGS[@]}" | sed 's/^openblas /# openblas(env as set) /'
        fi
    else
        echo "# OpenBLAS helper did not compile:"
        sed 's/^/#   /' "$TMP/cc.err"
    fi
else
    echo "# OpenBLAS (libopenblas.so + cblas.h) not installed; column left empty"
fi

# ---------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------
echo
awk '
    /^#/ || NF < 3 { next }
    {
        who = $1; key = $2; val = $NF
        if (NF == 4) key = key " " $3
        v[who, key] = val
    }
    function cell(who, key) { return ((who, key) in v) ? v[who, key] : "-" }
    function ratio(a, b, key,    x, y) {
        if (!((a, key) in v) || !((b, key) in v)) return "-"
        x = v[a, key] + 0; y = v[b, key] + 0
        if (y == 0) return "-"
        return sprintf("%.2f", x / y)
    }
    function row(label, key, kind,   r, note) {
        r = ratio("nabla", "torch", key)
        if (kind == "time") note = " (time nabla/torch; lower is better)"
        else note = " (nabla/torch; higher is better)"
        if (r == "-") note = ""
        printf "| %s | %s | %s | %s%s | %s | %s |\n", label, cell("nabla", key), cell("torch", key), r, note,
               cell("openblas", key), (ratio("nabla", "openblas", key) == "-") ? "-" : ratio("nabla", "openblas", key) " (higher is better)"
    }
    END {
        print "| figure | nabla | PyTorch | ratio | OpenBLAS 1 thread | ratio nabla/OpenBLAS |"
        print "|---|---|---|---|---|---|"
        row("scalar graph, fwd+bwd, us per op (lower is better)", "scalar_op_us", "time")
        row("scalar graph, forward only, us per op", "scalar_fwd_us", "time")
        row("scalar graph, backward + free, us per op", "scalar_bwd_us", "time")
        row("matmul f32 256, GFLOP/s, 1 thread (higher is better)", "matmul_gflops 256", "rate")
        row("matmul f32 512, GFLOP/s, 1 thread", "matmul_gflops 512", "rate")
        row("matmul f32 1024, GFLOP/s, 1 thread", "matmul_gflops 1024", "rate")
        if (("torch", "matmul_2threads_gflops 1024") in v)
            printf "| matmul f32 1024, GFLOP/s, torch at 2 threads | %s | %s | %s (nabla 1 thread / torch 2 threads) | - | - |\n",
                cell("nabla", "matmul_gflops 1024"), v["torch", "matmul_2threads_gflops 1024"],
                (("nabla", "matmul_gflops 1024") in v) ? sprintf("%.2f", v["nabla", "matmul_gflops 1024"] / v["torch", "matmul_2threads_gflops 1024"]) : "-"
        row("add f32 n = 16M (1M with --quick), out = a + b, GB/s (3*4*n bytes; higher is better)", "add_gbps", "rate")
        row("add f32, in place a += b, GB/s", "add_inplace_gbps", "rate")
        if (("nabla", "matmul_gflops 1024") in v && ("openblas", "matmul_gflops 1024") in v) {
            r = v["nabla", "matmul_gflops 1024"] / v["openblas", "matmul_gflops 1024"]
            printf "\nmatmul 1024 target: nabla >= 0.5x single-thread OpenBLAS sgemm: %.2fx, %s\n", r, (r >= 0.5) ? "met" : "not met"
        }
        print "\nNotes: nabla is single-threaded. out = a + b allocates a fresh result (64 MiB at 16M) on every call in"
        print "both libraries, so that figure includes the first-touch page faults of the new buffer; the in-place"
        print "figure (no allocation, same bytes counted) is the streaming rate of the kernel."
    }
' "$RAW"
exit "$status"
