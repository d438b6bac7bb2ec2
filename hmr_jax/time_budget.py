"""train.time_budget_min: the run-length planner and the timing helpers it needs."""

import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

PyTree = Any
Batch = Mapping[str, Any]


def process_start_time() -> float:
    """When this process started (seconds since the epoch; Linux: /proc, so a re-executed process
    counts from its first start), else now."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def cost_once_compiled(wait_seconds: float, call_seconds: list[float]) -> float:
    """What a pass of len(call_seconds) jitted calls costs once compiled: the waits between them
    (input) plus every call at the mean of the calls after the first (the first one compiles
    when the pass is the first); one call: its own time."""
    calls = list(call_seconds)
    if len(calls) < 2:
        return float(wait_seconds) + float(sum(calls))
    return float(wait_seconds) + len(calls) * float(np.mean(calls[1:]))


def steps_within_budget(
    *,
    step: int,
    seconds_left: float,
    step_seconds: float,
    floor: int,
    cap: int,
    eval_every: int,
    final_eval: bool,
    eval_seconds: float,
    image_every: int,
    image_seconds: float,
) -> int:
    """The largest run length N in [floor, cap] whose remaining steps (step + 1 .. N), evaluations
    (every eval_every-th step and, if final_eval, at N) and image grids (every image_every-th
    step) take at most `seconds_left`; `floor` when even that does not fit."""

    def seconds(n: int) -> float:
        evals = (n // eval_every - step // eval_every) if eval_every else 0
        if final_eval and (not eval_every or n % eval_every):
            evals += 1
        images = (n // image_every - step // image_every) if image_every else 0
        return (n - step) * step_seconds + evals * eval_seconds + images * image_seconds

    lo, hi = floor, max(floor, cap)
    if seconds(lo) > seconds_left:
        return floor
    while lo < hi:  # seconds(n) grows with n: the last n that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if seconds(mid) <= seconds_left else (lo, mid - 1)
    return lo


class BudgetPlanner:
    """train.time_budget_min: sets the run's length from the measured speed so that the whole run,
    from `start_time` (data generation, compilation, evaluations included), ends within the budget.

    The length is first planned once `WARMUP_WINDOWS` logging windows after the first have been
    timed, then re-planned at every logging step from the speed of the last `WINDOWS` windows and
    the slowest evaluation / image grid so far, each timed as it costs once compiled (the first
    call of a jitted function compiles; `cost_once_compiled`; guessed until one has run): shorter
    as soon as the budget needs it, longer only by more than `GROW` (the learning-rate schedule
    follows the length, `TrainState.num_steps`: no jitter from noise).
    """

    WARMUP_WINDOWS = 3  # timed windows (after the first, which holds the compilation) before planning
    WINDOWS = 4  # logging windows whose mean step time is the speed
    MARGIN = 0.98  # of the time left: noise between re-plans
    TAIL_SECONDS = 5.0  # after the last step: checkpoint, curves, writer (~1.5 s measured)
    GROW = 0.01  # a longer plan replaces the current one only if longer by more than this fraction
    GUESS_SECONDS = 10.0  # an evaluation / image grid until one has been timed

    def __init__(self, config, start_time: float, *, final_eval: bool):
        tc = config.train
        self.deadline = start_time + 60.0 * float(tc.time_budget_min)
        self.cap = int(tc.num_steps)
        self.eval_every = int(tc.eval_every) if final_eval else 0
        self.image_every, self.final_eval = int(tc.image_every), final_eval
        self.windows: list[float] = []  # seconds per step of each logging window
        self.eval_seconds: float | None = None  # the slowest so far; None until one has been timed
        self.image_seconds: float | None = None

    def window(self, seconds_per_step: float) -> None:
        self.windows.append(seconds_per_step)

    def evaluated(self, seconds: float) -> None:
        self.eval_seconds = max(seconds, self.eval_seconds or 0.0)

    def drew_images(self, seconds: float) -> None:
        self.image_seconds = max(seconds, self.image_seconds or 0.0)

    def plan(self, step: int, num_steps: int, now: float) -> int | None:
        """The run's new length, or None to keep `num_steps` (too few timings yet, or about as long)."""
        timed = self.windows[1:]  # the first window holds the compilation
        if len(timed) < self.WARMUP_WINDOWS:
            return None
        step_seconds = float(np.mean(timed[-self.WINDOWS :]))
        eval_seconds = self.GUESS_SECONDS if self.eval_seconds is None else self.eval_seconds
        image_seconds = self.GUESS_SECONDS if self.image_seconds is None else self.image_seconds
        left = self.MARGIN * (self.deadline - now) - self.TAIL_SECONDS
        n = steps_within_budget(
            step=step,
            seconds_left=left,
            step_seconds=step_seconds,
            floor=step,
            cap=self.cap,
            eval_every=self.eval_every,
            final_eval=self.final_eval,
            eval_seconds=eval_seconds,
            image_every=self.image_every,
            image_seconds=image_seconds,
        )
        return n if n < num_steps or n > (1.0 + self.GROW) * num_steps else None
