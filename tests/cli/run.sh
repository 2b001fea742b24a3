#!/bin/sh
# The nabla program as a user meets it: a short training run succeeds and writes its outputs;
# bad options and missing data give a one-line error and a nonzero exit.
set -u
nabla=$1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
pass=0 fail=0
check() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1"; fi; }
"$nabla" train --epochs 3 --out "$out" >"$out/log" 2>&1
check "train exits 0" "[ $? -eq 0 ]"
check "ends with the test accuracy" "tail -1 '$out/log' | grep -q '^test accuracy: 0\.[0-9]\{4\}$'"
check "writes the checkpoint" "[ -s '$out/model.safetensors' ] && [ -s '$out/optim.safetensors' ]"
check "writes the curves" "grep -q '</svg>' '$out/curves.svg'"
check "writes the graph" "grep -q 'digraph nabla' '$out/graph.dot' && grep -q flowchart '$out/graph.mmd'"
"$nabla" train --epochs 3 --out "$out/b" >/dev/null 2>&1
check "same seed, same checkpoint bytes" "cmp -s '$out/model.safetensors' '$out/b/model.safetensors'"
# products big enough to be split across threads: same bytes on 1 and 2 threads
"$nabla" train --epochs 2 --hidden 512 --batch 256 --schedule cosine --threads 1 --out "$out/t1" >/dev/null 2>&1
"$nabla" train --epochs 2 --hidden 512 --batch 256 --schedule cosine --threads 2 --out "$out/t2" >/dev/null 2>&1
check "same checkpoint bytes on 1 and 2 threads" "[ -s '$out/t1/model.safetensors' ] && cmp -s '$out/t1/model.safetensors' '$out/t2/model.safetensors'"
for bad in "train --epochs x" "train --bogus 1" "train --data /nonexistent" "train --activation nope" "frobnicate" "train --lr" "train --schedule wavy" "train --threads 0" "train --threads 999" "gradcheck --bogus" "eval" "eval /nonexistent/model.safetensors"; do
  "$nabla" $bad >"$out/err" 2>&1
  rc=$?
  check "'$bad' fails with one line" "[ $rc -ne 0 ] && [ \$(wc -l <'$out/err') -eq 1 ] && grep -q '^nabla: ' '$out/err'"
done
"$nabla" eval "$out/model.safetensors" >"$out/ev" 2>&1
check "eval gives the accuracy train ended with" "[ $? -eq 0 ] && [ \"\$(cat '$out/ev')\" = \"\$(tail -1 '$out/log')\" ]"
head -c 100 "$out/model.safetensors" >"$out/trunc.safetensors"
"$nabla" eval "$out/trunc.safetensors" >"$out/err" 2>&1
check "eval of a truncated checkpoint fails with one line" "[ $? -ne 0 ] && [ \$(wc -l <'$out/err') -eq 1 ]"
"$nabla" gradcheck >"$out/gc" 2>&1
check "gradcheck passes every op and prints a table" "[ $? -eq 0 ] && grep -q '^| matmul | 2 | pass | pass' '$out/gc' && tail -1 '$out/gc' | grep -q '^22 of 22 ops pass$'"
"$nabla" gradcheck --help >"$out/gch" 2>&1
check "gradcheck --help" "grep -q 'central' '$out/gch'"
"$nabla" train --help >"$out/help" 2>&1
check "train --help explains the options" "grep -q -- '--epochs' '$out/help'"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
