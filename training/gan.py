"""The GAN as a keras.Model: n_dis discriminator updates, then one generator update, per step.

Follows the BSN reference: hinge loss by default; each discriminator update sees its own real
batch, and the discriminator is called once, on the real and fake batches concatenated.

Power-iteration vectors advance once per discriminator update, as the discriminator's wrappers
say (`vector_updates`):
- "explicit" (the official code): every training-mode call of D (the D update, and the G update
  too) computes sigma by one look-ahead iteration from the stored u; after the D optimizer
  step, `keras_bssn.advance_power_iteration` stores u advanced from the updated weights.
- "in_call": the D update's training call stores the advanced u; the G update calls D with
  `training=False` (sigma from the stored u).

Correct under `tf.distribute`: losses are divided by the global batch, every replica draws
different latent vectors, and the generator's BatchNorm is synchronized.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_bssn import advance_power_iteration, collect_sigmas
from keras_bssn.convert import normalized_layers
from training import losses
from training.distribute import MultiWorkerFitMixin, global_batch_loss, replica_latents
from training.serialization import register_serializable

# Independent random streams: latents of D updates, of G updates, and the penalty's mixing.
_DISCRIMINATOR_STREAM, _GENERATOR_STREAM, _PENALTY_STREAM = 0, 1, 2
GENERATOR_BN_UPDATES = ("every_forward", "generator_step")


@register_serializable
class GAN(MultiWorkerFitMixin, keras.Model):
    """A generator and a discriminator trained adversarially with `fit`.

    `fit` takes batches of real images in [-1, 1]; each batch holds `n_dis` discriminator
    batches (its size is n_dis times the global batch), so every discriminator update sees its
    own real images. Calling the model generates images from latent vectors.

    `step` counts train steps: the run's clock, and the step the latents are drawn for. It
    moves once per step even when dynamic loss scaling (mixed_float16) skips an optimizer's
    update, which leaves that optimizer's `iterations` where it was.

    Args:
        generator: maps latents (batch, latent_dim) to images in [-1, 1].
        discriminator: maps images to one logit per image.
        ema_decay: if set (e.g. 0.999), keeps an exponential moving average of the generator's
            weights, used by `prepare_sampling_generator` (evaluation, export).
        seed: seeds the latent vectors drawn in training.

    Example:

    ```python
    import keras
    import numpy as np
    import tensorflow as tf
    from training.gan import GAN
    from training.networks import cnn_discriminator, cnn_generator

    images = np.random.uniform(-1, 1, (64, 32, 32, 3)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(16, drop_remainder=True)
    gan = GAN(cnn_generator(32), cnn_discriminator(32, norm="bssn", scale=1.2),
              ema_decay=0.999)
    gan.compile(d_optimizer=keras.optimizers.Adam(1e-4, 0.5, 0.999),
                g_optimizer=keras.optimizers.Adam(1e-4, 0.5, 0.999), loss="hinge")
    gan.fit(dataset.repeat(), steps_per_epoch=4, epochs=2)
    samples = gan.prepare_sampling_generator()(keras.random.normal((8, 128)))
    ```
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model,
                 ema_decay: float | None = None, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"`ema_decay` must be in (0, 1), got {ema_decay!r}.")
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = int(generator.input_shape[-1])
        self.ema_decay = ema_decay
        self.seed = int(seed)
        self.ema_generator = None
        updates = {layer.vector_updates for layer in normalized_layers(discriminator)}
        if len(updates) > 1:
            raise ValueError("The discriminator mixes wrappers with vector_updates='in_call' "
                             "and 'explicit'; give all of them the same setting.")
        self.explicit_vector_updates = updates == {"explicit"}
        # The first replica's count is kept, so one step counts once on any number of replicas.
        self.step = self.add_weight(shape=(), dtype="int64", initializer="zeros",
                                    trainable=False, name="step",
                                    aggregation="only_first_replica")
        # Both networks are built models; a built GAN spares fit's symbolic build, which would
        # call the GAN on an image batch.
        self.built = True
        if ema_decay is not None:
            self.ema_generator = keras.models.clone_model(generator)
            self.ema_generator.set_weights(generator.get_weights())
            # Owned by the GAN (one attribute each, so tf.train.Checkpoint tracks them) and
            # updated in the train step; the first replica's value is kept, so the average is
            # identical on every replica.
            self._num_ema_weights = len(generator.trainable_weights)
            for index, weight in enumerate(generator.trainable_weights):
                setattr(self, f"ema_{index}", self.add_weight(
                    shape=weight.shape, initializer="zeros", trainable=False,
                    name=f"ema_{index}", aggregation="only_first_replica"))
                getattr(self, f"ema_{index}").assign(weight)

    @property
    def _ema_weights(self) -> list[keras.Variable]:
        return [getattr(self, f"ema_{index}") for index in range(self._num_ema_weights)]

    def compile(self, d_optimizer: keras.optimizers.Optimizer,
                g_optimizer: keras.optimizers.Optimizer, loss: str = "hinge", n_dis: int = 1,
                gradient_penalty: float = 0.0, generator_batch_size: int | None = None,
                track_input_gradients: bool = True, input_gradient_every: int = 1,
                reuse_latents: bool = False, generator_bn_updates: str = "every_forward",
                **kwargs) -> None:
        """Configures training.

        Args:
            d_optimizer: the discriminator's optimizer. Under the mixed_float16 policy it is
                wrapped in a `keras.optimizers.LossScaleOptimizer` (dynamic loss scaling).
            g_optimizer: the generator's optimizer (wrapped likewise).
            loss: "hinge", "non_saturating" or "wasserstein".
            n_dis: discriminator updates per generator update.
            gradient_penalty: weight of the WGAN-GP penalty (0 disables it).
            generator_batch_size: global batch of the generator update (default: the
                discriminator's global batch); the ImageNet reference used 32 vs 16. A
                multiple of the strategy's replicas.
            track_input_gradients: log the mean ||grad_x D(x)|| on real and fake inputs, as
                the reference did (one extra backward pass through D per measured step).
            input_gradient_every: measure it on every `input_gradient_every`-th step only
                (steps 0, k, 2k, ...; 1: every step, as the reference); the logged value is
                the mean over the measured steps since the trackers were reset, so an epoch
                should hold at least one of them.
            reuse_latents: the generator update reuses the last discriminator update's latent
                vectors, as the official CNN code does (its G step runs on the D step's feed);
                needs a generator batch equal to the discriminator's.
            generator_bn_updates: when the generator's BatchNorm moving statistics move:
                "every_forward" (every training-mode forward, the official CNN code) or
                "generator_step" (only in the generator update, the official ResNet code; the
                discriminator update still normalizes with batch statistics).
            **kwargs: passed to `keras.Model.compile` (e.g. `jit_compile`).

        Raises:
            ValueError: for an invalid setting, or a generator batch that the replicas of the
                strategy cannot split evenly.
        """
        # No Keras optimizer: ours are d_optimizer and g_optimizer (an unused default one would
        # be built for every weight under a strategy).
        super().compile(optimizer=None, **kwargs)
        losses.check_loss_name(loss)
        if n_dis < 1:
            raise ValueError(f"`n_dis` must be >= 1, got {n_dis}.")
        if input_gradient_every < 1:
            raise ValueError(f"`input_gradient_every` must be >= 1, got {input_gradient_every}.")
        if gradient_penalty < 0:
            raise ValueError(f"`gradient_penalty` must be >= 0, got {gradient_penalty}.")
        if generator_bn_updates not in GENERATOR_BN_UPDATES:
            raise ValueError(f"`generator_bn_updates` must be one of {GENERATOR_BN_UPDATES}, "
                             f"got {generator_bn_updates!r}.")
        if reuse_latents and generator_batch_size is not None:
            raise ValueError("`reuse_latents` reuses the discriminator's latents, so the "
                             "generator batch is the discriminator's: leave "
                             "`generator_batch_size` unset.")
        if generator_batch_size is not None:
            self._check_splits_evenly("`generator_batch_size`", generator_batch_size, 1)
        self.d_optimizer = _with_loss_scaling(d_optimizer)
        self.g_optimizer = _with_loss_scaling(g_optimizer)
        self.loss_name = loss
        self.n_dis = int(n_dis)
        self.gradient_penalty = float(gradient_penalty)
        self.generator_batch_size = generator_batch_size
        self.track_input_gradients = track_input_gradients
        self.input_gradient_every = int(input_gradient_every)
        self.reuse_latents = bool(reuse_latents)
        self.generator_bn_updates = generator_bn_updates
        names = ["d_loss", "d_loss_real", "d_loss_fake", "g_loss", "d_real", "d_fake"]
        if track_input_gradients:
            names += ["grad_norm_real", "grad_norm_fake"]
        if gradient_penalty:
            names.append("gradient_penalty")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    def optimizer_variables(self) -> list:
        """(optimizer, variables) pairs that `fit` builds inside the strategy scope up front
        (an optimizer that builds itself in the first replicated step fails; keras#23085)."""
        return [(self.d_optimizer, self.discriminator.trainable_variables),
                (self.g_optimizer, self.generator.trainable_variables)]

    @property
    def metrics(self) -> list:
        return list(getattr(self, "trackers", {}).values())

    def prepare_sampling_generator(self) -> keras.Model:
        """The generator to evaluate and export.

        Writes the EMA averages and the live BatchNorm statistics into the EMA copy and
        returns it; without EMA, returns the generator itself.

        Returns:
            A `keras.Model` from latents to images.
        """
        if self.ema_generator is None:
            return self.generator
        for target, average in zip(self.ema_generator.trainable_weights, self._ema_weights):
            target.assign(average)
        # BatchNorm statistics are not averaged: take the live generator's.
        for target, source in zip(self.ema_generator.non_trainable_weights,
                                  self.generator.non_trainable_weights):
            target.assign(source)
        return self.ema_generator

    def call(self, latents, training=False):
        return self.generator(latents, training=training)

    def fit(self, x=None, y=None, batch_size=None, **kwargs):
        """`keras.Model.fit`, refusing batches that the strategy's replicas cannot split
        evenly into `n_dis` discriminator batches each.

        Raises:
            ValueError: `x` is a dataset of batches of such a static size, or `batch_size`
                is such a size.
        """
        global_batch = batch_size
        if isinstance(x, tf.data.Dataset):  # None where the batches vary
            global_batch = tf.nest.flatten(x.element_spec)[0].shape[0]
        if global_batch is not None:
            self._check_splits_evenly("A batch", global_batch, self.n_dis)
        return super().fit(x, y, batch_size=batch_size, **kwargs)

    def _check_splits_evenly(self, name: str, global_batch: int, parts: int) -> None:
        """Raises a ValueError unless `global_batch` splits into `parts` equal batches on
        each replica: otherwise batches would be cut short, or the losses, divided by the
        global batch, would be off."""
        replicas = self.distribute_strategy.num_replicas_in_sync
        if global_batch % (parts * replicas):
            into = f" into n_dis={parts} discriminator batches" if parts > 1 else ""
            raise ValueError(f"{name} of {global_batch} does not split evenly over the "
                             f"{replicas} replicas of the strategy{into}; give a multiple of "
                             f"{parts * replicas}.")

    def train_step(self, real_images):
        # D updates are numbered as the D optimizer counts them while none is skipped.
        for index, real in enumerate(ops.split(real_images, self.n_dis, axis=0)):
            latents = self._discriminator_step(real, self.step * self.n_dis + index)
        if not self.reuse_latents:
            latents = self._latents(self._generator_batch(real_images), _GENERATOR_STREAM,
                                    self.step)
        self._generator_step(latents)
        self._update_moving_averages()
        self.step.assign_add(1)
        logs = {name: tracker.result() for name, tracker in self.trackers.items()}
        logs.update(collect_sigmas(self.discriminator))
        return logs

    def _discriminator_step(self, real, update):
        """D update number `update` of the run; returns its latent vectors."""
        latents = self._latents(ops.shape(real)[0], _DISCRIMINATOR_STREAM, update)
        fake = self._generate_for_discriminator(latents)
        images = ops.concatenate([real, ops.cast(fake, real.dtype)], axis=0)
        # Persistent and watching the images: the input-gradient statistic differentiates
        # the same forward of D after the update.
        with tf.GradientTape(persistent=self.track_input_gradients) as tape:
            tape.watch(images)
            logits = self.discriminator(images, training=True)
            d_loss, tracked = self._discriminator_loss(logits, real, fake, update)
        self._apply(tape, d_loss, self.d_optimizer, self.discriminator.trainable_weights)
        if self.explicit_vector_updates:
            advance_power_iteration(self.discriminator)  # from the updated weights
        self._track(tracked)
        if self.track_input_gradients:
            self._track_input_gradient_norms(tape, logits, images)
        return latents

    def _discriminator_loss(self, logits, real, fake, update):
        """The D loss of D's logits on the real and fake batches concatenated, and the
        per-example values to track, in D update number `update`."""
        batch = ops.shape(real)[0]
        real_logits, fake_logits = ops.split(ops.cast(logits, "float32"), 2, axis=0)
        real_loss, fake_loss = losses.discriminator_loss(self.loss_name, real_logits,
                                                         fake_logits)
        d_loss = self._global_mean(real_loss + fake_loss, batch)
        tracked = {"d_loss": real_loss + fake_loss, "d_loss_real": real_loss,
                   "d_loss_fake": fake_loss, "d_real": real_logits, "d_fake": fake_logits}
        if self.gradient_penalty:
            penalty = self._gradient_penalty(real, fake, update)
            d_loss += self.gradient_penalty * self._global_mean(penalty, batch)
            tracked["gradient_penalty"] = penalty
        return d_loss, tracked

    def _track_input_gradient_norms(self, tape, logits, images):
        """Tracks ||grad_x D(x)|| per example on the real and fake halves of `images`, from
        the `tape` that recorded `logits = D(images)` while watching `images`, on the steps
        `input_gradient_every` picks."""
        def measure():
            # D has no batch coupling, so the gradient of the summed logits is per example.
            gradients = ops.cast(tape.gradient(logits, images), "float32")
            norms = ops.sqrt(ops.sum(ops.square(gradients), axis=(1, 2, 3)))
            real_norms, fake_norms = ops.split(norms, 2, axis=0)
            self._track({"grad_norm_real": real_norms, "grad_norm_fake": fake_norms})

        if self.input_gradient_every == 1:
            measure()
        else:  # the backward pass runs only in the branch taken
            tf.cond(self.step % self.input_gradient_every == 0, measure, lambda: None)

    def _generate_for_discriminator(self, latents):
        """G in training mode (batch statistics); its BatchNorm moving statistics move only
        if `generator_bn_updates` is "every_forward"."""
        if self.generator_bn_updates == "every_forward":
            return self.generator(latents, training=True)
        # A stateless scope discards the moving-statistics assignments of this forward.
        mapping = [(weight, weight.value) for weight in self.generator.weights]
        with keras.StatelessScope(state_mapping=mapping):
            return self.generator(latents, training=True)

    def _gradient_penalty(self, real, fake, update):
        """(||grad D(x_hat)|| - 1)^2 per example at random interpolates (WGAN-GP), drawn for
        D update number `update`."""
        batch = ops.shape(real)[0]
        mix = self._latents(batch, _PENALTY_STREAM, update, width=1, uniform=True)
        mix = ops.reshape(ops.cast(mix, real.dtype), (-1, 1, 1, 1))
        interpolates = real + mix * (ops.cast(fake, real.dtype) - real)
        with tf.GradientTape() as tape:
            tape.watch(interpolates)
            logits = self.discriminator_logits(interpolates)
        gradients = ops.cast(tape.gradient(logits, interpolates), "float32")
        return ops.square(ops.sqrt(ops.sum(ops.square(gradients), axis=(1, 2, 3)) + 1e-12) - 1)

    def discriminator_logits(self, images):
        """D's logits as the losses see them, without advancing u (the G step, the gradient
        penalty and the gradient diagnostics call it).

        With explicit vector updates: a training call, its look-ahead sigma (differentiated
        through the power iteration where the wrappers do), which stores nothing. With
        in-call updates, where a training call would advance u: the sigma of the stored u,
        the one the D update's training call stored."""
        return self.discriminator(images, training=self.explicit_vector_updates)

    def _generator_step(self, latents):
        with tf.GradientTape() as tape:
            fake = self.generator(latents, training=True)
            # As the official code's G step does with explicit updates.
            logits = ops.cast(self.discriminator_logits(fake), "float32")
            per_example = losses.generator_loss(self.loss_name, logits)
            g_loss = self._global_mean(per_example, ops.shape(latents)[0])
        self._apply(tape, g_loss, self.g_optimizer, self.generator.trainable_weights)
        self._track({"g_loss": per_example})

    def _apply(self, tape, loss, optimizer, variables):
        """One update of `variables` by `optimizer` down the gradient of `loss`, which `tape`
        recorded."""
        # Under mixed_float16, scaled up on the tape so float16 gradients keep their small
        # values; the LossScaleOptimizer scales them back down.
        with tape:
            scaled_loss = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))

    def _track(self, values):
        """Adds each named per-example value to its tracker."""
        for name, value in values.items():
            self.trackers[name].update_state(value)

    def _update_moving_averages(self):
        """Moves the EMA averages towards the generator's weights."""
        if self.ema_generator is None:
            return
        for average, weight in zip(self._ema_weights, self.generator.trainable_weights):
            average.assign(self.ema_decay * average + (1.0 - self.ema_decay) * weight)

    def _generator_batch(self, real_images):
        """Per-replica batch of the generator update."""
        per_replica = ops.shape(real_images)[0] // self.n_dis
        if self.generator_batch_size is None:
            return per_replica
        return self.generator_batch_size // self.distribute_strategy.num_replicas_in_sync

    def _global_mean(self, per_example, per_replica_batch):
        replicas = self.distribute_strategy.num_replicas_in_sync
        return global_batch_loss(per_example, per_replica_batch * replicas)

    def _latents(self, batch, stream, step, width=None, uniform=False):
        return replica_latents(batch, width or self.latent_dim, seed=(self.seed, stream),
                               step=step, uniform=uniform)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            generator=keras.saving.serialize_keras_object(self.generator),
            discriminator=keras.saving.serialize_keras_object(self.discriminator),
            ema_decay=self.ema_decay,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> "GAN":
        generator = keras.saving.deserialize_keras_object(config.pop("generator"),
                                                          custom_objects=custom_objects)
        discriminator = keras.saving.deserialize_keras_object(config.pop("discriminator"),
                                                              custom_objects=custom_objects)
        return cls(generator, discriminator, **config)


def _with_loss_scaling(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """Under the mixed_float16 policy, `optimizer` wrapped in dynamic loss scaling (as
    `keras.Model.compile` does for its one optimizer): float16 gradients would underflow."""
    if (keras.config.dtype_policy().name == "mixed_float16"
            and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
