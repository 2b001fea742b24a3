#!/bin/sh
# The nabla program as a user meets it: short training runs succeed and write their outputs; bad options,
# missing data and unwritable folders give a one-line error naming the cause and exit status 1.
# Under the sanitizer build (make test sets detect_leaks=1) a leak or a sanitizer report changes the exit
# status and adds lines, so every "fails with one line" check also checks that path frees everything.
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

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

# ---- bad command lines: one line, the real cause, exit 1, nothing leaked
fails "train --epochs x" "--epochs 'x'.*1 to 1000000" train --epochs x
fails "train --epochs 99999999999" "--epochs '99999999999'.*1 to 1000000" train --epochs 99999999999
fails "train --epochs 4294967297" "--epochs '4294967297'" train --epochs 4294967297
fails "train --epochs 3x" "--epochs '3x'" train --epochs 3x
fails "train --batch 0" "--batch '0'.*1 to" train --batch 0
fails "train --hidden with 9 layers" "--hidden '1,2,3,4,5,6,7,8,9'.*1 to 8 layer" train --hidden 1,2,3,4,5,6,7,8,9
fails "train --hidden 64,,32" "--hidden '64,,32'" train --hidden 64,,32
fails "train --hidden 99999999999999999999" "--hidden" train --hidden 99999999999999999999
fails "train --lr inf" "--lr 'inf'.*finite" train --lr inf
fails "train --lr nan" "--lr 'nan'" train --lr nan
fails "train --lr 1e999" "--lr '1e999'" train --lr 1e999
fails "train --lr=-1" "--lr '-1'" train --lr=-1
fails "train --dropout 1" "--dropout '1'" train --dropout 1
fails "train --seed -1" "--seed '-1'" train --seed -1
fails "train --seed 18446744073709551616" "--seed" train --seed 18446744073709551616
fails "train --bogus 1" "unknown option.*--bogus" train --bogus 1
fails "train --bogus=1" "unknown option.*--bogus" train --bogus=1
fails "train --lr" "missing value for option: --lr" train --lr
fails "train stray" "unexpected argument 'stray'" train stray
fails "train --activation nope" "--activation 'nope'" train --activation nope
fails "train --optimizer nope" "--optimizer 'nope'" train --optimizer nope
fails "train --schedule wavy" "--schedule 'wavy'" train --schedule wavy
fails "train --threads 0" "--threads '0'" train --threads 0
fails "train --threads 999" "--threads '999'" train --threads 999
fails "train --data /nonexistent" "cannot load the data: cannot read the data folder '/nonexistent': No such file" train --data /nonexistent --out "$out/nd"
check "a library message is not prefixed twice (nabla: ... nabla:)" "! grep -q 'nabla:.*nabla:' '$out/err'"
: >"$out/notdir"
fails "train --data FILE" "'$out/notdir' is not a folder" train --data "$out/notdir" --out "$out/nd"
fails "train --data ''" "bad --data ''" train --data ''
fails "train --data with --csv" "--data and --csv cannot both be given" train --data fashion-mnist --csv "$out/notdir"
fails "frobnicate" "unknown command" frobnicate
fails "gradcheck --bogus" "unknown option" gradcheck --bogus
fails "eval with no checkpoint" "usage" eval
fails "eval of a missing checkpoint names it" "no checkpoint '$out/none/model.safetensors': No such file" eval "$out/none/model.safetensors"
fails "eval --threads 0" "--threads '0'" eval "$out/model.safetensors" --threads 0
fails "eval --bogus" "unknown option" eval "$out/model.safetensors" --bogus
mkdir "$out/noargs" && cp "$out/model.safetensors" "$out/noargs/"
fails "eval without model.args names it" "model's options '$out/noargs/model.args': No such file" eval "$out/noargs/model.safetensors"

mkdir "$out/badargs" && cp "$out/model.safetensors" "$out/badargs/"
sed 's/^hidden .*/hidden 256,x/' "$out/model.args" >"$out/badargs/model.args"
fails "eval with a malformed model.args names the file and line" "malformed model options '$out/badargs/model.args': line 6" eval "$out/badargs/model.safetensors"
grep -v '^done ' "$out/model.args" >"$out/noargs/model.args"
fails "resume without a saved state says so" "no resume state" train --resume "$out/noargs" --epochs 9

