"""Per-op self time of a compiled step from the TensorFlow profiler, and where it goes.

The profiler writes an XSpace trace; TensorFlow's own converter (the one TensorBoard's profile
plugin calls) turns it into the "framework_op_stats" table: one row per graph op with its
type, full name and self time. That converter lives in a private module, so a TensorFlow
without it gets a clear error instead of a wrong table.

Used by `bench_normalization --profile` to say which ops a normalization's cost is made of.
Run as a script, it profiles the main job's training step (the GAN of the README's main
command, `training.train --preset cifar10-cnn-bssn --semantics keras`) in each `--precision`:
the ops' time by part of the networks (transposed convolutions, convolutions, BatchNorm,
spectral normalization, casts, ...) and by the dtype each op computes in, read from the
step's graph. Run from the repository root:

    python -m benchmarks.op_profile [--precision float32 bfloat16] [--steps 10]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import json
import os
import pathlib
import re
import sys
import tempfile
from typing import Callable, Iterable, Sequence

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402  (sets the backend before Keras is imported)
from benchmarks import timing  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from training.presets import PRECISIONS  # noqa: E402


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


def _scope_stem(scope: str) -> str:
    """A name scope without the suffixes TensorFlow and Keras add to make names unique."""
    return re.sub(r"(_\d+)+$", "", scope)


def is_normalization_op(op: OpTime, wrapper_names: set[str]) -> bool:
    """Whether a profiled op belongs to a wrapper's normalization, not to the wrapped layer."""
    # A wrapper is named after its layer, so its ops sit in ".../conv7_1/..." and the wrapped
    # layer's own ops (conv, bias) one scope deeper, in ".../conv7_1/conv7_1/..."; gradients
    # mirror this under "gradient_tape/". A kernel read by several paths (W / sigma and each
    # view's sigma) gets its gradient summed by top-level AddN ops, which only normalization
    # adds to this network.
    scopes = _call_free_name(op.name).removeprefix("gradient_tape/").split("/")
    if len(scopes) == 1:
        return op.type == "AddN" and bool(wrapper_names)
    for index, scope in enumerate(scopes[:-1]):
        if re.sub(r"_\d+$", "", scope) in wrapper_names:
            return scopes[index + 1] != scope
    return False


def _call_free_name(name: str) -> str:
    """An op's name in its function's graph: without the scope of the call that ran it."""
    return re.sub(r"^(Stateful)?PartitionedCall(_\d+)?/", "", name)


def _node_dtype(node: tf.compat.v1.NodeDef) -> str | None:
    """The dtype a graph node computes in ('float32->bfloat16' for a cast), if it has one."""
    attributes = node.attr
    if "SrcT" in attributes:
        return (f"{tf.as_dtype(attributes['SrcT'].type).name}->"
                f"{tf.as_dtype(attributes['DstT'].type).name}")
    for key in ("T", "dtype"):
        if key in attributes and attributes[key].type:
            return tf.as_dtype(attributes[key].type).name
    return None


def graph_dtypes(graph: tf.compat.v1.GraphDef) -> dict[str, str]:
    """Node name -> the dtype it computes in, over a graph and the functions it calls."""
    nodes = list(graph.node)
    for function in graph.library.function:
        nodes.extend(function.node_def)
    return {node.name: dtype for node in nodes if (dtype := _node_dtype(node)) is not None}


def op_dtype(op: OpTime, dtypes: dict[str, str]) -> str:
    """The dtype of a profiled op, from its node in `graph_dtypes`; '?' for an op the graph
    does not name (one Grappler made, such as an ArithmeticOptimizer rewrite)."""
    scopes = _call_free_name(op.name).split("/")
    # Ops of a nested function (a tf.cond branch) carry its call's scope too: try shorter names.
    for start in range(len(scopes)):
        dtype = dtypes.get("/".join(scopes[start:]))
        if dtype is not None:
            return dtype
    return "?"


CATEGORIES = {keras.layers.Conv2DTranspose: "transposed convolutions",
              keras.layers.Conv2D: "convolutions", keras.layers.Dense: "dense",
              keras.layers.BatchNormalization: "BatchNorm"}
OTHER_LAYERS = "activations and reshapes"
CASTS = "casts"
NORMALIZATION = "spectral normalization"
OPTIMIZER = "optimizers"
REST = "the rest"


def layer_categories(models: Iterable[keras.Model]) -> dict[str, str]:
    """Scope stem of each layer of `models` -> its category (the wrapped layer's, for a
    normalization wrapper)."""
    categories = {}
    for model in models:
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            inner = getattr(layer, "layer", layer)
            # Conv2DTranspose subclasses Conv2D: the first class that matches is the most
            # specific.
            categories[_scope_stem(layer.name)] = next(
                (name for kind, name in CATEGORIES.items() if isinstance(inner, kind)),
                OTHER_LAYERS)
    return categories


