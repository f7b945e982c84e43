#!/usr/bin/env bash
# Create .venv if missing and install the project; idempotent and fast when nothing changed.
# An existing torch is kept. Without one: the CPU wheel on this machine's disk when present
# (pip's find-links), otherwise a normal install from the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
stamp="$VENV/.setup-stamp"
want=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import torch, sparse" 2>/dev/null; then
  echo "setup: environment up to date ($VENV)"
  exit 0
fi
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  local_wheel=""
  for d in ${PIP_FIND_LINKS:-} /opt/wheels; do
    compgen -G "$d/torch-2.13.0*.whl" >/dev/null 2>&1 && local_wheel=yes && break
  done
  if [ -n "$local_wheel" ]; then
    echo "setup: installing torch==2.13.0 from the local wheel"
    $PIP install -q "torch==2.13.0"
  else
    echo "setup: installing torch"
    $PIP install -q "torch>=2.4"
  fi
fi
echo "setup: installing requirements"
$PIP install -q -r requirements.txt -r requirements-dev.txt
$PIP install -q --no-deps -e .
echo "$want" > "$stamp"
echo "setup: done ($("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