# an allocation failure is reported as one (the sanitizer's allocator returns NULL instead of aborting)
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}allocator_may_return_null=1" \
  fails "train --hidden 1000000000 (no memory for it)" "cannot build the model: .*(out of memory|memory)" \
  train --hidden 1000000000 --epochs 1 --out "$out/oom"

# ---- the output folder: checked (and made, nested) before training
: >"$out/afile"
"$nabla" train --epochs 1 --out "$out/afile/sub" >"$out/err" 2>&1
rc=$?
check "an --out under a regular file fails with 'Not a directory', before training" \
  "[ $rc -eq 1 ] && [ \$(wc -l <'$out/err') -eq 1 ] && grep -q \"cannot create the output folder '$out/afile/sub': Not a directory\" '$out/err'"
"$nabla" train --epochs 1 --hidden 16 --out "$out/n1/n2/n3" >/dev/null 2>&1
check "nested --out folders are created" "[ $? -eq 0 ] && [ -s '$out/n1/n2/n3/model.safetensors' ]"

# ---- --opt=value, --version, eval --threads
"$nabla" train --epochs=2 --hidden=32 --out="$out/eq" >"$out/eqlog" 2>&1
check "--opt=value is accepted" "[ $? -eq 0 ] && grep -q '^epoch 2/2 ' '$out/eqlog' && [ -s '$out/eq/model.safetensors' ]"
want=$(sed -n 's/^project(nabla VERSION \([0-9.]*\).*/\1/p' "$here/../../CMakeLists.txt")
check "--version prints the project version ($want)" "[ \"\$('$nabla' --version)\" = 'nabla $want' ]"
"$nabla" eval "$out/model.safetensors" >"$out/ev" 2>&1
check "eval gives the accuracy train ended with" "[ $? -eq 0 ] && [ \"\$(cat '$out/ev')\" = \"\$(tail -1 '$out/log')\" ]"
"$nabla" eval "$out/model.safetensors" --threads 2 >"$out/ev2" 2>&1
check "eval --threads 2 gives the same" "[ $? -eq 0 ] && cmp -s '$out/ev' '$out/ev2'"
head -c 100 "$out/model.safetensors" >"$out/trunc.safetensors"
"$nabla" eval "$out/trunc.safetensors" >"$out/err" 2>&1
check "eval of a truncated checkpoint fails with one line" "[ $? -eq 1 ] && [ \$(wc -l <'$out/err') -eq 1 ]"

# ---- --resume: 2 epochs, then resumed to 4, is the uninterrupted 4-epoch run, byte for byte
"$nabla" train --epochs 4 --hidden 32 --dropout 0.1 --out "$out/r4" >"$out/r4log" 2>&1
"$nabla" train --epochs 2 --hidden 32 --dropout 0.1 --out "$out/r2" >/dev/null 2>&1
"$nabla" train --resume "$out/r2" --epochs 4 >"$out/r2log" 2>&1
check "train --resume exits 0 and prints epochs 3 and 4" "[ $? -eq 0 ] && grep -q '^epoch 3/4 ' '$out/r2log' && ! grep -q '^epoch 2/' '$out/r2log'"
check "resumed checkpoint = uninterrupted checkpoint (bytes)" "cmp -s '$out/r4/model.safetensors' '$out/r2/model.safetensors'"
check "resumed optimizer state = uninterrupted one (bytes)" "cmp -s '$out/r4/optim.safetensors' '$out/r2/optim.safetensors'"
check "resumed history = uninterrupted history" "cmp -s '$out/r4/history.csv' '$out/r2/history.csv' && [ \$(wc -l <'$out/r2/history.csv') -eq 5 ]"
check "resumed run ends with the same accuracy" "[ \"\$(tail -1 '$out/r2log')\" = \"\$(tail -1 '$out/r4log')\" ]"
fails "resume of a finished run" "already trained 4 epochs" train --resume "$out/r2" --epochs 4
fails "resume with a model option" "--hidden cannot be given with --resume" train --resume "$out/r2" --hidden 8 --epochs 6
fails "resume of a folder without a checkpoint" "no checkpoint to resume '$out/none/model.safetensors'" train --resume "$out/none"

