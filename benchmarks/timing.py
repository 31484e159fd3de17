"""Interleaved timing on two clocks, and the statistics and tables of its samples.

Free of TensorFlow, so that a script timing another framework (`bench_torch_sngan`) times and
reports the same way; `common.measure_interleaved` is the TensorFlow steps' entry point.

Timing method. The machines these run on are often shared (other test suites, other users), so
load changes during a run. Every variant is therefore warmed up first (tracing, XLA compilation,
oneDNN primitive caches), then the variants run round-robin, one sample each per round, in an
order shuffled every round. A load spike then hits all variants alike instead of one variant's
whole block, and the ratio to the baseline is taken per round (paired) before the median, which
cancels slow drift that the plain ratio of medians would keep.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import statistics
import time
from typing import Callable, Mapping, Sequence

Step = Callable[[], object]
Samples = dict[str, list[float]]  # variant name -> seconds per step, one per round

CLOCKS = ("wall", "cpu")


def check_at_least_one(parser: argparse.ArgumentParser, args: argparse.Namespace,
                       names: Sequence[str]) -> None:
    """Refuses (`parser.error`, exit code 2) the first of the integer flags `names` below 1."""
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")


def _no_devices_to_wait_for() -> None:
    pass


def time_call(step: Step, repeats: int = 1, sync: Callable[[], None] = _no_devices_to_wait_for
              ) -> dict[str, float]:
    """Wall and process-CPU seconds per call of `step`, over `repeats` back-to-back calls.

    Wall time is what a user waits for, but on a shared machine it includes the time other
    processes hold the cores. Process CPU time (all of this process's threads) counts only the
    work done here, so it is steadier under load; on an idle machine a compute-bound CPU step
    should show the same ratios on both. `sync` waits for the work a step queued on devices.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        step()
    sync()
    return {"wall": (time.perf_counter() - wall) / repeats,
            "cpu": (time.process_time() - cpu) / repeats}


def measure_interleaved(variants: Mapping[str, Step], rounds: int, warmup: int,
                        repeats: int = 1, seed: int = 0,
                        progress: Callable[[int], None] | None = None,
                        sync: Callable[[], None] = _no_devices_to_wait_for
                        ) -> dict[str, Samples]:
    """Seconds per call of each variant, one sample per round, rounds interleaved.

    Args:
        variants: name -> a call running one step (to completion) of that variant.
        rounds: samples per variant.
        warmup: untimed calls per variant first (trace, compile, allocate).
        repeats: calls per sample, averaged (for steps too short for one clock reading).
        seed: seeds the per-round order.
        progress: called with the round number after each round.
        sync: waits for the work queued on devices (GPU kernels run asynchronously).

    Returns:
        clock ("wall", "cpu") -> name -> `rounds` samples in seconds, in round order (so
        sample i of every variant comes from the same round, for paired ratios).
    """
    for step in variants.values():
        for _ in range(warmup):
            step()
        sync()
    order = list(variants)
    shuffler = random.Random(seed)
    samples = {clock: {name: [] for name in variants} for clock in CLOCKS}
    for round_index in range(rounds):
        # A fixed order would always run a variant right after the same neighbour (and first
        # after the Python-side bookkeeping); shuffling spreads any such position effect.
        shuffler.shuffle(order)
        for name in order:
            for clock, seconds in time_call(variants[name], repeats, sync).items():
                samples[clock][name].append(seconds)
        if progress is not None:
            progress(round_index + 1)
    return samples


def _median_ci_rank(count: int) -> int:
    """0-based rank k such that [x_(k), x_(n-1-k)] covers the median with ~95% confidence."""
    # Distribution-free: the number of samples below the median is Binomial(n, 1/2); its
    # normal approximation gives n/2 - 1.96 sqrt(n)/2 (no assumption on the timing's shape).
    return max(0, math.floor((count - 1.96 * math.sqrt(count)) / 2))


@dataclasses.dataclass(frozen=True)
class Summary:
    """Median, quartiles, and a 95% confidence interval of the median of a sample."""

    median: float
    q1: float
    q3: float
    ci_low: float
    ci_high: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @classmethod
    def of(cls, values: Sequence[float]) -> "Summary":
        ordered = sorted(values)
        if len(ordered) < 2:
            value = ordered[0]
            return cls(value, value, value, value, value)
        q1, median, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        rank = _median_ci_rank(len(ordered))
        return cls(median, q1, q3, ordered[rank], ordered[len(ordered) - 1 - rank])


def paired_ratios(samples: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Per-round ratios sample / baseline (same round, so shared load cancels)."""
    return [value / base for value, base in zip(samples, baseline)]


def overhead_percent(samples: Mapping[str, Sequence[float]], name: str,
                     baseline: str) -> Summary:
    """(variant / baseline - 1) in percent, per round: median, quartiles, CI of the median."""
    ratios = paired_ratios(samples[name], samples[baseline])
    return Summary.of([100.0 * (ratio - 1.0) for ratio in ratios])


def format_table(samples: Mapping[str, Sequence[float]], baseline: str,
                 labels: Mapping[str, str] | None = None, throughput: bool = False) -> str:
    """A text table: median ms/step, IQR, and the paired ratio to `baseline` with its 95% CI.

    Args:
        samples: name -> seconds per step, one per round (from `measure_interleaved`).
        baseline: the name the ratios divide by.
        labels: optional display names.
        throughput: add a steps/s column (1 / median).
    """
    labels = labels or {}
    header = ["variant", "median ms/step", "IQR ms", f"ratio to {labels.get(baseline, baseline)}",
              "95% CI"]
    if throughput:
        header.append("steps/s")
    rows = [header]
    for name, values in samples.items():
        times = Summary.of([1000.0 * value for value in values])
        ratio = Summary.of(paired_ratios(values, samples[baseline]))
        row = [labels.get(name, name), f"{times.median:.2f}", f"{times.iqr:.2f}",
               f"{ratio.median:.3f}", f"{ratio.ci_low:.3f}-{ratio.ci_high:.3f}"]
        if throughput:
            row.append(f"{1000.0 / times.median:.2f}")
        rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                       for column, (cell, width) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def print_progress(total: int, every_seconds: float = 30.0) -> Callable[[int], None]:
    """A `progress` callback that prints 'round i/total' at most every `every_seconds`."""
    last = [time.perf_counter()]

    def report(done: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= every_seconds or done == total:
            print(f"  round {done}/{total}", flush=True)
            last[0] = now

    return report


def format_ci(summary: Summary, unit: str = "") -> str:
    """'95% CI a to b' of a summary's median, e.g. for an overhead in percent."""
    return f"95% CI {summary.ci_low:+.1f}{unit} to {summary.ci_high:+.1f}{unit}"


_CLOCK_TITLES = {
    "wall": "wall-clock time (what a user waits for; includes other processes' load)",
    "cpu": "process CPU time (work done by this process, all threads; steadier under load)",
}


def print_report(samples: Mapping[str, Samples], baseline: str,
                 labels: Mapping[str, str] | None = None, throughput: bool = False) -> None:
    """For each clock: the table, then each variant's overhead over `baseline` in percent."""
    labels = labels or {}
    for clock, by_variant in samples.items():
        print(f"\n== {_CLOCK_TITLES[clock]}")
        # Steps per second of CPU time would mean nothing to a user: only for the wall clock.
        print(format_table(by_variant, baseline, labels, throughput and clock == "wall"))
        for name in by_variant:
            if name == baseline:
                continue
            overhead = overhead_percent(by_variant, name, baseline)
            print(f"{labels.get(name, name)}: {overhead.median:+.1f}% vs "
                  f"{labels.get(baseline, baseline)} ({format_ci(overhead, '%')})")

