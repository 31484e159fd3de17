"""Per-op self time of a compiled step, from the TensorFlow profiler.

Used by `bench_normalization --profile` to say which ops a normalization's cost is made of.
The profiler writes an XSpace trace; TensorFlow's own converter (the one TensorBoard's profile
plugin calls) turns it into the "framework_op_stats" table: one row per graph op with its
type, full name and self time. That converter lives in a private module, so a TensorFlow
without it gets a clear error instead of a wrong table.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import tempfile
from typing import Callable

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class OpTime:
    """One graph op: its type (e.g. 'MatMul'), full name (with name scopes), and self time."""

    type: str
    name: str
    self_ms_per_step: float


def _op_stats_table(xspace_paths: list[str]) -> list[dict]:
    try:
        from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin
    except ImportError as error:  # private API: fail loudly, not with a wrong table
        raise RuntimeError("This TensorFlow has no profiler converter "
                           f"(_pywrap_profiler_plugin): {error}") from error
    data, ok = plugin.xspace_to_tools_data(xspace_paths, "framework_op_stats", {})
    if not ok:
        raise RuntimeError(f"The profiler could not convert the trace: {data[:200]!r}")
    table = json.loads(data)
    table = table[0] if isinstance(table, list) else table  # (table, metadata) in some builds
    columns = [column["id"] for column in table["cols"]]
    return [dict(zip(columns, [cell.get("v") if cell else None for cell in row["c"]]))
            for row in table["rows"]]


def profile_step(step: Callable[[], object], steps: int) -> list[OpTime]:
    """Runs `step` `steps` times under the profiler; every op's self time per step.

    The step should be warmed up (traced) already, or tracing would be profiled too.
    """
    with tempfile.TemporaryDirectory(prefix="op_profile_") as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(steps):
                step()
        finally:
            tf.profiler.experimental.stop()
        paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        rows = _op_stats_table(paths)
    # IDLE is the time the executor threads waited, not an op.
    return [OpTime(row["type"], row["operation"], row["total_self_time"] / 1000.0 / steps)
            for row in rows if row["type"] != "IDLE"]