# ---- CSV: sorted by label, one feature on a 1e4 scale, five classes of 20 rows
awk 'BEGIN { s = 12345; print "a,b,c,label";
  for (k = 0; k < 5; k++) for (i = 0; i < 20; i++) {
    for (j = 0; j < 3; j++) { s = (s * 16807) % 2147483647; u[j] = s / 2147483647 - 0.5 }
    printf "%.4f,%.1f,%.4f,%d\n", k * 2 + u[0], 10000 * (k + u[1]), u[2], k } }' >"$out/blobs.csv"
mkdir "$out/csvdir" && cp "$out/blobs.csv" "$out/csvdir/"
(cd "$out/csvdir" && "$nabla" train --csv blobs.csv --epochs 15 --batch 16 --hidden 32 --lr 0.05 --schedule constant --out m >"$out/csvlog" 2>&1)
check "train on a CSV exits 0" "[ $? -eq 0 ]"
loss1=$(grep '^epoch 1/' "$out/csvlog" | field loss)
acc=$(tail -1 "$out/csvlog" | sed 's/test accuracy: //')
check "CSV standardised: epoch 1 loss $loss1 < 3" "awk 'BEGIN { exit !($loss1 < 3) }'"
check "CSV sorted by label, shuffled split: test accuracy $acc >= 0.8" "awk 'BEGIN { exit !($acc >= 0.8) }'"
check "model.args keeps the CSV's absolute path and the statistics" \
  "grep -q '^csv $out/csvdir/blobs.csv$' '$out/csvdir/m/model.args' && grep -q '^mean ' '$out/csvdir/m/model.args' && grep -q '^std ' '$out/csvdir/m/model.args'"
(cd / && "$nabla" eval "$out/csvdir/m/model.safetensors" >"$out/csvev" 2>&1)
check "eval from another folder uses the saved statistics: same accuracy" "[ $? -eq 0 ] && [ \"\$(cat '$out/csvev')\" = \"\$(tail -1 '$out/csvlog')\" ]"
head -2 "$out/blobs.csv" >"$out/one.csv"
fails "a one-row CSV" "one.csv' has 1 data row;.*at least 3" train --csv "$out/one.csv" --out "$out/one"
check "the library's function name is not shown to the user" "! grep -q 'nb_' '$out/err'"
head -3 "$out/blobs.csv" >"$out/two.csv"
fails "a two-row CSV (no test row)" "two.csv' has 2 data rows;.*at least 3" train --csv "$out/two.csv" --out "$out/two"
# a CSV path holding a newline: kept escaped in model.args, so eval reads it back
nl="$out/new
line"
mkdir "$nl" && cp "$out/blobs.csv" "$nl/d.csv"
"$nabla" train --csv "$nl/d.csv" --epochs 2 --hidden 8 --out "$out/nl" >"$out/nllog" 2>&1
"$nabla" eval "$out/nl/model.safetensors" >"$out/nlev" 2>&1
check "a CSV path with a newline: eval reads model.args back" "[ $? -eq 0 ] && [ \"\$(cat '$out/nlev')\" = \"\$(tail -1 '$out/nllog')\" ]"
printf 'a,label\n1,0\n2,0\n3,0\n4,0\n' >"$out/oneclass.csv"
fails "a CSV with one class" "the data has 1 class; a classifier needs at least 2" train --csv "$out/oneclass.csv" --out "$out/oc"
printf 'a,b,label\n1,,0\n2,3,1\n' >"$out/empty.csv"
fails "a CSV with an empty field names its line and column" "empty.csv:2:2" train --csv "$out/empty.csv" --out "$out/e"
# string labels (one quoted, holding the delimiter), sorted by label: mapped to classes, the mapping saved and
# printed by eval
awk -F, 'NR == 1 { print; next } { n = $4 == 0 ? "alpha" : $4 == 1 ? "\"beta, the second\"" : $4 == 2 ? "gamma" : $4 == 3 ? "delta" : "epsilon"
  print $1 "," $2 "," $3 "," n }' "$out/blobs.csv" >"$out/names.csv"
