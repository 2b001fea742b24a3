#!/usr/bin/env bash
# dist.sh BUILD_DIR [--rounds R] [mlp|gpt ...]
#
# Data-parallel throughput on this machine: BUILD_DIR/bench_dist WORKLOAD (default: mlp and gpt) as
#   1 process x 1 thread    mpirun -np 1 --bind-to none bench_dist W --threads 1
#   1 process x 2 threads   mpirun -np 1 --bind-to none bench_dist W --threads 2
#   2 processes x 1 thread  mpirun -np 2 --bind-to core bench_dist W --threads 1  (a simulated
#                           two-node run: each process on its own core, talking over shared memory)
# in R rounds (default 3) that alternate the order (1x1, 1x2, 2x1 in odd rounds, the reverse in even
# ones), each run under `flock /tmp/bench.lock`. Prints every run's output, then a markdown table per
# workload: the median step time and throughput of each layout, and for 2 processes the
# communication per step alone (buckets started after backward), the part still waited for with the
# overlap, the share hidden, and the averaging into .grad. Exit status: 2 on bad usage or a missing
# BUILD_DIR/bench_dist or mpirun, 1 when a run fails, else 0. It does not fail on time.
set -u

usage() {
    echo "usage: $0 BUILD_DIR [--rounds R] [mlp|gpt ...]" >&2
    exit 2
}
[ $# -ge 1 ] || usage
BUILD_DIR=$1
shift
ROUNDS=3
WORK=()
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) [ $# -ge 2 ] || usage; ROUNDS=$2; shift 2 ;;
    mlp | gpt) WORK+=("$1"); shift ;;
    *) usage ;;
    esac
done
[ ${#WORK[@]} -gt 0 ] || WORK=(mlp gpt)
BIN=$BUILD_DIR/bench_dist
[ -x "$BIN" ] || { echo "dist.sh: $BIN not found (build the release tree with MPI)" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "dist.sh: mpirun not found (apt-get install openmpi-bin)" >&2; exit 2; }
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

TMP=$(mktemp -d /tmp/nabla_dist.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
LAYOUTS=("1 1 none" "1 2 none" "2 1 core")

run() { # WORKLOAD NP THREADS BIND
    local out=$TMP/$1.$2x$3
    flock /tmp/bench.lock mpirun -np "$2" --bind-to "$4" "$BIN" "$1" --threads "$3" >"$out.txt" 2>&1 || {
        cat "$out.txt"
        echo "dist.sh: $1 on $2 x $3 failed" >&2
        exit 1
    }
    cat "$out.txt"
    cat "$out.txt" >>"$out.all"
}

for w in "${WORK[@]}"; do
    for ((r = 1; r <= ROUNDS; r++)); do
        if ((r % 2)); then order=(0 1 2); else order=(2 1 0); fi
        for i in "${order[@]}"; do
            read -r np th bind <<<"${LAYOUTS[$i]}"
            run "$w" "$np" "$th" "$bind"
        done
    done
done

median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo
for w in "${WORK[@]}"; do
    unit=samples
    [ "$w" = gpt ] && unit=tokens
    echo "| $w | step ms | $unit/s | vs 1 x 1 |"
    echo "|---|---:|---:|---:|"
    base=
    for l in "${LAYOUTS[@]}"; do
        read -r np th bind <<<"$l"
        f=$TMP/$w.${np}x$th.all
        ms=$(sed -n 's/.*: step \([0-9.]*\) ms, .*/\1/p' "$f" | median)
        rate=$(sed -n "s/.* ms, \([0-9]*\) $unit\/s.*/\1/p" "$f" | median)
        [ -n "$base" ] || base=$rate
        printf '| %s process%s x %s thread%s | %s | %s | %.2fx |\n' "$np" "$([ "$np" = 1 ] || echo es)" "$th" \
            "$([ "$th" = 1 ] || echo s)" "$ms" "$rate" "$(echo "$rate $base" | awk '{print $1 / $2}')"
    done
    f=$TMP/$w.2x1.all
    alone=$(sed -n 's/.*without overlap.*(communication \([0-9.]*\) ms).*/\1/p' "$f" | median)
    left=$(sed -n 's/.*with overlap (.*(communication \([0-9.]*\) ms).*/\1/p' "$f" | median)
    avg=$(sed -n 's/.*averaging into .grad (\([0-9.]*\) ms).*/\1/p' "$f" | median)
    echo
    echo "2 processes, per step: communication alone $alone ms; with the overlap $left ms still waited after" \
        "backward ($(echo "$alone $left" | awk '{printf "%.0f", ($1 > 0) ? 100 * (1 - $2 / $1) : 0}')% hidden);" \
        "averaging into .grad $avg ms"
    echo
done
