"""``python -m sparse.adapt CORPUS_DIR [--output DIR] [--labels auto|none] [key=value ...]``."""

import sys

from sparse.adapt.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
