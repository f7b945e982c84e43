#!/usr/bin/env bash
# One short, prepared GPU check (issue 14): encode and train-step benchmarks on the device, written
# under $OUT (or output/gpu_check). GPU time is scarce: run it once, read bench/README.md for what
# to record. Dry run on a CPU with tiny sizes:  DEVICE=cpu SMALL=1 bash bench/gpu_check.sh
#
# The GPU image lacks pytrec-eval-terrier (NDCG in bench/encode.py): carry its cp312 wheel in .whl/
# (see the device README) and this script installs it with --target. BENCH_TIMEOUT caps each benchmark
# (seconds, default 240); ONLY=REGEX keeps the benchmarks whose names match.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
OUTDIR=${OUT:-output/gpu_check}
mkdir -p "$OUTDIR"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=true
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
PY=${PYTHON:-python3}
timeout 30 $PY -m sparse.assets >/dev/null 2>&1 || true   # the small assets (cached after the first call)
if [ -n "${SMALL:-}" ]; then
  DOCS=40; STEPS=2; BIG_DOCS=20; B=2
else
  DOCS=0; STEPS=30; BIG_DOCS=2000; B=16
fi
run() {  # name, command...; each benchmark's output goes to its own file, a failure does not stop the rest
  local name=$1; shift
  [[ $name =~ ${ONLY:-.} ]] || return 0   # ONLY=REGEX runs the benchmarks whose names match
  echo "== $name: $*" | tee -a "$OUTDIR/summary.txt"
  timeout "${BENCH_TIMEOUT:-240}" "$@" > "$OUTDIR/$name.txt" 2>&1; echo "rc=$?" >> "$OUTDIR/$name.txt"
  grep -v "Loading weights" "$OUTDIR/$name.txt" | tail -6 | tee -a "$OUTDIR/summary.txt"
}
for dtype in fp32 bf16 fp16; do
  run "encode_splade_$dtype" $PY bench/encode.py --device "$DEVICE" --dtype $dtype --docs $DOCS --batch_size 256
done
run encode_distilbert_bf16 $PY bench/encode.py --device "$DEVICE" --dtype bf16 --model distilbert --docs $BIG_DOCS --batch_size 128
for dtype in fp32 bf16; do
  run "train_infonce_$dtype" $PY bench/train_step.py --device "$DEVICE" --dtype $dtype --loss infonce --batch $((B * 4)) --length 256 --steps $STEPS
  run "train_kldiv_$dtype" $PY bench/train_step.py --device "$DEVICE" --dtype $dtype --loss kldiv --batch $B --length 256 --steps $STEPS
  run "train_distilbert_$dtype" $PY bench/train_step.py --device "$DEVICE" --dtype $dtype --model distilbert --loss infonce --batch $((B * 2)) --length 256 --steps $STEPS
done
echo "done: $OUTDIR/summary.txt"