"$nabla" train --csv "$out/names.csv" --epochs 15 --batch 16 --hidden 32 --lr 0.05 --schedule constant --out "$out/nm" >"$out/nmlog" 2>&1
check "train on string labels exits 0" "[ $? -eq 0 ]"
check "the class names are saved in model.args (sorted)" \
  "grep -q '^class 0 alpha$' '$out/nm/model.args' && grep -q '^class 1 beta, the second$' '$out/nm/model.args' && grep -q '^class 4 gamma$' '$out/nm/model.args'"
"$nabla" eval "$out/nm/model.safetensors" >"$out/nmev" 2>&1
check "eval prints the mapping and the accuracy train ended with" \
  "[ $? -eq 0 ] && head -1 '$out/nmev' | grep -q '^classes: 0=alpha 1=beta, the second 2=delta 3=epsilon 4=gamma$' && [ \"\$(tail -1 '$out/nmev')\" = \"\$(tail -1 '$out/nmlog')\" ]"
fails "a missing CSV" "cannot open the CSV '$out/nope.csv': No such file" train --csv "$out/nope.csv"

# ---- the curves: well-formed SVG, epochs 1..N, both series of both kinds, final values, renders
svg=$out/curves.svg
if command -v xmllint >/dev/null 2>&1; then
  check "curves.svg is well-formed XML" "xmllint --noout '$svg'"
fi
check "curves: loss and accuracy panels with axis titles" "grep -q '>cross-entropy loss<' '$svg' && grep -q '>accuracy<' '$svg' && grep -q '>epoch<' '$svg'"
check "curves: train and test series of loss and accuracy" \
  "grep -q '>train loss<' '$svg' && grep -q '>test loss<' '$svg' && grep -q '>train accuracy<' '$svg' && grep -q '>test accuracy<' '$svg' && [ \$(grep -c '<polyline' '$svg') -eq 4 ]"
check "curves: epochs numbered 1 to 3 as the console does" \
  "grep -q 'middle\" fill=\"#333\">1<' '$svg' && grep -q 'middle\" fill=\"#333\">3<' '$svg' && ! grep -q 'middle\" fill=\"#333\">0<' '$svg'"
last=$(tail -1 "$out/log" | sed 's/test accuracy: //')
check "curves: the final test accuracy $last is labelled" "grep -q 'bold\">$last<' '$svg'"
sed -n 's/.*class="ytick" .*>\([-0-9.e]*\)<.*/\1/p' "$svg" >"$out/ticks"
check "curves: linear y ticks are round (1, 2 or 5 times a power of ten apart)" "awk -f '$here/ticks.awk' '$out/ticks'"
# a diverging run puts the loss on a log axis: its tick labels keep one short style (1000, 10000, 1e5, ...)
"$nabla" train --lr 1000 --epochs 5 --out "$out/div" >/dev/null 2>&1
sed -n 's/.*class="ytick log" .*>\([^<]*\)<.*/\1/p' "$out/div/curves.svg" >"$out/logticks"
check "curves: log-axis ticks are 1e5 style past 10000, never 1e+05 or 100000" \
  "[ -s '$out/logticks' ] && grep -q 'e' '$out/logticks' && ! grep -Eq 'e\\+|[0-9]{6}' '$out/logticks'"
if command -v rsvg-convert >/dev/null 2>&1; then
  rsvg-convert "$svg" -o "$out/curves.png" 2>"$out/err"
  check "curves.svg renders with rsvg-convert" "[ $? -eq 0 ] && [ -s '$out/curves.png' ] && [ ! -s '$out/err' ]"
fi

# ---- the graph names parameters by their module paths
check "graph.dot names the parameters (0.weight, 2.bias)" \
  "grep -q 'label=\"0.weight (256,64)\"' '$out/graph.dot' && grep -q 'label=\"2.bias (10,)\"' '$out/graph.dot' && grep -q 'label=\"input (2,64)\"' '$out/graph.dot'"
