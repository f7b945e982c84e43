"""The demo and the l0 paper's reproduction grid: generation, running, aggregation, reports."""
