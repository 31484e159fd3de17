"""The GAN of a run: built from its configuration, and restored from its checkpoints.

What training, exporting and the experiments share: `build_gan` makes the compiled GAN of a
`TrainConfig`; `restore_gan` gives a run's GAN at its newest checkpoint, under a strategy;
`gan_at_step` reads one checkpoint without touching the run folder.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator

import keras
import tensorflow as tf

from training import callbacks
from training.callbacks.checkpoints import checkpoint_steps
from training.errors import RunFolderError, UsageError
from training.gan import GAN
from training.networks import build_networks
from training.presets import PRECISIONS, TrainConfig


@contextlib.contextmanager
def dtype_policy_kept(policy: str | None = None) -> Iterator[None]:
    """Keras's global dtype policy: `policy` inside the block (unchanged when None), and after
    it the one before (`build_gan` sets the policy of a run's precision)."""
    before = keras.config.dtype_policy()
    if policy is not None:
        keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def build_gan(config: TrainConfig) -> GAN:
    """The compiled GAN of a configuration (call inside the strategy's scope).

    Sets Keras's global dtype policy to the configuration's precision (`PRECISIONS`) first:
    the networks and optimizers take it when they are made."""
    keras.config.set_dtype_policy(PRECISIONS[config.precision])
    wrapper_options = {}
    if config.norm != "none":
        wrapper_options = {"differentiable_power_iteration": config.differentiable_power_iteration,
                           "vector_updates": config.vector_updates}
    generator, discriminator = build_networks(
        config.arch, config.image_size, latent_dim=config.latent_dim, norm=config.norm,
        scale=config.scale, power_iterations=config.power_iterations,
        bn_momentum=config.bn_momentum, bn_epsilon=config.bn_epsilon,
        initializers=config.initializers, **wrapper_options)
    gan = GAN(generator, discriminator, ema_decay=config.ema_decay, seed=config.seed)
    gan.compile(d_optimizer=_optimizer(config.d_lr, config),
                g_optimizer=_optimizer(config.g_lr, config), loss=config.loss,
                n_dis=config.n_dis, gradient_penalty=config.gradient_penalty,
                generator_batch_size=config.generator_batch_size,
                reuse_latents=config.reuse_latents,
                input_gradient_every=config.input_gradient_interval(),
                generator_bn_updates=config.generator_bn_updates,
                jit_compile=config.jit_compile)
    return gan


def _optimizer(learning_rate: float, config: TrainConfig) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(learning_rate, beta_1=config.beta1, beta_2=config.beta2,
                                 epsilon=config.adam_epsilon)


def restore_gan(config: TrainConfig, run_dir: pathlib.Path, strategy: tf.distribute.Strategy,
                checkpoints_from: pathlib.Path | None = None
                ) -> tuple[GAN, callbacks.RunCheckpoint]:
    """The run's GAN, built under `strategy` and restored from its newest good checkpoint
    (step 0 when it has none), or from the newest one in `checkpoints_from` (a run folder)
    when given; with the `RunCheckpoint` that saves it to `run_dir`."""
    check_batches_split(config, strategy.num_replicas_in_sync)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        gan = build_gan(config)
        checkpoint = callbacks.RunCheckpoint(gan, run_dir / "checkpoints",
                                             config.keep_checkpoints)
        checkpoint.restore(checkpoints_from and checkpoints_from / "checkpoints")
    return gan, checkpoint


def check_batches_split(config: TrainConfig, replicas: int) -> None:
    """Refuses global batches that `replicas` replicas cannot split evenly (the per-replica
    batches would be cut short, silently).

    Raises:
        UsageError: naming the flag and the multiples that work.
    """
    for flag, batch in (("--batch-size", config.batch_size),
                        ("--generator-batch-size", config.generator_batch_size)):
        if batch is not None and batch % replicas:
            raise UsageError(f"{flag} {batch} does not split evenly over {replicas} replicas. "
                             f"Give a multiple of {replicas}.")


def gan_at_step(config: TrainConfig, run_dir: pathlib.Path, step: int) -> GAN:
    """The run's GAN with the networks of its checkpoint at `step` (0: as initialized),
    read without touching the run folder (a run may be training there).

    Raises:
        RunFolderError: the run has no checkpoint of that step.
    """
    keras.utils.set_random_seed(config.seed)
    gan = build_gan(config)
    if step:
        kept = checkpoint_steps(run_dir / "checkpoints")
        if step not in kept:
            raise RunFolderError(f"{run_dir} has no checkpoint of step {step}; it keeps "
                                 f"steps {sorted(kept) or 'none'}.")
        path = run_dir / "checkpoints" / f"ckpt-{step}"
        tf.train.Checkpoint(gan=gan).restore(str(path)).expect_partial()
    return gan
