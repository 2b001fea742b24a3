#!/usr/bin/env bash
# text.sh BUILD_DIR [--threads T] [--rounds R] [extra options]
#
# Byte-level GPT training on Debian's fortunes (/usr/share/games/fortunes, or $NABLA_TEXT):
# nabla's program against bench/peer_torch_text.py, the same training in PyTorch (same split,
# same windows in the same order, same schedule, same validation windows; the initial weights
# differ). Runs
#   BUILD_DIR/nabla train --model gpt --text TEXT --out TMP --sample-tokens 200 --threads T [extra]
#   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 bench/peer_torch_text.py
#       --text TEXT --threads T --tuned [extra]
# in R rounds (default 1) that alternate the order (nabla first in odd rounds, the peer first in even
# ones: with --rounds 2, nabla, peer, peer, nabla), each run under `flock /tmp/bench.lock`, and
# prints their output, then a markdown table: the validation loss of each and their relative
# difference, the training time of each (the steps only, evaluation excluded; the median over the
# rounds) and nabla/peer (with R > 1 also each round's times and ratio), then nabla's sample. The
# extra options go to both programs (the training options of `nabla train --model gpt --help`:
# --steps, --ctx, --lr, ...).
# It prints figures; it does not fail on time or loss. Exit status: 2 on bad usage or a missing
# BUILD_DIR/nabla, 1 when a run fails, else 0.
set -u

usage() {
    echo "usage: $0 BUILD_DIR [--threads T] [--rounds R] [extra options of nabla train --model gpt]" >&2
    exit 2
}
[ $# -ge 1 ] || usage
BUILD_DIR=$1
shift
THREADS=2
ROUNDS=1
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
    --threads) [ $# -ge 2 ] || usage; THREADS=$2; shift 2 ;;
    --threads=*) THREADS=${1#*=}; shift ;;
    --rounds) [ $# -ge 2 ] || usage; ROUNDS=$2; shift 2 ;;
    --rounds=*) ROUNDS=${1#*=}; shift ;;
    *) EXTRA+=("$1"); shift ;;
    esac
done
case $THREADS$ROUNDS in *[!0-9]*) usage ;; esac
[ "$ROUNDS" -ge 1 ] || usage

HERE=$(cd "$(dirname "$0")" && pwd)
NABLA=$BUILD_DIR/nabla
TEXT=${NABLA_TEXT:-/usr/share/games/fortunes}
[ -x "$NABLA" ] || { echo "text.sh: no $NABLA (build the target nabla_cli)" >&2; exit 2; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# The value of option NAME among the extra options, else its default from nabla's help.
opt() {
    local name=$1 i v=""
    for ((i = 0; i < ${#EXTRA[@]}; i++)); do
        case ${EXTRA[i]} in
        "$name") v=${EXTRA[i + 1]:-} ;;
        "$name"=*) v=${EXTRA[i]#*=} ;;
        esac
    done
    [ -n "$v" ] || v=$("$NABLA" train --model gpt --help | sed -n "s/^ *$name [^(]*(default \([0-9.e+-]*\)).*/\1/p")
    echo "$v"
}
STEPS=$(opt --steps)
BATCH=$(opt --batch)
CTX=$(opt --ctx)
TOKENS=$((STEPS * BATCH * CTX))

status=0
run_nabla() { # round
    local out=$TMP/nabla.$1
    echo "## round $1: nabla"
    flock /tmp/bench.lock "$NABLA" train --model gpt --text "$TEXT" --out "$TMP/out" --sample-tokens 200 \
        --threads "$THREADS" "${EXTRA[@]}" >"$out" 2>&1 || status=1
    cat "$out"
}
run_peer() { # round
    local out=$TMP/peer.$1
    echo "## round $1: PyTorch"
    flock /tmp/bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 \
        "$HERE/peer_torch_text.py" --text "$TEXT" --threads "$THREADS" --tuned "${EXTRA[@]}" >"$out" 2>&1 || status=1
    cat "$out"
}
for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then run_nabla "$r"; run_peer "$r"; else run_peer "$r"; run_nabla "$r"; fi
done

# nabla's "trained in X s (Y tokens/s)": X includes the evaluations, Y does not; its training time
# is the tokens over Y. The peer's RESULT line has train_s directly.
nabla_times=() peer_times=()
for ((r = 1; r <= ROUNDS; r++)); do
    rate=$(sed -n 's/^trained in [0-9.]* s (\([0-9.]*\) tokens\/s).*/\1/p' "$TMP/nabla.$r")
    [ -n "$rate" ] && nabla_times+=("$(awk -v n="$TOKENS" -v r="$rate" 'BEGIN { printf "%.2f", n / r }')")
    t=$(sed -n 's/^RESULT .*train_s=\([0-9.]*\).*/\1/p' "$TMP/peer.$r")
    [ -n "$t" ] && peer_times+=("$t")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR) printf "%.2f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
nv=$(sed -n 's/^validation loss: \([0-9.]*\).*/\1/p' "$TMP/nabla.1")
pv=$(sed -n 's/^RESULT val_loss=\([0-9.na]*\).*/\1/p' "$TMP/peer.1")
nt=$(median "${nabla_times[@]}")
pt=$(median "${peer_times[@]}")
num() { [[ $1 =~ ^[0-9.]+$ ]]; }

echo
echo "Text training: $TEXT, $STEPS steps of $BATCH x $CTX bytes, $THREADS threads, $ROUNDS round(s)${EXTRA[*]:+, options: ${EXTRA[*]}}"
echo
echo "| | nabla | PyTorch | nabla vs PyTorch |"
echo "|---|---:|---:|---:|"
if num "$nv" && num "$pv"; then
    d=$(awk -v a="$nv" -v b="$pv" 'BEGIN { printf "%+.2f%%", 100 * (a - b) / b }')
else d="-"; fi
echo "| validation loss | ${nv:--} | ${pv:--} | $d |"
if num "$nt" && num "$pt"; then
    q=$(awk -v a="$nt" -v b="$pt" 'BEGIN { printf "%.2fx", a / b }')
else q="-"; fi
echo "| train time, s (steps only) | ${nt:--} | ${pt:--} | $q |"
if num "$nt" && num "$pt"; then
    echo "| tokens/s | $(awk -v n="$TOKENS" -v t="$nt" 'BEGIN { printf "%.0f", n / t }') | $(awk -v n="$TOKENS" -v t="$pt" 'BEGIN { printf "%.0f", n / t }') | |"
fi
if ((ROUNDS > 1)); then
    ratios=()
    for ((r = 0; r < ROUNDS; r++)); do
        num "${nabla_times[r]:-}" && num "${peer_times[r]:-}" &&
            ratios+=("$(awk -v a="${nabla_times[r]}" -v b="${peer_times[r]}" 'BEGIN { printf "%.2f", a / b }')")
    done
    echo
    echo "train times by round, s: nabla ${nabla_times[*]}; PyTorch ${peer_times[*]}; nabla/PyTorch ${ratios[*]}"
fi
echo
echo "nabla's sample:"
echo '```'
sed -n '/^sample:$/,$p' "$TMP/nabla.1" | tail -n +2
echo '```'
exit $status