def op_category(op: OpTime, categories: dict[str, str], wrapper_names: set[str]) -> str:
    """Which part of the step an op's time goes to (`layer_categories` names the layers)."""
    if op.type == "Cast":
        return CASTS
    if is_normalization_op(op, wrapper_names):
        return NORMALIZATION
    # The innermost layer scope: ".../conv7_1/conv7_1/convolution/Conv2DBackpropInput".
    for scope in reversed(_call_free_name(op.name).split("/")[:-1]):
        stem = _scope_stem(scope)
        if stem in categories:
            return categories[stem]
        if stem == "adam":
            return OPTIMIZER
    return REST


def _share(milliseconds: float, total: float) -> str:
    return f"{milliseconds:.1f} ({100 * milliseconds / total:.1f}%)"


def print_step_profile(title: str, ops: Sequence[OpTime], categories: dict[str, str],
                       wrapper_names: set[str], dtypes: dict[str, str], top: int) -> None:
    """The ops' time by dtype, by category (with each category's dtypes), and the largest."""
    total = sum(op.self_ms_per_step for op in ops)
    by_dtype = collections.Counter()
    by_category = collections.defaultdict(collections.Counter)
    for op in ops:
        dtype = op_dtype(op, dtypes)
        by_dtype[dtype] += op.self_ms_per_step
        by_category[op_category(op, categories, wrapper_names)][dtype] += op.self_ms_per_step
    print(f"\n== {title}")
    print(f"ops' self time: {total:.1f} ms/step")
    print("by dtype (ms/step, share): " + ", ".join(
        f"{dtype} {_share(ms, total)}" for dtype, ms in by_dtype.most_common()))
    rows = sorted(by_category.items(), key=lambda item: -sum(item[1].values()))
    width = max(len(name) for name, _ in rows)
    print(f"{'part of the step'.ljust(width)}  ms/step   share  by dtype (ms/step)")
    for name, dtypes_ms in rows:
        spent = sum(dtypes_ms.values())
        print(f"{name.ljust(width)}  {spent:7.1f}  {100 * spent / total:5.1f}%  " + ", ".join(
            f"{dtype} {ms:.1f}" for dtype, ms in dtypes_ms.most_common() if ms >= 0.05))
    print("largest ops (ms/step): " + "; ".join(
        f"{op.name} ({op.type}, {op_dtype(op, dtypes)}) {op.self_ms_per_step:.1f}"
        for op in sorted(ops, key=lambda op: -op.self_ms_per_step)[:top]))


def profile_main_job(precision: str, args: argparse.Namespace) -> None:
    """Profiles the main job's step in `precision` and prints where its time goes."""
    gan, step = common.main_job_step(precision, args.batch_size, seed=0)
    for _ in range(args.warmup):
        step()
    batch = next(iter(common.real_images(args.batch_size, seed=0)))
    with common.precision_policy(precision):
        # The same Python traced again names its ops as Keras's compiled step does; the
        # profile names an op but not its dtype, which the graph's nodes carry.
        graph = tf.function(gan.train_step).get_concrete_function(
            tf.TensorSpec.from_tensor(batch)).graph.as_graph_def()
    ops = profile_step(step, args.steps)
    models = (gan.generator, gan.discriminator)
    wrappers = {layer.name for layer in gan.discriminator.layers
                if isinstance(layer, keras.layers.Wrapper)}
    print_step_profile(f"the main job's step, {precision} ({PRECISIONS[precision]}): "
                       f"{args.steps} steps profiled", ops, layer_categories(models),
                       wrappers, graph_dtypes(graph), args.top)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Where the main job's training step spends its time: the ops' self time "
                    "from the TensorFlow profiler by part of the networks and by dtype.")
    common.add_precision_argument(parser, ("float32", "bfloat16"), "the precisions to profile")
    parser.add_argument("--steps", type=int, default=10,
                        help="steps profiled per precision (default: 10)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untraced steps before profiling (default: 3)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="discriminator batch (default: 64, the main job's)")
    parser.add_argument("--top", type=int, default=8,
                        help="how many of the largest ops to name (default: 8)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    timing.check_at_least_one(parser, args, ("steps", "warmup", "batch_size", "top"))
    print(common.environment_report(False, False))
    print("self time per op (the TensorFlow profiler, wall clock: load inflates every op, so "
          "compare shares within one profile)")
    for precision in dict.fromkeys(args.precision):
        profile_main_job(precision, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
