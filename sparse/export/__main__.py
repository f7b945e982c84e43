"""``python -m sparse.export CHECKPOINT --to opensearch|sentence-transformers|onnx --output DIR``."""

from sparse.export.command import main

if __name__ == "__main__":
    main()
