"""Where the checkout's own files are: configs, docs, assets and default outputs."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
