#!/bin/sh
# nabla train --model gpt and nabla generate as a user meets them, on a small text written here: a short
# run learns (the validation loss falls), writes its checkpoint under GPT-2's names with its config, the
# same bytes for the same seed on 1 and 2 threads; generate continues a prompt from that checkpoint as
# train's own sample does; bad texts, options, prompts and checkpoints fail with one line and status 1.
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

# ---- a text: 400 lines of a few sentences with counters, about 20 KB
awk 'BEGIN { for (i = 0; i < 400; i++) printf "the %s fox number %d jumps over the %s dog.\n", (i % 3 ? "quick" : "brown"), i % 17, (i % 5 ? "lazy" : "sleepy") }' >"$out/text.txt"
tiny="--ctx 16 --layers 1 --heads 2 --dim 16 --batch 8 --steps 60 --eval-every 20 --eval-batches 4 --lr 1e-2 --warmup 5 --sample-tokens 40 --prompt the"

"$nabla" train --model gpt --text "$out/text.txt" $tiny --out "$out/g" >"$out/log" 2>&1
check "train --model gpt exits 0" "[ $? -eq 0 ]"
check "prints the validation loss at each evaluation" "[ \$(grep -c '^step [0-9]*/60  train loss [0-9.]*  val loss [0-9.]*  [0-9]* tokens/s$' '$out/log') -eq 3 ]"
first=$(grep '^step 20/60' "$out/log" | field 'val loss')
last=$(grep '^step 60/60' "$out/log" | field 'val loss')
check "the validation loss falls ($first -> $last) below log(256)" "awk 'BEGIN { exit !($last < $first && $last < 5.545) }'"
check "writes the checkpoint under GPT-2's names" "grep -q 'h.0.attn.c_attn.weight' '$out/g/model.safetensors' && grep -q 'wte.weight' '$out/g/model.safetensors' && grep -q 'ln_f.bias' '$out/g/model.safetensors'"
check "writes its config" "grep -q '\"n_embd\": 16' '$out/g/config.json' && grep -q '\"vocab_size\": 256' '$out/g/config.json' && grep -q '\"n_positions\": 16' '$out/g/config.json'"
check "writes the history, one row per step" "[ \$(wc -l <'$out/g/history.csv') -eq 61 ] && head -1 '$out/g/history.csv' | grep -q '^step,train_loss,val_loss$'"
check "writes the curves" "grep -q '</svg>' '$out/g/curves.svg' && grep -q 'validation loss' '$out/g/curves.svg'"
check "prints a sample that starts with the prompt" "grep -A1 '^sample:$' '$out/log' | tail -1 | grep -q '^the'"

"$nabla" train --model gpt --text "$out/text.txt" $tiny --threads 1 --out "$out/g1" >/dev/null 2>&1
"$nabla" train --model=gpt --text="$out/text.txt" $tiny --threads 2 --out "$out/g2" >/dev/null 2>&1
check "same seed, same checkpoint bytes on 1 and 2 threads" "[ -s '$out/g1/model.safetensors' ] && cmp -s '$out/g/model.safetensors' '$out/g1/model.safetensors' && cmp -s '$out/g1/model.safetensors' '$out/g2/model.safetensors'"

# ---- a folder of texts: its text files in name order, binary files and links skipped
mkdir -p "$out/dir"
cp "$out/text.txt" "$out/dir/a"
printf 'bin\000ary' >"$out/dir/b.dat"
ln -s a "$out/dir/a.link"
"$nabla" train --model gpt --text "$out/dir" $tiny --steps 2 --out "$out/gd" >"$out/logd" 2>&1
check "train on a folder reads its text files only" "grep -q 'on $(wc -c <"$out/text.txt") bytes of text' '$out/logd'"

