#!/usr/bin/env bash
# The l0-sparsification paper's grid (config/grid/*.yaml): train every config (torchrun over all
# visible GPUs, plain python on CPU), evaluate it on BEIR, then aggregate everything into
# <root>/results.{csv,md,json} and <root>/pareto.png. Resumable: finished runs are skipped.
#
#   bash scripts/run_reproduce.sh                      # the full 56-run grid on GPUs (output/reproduce)
#   bash scripts/run_reproduce.sh --smoke              # scaled down on CPU: SPLADE, SciFact, a few steps
#   bash scripts/run_reproduce.sh --preset scifact     # the paper's question on 2 CPU cores (docs/reproduce.md)
#   bash scripts/run_reproduce.sh --only baseline,mask_vary_threshold --beir_datasets scifact,nfcorpus
#   bash scripts/run_reproduce.sh --dry_run            # print the commands only
# All options: .venv/bin/python -m sparse.reproduce.runner --help
set -euo pipefail
cd "$(dirname "$0")/.."
case " $* " in
  *" --dry_run "*) ;;  # a dry run sets nothing up and writes nothing: it only prints the commands
  *) bash scripts/setup.sh
     .venv/bin/python -m sparse.assets --only splade idf scifact minilm >/dev/null ;;
esac
exec .venv/bin/python -m sparse.reproduce.runner "$@"
