"""Command line of ``sparse.modeling.idf``: compute a BM25 IDF file for any corpus and tokenizer.

    python -m sparse.idf --tokenizer bert-base-uncased --corpus corpus.jsonl --output idf.json

``--corpus`` takes a BEIR ``corpus.jsonl`` (title + " " + text), a ``.tsv`` collection
(id<TAB>text, MS MARCO style) or a plain text file (one document per line), read by
``sparse.data.beir.iter_corpus_texts``. The formula and its conventions are documented in
``sparse.modeling.idf``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from sparse.config.cli import Command, run_command
from sparse.config.keys import key
from sparse.data.beir import iter_corpus_texts
from sparse.errors import UserError
from sparse.modeling.idf import compute_idf, write_idf_file


@dataclass(kw_only=True)
class IdfArguments:
    """Options of ``python -m sparse.idf``."""

    tokenizer: str = key(help="Tokenizer id or directory.")
    corpus: str = key(help="corpus.jsonl, collection .tsv or text file.")
    output: str = key(help="Where to write idf.json.")
    batch_size: int = key(1000, "Texts tokenized per batch.", low=1)
    trust_remote_code: bool = key(False, "Allow tokenizer code from the hub.")


COMMAND = Command("python -m sparse.idf", "Compute a BM25 idf.json for a corpus and tokenizer.", options=IdfArguments)


def main(argv=None) -> int:
    """``python -m sparse.idf``: the one command-line reader, then ``write_idf``."""
    return run_command(COMMAND, write_idf, argv)


def write_idf(args: IdfArguments) -> int:
    """Compute the IDF of ``args.corpus`` with ``args.tokenizer`` and write it to ``args.output``."""
    from transformers import AutoTokenizer

    if os.path.isdir(args.output):
        raise UserError(f"output {args.output} is a folder: give the path of the idf.json to write")
    if os.path.isfile(args.output) and os.path.isfile(args.corpus) and os.path.samefile(args.output, args.corpus):
        raise UserError(f"output {args.output} is the corpus it reads: give another path for idf.json")
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer, trust_remote_code=args.trust_remote_code)
        idf = compute_idf(iter_corpus_texts(args.corpus), tokenizer, batch_size=args.batch_size, progress=True)
    except OSError as exc:
        raise UserError(str(exc)) from exc
    try:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        write_idf_file(idf, args.output)
    except OSError as exc:  # read-only folder, a file where a folder should be, a full disk
        raise UserError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"wrote {len(idf)} token weights to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
