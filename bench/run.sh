#!/usr/bin/env bash
# run.sh BUILD_DIR [--quick] [--gpt2-124m] [--generate] [--cnn]
#
# nabla against its peers on this machine, every figure measured in this run:
#   nabla     BUILD_DIR/bench_gemm --table --budget S --only N T, BUILD_DIR/bench_core --table, --mlp T,
#             BUILD_DIR/bench_gpt2 [--model nb_gpt] --config C --threads T, with --generate BUILD_DIR/bench_generate
#   OpenBLAS  bench/peer_openblas.c (cblas_sgemm), compiled into a temporary directory
#   PyTorch   bench/peer_torch.py and bench/peer_torch_gpt2.py with /usr/bin/python3, one process
#             per configuration
# GEMM runs in 3 rounds (1 with --quick) that alternate nabla (bench_gemm --table --budget S
# --only N T) and OpenBLAS size by size, the MLP step in 5 (1) that alternate nabla
# (bench_core --mlp T) and PyTorch at its best, the GPT-2 step (config small) in 3 (1) that
# alternate nabla (bench_gpt2: the step written from ops, then the library's nb_gpt) and PyTorch
# (peer_torch_gpt2.py --tuned), nabla first in odd rounds and last in even ones, so that a change in
# a shared machine's speed falls on both; the table
# shows each median round. --gpt2-124m adds one round of the GPT-2 124M shape at 2 threads (about
# two minutes, most of it building the models). --generate adds text generation with a KV cache at the
# GPT-2 124M shape (bench_generate, 200 tokens after a 16-token prompt, top-k 40 sampling) against
# peer_torch_generate.py (nn.Linear as Hugging Face's loop, "torch_best") and its --matvec variant
# (one-row products by torch.addmv, "torch_matvec"), 1 and 2 threads, in 3 rounds (1 with --quick)
# that alternate the three, nabla first in odd rounds and last in even ones (about ten minutes).
# --cnn adds the default CNN (bench_cnn --step: Conv-BN-ReLU-MaxPool twice, Linear 3136-128, Dropout,
# Linear 128-10, Adam, batch 128; bench_cnn --conv: conv2d forward + backward alone at its two layers'
# shapes) against peer_torch_cnn.py in the best environment, 1 and 2 threads, in 3 rounds (1 with
# --quick) that alternate nabla and PyTorch (about two minutes).
# Prints every raw line ("who key [arg...] value"; '#' lines are comments), then one
# markdown table: nabla, the peer, nabla/peer, the target, and the fraction of the
# machine's peak FLOP rate where the figure is a FLOP rate or a time of known FLOPs.
#
# nabla runs in the environment as it is. The peers run as follows (T = 1, 2):
#   OpenBLAS sgemm        env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=T
#   PyTorch, "best"       env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE
#                             OPENBLAS_NUM_THREADS=T OMP_NUM_THREADS=T GLIBC_TUNABLES=<malloc settings>
#                         plus torch.set_num_threads(T) and openblas_set_num_threads(T)
#   PyTorch, out of box   the environment as it is, only torch.set_num_threads(T)
#   PyTorch GPT-2 step    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=T
#                             OMP_NUM_THREADS=T peer_torch_gpt2.py --threads T --tuned (its own
#                             OMP_WAIT_POLICY=PASSIVE and mallopt settings)
#   PyTorch generation    the same environment, peer_torch_generate.py --threads T [--matvec] (always
#                             tuned as --tuned above)
# The tiny-op and peak-memory figures of PyTorch use the "best" environment at 1 thread.
#
# Exit status: 2 when bench_gemm, bench_core or bench_gpt2 is missing from BUILD_DIR (the peers and
# the table still run), else the first non-zero status of the nabla programs, else 0.
# Peer failures and missed targets do not change it.
#
# Optional environment:
#   NABLA_OPENBLAS_LIB  libopenblas.so to link the sgemm peer with
#                       (default /usr/lib/x86_64-linux-gnu/libopenblas.so)
#   NABLA_CBLAS_DIR     directory holding the cblas.h that goes with it
set -u

usage() {
    echo "usage: $0 BUILD_DIR [--quick] [--gpt2-124m] [--generate] [--cnn]" >&2
    exit 2
}
[ $# -ge 1 ] || usage
BUILD_DIR=$1
shift
QUICK=()
GPT2_124M=0
GENERATE=0
CNN=0
for arg in "$@"; do
    case $arg in
    --quick) QUICK=(--quick) ;;
    --gpt2-124m) GPT2_124M=1 ;;
    --generate) GENERATE=1 ;;
    --cnn) CNN=1 ;;
    *) usage ;;
    esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
START=$(date +%s)

