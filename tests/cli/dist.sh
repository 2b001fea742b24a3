#!/bin/sh
# mpirun -np 2 nabla train: data-parallel training as a user starts it (run by ctest only when nabla was built
# with MPI; the environment allows mpirun as root and oversubscribed cores). The first process alone prints
# and writes; the result agrees with one process; the checkpoint evaluates and resumes under mpirun; a
# process that fails to set up stops the other within seconds, with its message.
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
run2() { timeout 120 mpirun -np 2 --oversubscribe "$@"; }

run2 "$nabla" train --epochs 4 --out "$out/d2" >"$out/log2" 2>&1
check "mpirun -np 2 nabla train exits 0" "[ $? -eq 0 ]"
check "only the first process prints: one accuracy line" "[ \$(grep -c '^test accuracy: ' '$out/log2') -eq 1 ] && grep -q '^data-parallel over 2 processes' '$out/log2'"
"$nabla" train --epochs 4 --out "$out/d1" >"$out/log1" 2>&1
a1=$(tail -1 "$out/log1" | field 'accuracy:')
a2=$(grep '^test accuracy: ' "$out/log2" | field 'accuracy:')
l1=$(grep '^epoch 4/4' "$out/log1" | field 'loss')
l2=$(grep '^epoch 4/4' "$out/log2" | field 'loss')
check "2 processes agree with 1 (loss $l1 / $l2, accuracy $a1 / $a2)" "awk 'BEGIN { d = $l1 - $l2; e = $a1 - $a2; exit !(d < 1e-3 && d > -1e-3 && e <= 0.01 && e >= -0.01) }'"
"$nabla" eval "$out/d2/model.safetensors" >"$out/ev" 2>&1
check "eval of the data-parallel checkpoint gives its accuracy" "[ $? -eq 0 ] && grep -q \"^test accuracy: $a2\" '$out/ev'"
run2 "$nabla" train --resume "$out/d2" --epochs 5 >"$out/logr" 2>&1
check "mpirun resumes from the checkpoint" "[ $? -eq 0 ] && grep -q '^epoch 5/5' '$out/logr' && [ \$(wc -l <'$out/d2/history.csv') -eq 6 ]"
# the GPT on a small text: the same losses as one process
awk 'BEGIN { for (i = 0; i < 300; i++) printf "the %s fox number %d jumps over the lazy dog.\n", (i % 3 ? "quick" : "brown"), i % 17 }' >"$out/text.txt"
tiny="--model gpt --text $out/text.txt --ctx 16 --layers 1 --heads 2 --dim 16 --batch 8 --steps 30 --eval-every 15 --eval-batches 2 --sample-tokens 0"
run2 "$nabla" train $tiny --out "$out/g2" >"$out/glog2" 2>&1
check "mpirun -np 2 nabla train --model gpt exits 0, one process printing" "[ $? -eq 0 ] && [ \$(grep -c '^validation loss: ' '$out/glog2') -eq 1 ] && [ -s '$out/g2/model.safetensors' ]"
"$nabla" train $tiny --out "$out/g1" >"$out/glog1" 2>&1
v1=$(grep '^validation loss: ' "$out/glog1" | field 'loss:')
v2=$(grep '^validation loss: ' "$out/glog2" | field 'loss:')
check "the GPT on 2 processes agrees with 1 (validation loss $v1 / $v2)" "awk 'BEGIN { d = $v1 - $v2; exit !(d < 1e-3 && d > -1e-3) }'"

start=$(date +%s)
timeout 120 mpirun -np 1 --oversubscribe "$nabla" train --out "$out/f0" : -np 1 "$nabla" train --csv "$out/none.csv" --out "$out/f1" >"$out/logf" 2>&1
rc=$?
took=$(($(date +%s) - start))
check "a process that fails to set up stops both (status $rc, ${took}s)" "[ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $took -lt 60 ]"
check "its message names the cause; the other says why it stops" "grep -q \"cannot open the CSV '$out/none.csv'\" '$out/logf' && grep -q 'another process failed to set up' '$out/logf'"
check "nothing half-written where it stopped" "[ ! -e '$out/f0/model.safetensors' ] && ! ls '$out/f0' 2>/dev/null | grep -q tmp"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
