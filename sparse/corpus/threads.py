"""CPU thread count for small models: torch's default can oversubscribe a shared machine.

torch starts one intra-op thread per core. When other processes already keep some of those cores
busy, a small model's many short operations make every thread wait at each barrier for the one
that was descheduled: on a 2-core machine with one core busy elsewhere, a tiny model trained
about 100x slower with 2 threads than with 1. At training and evaluation start ``adapt_threads``
measures how many of this process's CPUs other processes keep busy and, for a small model on
CPU, lowers torch's thread count to the CPUs left free, saying so in the log. A thread count the
user chose (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``) is kept.

The decision (``choose_threads``) is a pure function of its inputs, so it is tested without timing.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Optional

logger = logging.getLogger(__name__)

SMALL_MODEL_PARAMS = 150_000_000  # BERT-base-sized and below: the models one trains or evaluates on a CPU
USER_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def choose_threads(current: int, cpus: int, busy_elsewhere: float, device: str = "cpu",
                   params: int = 0, user_setting: Optional[str] = None,
                   local_processes: int = 1) -> tuple[Optional[int], str]:
    """(thread count to set, or None to keep ``current``; the reason, for the log).

    ``cpus``: the CPUs this process may run on; ``busy_elsewhere``: how many of them other
    processes keep busy (in CPUs, e.g. 1.0); ``local_processes``: processes of this job on the
    machine (torchrun on CPU), which share the free CPUs.
    """
    if user_setting:
        return None, f"thread count set by the user ({user_setting}): kept at {current}"
    if device != "cpu":
        return None, ""
    if params > SMALL_MODEL_PARAMS:
        return None, ""
    free = max(1, int(cpus - busy_elsewhere + 0.5))
    want = max(1, free // max(1, local_processes))
    if want >= current:
        return None, ""
    return want, (f"{busy_elsewhere:.1f} of {cpus} CPUs are busy with other processes: torch threads {current} -> "
                  f"{want} (a small model on an oversubscribed CPU runs many times slower; set OMP_NUM_THREADS "
                  f"to choose the count yourself)")


def busy_elsewhere(cpus: Optional[set] = None, interval: float = 0.25) -> float:
    """CPUs (of ``cpus``, default this process's affinity) kept busy by other processes, measured over
    ``interval`` seconds from ``/proc/stat`` minus this process's own CPU time; without
    ``/proc/stat``, the 1-minute load average."""
    cpus = cpus if cpus is not None else _affinity()

    def sample():
        busy = total = 0
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *fields = line.split()
                if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                    continue
                values = [int(v) for v in fields[:8]]
                idle = values[3] + values[4]  # idle + iowait
                busy += sum(values) - idle
                total += sum(values)
        own = sum(os.times()[:2])
        return busy, total, own

    try:
        b0, t0, own0 = sample()
        time.sleep(interval)
        b1, t1, own1 = sample()
    except (OSError, ValueError):
        try:
            return max(0.0, os.getloadavg()[0] - 1.0)  # the load includes this process
        except OSError:
            return 0.0
    if t1 <= t0:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    others = (b1 - b0) / ticks - (own1 - own0)  # CPU-seconds of the others in the interval
    wall = (t1 - t0) / ticks / max(1, len(cpus))  # seconds, from the counters themselves
    return max(0.0, min(float(len(cpus)), others / max(wall, 1e-6)))


def _affinity() -> set:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def adapt_threads(device, params: int, local_processes: Optional[int] = None) -> Optional[int]:
    """Apply ``choose_threads`` to this process (torch's intra-op threads) and log the decision.
    Returns the count set, or None when torch's own count is kept."""
    import torch

    if local_processes is None:
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
    user = next((f"{v}={os.environ[v]}" for v in USER_THREAD_VARIABLES if os.environ.get(v)), None)
    device = getattr(device, "type", str(device)).split(":")[0]
    cpus = _affinity()
    current = torch.get_num_threads()
    if user or device != "cpu" or params > SMALL_MODEL_PARAMS or current <= 1:
        want, reason = choose_threads(current, len(cpus), 0.0, device, params, user, local_processes)
    else:
        want, reason = choose_threads(current, len(cpus), busy_elsewhere(cpus), device, params, None,
                                      local_processes)
    if want is not None:
        torch.set_num_threads(want)
        logger.warning("%s", reason)
    elif reason:
        logger.info("%s", reason)
    return want