# ---- generate: the same continuation as train's sample from the same prompt, seed and settings
"$nabla" generate "$out/g" --prompt the --tokens 40 >"$out/gen" 2>&1
check "generate exits 0" "[ $? -eq 0 ]"
sed -n '/^sample:$/,$p' "$out/log" | tail -n +2 >"$out/sample"
check "generate continues the prompt as train's sample did" "cmp -s '$out/gen' '$out/sample'"
check "generate prints the prompt and 40 bytes" "[ \$(head -c 43 '$out/gen' | wc -c) -eq 43 ] && head -c 3 '$out/gen' | grep -q the"
"$nabla" generate "$out/g/model.safetensors" --prompt the --tokens 40 --temperature 0 >"$out/gen0" 2>&1
"$nabla" generate "$out/g" --prompt the --tokens 40 --top-k 1 --seed 7 >"$out/gen1" 2>&1
check "greedy (temperature 0) equals top-k 1, from the folder or the file" "[ -s '$out/gen0' ] && cmp -s '$out/gen0' '$out/gen1'"
"$nabla" generate "$out/g" --prompt "the quick brown" --tokens 50 --temperature 0 >"$out/long" 2>&1
check "generates past the context (16) by sliding" "[ $? -eq 0 ] && [ \$(wc -c <'$out/long') -eq 66 ]"

# ---- bad input: one line, the real cause, exit 1, nothing leaked
: >"$out/empty.txt"
printf 'short text' >"$out/short.txt"
fails "train --model gpt without --text" "no text to train on" train --model gpt
fails "train --model gpt, missing text" "cannot open the text '$out/nope.txt': No such file" train --model gpt --text "$out/nope.txt"
fails "train --model gpt, empty text" "the text is empty" train --model gpt --text "$out/empty.txt"
fails "train --model gpt, text too short for ctx" "'$out/short.txt' is too short: 10 bytes give 9 for training and 1 for validation.*--ctx \+ 1 = 17" train --model gpt --text "$out/short.txt" --ctx 16
fails "train --model gpt, dim not a multiple of heads" "--dim 30 is not a multiple of --heads 4" train --model gpt --text "$out/text.txt" --dim 30 --heads 4
fails "train --model gpt --ctx 0" "--ctx '0'" train --model gpt --text "$out/text.txt" --ctx 0
fails "train --model gpt --lr 0" "--lr '0'" train --model gpt --text "$out/text.txt" --lr 0
fails "train --model gpt --val-frac 1" "--val-frac '1'" train --model gpt --text "$out/text.txt" --val-frac 1
fails "train --model gpt --schedule x" "--schedule 'x'.*cosine or constant" train --model gpt --text "$out/text.txt" --schedule x
fails "train --model gpt --hidden 8" "unknown option.*--hidden" train --model gpt --text "$out/text.txt" --hidden 8
fails "train --model bogus" "--model 'bogus'.*mlp \(default\), cnn or gpt" train --model bogus
fails "generate without a checkpoint" "no checkpoint given" generate --prompt the
fails "generate without a prompt" "no prompt given" generate "$out/g"
fails "generate, missing checkpoint" "cannot open the checkpoint '$out/none'" generate "$out/none" --prompt the
fails "generate, empty prompt" "the prompt is empty" generate "$out/g" --prompt ""
fails "generate, prompt longer than ctx" "the prompt has 17 bytes; the model's context is 16" generate "$out/g" --prompt "0123456789abcdefg"
fails "generate --tokens -1" "--tokens '-1'" generate "$out/g" --prompt the --tokens -1
fails "generate --temperature -1" "--temperature '-1'" generate "$out/g" --prompt the --temperature -1
fails "generate, a folder without config.json" "cannot open the model's configuration '$out/dir/config.json'" generate "$out/dir" --prompt the
mkdir -p "$out/other"
sed 's/"n_embd": 16/"n_embd": 32/' "$out/g/config.json" >"$out/other/config.json"
cp "$out/g/model.safetensors" "$out/other/"
fails "generate, a checkpoint of another shape" "cannot load the checkpoint: tensor 'wte.weight' in the file is F32 \(256,16\), the model's is F32 \(256,32\)" generate "$out/other" --prompt the
sed 's/"n_layer": 1/"n_layer": 2/' "$out/g/config.json" >"$out/other/config.json"
fails "generate, a checkpoint with fewer layers" "no tensor named 'h.1.ln_1.weight'" generate "$out/other" --prompt the
sed '/n_head/d' "$out/g/config.json" >"$out/other/config.json"
fails "generate, a config without n_head" "\"n_head\" is missing" generate "$out/other" --prompt the
"$nabla" train --model gpt --help >"$out/help" 2>&1
check "train --model gpt --help explains the options" "grep -q -- '--ctx' '$out/help' && grep -q -- '--eval-every' '$out/help'"
"$nabla" generate --help >"$out/help" 2>&1
check "generate --help explains the options" "grep -q -- '--top-k' '$out/help'"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
