"""Evaluate sparse encoders on BEIR: ``evaluate_beir.py --model_name_or_path M --beir_datasets scifact``
or ``evaluate_beir.py run.yaml`` (every checkpoint of a training run). See sparse/evaluation/runner.py."""

from sparse.config import run_cli
from sparse.evaluation.runner import main

if __name__ == "__main__":
    run_cli(main, usage=__doc__)
