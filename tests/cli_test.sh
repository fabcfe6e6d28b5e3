#!/bin/sh
# cli_test.sh - the command line end to end: softgate fit / predict / eval /
# demo on small CSV files, the files they write, and their errors (corrupt
# model file, malformed CSV, refusing to overwrite). Run by `make test`:
#   tests/cli_test.sh build/softgate        (RUNNER=qemu-... for emulation)
# Prints "cli_test: N checks passed" or the failed checks, exit status 1.
SG="$1"
[ -n "$SG" ] || { echo "usage: tests/cli_test.sh PATH/TO/softgate" >&2; exit 2; }
case "$SG" in /*) ;; *) SG="$PWD/$SG" ;; esac
ROOT="$PWD"
T=$(mktemp -d "${TMPDIR:-/tmp}/softgate_cli_test.XXXXXX") || exit 2
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 2
pass=0 failed=0
ok() { pass=$((pass + 1)); }
bad() { failed=$((failed + 1)); echo "cli_test: FAIL: $*" >&2; }
# One thread everywhere: enough for these sizes, and a thread pool under
# qemu-user (the arm64 run) is very slow.
sg() { cmd=$1; shift; $RUNNER "$SG" "$cmd" --threads 1 "$@"; }
# expect_fail NAME PATTERN CMD...: CMD exits 1 and its stderr contains PATTERN.
expect_fail() {
  name=$1 pat=$2; shift 2
  "$@" >out.txt 2>err.txt; rc=$?
  if [ $rc -ne 0 ] && grep -q -- "$pat" err.txt; then ok; else bad "$name (rc $rc): $(cat err.txt)"; fi
}
# num FILE KEY: a number from a one-line JSON object.
num() { sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" "$1" | head -n 1; }

# The data compiled into the binary is data/faithful.csv, byte for byte.
sg demo --print-data > embedded.csv && cmp -s embedded.csv "$ROOT/data/faithful.csv" && ok ||
  bad "cli/demo_data.c is not data/faithful.csv (run data/embed_csv.sh)"
cp "$ROOT/data/faithful.csv" f.csv

# fit: summary, model file, JSON summary.
sg fit f.csv --response eruptions --experts 2 --restarts 2 -o m.json > fit.txt 2>&1 &&
  grep -q "log-likelihood" fit.txt && grep -q '"format": *"softgate-mixture"' m.json && ok ||
  bad "fit: $(cat fit.txt)"
sg fit f.csv --response eruptions --experts 2 --restarts 2 --json > fit.json 2>&1 &&
  grep -q '"candidates":\[' fit.json && [ "$(wc -l < fit.json)" -eq 1 ] && ok || bad "fit --json: $(cat fit.json)"
# From a given partition (an arbitrary one, numbered 1..2): plain EM stops
# at the nested fit (-190.59), the split-and-merge escape step (default)
# reaches the two-regime one (-96.05).
awk -F, 'NR == 1 { print $0 ",start"; next } { print $0 "," ((NR * 7919) % 13) % 2 + 1 }' f.csv > fs.csv
sg fit fs.csv --response eruptions --features waiting --init-column start --restarts 1 --json > esc.json 2>&1 &&
  sg fit fs.csv --response eruptions --features waiting --init-column start --restarts 1 --no-escape --json > noesc.json 2>&1 &&
  awk -v a="$(num esc.json loglik)" -v b="$(num noesc.json loglik)" 'BEGIN { exit !(a > -97 && b < -190 && a > b) }' &&
  ok || bad "fit --init-column with/without escape: $(num esc.json loglik) vs $(num noesc.json loglik)"
# A range of E: a table of all, the best BIC chosen.
sg fit f.csv --response eruptions --experts 1..2 --restarts 1 > range.txt 2>&1 &&
  grep -q "selected: E = 2" range.txt && ok || bad "fit --experts 1..2: $(cat range.txt)"

# Never overwrite: the model file is kept as it was.
cp m.json m.keep
expect_fail "fit refuses to overwrite" "exists; not overwriting" sg fit f.csv --response eruptions -o m.json
cmp -s m.json m.keep && ok || bad "m.json changed after a refused fit"
sg fit f.csv --response eruptions --restarts 1 -o m.json --force > /dev/null 2>&1 && ok || bad "fit --force"

# predict: one row per record, mean and gates; -o refuses to overwrite.
sg predict m.json f.csv > pred.csv 2> err.txt && head -n 1 pred.csv | grep -qx "line,mean,gate_1,gate_2" &&
  [ "$(wc -l < pred.csv)" -eq 273 ] && ok || bad "predict: $(head -n 2 pred.csv) $(cat err.txt)"
sg predict m.json f.csv -o out.csv 2> /dev/null && cmp -s out.csv pred.csv && ok || bad "predict -o"
expect_fail "predict refuses to overwrite" "exists; not overwriting" sg predict m.json f.csv -o out.csv
expect_fail "predict over its input" "would replace an input" sg predict m.json f.csv -o f.csv

# eval on the training data gives the fit's log-likelihood.
sg fit f.csv --response eruptions --restarts 1 --json -o m2.json > f2.json 2>&1 &&
  sg eval m2.json f.csv --json > e2.json 2>&1 || bad "fit/eval --json: $(cat f2.json e2.json)"
awk -v a="$(num f2.json loglik)" -v b="$(num e2.json loglik)" \
  'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= 1e-9 * (a < 0 ? -a : a)) }' && ok ||
  bad "eval loglik $(num e2.json loglik) != fit loglik $(num f2.json loglik)"
grep -q '"rmse":' e2.json && ok || bad "eval --json has no rmse: $(cat e2.json)"

# Corrupt or incompatible model files are clear errors naming the file.
head -c 200 m.json > trunc.json
expect_fail "truncated model" "trunc.json" sg predict trunc.json f.csv
sed 's/"version": *1/"version": 99/' m.json > v99.json
expect_fail "future version" "v99.json" sg eval v99.json f.csv
echo "not json" > junk.json
expect_fail "not JSON" "junk.json" sg predict junk.json f.csv
expect_fail "missing model" "nope.json" sg predict nope.json f.csv

# CSV errors name the line and column; --drop-missing drops and counts.
printf 'waiting,eruptions\n79,3.6\n54,oops\n74,3.3\n' > badval.csv
expect_fail "malformed value" "line 3, column 2 ('eruptions')" sg fit badval.csv --response eruptions
printf 'waiting,eruptions,site\n79,3.6,north\n54,1.8,south\n' > text.csv
expect_fail "text column" "column 'site' is not numeric" sg fit text.csv --response eruptions
{ cat f.csv; printf '60,\nNA,70\n'; } > miss.csv
expect_fail "missing value" "line 274, column 2 ('waiting')" sg fit miss.csv --response eruptions
sg fit miss.csv --response eruptions --drop-missing --restarts 1 > drop.txt 2>&1 &&
  grep -q "2 records dropped" drop.txt && grep -q "n = 272" drop.txt && ok || bad "--drop-missing: $(cat drop.txt)"
expect_fail "unknown response" "response column 'y'" sg fit f.csv --response y
expect_fail "plot needs one feature" "--plot needs" sg fit text.csv --response eruptions \
  --categorical site --plot p.svg
expect_fail "bad gate" "--gate" sg fit f.csv --response eruptions --gate bogus

# Class labels and a one-hot categorical column, through predict and eval.
{ echo 'x,"the site",label'
  i=0; for s in north south east; do for x in -2 -1 -0.5 0 0.5 1 2 3; do
    i=$((i + 1)); if [ $((i % 3)) -eq 0 ]; then l='"no, not"'; else l=yes; fi
    echo "$x,$s,$l"; done; done; } > cls.csv
sg fit cls.csv --response label --family multinomial --categorical "the site" --experts 1 \
  --restarts 1 -o c.json > cfit.txt 2>&1 && grep -q "the site=south" cfit.txt && ok ||
  bad "multinomial fit: $(cat cfit.txt)"
sg predict c.json cls.csv > cpred.csv 2>&1 &&
  head -n 1 cpred.csv | grep -qx 'line,class,"prob_no, not",prob_yes,gate_1' && ok || bad "multinomial predict: $(head -n 2 cpred.csv)"
sg eval c.json cls.csv > ceval.txt 2>&1 && grep -q "accuracy" ceval.txt && ok || bad "multinomial eval: $(cat ceval.txt)"
printf 'x,"the site",label\n1,west,yes\n' > newlevel.csv
expect_fail "unknown level" "level 'west'" sg predict c.json newlevel.csv
printf 'x,"the site",label\n1,east,maybe\n' > newclass.csv
expect_fail "unknown class" "class 'maybe'" sg eval c.json newclass.csv

# demo: writes ./softgate-demo.svg, replaces only its own earlier plot.
sg demo --restarts 2 > demo.txt 2>&1 && grep -q "plot written to softgate-demo.svg" demo.txt &&
  grep -q "<svg" softgate-demo.svg && ok || bad "demo: $(cat demo.txt)"
sg demo --restarts 1 > /dev/null 2>&1 && ok || bad "demo does not replace its own plot"
echo "mine" > softgate-demo.svg
expect_fail "demo keeps a foreign file" "not a softgate plot" sg demo --restarts 1
grep -qx mine softgate-demo.svg && ok || bad "demo overwrote a foreign file"

if [ "$failed" -eq 0 ]; then echo "cli_test: $pass checks passed"; exit 0; fi
echo "cli_test: $pass checks passed, $failed failed"
exit 1
