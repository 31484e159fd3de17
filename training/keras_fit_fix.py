"""A patch of Keras 3.15's `Model.fit` (TensorFlow backend) so that it trains our GAN under any
`tf.distribute` strategy, `MultiWorkerMirroredStrategy` included: `MultiWorkerFitMixin`.

It overrides private steps of Keras's TensorFlow trainer, and works around these upstream
issues:

* https://github.com/keras-team/keras/issues/20585: under `MultiWorkerMirroredStrategy`,
  `fit` fails on nested batches such as `(x, y)` (its build reduces the first batch with
  `Strategy.reduce`, which takes no nests) and on the scalar logs of a train step (it reduces
  them along an axis 0 they do not have; also
  https://github.com/tensorflow/tensorflow/issues/72388).
* https://github.com/keras-team/keras/issues/23085, fixed after Keras 3.15.1 by
  https://github.com/keras-team/keras/pull/23087: `fit` builds only `model.optimizer` before
  training; a GAN's own optimizers build in the replica context of the first step, which
  fails with several replicas.
* https://github.com/keras-team/keras/issues/20394: the build takes a batch from the epoch's
  iterator that training then never sees.

The upstream canary in tests/training/test_distribute.py
(`test_upstream_canary_keras_fit_still_fails_on_two_workers_without_the_mixin`) fails once
Keras fixes #20585: then check which override can go.

The training system pins Keras 3.15 (requirements.txt), so this module checks at import that
the trainer internals it overrides or calls exist, and otherwise raises an ImportError naming
the missing one. It imports Keras only: a strategy is handled through its own methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import keras
from keras import ops

# What the training system is tested with (requirements.txt pins it).
TESTED_KERAS = "3.15"

# The private Keras methods the mixin overrides or calls, on `keras.Model`.
_TRAINER_INTERNALS = ("_maybe_symbolic_build", "_make_function", "_flatten_layers")


def _check_trainer_internals() -> None:
    """Raises ImportError, saying what is missing and how to fix it, unless all internals exist.

    The TensorFlow trainer's methods only exist under the TensorFlow backend (the training
    system's); under another one the mixin is never used, so nothing is checked.
    """
    if keras.backend.backend() != "tensorflow":
        return
    for name in _TRAINER_INTERNALS:
        if not callable(getattr(keras.Model, name, None)):
            raise ImportError(
                f"training.keras_fit_fix overrides the private Keras method Model.{name}, "
                f"which the installed Keras {keras.__version__} does not have. The training "
                f"system is tested with Keras {TESTED_KERAS} only. "
                f"Fix: pip install -r requirements.txt")


_check_trainer_internals()


def is_multi_worker(strategy: Any) -> bool:
    """Whether `fit` takes Keras's multi-worker reduction path under `strategy`.

    Keras tests `isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and
    strategy.extended._in_multi_worker_mode()`. Only `MultiWorkerMirroredStrategy` on more than
    one worker (and a parameter-server strategy with a cluster, which Keras 3's `fit` does not
    support at all) answers True, so the private call alone tells it without importing
    TensorFlow. Strategies without it (none of TensorFlow's) are single-worker.
    """
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(in_multi_worker_mode()) if in_multi_worker_mode is not None else False


class MultiWorkerFitMixin:
    """Makes `keras.Model.fit` (Keras 3.15, TensorFlow backend) train a GAN under any strategy.

    Use it as the first base class, and name the optimizers `train_step` applies:

    ```python
    class GAN(MultiWorkerFitMixin, keras.Model):
        def optimizer_variables(self):
            return [(self.d_optimizer, self.discriminator.trainable_variables),
                    (self.g_optimizer, self.generator.trainable_variables)]
    ```

    It overrides two private `fit` helpers of Keras's TensorFlow trainer:

    * `_maybe_symbolic_build`, which under a strategy builds the model before training, in
      the strategy's scope, by calling it on the first batch made one tensor by
      `strategy.reduce("MEAN", batch)`:
      - That reduce fails under `MultiWorkerMirroredStrategy` whenever the batch is a nest,
        like `(x, y)` (https://github.com/keras-team/keras/issues/20585): `Strategy.reduce`
        does not take nests. Here the batch is the first local replica's part of it, taken
        with no communication; only its shape and dtype are used.
      - Calling the model on the data fails for a model whose `call` does not take the
        training data: a GAN is called on latents but fit on images. Here a model whose
        sub-layers are all built is marked built instead, since calling it would build
        nothing.
      - Only `self.optimizer` is built there. Other optimizers would build themselves in
        the first train step, inside the replica context, which fails under
        `MirroredStrategy` with several replicas ("You must feed a value for placeholder
        tensor", https://github.com/keras-team/keras/issues/23085, fixed after Keras 3.15.1
        by https://github.com/keras-team/keras/pull/23087). Here the optimizers of
        `optimizer_variables()` are built too, and with several replicas per worker any other
        unbuilt optimizer is an error that says so.
    * `make_train_function`: under `MultiWorkerMirroredStrategy` Keras reduces each step's
      per-replica logs with `strategy.reduce("MEAN", value, axis=0)`, which fails on the
      scalar losses and metrics a train step returns ("Invalid reduction dimension 0 for
      input with 0 dimensions", https://github.com/keras-team/keras/issues/20585,
      https://github.com/tensorflow/tensorflow/issues/72388). Here the train step's scalar
      logs get a length-1 axis 0 first, so that reduction is the mean over all replicas of
      all workers: the mean of the replicas' values that Keras takes on one worker.

    `evaluate` and `predict` are left as they are. Without a strategy, `fit` is Keras's own.
    """

    def optimizer_variables(self) -> list[tuple[keras.optimizers.Optimizer, list]]:
        """The (optimizer, variables it updates) pairs of `train_step`, besides `optimizer`."""
        return []

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None:  # Keras builds while tracing the train step: nothing to fix.
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        # Don't let Keras call a GAN on images to build it (see the class docstring).
        sub_layers_built = all(layer.built for layer in self._flatten_layers(include_self=False))
        if not self.built and sub_layers_built and type(self).build is keras.Model.build:
            self.built = True
        # Keras takes the batch it builds with from the epoch's iterator, so training never
        # sees it (https://github.com/keras-team/keras/issues/20394): a run would differ
        # with the strategy, and a resume would skip a batch. Take one only if it is needed.
        if iterator is not None and _needs_data_to_build(self):
            data_batch = _first_local_batch(iterator, strategy)
        super()._maybe_symbolic_build(data_batch=data_batch)
        with strategy.scope():
            for optimizer, variables in self.optimizer_variables():
                if not optimizer.built:
                    optimizer.build(variables)
        _check_optimizers_built(self, strategy)

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        if not is_multi_worker(self.distribute_strategy):
            return super().make_train_function(force=force)
        # What Keras's `make_train_function` does, with the scalar logs given an axis 0.
        self.train_function = self._make_function(_with_replica_axis(self.train_step))
        return self.train_function


def _needs_data_to_build(model: keras.Model) -> bool:
    """Whether Keras's symbolic build (`Trainer._symbolic_build`) would call the model on a
    batch: something the model or its compiled loss and metrics hold is not built yet."""
    unbuilt = [compiled for compiled in (model._compile_metrics, model._compile_loss)
               if compiled is not None and not compiled.built]
    return not model.built or bool(unbuilt)


def _first_local_batch(iterator: Iterator, strategy: Any) -> Any:
    """The first local replica's part of the first batch `fit`'s epoch iterator yields."""
    for _, _, distributed_iterator in iterator:
        batch = next(distributed_iterator)
        return keras.tree.map_structure(
            lambda value: strategy.experimental_local_results(value)[0], batch)
    return None


def _check_optimizers_built(model: keras.Model, strategy: Any) -> None:
    """Raises if an optimizer of `model` would build itself in a multi-replica train step."""
    if len(strategy.extended.worker_devices) < 2:
        return  # one replica here: building in the train step works
    unbuilt = [name for name, value in vars(model).items()
               if isinstance(value, keras.optimizers.Optimizer) and not value.built]
    if unbuilt:
        raise ValueError(
            f"`{type(model).__name__}.{unbuilt[0]}` is not built. With several replicas per "
            "worker, optimizers must be built before training: return it, with the variables "
            f"it updates, from `{type(model).__name__}.optimizer_variables()`.")


def _with_replica_axis(train_step: Callable) -> Callable:
    """`train_step` with its scalar outputs reshaped to shape (1,)."""
    def lift(value):
        value = ops.convert_to_tensor(value)
        return ops.reshape(value, (1,)) if ops.ndim(value) == 0 else value

    def step(data):
        return keras.tree.map_structure(lift, train_step(data))
    return step