check "graph.mmd names them too" "grep -q '0.weight (256,64) leaf' '$out/graph.mmd'"

# ---- --model cnn on 8x8 images written here as a CSV (horizontal against vertical bars, 160 rows: small enough for
# the reference kernels under the sanitizers): trains, evaluates to the same accuracy, resumes to the same bytes
awk 'BEGIN { srand(5); for (k = 0; k < 160; k++) { c = k % 2; r = int(rand() * 8); line = "";
  for (i = 0; i < 8; i++) for (j = 0; j < 8; j++) { v = ((c ? j : i) == r) ? 1 : 0; line = line sprintf("%.3f,", v + 0.3 * rand()) }
  print line c } }' >"$out/bars.csv"
cnnopts="--model cnn --csv $out/bars.csv --batch 32 --hidden 16 --schedule constant"
"$nabla" train $cnnopts --epochs 2 --out "$out/cnn" >"$out/cnnlog" 2>&1
check "train --model cnn exits 0 with an accuracy" "[ $? -eq 0 ] && tail -1 '$out/cnnlog' | grep -q '^test accuracy: [01]\.[0-9]\{4\}$'"
check "the CNN's checkpoint has PyTorch's batch-norm names" "grep -q '1.running_mean' '$out/cnn/model.safetensors' && grep -q '5.num_batches_tracked' '$out/cnn/model.safetensors' && grep -q '^model cnn$' '$out/cnn/model.args'"
"$nabla" eval "$out/cnn/model.safetensors" >"$out/cnnev" 2>&1
check "eval of the CNN gives the accuracy train ended with" "[ $? -eq 0 ] && [ \"\$(tail -1 '$out/cnnev')\" = \"\$(tail -1 '$out/cnnlog')\" ]"
"$nabla" train $cnnopts --epochs 1 --augment on --out "$out/cnnr" >/dev/null 2>&1
"$nabla" train --resume "$out/cnnr" --epochs 2 >/dev/null 2>&1
"$nabla" train $cnnopts --epochs 2 --augment on --out "$out/cnn2" >/dev/null 2>&1
check "a resumed CNN run with augmentation is the same bytes as an uninterrupted one" "[ -s '$out/cnnr/model.safetensors' ] && cmp -s '$out/cnnr/model.safetensors' '$out/cnn2/model.safetensors'"
fails "train --model cnn on a CSV of non-square rows" "--model cnn needs square images; the data has 3 features per sample" train --model cnn --csv "$out/blobs.csv" --out "$out/cnncsv"
fails "train --augment maybe" "--augment 'maybe'.*on or off" train --model cnn --augment maybe
fails "train --model rnn" "--model 'rnn'.*mlp \(default\), cnn or gpt" train --model rnn

# valgrind (on a build without sanitizers) sees nothing held at exit: no "possibly lost" cache blocks
if command -v valgrind >/dev/null 2>&1 && ! ldd "$nabla" 2>/dev/null | grep -q 'lib[at]san'; then
  valgrind --leak-check=full "$nabla" train --epochs 1 --hidden 16 --threads 2 --out "$out/vg" >"$out/vglog" 2>&1
  check "valgrind: nothing in use at exit of a training run" "grep -q 'in use at exit: 0 bytes in 0 blocks' '$out/vglog'"
  valgrind --leak-check=full "$nabla" train --epochs 99999999999 >"$out/vglog" 2>&1
  check "valgrind: nothing in use at exit of a failing run" "grep -q 'in use at exit: 0 bytes in 0 blocks' '$out/vglog'"
fi
"$nabla" gradcheck >"$out/gc" 2>&1
check "gradcheck passes every op and prints a table" "[ $? -eq 0 ] && grep -q '^| matmul | 2 | pass | pass' '$out/gc' && tail -1 '$out/gc' | grep -q '^22 of 22 ops pass$'"
"$nabla" gradcheck --help >"$out/gch" 2>&1
check "gradcheck --help" "grep -q 'central' '$out/gch'"
"$nabla" train --help >"$out/help" 2>&1
check "train --help explains the options" "grep -q -- '--epochs' '$out/help' && grep -q -- '--resume' '$out/help'"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
