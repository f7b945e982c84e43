#!/usr/bin/env bash
# The README's first command: set up, fetch the small assets, then on SciFact with the offline
# SPLADE model and the embedded engine: evaluate zero-shot -> distillation data (BM25 + MiniLM
# teachers) -> fine-tune
# (config/scifact_demo.yaml) -> evaluate the fine-tuned model, BM25 and the teachers -> a table and a report
# with plots (output/demo/report/). A re-run reuses every step whose inputs did not change.
#
#   bash scripts/demo.sh                 # offline, CPU or all visible GPUs
#   bash scripts/demo.sh --hub           # a real hub model (opensearch-...-doc-v2-mini), network allowed
#   bash scripts/demo.sh --force         # redo every step
# All options: .venv/bin/python -m sparse.reproduce.demo --help
# The last line reads: NDCG@10 zero-shot X -> fine-tuned Y
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m sparse.assets --only splade minilm idf scifact
exec .venv/bin/python -m sparse.reproduce.demo "$@"
