"""Run one benchmark method in a fresh child process, so its peak memory and warm-up are its own."""

from __future__ import annotations

import multiprocessing as mp


def _child(target, args, method: str, queue) -> None:
    try:
        target(args, method, queue)
    except BaseException as exc:  # the parent waits on the queue: always answer it
        queue.put({"error": f"{method}: {type(exc).__name__}: {exc}"})
        raise


def run_in_child(target, args, method: str) -> dict:
    """``target(args, method, queue)`` in a spawned process; the dict it put on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, args, method, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise SystemExit(f"benchmark failed in the child process: {result['error']}")
    return result