TMP=$(mktemp -d /tmp/nabla_bench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
RAW="$TMP/raw.txt"
: >"$RAW"

# Peers' environments. mmap_threshold 32 MiB is glibc's documented maximum on 64-bit; with
# the large trim_threshold, freed blocks stay in the heap and are reused without page faults.
PEER_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
MALLOC_TUNABLES=glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_threshold=33554432
best_env() { # best_env T: the "best" PyTorch environment for T threads
    BEST_ENV=("${PEER_ENV[@]}" OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS="$1" OMP_NUM_THREADS="$1"
        GLIBC_TUNABLES="$MALLOC_TUNABLES")
}

# run_round R CMD...: as run_peer, for round R of the alternating rounds: its mlp_step_ms,
# gemm_gflops, gpt2_step_ms and gen_tokens_per_s lines are kept as mlp_round_ms, gemm_round_gflops,
# gpt2_round_ms, gen_round_tokens_per_s, cnn_round_ms and conv_round_ms, whose median over the rounds the
# table shows as mlp_step_ms, gemm_gflops, gpt2_step_ms, gen_tokens_per_s, cnn_step_ms and conv_ms.
# Returns CMD's status.
run_round() {
    local r=$1
    shift
    echo "# round $r, run as: $*"
    "$@" | sed 's/ mlp_step_ms / mlp_round_ms /; s/ mlp_core_step_ms / mlp_core_round_ms /; s/ gemm_gflops / gemm_round_gflops /; s/ gpt2_step_ms / gpt2_round_ms /; s/ gen_tokens_per_s / gen_round_tokens_per_s /; s/ cnn_step_ms / cnn_round_ms /; s/ conv_ms / conv_round_ms /' |
        tee -a "$RAW"
    local s=${PIPESTATUS[0]}
    [ "$s" -eq 0 ] || echo "# exited with status $s: $*" | tee -a "$RAW"
    return "$s"
}

# run_peer CMD...: prints the command line, runs it, keeps its lines; a failure is a comment.
run_peer() {
    echo "# run as: $*"
    "$@" | tee -a "$RAW"
    local s=${PIPESTATUS[0]}
    [ "$s" -eq 0 ] || echo "# peer exited with status $s: $*" | tee -a "$RAW"
}

echo "# machine: $(nproc) cores, $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# environment: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-(unset)} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE-(unset)}"

# ---------------------------------------------------------------------------
# nabla
# ---------------------------------------------------------------------------
echo
echo "## nabla"
status=0
missing=0
for prog in bench_gemm bench_core bench_gpt2; do
    if [ ! -x "$BUILD_DIR/$prog" ]; then
        echo "# missing: $BUILD_DIR/$prog (build it first: cmake --build $BUILD_DIR); its nabla cells stay '-'"
        missing=1
    fi
done
if [ -x "$BUILD_DIR/bench_core" ]; then
    prog=bench_core
    echo "# run as: $BUILD_DIR/$prog --table ${QUICK[*]}"
    "$BUILD_DIR/$prog" --table "${QUICK[@]}" | tee -a "$RAW"
    s=${PIPESTATUS[0]}
    if [ "$s" -ne 0 ]; then
        echo "# $prog exited with status $s"
        [ "$status" -ne 0 ] || status=$s
    fi
fi

# ---------------------------------------------------------------------------
# GEMM: nabla (bench_gemm) and OpenBLAS sgemm, 1 and 2 threads, in alternating rounds
# ---------------------------------------------------------------------------
echo
echo "## GEMM: nabla and OpenBLAS"
OBLAS=${NABLA_OPENBLAS_LIB:-/usr/lib/x86_64-linux-gnu/libopenblas.so}
CBLAS_DIR=""
for d in ${NABLA_CBLAS_DIR:-} /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/x86_64-linux-gnu/openblas-openmp \
    /usr/include/x86_64-linux-gnu/openblas-serial /usr/include/openblas /usr/include/x86_64-linux-gnu /usr/include; do
    if [ -f "$d/cblas.h" ]; then CBLAS_DIR=$d; break; fi
done
CC_BIN=${CC:-cc}
PEER_BLAS=0
if [ ! -e "$OBLAS" ] || [ -z "$CBLAS_DIR" ] || ! command -v "$CC_BIN" >/dev/null 2>&1; then
    echo "# peer missing: OpenBLAS ($OBLAS), a cblas.h or the compiler $CC_BIN not found; OpenBLAS cells stay '-'"
elif ! "$CC_BIN" -O2 -std=c11 -I"$CBLAS_DIR" "$HERE/peer_openblas.c" -o "$TMP/peer_openblas" "$OBLAS" -lm \
    -Wl,-rpath,"$(dirname "$(readlink -f "$OBLAS")")" 2>"$TMP/cc.err"; then
    echo "# peer missing: bench/peer_openblas.c did not compile:"
    sed 's/^/#   /' "$TMP/cc.err"
else
    echo "# peer_openblas linked with $(readlink -f "$OBLAS"), cblas.h from $CBLAS_DIR"
    PEER_BLAS=1
fi
# Each round runs every size and thread count as nabla then OpenBLAS, back to back, each the median
# of the runs within BUDGET seconds; the table shows the median of the rounds.
if [ ${#QUICK[@]} -gt 0 ]; then GROUNDS=1 BUDGET=0.1; else GROUNDS=3 BUDGET=0.35; fi
# Odd rounds run nabla first, even rounds the peer first, so that neither always follows the other.
gemm_nabla() { # gemm_nabla R N T
    [ -x "$BUILD_DIR/bench_gemm" ] || return 0
    run_round "$1" "$BUILD_DIR/bench_gemm" --table --budget $BUDGET --only "$2" "$3"
    local s=$?
    [ "$s" -eq 0 ] || [ "$status" -ne 0 ] || status=$s
}
gemm_peer() { # gemm_peer R N T
    [ "$PEER_BLAS" -eq 1 ] || return 0
    run_round "$1" "${PEER_ENV[@]}" OPENBLAS_NUM_THREADS="$3" "$TMP/peer_openblas" "$3" $BUDGET "$2"
}
for r in $(seq 1 $GROUNDS); do
    for t in 1 2; do
        for n in 64 128 256 512 1024 2048; do
            if [ $((r % 2)) -eq 1 ]; then gemm_nabla "$r" $n $t; gemm_peer "$r" $n $t
            else gemm_peer "$r" $n $t; gemm_nabla "$r" $n $t; fi
        done
    done
done

# ---------------------------------------------------------------------------
# PyTorch: MLP step (best and out-of-box environments, 1 and 2 threads), tiny ops, memory
# ---------------------------------------------------------------------------
echo
echo "## PyTorch"
if [ -x "$PY" ] && "$PY" -c 'import torch' >/dev/null 2>&1; then
    TORCH=("$PY" "$HERE/peer_torch.py")
    # The MLP step: nabla and PyTorch (best environment) in alternating rounds, so that a change in a
    # shared machine's speed during the run falls on both; each figure is the median of its rounds.
    if [ ${#QUICK[@]} -gt 0 ]; then ROUNDS=1; else ROUNDS=5; fi
    mlp_nabla() { # mlp_nabla R T
        [ -x "$BUILD_DIR/bench_core" ] || return 0
        run_round "$1" "$BUILD_DIR/bench_core" --mlp "$2" "${QUICK[@]}"
        local s=$?
        [ "$s" -eq 0 ] || [ "$status" -ne 0 ] || status=$s
        run_round "$1" "$BUILD_DIR/bench_core" --mlp-core "$2" "${QUICK[@]}" # the same MLP from core ops only
        s=$?
        [ "$s" -eq 0 ] || [ "$status" -ne 0 ] || status=$s
    }
    mlp_peer() { # mlp_peer R T
        best_env "$2"
        run_round "$1" "${BEST_ENV[@]}" "${TORCH[@]}" mlp --threads "$2" --label torch_best --tune-blas "${QUICK[@]}"
    }
    for r in $(seq 1 $ROUNDS); do # odd rounds nabla first, even rounds PyTorch first
        for t in 1 2; do
            if [ $((r % 2)) -eq 1 ]; then mlp_nabla "$r" $t; mlp_peer "$r" $t
            else mlp_peer "$r" $t; mlp_nabla "$r" $t; fi
        done
    done
    for t in 1 2; do
        run_peer "${TORCH[@]}" mlp --threads $t --label torch_default "${QUICK[@]}"
    done

    # The GPT-2 step (bench_gpt2.c, peer_torch_gpt2.py): config small at 1 and 2 threads in alternating
    # rounds; the 124M shape at 2 threads in one round with --gpt2-124m.
    if [ ${#QUICK[@]} -gt 0 ]; then G2ROUNDS=1 G2STEPS=(--steps 4 --warmup 2); else G2ROUNDS=3 G2STEPS=(--steps 10 --warmup 3); fi
    gpt2_nabla() { # gpt2_nabla R CONFIG T
        [ -x "$BUILD_DIR/bench_gpt2" ] || return 0
        run_round "$1" "$BUILD_DIR/bench_gpt2" --config "$2" --threads "$3" "${G2STEPS[@]}" | grep -v '^step '
        local s=${PIPESTATUS[0]}
        [ "$s" -eq 0 ] || [ "$status" -ne 0 ] || status=$s
    }
    gpt2_lib() { # gpt2_lib R CONFIG T: the library's model (nb_gpt), issue 13's targets
        [ -x "$BUILD_DIR/bench_gpt2" ] || return 0
        run_round "$1" "$BUILD_DIR/bench_gpt2" --model nb_gpt --config "$2" --threads "$3" "${G2STEPS[@]}" | grep -v '^step '
        local s=${PIPESTATUS[0]}
        [ "$s" -eq 0 ] || [ "$status" -ne 0 ] || status=$s
    }
    gpt2_peer() { # gpt2_peer R CONFIG T
        run_round "$1" "${PEER_ENV[@]}" OPENBLAS_NUM_THREADS="$3" OMP_NUM_THREADS="$3" "$PY" "$HERE/peer_torch_gpt2.py" \
            --config "$2" --threads "$3" --tuned --label torch_best "${G2STEPS[@]}" | grep -v '^step '
    }
    for r in $(seq 1 $G2ROUNDS); do
        for t in 1 2; do
            if [ $((r % 2)) -eq 1 ]; then gpt2_nabla "$r" small $t; gpt2_lib "$r" small $t; gpt2_peer "$r" small $t
            else gpt2_peer "$r" small $t; gpt2_lib "$r" small $t; gpt2_nabla "$r" small $t; fi
        done
    done
    if [ "$GPT2_124M" -eq 1 ]; then
        gpt2_nabla 1 124m 2
        gpt2_lib 1 124m 2
        gpt2_peer 1 124m 2
    fi

    # Generation with a KV cache (bench_generate.c, peer_torch_generate.py): the 124M shape at 1 and 2
    # threads, nabla and the two peers in alternating rounds, each run one timed generation after an
    # untimed one.
    if [ "$GENERATE" -eq 1 ]; then
        if [ ${#QUICK[@]} -gt 0 ]; then GENROUNDS=1; else GENROUNDS=3; fi
        gen_nabla() { # gen_nabla R T
            if [ ! -x "$BUILD_DIR/bench_generate" ]; then
                echo "# missing: $BUILD_DIR/bench_generate; its nabla cells stay '-'"
                return 0
            fi
            run_round "$1" "$BUILD_DIR/bench_generate" --config 124m --threads "$2" --rounds 1 | grep -v '^round '
            local s=${PIPESTATUS[0]}
            [ "$s" -eq 0 ] || [ "$status" -ne 0 ] || status=$s
        }
        gen_peer() { # gen_peer R T LABEL [--matvec]
            run_round "$1" "${PEER_ENV[@]}" OPENBLAS_NUM_THREADS="$2" OMP_NUM_THREADS="$2" "$PY" \
                "$HERE/peer_torch_generate.py" --config 124m --threads "$2" --rounds 1 --label "$3" "${@:4}" |
                grep -v '^round '
        }
        for r in $(seq 1 $GENROUNDS); do
            for t in 1 2; do
                if [ $((r % 2)) -eq 1 ]; then
                    gen_nabla "$r" $t; gen_peer "$r" $t torch_best; gen_peer "$r" $t torch_matvec --matvec
                else
                    gen_peer "$r" $t torch_matvec --matvec; gen_peer "$r" $t torch_best; gen_nabla "$r" $t
                fi
            done
        done
    fi

    # The default CNN (bench_cnn.c, peer_torch_cnn.py, best environment): the training step and the
    # convolutions alone at 1 and 2 threads, in alternating rounds, with --cnn.
    if [ "$CNN" -eq 1 ]; then
        if [ ${#QUICK[@]} -gt 0 ]; then CNNROUNDS=1 CNNSTEPS=(--steps 5 --warmup 2); else CNNROUNDS=3 CNNSTEPS=(--steps 20 --warmup 3); fi
        cnn_nabla() { # cnn_nabla R T
            if [ ! -x "$BUILD_DIR/bench_cnn" ]; then
                echo "# missing: $BUILD_DIR/bench_cnn; its nabla cells stay '-'"
                return 0
            fi
            local mode s
            for mode in --step --conv; do
                run_round "$1" "$BUILD_DIR/bench_cnn" $mode --threads "$2" "${CNNSTEPS[@]}" | grep -v '^step '
                s=${PIPESTATUS[0]}
                [ "$s" -eq 0 ] || [ "$status" -ne 0 ] || status=$s
            done
        }
        cnn_peer() { # cnn_peer R T
            local mode
            best_env "$2"
            for mode in --step --conv; do
                run_round "$1" "${BEST_ENV[@]}" "$PY" "$HERE/peer_torch_cnn.py" $mode --threads "$2" --label torch_best \
                    --tune-blas "${CNNSTEPS[@]}" | grep -v '^step '
            done
        }
        for r in $(seq 1 $CNNROUNDS); do
            for t in 1 2; do
                if [ $((r % 2)) -eq 1 ]; then cnn_nabla "$r" $t; cnn_peer "$r" $t
                else cnn_peer "$r" $t; cnn_nabla "$r" $t; fi
            done
        done
    fi
    best_env 1
    run_peer "${BEST_ENV[@]}" "${TORCH[@]}" tiny --threads 1 --label torch --tune-blas "${QUICK[@]}"
    run_peer "${BEST_ENV[@]}" "${TORCH[@]}" mem --threads 1 --label torch --tune-blas "${QUICK[@]}"
else
    echo "# peer missing: '$PY -c \"import torch\"' fails; PyTorch cells stay '-'"
fi

echo
echo "# run took $(($(date +%s) - START)) s; load average at end: $(cut -d" " -f1-3 /proc/loadavg)"
echo

# ---------------------------------------------------------------------------
# Table. v[who, key] holds the last numeric value of "who key [arg...] value",
# key being everything between who and value (e.g. "gemm_gflops 512 2").
# ---------------------------------------------------------------------------
awk '
    /^#/ || NF < 3 { next }
    $NF ~ /^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/ {
        key = $2
        for (i = 3; i < NF; i++) key = key " " $i
        v[$1, key] = $NF + 0
        if ($2 == "gpt2_timed_allocs" && (($1, key) in v) && vmax[$1, key] > $NF + 0) v[$1, key] = vmax[$1, key]
        if ($2 == "gpt2_timed_allocs") vmax[$1, key] = v[$1, key]
        if ($2 == "mlp_round_ms" || $2 == "mlp_core_round_ms" || $2 == "gemm_round_gflops" || $2 == "gpt2_round_ms" ||
            $2 == "gen_round_tokens_per_s" || $2 == "cnn_round_ms" || $2 == "conv_round_ms") {
            rk = ($2 == "mlp_round_ms") ? "mlp_step_ms" : ($2 == "mlp_core_round_ms") ? "mlp_core_step_ms" : \
                 ($2 == "gpt2_round_ms") ? "gpt2_step_ms" : ($2 == "gen_round_tokens_per_s") ? "gen_tokens_per_s" : \
                 ($2 == "cnn_round_ms") ? "cnn_step_ms" : ($2 == "conv_round_ms") ? "conv_ms" : "gemm_gflops"
            for (i = 3; i < NF; i++) rk = rk " " $i
            rv[$1, rk, ++rn[$1, rk]] = $NF + 0
        }
    }
    function has(who, key) { return (who, key) in v }
    # ratio(a, b, key): v[a, key] / v[b, key], or "" when either is missing
    function ratio(a, b, key) { return (has(a, key) && has(b, key) && v[b, key] > 0) ? v[a, key] / v[b, key] : "" }
    function rfmt(f, r) { return (r == "") ? "-" : sprintf(f, r) }
    function plural(t) { return (t > 1) ? "s" : "" }
    function row(label, a, b, r, target, fa, fb) { printf "| %s | %s | %s | %s | %s | %s | %s |\n", label, a, b, r, target, fa, fb }
    function fmt(f, who, key) { return has(who, key) ? sprintf(f, v[who, key]) : "-" }
    # frac(gflops, threads): fraction of the peak FLOP rate, or "-" without a clock
    function frac(gflops, t) { return clock > 0 ? sprintf("%.2f", gflops / (64 * clock * t)) : "-" }
    # check(r, limit, higher): records the figure in the target group g and returns the target cell
    function check(r, limit, higher, what,   ok) {
        count[g]++
        if (r == "") { miss[g] = miss[g] "; " what; return (higher ? ">= " : "<= ") limit ": -" }
        ok = higher ? r >= limit : r <= limit
        if (!ok) fail[g] = fail[g] sprintf("; %s %.3gx", what, r)
        if (!(g in worst) || (higher ? r < worst[g] : r > worst[g])) { worst[g] = r; worstwhat[g] = what }
        return (higher ? ">= " : "<= ") limit ": " (ok ? "met" : "not met")
    }
    # verdict(g, text): one line per target group; a failure is known even when a figure is missing
    function verdict(g, text,   m) {
        m = (g in miss) ? "missing: " substr(miss[g], 3) : ""
        if (g in fail) printf "- %s: not met (%s%s)\n", text, substr(fail[g], 3), m == "" ? "" : "; " m
        else if (g in miss && count[g] == 1) printf "- %s: - (no verdict; a figure is missing)\n", text
        else if (g in miss) printf "- %s: - (no verdict; %s)\n", text, m
        else if (count[g] == 1) printf "- %s: met (%.3gx)\n", text, worst[g]
        else printf "- %s: met (closest: %s %.3gx)\n", text, worstwhat[g], worst[g]
    }
    # The GPT-2 step of `who` (nabla: written from ops; nabla_gpt: the library model) for config c at t threads,
    # against PyTorch, in target group gpre c with the given limit; its matrix products as computed (full T x T
    # attention, the causal half included) take 3x the forward FLOPs (forward, input and weight gradients); the
    # rest of the step is not counted.
    function gpt2_step_row(who, with, limit, gpre, c, t,   key, fl, r, fa, fb) {
        key = "gpt2_step_ms " c " " t
        if (!has(who, key) && (who != "nabla" || c == "124m" && !has("torch_best", key))) return
        g = gpre c
        fl = 3 * 4 * 64 * (gL[c] * (24 * gC[c] * gC[c] + 4 * 64 * gC[c]) + 2 * gC[c] * gV[c])
        r = ratio(who, "torch_best", key)
        fa = (has(who, key) && v[who, key] > 0) ? frac(fl / v[who, key] * 1e-6, t) : "-"
        fb = (has("torch_best", key) && v["torch_best", key] > 0) ? frac(fl / v["torch_best", key] * 1e-6, t) : "-"
        row(sprintf("%s step%s, %d thread%s, ms (peer: PyTorch)", gname[c], with, t, plural(t)),
            fmt("%.1f", who, key), fmt("%.1f", "torch_best", key), rfmt("%.2f", r),
            check(r, limit, 0, c " at " t " thread" plural(t)), fa, fb)
    }
    # Its peak memory against that of PyTorch: a target (at most the same) when group gm is given.
    function gpt2_peak_row(who, with, gm, c, t,   key, r) {
        key = "gpt2_peak_mib " c " " t
        if (!has(who, key) && (gm != "" || !has("torch_best", key))) return
        r = ratio(who, "torch_best", key)
        if (gm != "") g = gm
        row(sprintf("GPT-2 %s step%s peak memory, %d thread%s, MiB above baseline (peer: PyTorch)", c, with, t, plural(t)),
            fmt("%.1f", who, key), fmt("%.1f", "torch_best", key), rfmt("%.2f", r),
            gm != "" ? check(r, 1, 0, c " at " t " thread" plural(t)) : "-", "-", "-")
    }
    END {
        # the alternating rounds: the median of the rounds of a figure replaces its single value
        for (wk in rn) {
            split(wk, p, SUBSEP); n = rn[wk]
            for (i = 1; i <= n; i++) sv[i] = rv[p[1], p[2], i]
            for (i = 2; i <= n; i++) for (j = i; j > 1 && sv[j - 1] > sv[j]; j--) { x = sv[j]; sv[j] = sv[j - 1]; sv[j - 1] = x }
            v[p[1], p[2]] = (n % 2) ? sv[(n + 1) / 2] : (sv[n / 2] + sv[n / 2 + 1]) / 2
            if (p[2] ~ /^mlp/) nrounds = n; else if (p[2] ~ /^gpt2/) g2rounds[p[2]] = n
            else if (p[2] ~ /^gen_/) genrounds = n; else if (p[2] ~ /^(cnn|conv)_/) cnnrounds = n; else grounds = n
        }
        clock = has("nabla", "clock_ghz") ? v["nabla", "clock_ghz"] : 0
        # FLOPs of one MLP step: forward matmuls, weight gradients (same count), input
        # gradients of every layer but the first (its input needs none), SGD update 2 per parameter.
        split("784 256 256 10", d, " ")
        fwd = 0; dx = 0; params = 0
        for (i = 1; i < 4; i++) {
            fwd += 2 * 128 * d[i] * d[i + 1]
            if (i > 1) dx += 2 * 128 * d[i] * d[i + 1]
            params += d[i] * d[i + 1] + d[i + 1]
        }
        mlp_flop = 2 * fwd + dx + 2 * params

        print "| figure | nabla | peer | nabla / peer | target | nabla / peak | peer / peak |"
        print "|---|---:|---:|---:|---|---:|---:|"
        split("64 128 256 512 1024 2048", sizes, " ")
        for (i = 1; i <= 6; i++) for (t = 1; t <= 2; t++) {
            n = sizes[i]; key = "gemm_gflops " n " " t
            g = (n >= 512) ? "gemm_large" : "gemm_small"
            r = ratio("nabla", "openblas", key)
            fa = has("nabla", key) ? frac(v["nabla", key], t) : "-"
            fb = has("openblas", key) ? frac(v["openblas", key], t) : "-"
            row(sprintf("GEMM f32 %d, %d thread%s, GFLOP/s (peer: OpenBLAS sgemm)", n, t, plural(t)),
                fmt("%.1f", "nabla", key), fmt("%.1f", "openblas", key), rfmt("%.2f", r),
                check(r, (n >= 512) ? 0.9 : 0.8, 1, n " at " t " thread" plural(t)), fa, fb)
        }
        g = "mlp"
        for (t = 1; t <= 2; t++) {
            key = "mlp_step_ms " t
            r = ratio("nabla", "torch_best", key)
            peer = fmt("%.3f", "torch_best", key)
            if (has("torch_default", key)) peer = peer sprintf(" (out of box %.3f)", v["torch_default", key])
            fa = (has("nabla", key) && v["nabla", key] > 0) ? frac(mlp_flop / v["nabla", key] * 1e-6, t) : "-"
            fb = (has("torch_best", key) && v["torch_best", key] > 0) ? frac(mlp_flop / v["torch_best", key] * 1e-6, t) : "-"
            row(sprintf("MLP 784-256-256-10 step, batch 128, %d thread%s, ms (peer: PyTorch)", t, plural(t)),
                fmt("%.3f", "nabla", key), peer, rfmt("%.2f", r), check(r, 0.8, 0, t " thread" plural(t)), fa, fb)
        }
        g = "mlp_core"
        for (t = 1; t <= 2; t++) {
            key = "mlp_core_step_ms " t; pk = "mlp_step_ms " t
            r = (has("nabla", key) && has("torch_best", pk) && v["torch_best", pk] > 0) ? v["nabla", key] / v["torch_best", pk] : ""
            fa = (has("nabla", key) && v["nabla", key] > 0) ? frac(mlp_flop / v["nabla", key] * 1e-6, t) : "-"
            fb = (has("torch_best", pk) && v["torch_best", pk] > 0) ? frac(mlp_flop / v["torch_best", pk] * 1e-6, t) : "-"
            row(sprintf("the same MLP from core ops (matmul, add, relu, cross_entropy, SGD over nb_data), %d thread%s, ms (peer: PyTorch)", t, plural(t)),
                fmt("%.3f", "nabla", key), fmt("%.3f", "torch_best", pk), rfmt("%.2f", r), check(r, 0.8, 0, t " thread" plural(t)), fa, fb)
        }
        # The GPT-2 step (gpt2_step_row, gpt2_peak_row): its configs and their shapes
        split("small 124m", gcfg, " ")
        gL["small"] = 4; gC["small"] = 256; gV["small"] = 8192; gL["124m"] = 12; gC["124m"] = 768; gV["124m"] = 50304
        gname["small"] = "GPT-2 small (4 layers, 256 wide, vocab 8192, B 4, T 64)"
        gname["124m"] = "GPT-2 124M (B 4, T 64)"
        for (ci = 1; ci <= 2; ci++) for (t = 1; t <= 2; t++) gpt2_step_row("nabla", "", 1, "gpt2_", gcfg[ci], t)
        for (ci = 1; ci <= 2; ci++) for (t = 1; t <= 2; t++) gpt2_peak_row("nabla", "", "", gcfg[ci], t)
        # The library model, nb_gpt (issue 13): the same step and shapes, its time against the same peer rounds,
        # and its peak memory against the peer (PyTorch)
        for (ci = 1; ci <= 2; ci++) for (t = 1; t <= 2; t++) gpt2_step_row("nabla_gpt", " with nb_gpt", 0.8, "gpt2_lib_", gcfg[ci], t)
        for (ci = 1; ci <= 2; ci++) for (t = 1; t <= 2; t++) gpt2_peak_row("nabla_gpt", " with nb_gpt", "gpt2_lib_mem", gcfg[ci], t)
        g = "gpt2_allocs"
        for (ci = 1; ci <= 2; ci++) for (t = 1; t <= 2; t++) {
            c = gcfg[ci]; key = "gpt2_timed_allocs " c " " t
            if (!has("nabla", key)) continue
            count[g]++
            if (v["nabla", key] != 0) fail[g] = fail[g] sprintf("; %s at %d thread%s: %d", c, t, plural(t), v["nabla", key])
            row(sprintf("GPT-2 %s step, blocks from the system allocator in the timed steps (most of any round), %d thread%s", c, t, plural(t)),
                sprintf("%d", v["nabla", key]), "-", "-", "0: " (v["nabla", key] == 0 ? "met" : "not met"), "-", "-")
        }
        g = "gen"
        for (t = 1; t <= 2; t++) {
            key = "gen_tokens_per_s 124m " t
            if (!has("nabla", key) && !has("torch_best", key)) continue
            r = ratio("nabla", "torch_best", key)
            peer = fmt("%.2f", "torch_best", key)
            if (has("torch_matvec", key)) peer = peer sprintf(" (addmv %.2f, nabla / that %.2f)", v["torch_matvec", key], \
                has("nabla", key) && v["torch_matvec", key] > 0 ? v["nabla", key] / v["torch_matvec", key] : 0)
            row(sprintf("GPT-2 124M generation, KV cache, 200 tokens after 16, top-k 40, %d thread%s, tokens/s (peer: PyTorch)", t, plural(t)),
                fmt("%.2f", "nabla", key), peer, rfmt("%.2f", r), check(r, 1.25, 1, t " thread" plural(t)), "-", "-")
        }
        for (t = 1; t <= 2; t++) {
            key = "cnn_step_ms " t
            if (!has("nabla", key) && !has("torch_best", key)) continue
            g = "cnn"; r = ratio("nabla", "torch_best", key)
            row(sprintf("CNN (2x Conv-BN-ReLU-MaxPool, Linear 3136-128-10) step, Adam, batch 128, %d thread%s, ms (peer: PyTorch)", t, plural(t)),
                fmt("%.2f", "nabla", key), fmt("%.2f", "torch_best", key), rfmt("%.2f", r), check(r, 0.8, 0, t " thread" plural(t)), "-", "-")
        }
        split("conv1 conv2", cl, " "); cname["conv1"] = "1->32, 28x28"; cname["conv2"] = "32->64, 14x14"
        for (li = 1; li <= 2; li++) for (t = 1; t <= 2; t++) {
            key = "conv_ms " cl[li] " " t
            if (!has("nabla", key) && !has("torch_best", key)) continue
            g = "cnn_conv"; r = ratio("nabla", "torch_best", key)
            row(sprintf("conv2d fwd + bwd (input, weight, bias) %s (%s, 3x3 pad 1, N 128), %d thread%s, ms (peer: PyTorch)", cl[li], cname[cl[li]], t, plural(t)),
                fmt("%.2f", "nabla", key), fmt("%.2f", "torch_best", key), rfmt("%.2f", r), check(r, 0.8, 0, cl[li] " at " t " thread" plural(t)), "-", "-")
        }
        for (t = 1; t <= 2; t++) {
            key = "cnn_peak_mib " t
            if (!has("nabla", key) && !has("torch_best", key)) continue
            g = "cnn_mem"; r = ratio("nabla", "torch_best", key)
            row(sprintf("CNN step peak memory, %d thread%s, MiB above baseline (peer: PyTorch)", t, plural(t)),
                fmt("%.1f", "nabla", key), fmt("%.1f", "torch_best", key), rfmt("%.2f", r), check(r, 1, 0, t " thread" plural(t)), "-", "-")
        }
        g = "tiny"; key = "tiny_op_us"; r = ratio("nabla", "torch", key)
        row("tiny ops: 1,000 scalar f32 mul/add/tanh, fwd + bwd, us per op, 1 thread (peer: PyTorch)",
            fmt("%.4f", "nabla", key), fmt("%.3f", "torch", key), rfmt("%.3f", r), check(r, 0.05, 0, "tiny ops"), "-", "-")
        g = "mem"; key = "mlp_peak_mib"; r = ratio("nabla", "torch", key)
        row("MLP training peak memory, 50 steps, MiB above baseline, 1 thread (peer: PyTorch)",
            fmt("%.2f", "nabla", key), fmt("%.2f", "torch", key), rfmt("%.2f", r), check(r, 1, 0, "peak memory"), "-", "-")
        print ""
        if (clock > 0)
            printf "Peak: 64 f32 FLOP per cycle per core (two 512-bit FMA pipes) x %.3f GHz (nabla clock_ghz) = %.1f GFLOP/s at 1 thread, %.1f at 2 threads.\n",
                clock, 64 * clock, 128 * clock
        else
            print "Peak: no nabla clock_ghz line, so no peak and no fraction-of-peak figures."
        printf "MLP step: %d FLOP (%.1f MFLOP) = forward matmuls %d + weight gradients %d\n", mlp_flop, mlp_flop / 1e6, fwd, fwd
        printf "+ input gradients of layers 2 and 3 %d (layer 1 needs none) + SGD update 2 x %d parameters;\n", dx, params
        print "bias, ReLU and loss arithmetic not counted."
        if (grounds > 0)
            printf "GEMM: the median of %d round%s alternating nabla and OpenBLAS, each round the median of the runs within a time budget.\n", grounds, plural(grounds)
        if (nrounds > 0)
            printf "MLP step: the median of %d round%s alternating nabla and PyTorch (best environment), each round the median of its steps.\n", nrounds, plural(nrounds)
        ng2 = 0
        for (k in g2rounds) {
            ng2++
            if (k ~ / small 1$/)
                printf "GPT-2 step: the median of %d round%s alternating nabla and PyTorch (--tuned), each round the median of its steps;\n", g2rounds[k], plural(g2rounds[k])
        }
        if (ng2 > 0) {
            print "its FLOPs for nabla / peak: the matrix products only, 3 x the forward ones (attention over the full T x T);"
            print "peak memory: VmHWM - VmRSS as for the MLP, from the last round: the whole process, model and AdamW state included."
        }
        if (cnnrounds > 0)
            printf "CNN: the median of %d round%s alternating nabla and PyTorch (best environment), each round the median of its steps; peak memory from the last round.\n", cnnrounds, plural(cnnrounds)
        if (genrounds > 0)
            printf "Generation: the median of %d round%s alternating nabla and PyTorch (nn.Linear as Hugging Face, and torch.addmv), each one generation.\n", genrounds, plural(genrounds)
        print "nabla / peer: GEMM and tokens/s higher is better; time and memory lower is better. PyTorch \"out of box\": the"
        print "machine environment with only torch.set_num_threads; the ratio and target use the best environment."
        print "Peak memory: VmHWM - VmRSS after resetting VmHWM (clear_refs 5) just before building the model and data."
        print ""
        print "Targets:"
        verdict("gemm_large", "GEMM >= 0.9x OpenBLAS at n = 512, 1024, 2048, 1 and 2 threads")
        verdict("gemm_small", "GEMM >= 0.8x OpenBLAS at n = 64, 128, 256, 1 and 2 threads")
        verdict("mlp", "MLP step time <= 0.8x PyTorch (best environment), 1 and 2 threads")
        verdict("mlp_core", "MLP step from core ops only <= 0.8x PyTorch (best environment), 1 and 2 threads")
        verdict("gpt2_small", "GPT-2 small step <= 1.0x PyTorch (--tuned), 1 and 2 threads")
        if (("gpt2_124m") in count) verdict("gpt2_124m", "GPT-2 124M step <= 1.0x PyTorch (--tuned), 2 threads")
        if (("gpt2_lib_small") in count) verdict("gpt2_lib_small", "GPT-2 small step with nb_gpt <= 0.8x PyTorch (--tuned), 1 and 2 threads")
        if (("gpt2_lib_124m") in count) verdict("gpt2_lib_124m", "GPT-2 124M step with nb_gpt <= 0.8x PyTorch (--tuned), 2 threads")
        if (("gpt2_lib_mem") in count) verdict("gpt2_lib_mem", "GPT-2 step with nb_gpt peak memory <= PyTorch")
        t = "GPT-2 step allocates nothing from the system after its warm-up steps"
        if ("gpt2_allocs" in fail) printf "- %s: not met (%s)\n", t, substr(fail["gpt2_allocs"], 3)
        else if ("gpt2_allocs" in count) printf "- %s: met (0 blocks in every round)\n", t
        else printf "- %s: - (no verdict; a figure is missing)\n", t
        if (("gen") in count) verdict("gen", "GPT-2 124M generation tokens/s >= 1.25x PyTorch (nn.Linear loop), 1 and 2 threads")
        if (("cnn") in count) verdict("cnn", "CNN training step <= 0.8x PyTorch (best environment), 1 and 2 threads")
        if (("cnn_conv") in count) verdict("cnn_conv", "conv2d fwd + bwd at the layer shapes of the CNN <= 0.8x PyTorch, 1 and 2 threads")
        if (("cnn_mem") in count) verdict("cnn_mem", "CNN step peak memory <= PyTorch")
        verdict("tiny", "tiny ops <= 1/20 of PyTorch time per op")
        verdict("mem", "MLP peak memory <= PyTorch")
    }
' "$RAW"

if [ "$missing" -ne 0 ]; then
    echo
    echo "# missing nabla program(s) in $BUILD_DIR: exit status 2"
    exit 2
fi
exit "$status"
