"""Picking a `tf.distribute` strategy, and the glue that makes our GAN train under it.

* `make_strategy`: a strategy by name (`auto`, `default`, `one_device`, `mirrored`,
  `multi_worker`, `tpu`), with clear errors for a missing TPU or a bad `TF_CONFIG`.
* `MultiWorkerFitMixin`: what Keras 3.15's `Model.fit` needs to train our GAN under a
  strategy, `MultiWorkerMirroredStrategy` included
  (https://github.com/keras-team/keras/issues/20585). It overrides private Keras methods, so
  it lives in `training.keras_fit_fix` with the upstream issues it works around; it is
  re-exported here.
* `writes_run_files` and `gather_across_workers`: which process of a multi-worker cluster writes
  the run folder (the chief), and the check that every worker resumed from the same step.
* `global_batch_loss` and `replica_latents`: the loss scaling and the latent draw a custom
  `train_step` needs to give the same updates on 1 or N replicas.

Under a strategy, `fit` runs `train_step` once per replica on that replica's slice of the
global batch and sums the replicas' gradients (`all_reduce(SUM)` in the optimizer). So each
replica divides its summed per-example loss by the *global* batch size (`global_batch_loss`):
the summed gradients then equal the gradient of the mean loss over the global batch, exactly
as on one device. And every replica must draw *different* latent vectors; `replica_latents`
draws them so that the global batch of latents does not depend on the number of replicas.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence

import keras
import tensorflow as tf

from training.errors import StrategyError
from training.keras_fit_fix import MultiWorkerFitMixin

__all__ = [
    "STRATEGY_NAMES",
    "MultiWorkerFitMixin",
    "gather_across_workers",
    "global_batch_loss",
    "make_strategy",
    "replica_latents",
    "writes_run_files",
]

STRATEGY_NAMES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")

_TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\''
)


def make_strategy(name: str = "auto", devices: Sequence[str] | None = None
                  ) -> tf.distribute.Strategy:
    """Returns the `tf.distribute.Strategy` called `name`.

    Args:
        name: one of
            * `"auto"`: `MirroredStrategy` over all GPUs when there are several, else the
              default strategy.
            * `"default"`: TensorFlow's default (no-op) strategy, one device: what
              `tf.distribute.get_strategy()` returns outside any strategy's scope.
            * `"one_device"`: `OneDeviceStrategy` on `devices[0]`, or the first GPU, or the CPU.
            * `"mirrored"`: `MirroredStrategy` over `devices`; without `devices`, over all
              GPUs, or, on a machine without GPUs, over all logical CPUs. There are several
              logical CPUs only where they were configured explicitly
              (`tf.config.set_logical_device_configuration`, as the tests do), so an ordinary
              CPU machine gets one replica.
            * `"multi_worker"`: `MultiWorkerMirroredStrategy` for the cluster in the
              `TF_CONFIG` environment variable. It must be created at the start of the
              program, before any other TensorFlow op runs. Models trained with `fit` under it
              need `MultiWorkerFitMixin`.
            * `"tpu"`: `TPUStrategy` for the TPU that `TPUClusterResolver` finds (e.g. from
              `TPU_NAME`); it connects to the TPU and initializes it.
        devices: device names, for `"mirrored"` and `"one_device"` only.

    Raises:
        ValueError: for an unknown name, or `devices` given for another strategy.
        StrategyError: for a missing or malformed `TF_CONFIG`, or `"tpu"` when no TPU can be
            found.
    """
    if name not in STRATEGY_NAMES:
        raise ValueError(
            f"Unknown strategy {name!r}; expected one of {', '.join(STRATEGY_NAMES)}.")
    if devices is not None and name not in ("mirrored", "one_device"):
        raise ValueError(f"`devices` applies to 'mirrored' and 'one_device' only, not {name!r}.")
    if name == "auto":
        if len(tf.config.list_logical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return _one_device_strategy(devices)
    if name == "mirrored":
        return _mirrored_strategy(tuple(devices) if devices else _mirrored_devices())
    if name == "multi_worker":
        _check_tf_config(os.environ.get("TF_CONFIG"))
        return _multi_worker_strategy()
    return _tpu_strategy()


# One strategy per process and layout: each new MirroredStrategy numbers its collective
# operations from the same keys, and TensorFlow keeps collective state per process, so a
# second one's all-reduce can meet the first one's ("Shape mismatch in the collective
# instance"), e.g. in a study that trains several runs in one process.
@functools.cache
def _mirrored_strategy(devices: tuple[str, ...]) -> tf.distribute.MirroredStrategy:
    return tf.distribute.MirroredStrategy(list(devices))


@functools.cache
def _multi_worker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    return tf.distribute.MultiWorkerMirroredStrategy()


def _one_device_strategy(devices: Sequence[str] | None) -> tf.distribute.Strategy:
    if devices is not None and len(devices) != 1:
        raise ValueError(f"'one_device' takes exactly one device, got {list(devices)}.")
    if devices:
        return tf.distribute.OneDeviceStrategy(devices[0])
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def _mirrored_devices() -> tuple[str, ...]:
    gpus = tf.config.list_logical_devices("GPU")
    return tuple(device.name for device in gpus or tf.config.list_logical_devices("CPU"))


def _check_tf_config(tf_config: str | None) -> None:
    """Raises a StrategyError, with an example, unless `tf_config` describes this task's cluster."""
    if not tf_config:
        raise StrategyError("The 'multi_worker' strategy reads the cluster from the TF_CONFIG "
                            f"environment variable, which is not set. Example: {_TF_CONFIG_EXAMPLE}")
    try:
        config = json.loads(tf_config)
        cluster, task = config["cluster"], config["task"]
        addresses = cluster[task["type"]]
        index = task["index"]
        valid = (isinstance(addresses, list) and isinstance(index, int)
                 and 0 <= index < len(addresses))
    except (ValueError, TypeError, KeyError):  # not JSON, not objects, or a key missing
        valid = False
    if not valid:
        raise StrategyError(
            "The TF_CONFIG environment variable must be JSON with a 'cluster' (job name -> "
            "list of 'host:port') and a 'task' ('type': a job of the cluster, 'index': a "
            f"position in its list). Got TF_CONFIG={tf_config!r}. Example: {_TF_CONFIG_EXAMPLE}")


