# Helpers of the program's tests (sourced by run.sh and gpt.sh with the program's path as $1): checks
# that count passes and failures, and `fails`, which runs the program expecting exit status 1 and one line.
set -u
nabla=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
pass=0 fail=0
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $1"; }
# fails NAME PATTERN ARGS...: exit status 1, exactly one line "nabla: ..." matching PATTERN (grep -E)
fails() {
  name=$1 pat=$2
  shift 2
  "$nabla" "$@" >"$out/err" 2>&1
  rc=$?
  if [ $rc -eq 1 ] && [ "$(wc -l <"$out/err")" -eq 1 ] && grep -q '^nabla: ' "$out/err" && grep -Eq -- "$pat" "$out/err"; then
    ok "$name"
  else
    bad "$name fails with one line matching \"$pat\" (got status $rc):"
    sed 's/^/    /' "$out/err" | head -5
  fi
}
field() { sed -n "s/.*$1 \([0-9.]*\).*/\1/p"; } # the number after a word on a log line
