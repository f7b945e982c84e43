#!/usr/bin/env bash
# Set up (idempotent), fetch the small real assets (cached), run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m sparse.assets
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