def writes_run_files(strategy_name: str) -> bool:
    """Whether this process writes the run folder: yes, unless it is a `multi_worker` task
    other than the chief (the task of type "chief", or worker 0 of a cluster without one).

    Every worker still takes part in everything that runs collectives (checkpoint saves
    included, as TensorFlow requires); the others write those files to a scratch folder.
    """
    if strategy_name != "multi_worker":
        return True
    _check_tf_config(os.environ.get("TF_CONFIG"))
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def gather_across_workers(strategy: tf.distribute.Strategy, value: int) -> list[int]:
    """`value` from every replica of every worker (one entry per replica), e.g. to check that
    all workers resumed from the same step."""
    per_replica = strategy.run(lambda: tf.constant([value], tf.int64))
    return [int(item) for item in strategy.gather(per_replica, axis=0).numpy()]


def _tpu_strategy() -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise StrategyError(
            "No TPU found for the 'tpu' strategy: run on a TPU VM, or set TPU_NAME to the TPU "
            f"to connect to. ({error})") from error
    return tf.distribute.TPUStrategy(resolver)


def global_batch_loss(per_example_losses: tf.Tensor, global_batch_size: int | tf.Tensor
                      ) -> tf.Tensor:
    """Sum of this replica's per-example losses divided by the global batch size.

    With a custom `train_step` under a strategy, this is the loss to differentiate: the
    optimizer sums the replicas' gradients, so they add up to the gradient of the mean loss
    over the global batch, as on one device (`tf.nn.compute_average_loss` does the same). All
    axes are summed, so pass one loss per example.
    """
    per_example_losses = tf.convert_to_tensor(per_example_losses)
    return tf.reduce_sum(per_example_losses) / tf.cast(global_batch_size,
                                                        per_example_losses.dtype)


def replica_latents(batch_size: int | tf.Tensor, latent_dim: int,
                    seed: int | tuple[int, int], step: int | tf.Tensor | keras.Variable,
                    uniform: bool = False) -> tf.Tensor:
    """This replica's `(batch_size, latent_dim)` float32 latents for training step `step`.

    Draws the global batch, `batch_size` times the number of replicas, from a stateless seed
    made of `seed` and `step`, and returns this replica's slice
    `[replica_id * batch_size, (replica_id + 1) * batch_size)`. So the replicas get different
    latents (a `keras.random.SeedGenerator` would give every replica the same ones, each
    replica holding a mirrored copy of its state), the same `(seed, step)` gives the same
    latents again, and the global batch of latents is the same on 1 or N replicas: training
    is identical however the global batch is split. Drawing the global batch costs each
    replica `batch_size * latent_dim * replicas` normal samples, nothing next to the models.

    Args:
        batch_size: the per-replica batch size.
        latent_dim: the latent dimension.
        seed: an int, or a pair of ints (e.g. `(seed, stream)` for independent streams).
        step: the training step, e.g. an optimizer's `iterations`; each step draws anew.
        uniform: draw from U[0, 1) instead of N(0, 1).
    """
    context = tf.distribute.get_replica_context()
    # Outside `strategy.run` (a cross-replica context) there is one caller: draw batch_size.
    replica_id = context.replica_id_in_sync_group if context is not None else 0
    replicas = context.num_replicas_in_sync if context is not None else 1
    seeds = tf.cast(tf.reshape(tf.convert_to_tensor(seed), (-1,)), tf.int64)
    base_seed = tf.concat([seeds, tf.zeros((2 - seeds.shape[0],), tf.int64)], axis=0)
    step_seed = tf.random.experimental.stateless_fold_in(
        base_seed, tf.cast(tf.convert_to_tensor(step), tf.int64))
    draw = tf.random.stateless_uniform if uniform else tf.random.stateless_normal
    latents = draw((replicas * batch_size, latent_dim), seed=step_seed)
    return latents[replica_id * batch_size:(replica_id + 1) * batch_size]
