"""Round-robin timing shared by the side-by-side benchmarks (train_step.py, inference.py)."""

import os
import time


def round_robin(runners, steps, settle):
    """Time each of `runners` ({name: fn}) `steps` times, one call of each per round, each timed
    call after `settle` untimed calls of the same function (so what a function pays for following
    another is not timed), so that load from other processes hits all alike.

    Returns ({name: [wall s]}, {name: [CPU s of this process]}, [load average after each round])."""
    times = {name: [] for name in runners}
    cpu = {name: [] for name in runners}
    loads = []
    for _ in range(steps):
        for name, fn in runners.items():
            for _ in range(settle):
                fn()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        loads.append(os.getloadavg()[0])
    return times, cpu, loads
