"""The hash of a corpus: what every on-disk cache of per-document data keys its entries by.

``corpus_digest(header, ids, texts)`` hashes a JSON-serializable ``header`` (what else decides the
cached data: a model fingerprint, parameters, a truncation length, the number of documents) and
then every (id, text) pair in order, so another model, other settings or one changed document
give another key. Any caller with the same header and corpus gets the same key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Sequence


def corpus_digest(header, doc_ids: Sequence[str], texts: Sequence[str], digest_size: int = 12) -> str:
    """Hex BLAKE2b of ``json.dumps(header)`` followed by each ``id \\0 text \\1`` in order."""
    h = hashlib.blake2b(digest_size=digest_size)
    h.update(json.dumps(header).encode())
    for doc_id, text in zip(doc_ids, texts):
        h.update(str(doc_id).encode())
        h.update(b"\x00")
        h.update(text.encode())
        h.update(b"\x01")
    return h.hexdigest()
