#!/usr/bin/env bash
# Fetch the small real assets once (cached): SPLADE model, MiniLM teacher, idf.json, SciFact.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m sparse.assets "$@"
