"""`FIDCallback`: FID, Inception Score and KID of a GAN's generator while it trains.

The scores and the protocol are `training.evaluation`'s; this module only schedules them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import keras
import tensorflow as tf

from training.callbacks.steps import generator_step
from training.evaluation import (
    FID,
    IS_MEAN,
    IS_STD,
    KID,
    KID_STD,
    RealImages,
    RealStatistics,
    cached_real_statistics,
    evaluate_generator,
    format_scores,
    real_statistics_cache_path,
)
from training.inception import FeatureExtractor, make_extractor
from training.protocol import (
    INCEPTION_2015_NAME,
    IS_SPLITS,
    KID_SUBSET_SIZE,
    KID_SUBSETS,
    NUM_FID_SAMPLES,
    NUM_REAL_SAMPLES,
)


class FIDCallback(keras.callbacks.Callback):
    """Logs FID, Inception Score and KID of a GAN's generator every N epochs or steps.

    The model passed to `fit` must have `latent_dim` and `generator`; the generator that its
    `prepare_sampling_generator()` returns (e.g. the EMA copy) is used when it has that
    method. Each evaluation draws the same latents (`seed`), so scores move only with the
    generator. Images are generated and their features extracted batch by batch, on the
    model's distribution strategy.

    The scores go into the `logs` of `on_epoch_end` (and of `on_train_batch_end` when
    evaluating every N steps) as `fid`, `is_mean`, `is_std`, `kid` and `kid_std`, so
    `CSVLogger`, `TensorBoard` and `History` record them. They are set on every epoch, as
    NaN in epochs without an evaluation, because `CSVLogger` fixes its columns at the first
    epoch. List this callback before those loggers. Every evaluation is also appended to
    `history`, a list of dicts with `epoch`, `step` and the scores.

    Args:
        real_images: float32 real images in [-1, 1] (unbatched or batched `tf.data.Dataset`),
            or a callable returning them, called only if the statistics are not cached.
        extractor: a `FeatureExtractor`, or a name or path for `make_extractor`.
        every_n_epochs: evaluate at the end of every N-th epoch (default 1, unless
            `every_n_steps` is given).
        every_n_steps: evaluate after every N-th training batch, counted across epochs (for
            a GAN with a `step` counter: every N-th generator step, resumes included).
        num_samples: generated images for FID and KID.
        num_real: real images for the statistics.
        num_is_samples: generated images for the Inception Score (default `num_samples`).
        is_splits: Inception Score splits.
        kid_subsets: KID subsets.
        kid_subset_size: images per KID subset.
        seed: seed of the latents and KID subsets.
        dataset_name: names the real data in the statistics cache; without it the real
            statistics are computed once per callback and not written to disk.
        split: the real data's split, for the cache key.
        cache_dir: folder of the statistics cache (default `default_cache_dir()`).
        verbose: 1 prints one line per evaluation, 0 is silent.

    Example:

    ```python
    fid = FIDCallback(
        lambda: load_images("cifar10", split="train"),
        every_n_epochs=5, dataset_name="cifar10", split="train",
    )
    gan.fit(data, epochs=100, callbacks=[fid, keras.callbacks.CSVLogger("log.csv")])
    ```
    """

    def __init__(
        self,
        real_images: RealImages,
        extractor: FeatureExtractor | str = INCEPTION_2015_NAME,
        *,
        every_n_epochs: int | None = None,
        every_n_steps: int | None = None,
        num_samples: int = NUM_FID_SAMPLES,
        num_real: int = NUM_REAL_SAMPLES,
        num_is_samples: int | None = None,
        is_splits: int = IS_SPLITS,
        kid_subsets: int = KID_SUBSETS,
        kid_subset_size: int = KID_SUBSET_SIZE,
        seed: int = 0,
        dataset_name: str | None = None,
        split: str = "train",
        cache_dir: str | None = None,
        verbose: int = 1,
    ):
        super().__init__()
        if every_n_epochs is not None and every_n_steps is not None:
            raise ValueError("Give every_n_epochs or every_n_steps, not both.")
        if every_n_epochs is None and every_n_steps is None:
            every_n_epochs = 1
        for name, value in (("every_n_epochs", every_n_epochs), ("every_n_steps", every_n_steps)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1; got {value}.")
        self.real_images = real_images
        self.extractor = make_extractor(extractor) if isinstance(extractor, str) else extractor
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.num_real = num_real
        self.cache_path = None
        if dataset_name:
            self.cache_path = real_statistics_cache_path(
                cache_dir, dataset_name, split, self.extractor.name, num_real
            )
        self.verbose = verbose
        self._settings = dict(
            num_samples=num_samples,
            num_is_samples=num_is_samples,
            is_splits=is_splits,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            seed=seed,
        )
        self.history: list[dict[str, float]] = []
        self._real: RealStatistics | None = None
        self._epoch = 0
        self._step = 0  # training batches seen, across epochs and `fit` calls
        self._epoch_first_step = 0
        self._epoch_scores: dict[str, float] | None = None
        self._generate: tuple[keras.Model, Callable[[tf.Tensor], tf.Tensor]] | None = None

    @property
    def metric_names(self) -> list[str]:
        """The log keys this callback writes."""
        names = [FID, KID, KID_STD]
        return names + [IS_MEAN, IS_STD] if self.extractor.has_probs else names

    def real_statistics(self) -> RealStatistics:
        """The real statistics, from the cache or computed on first use."""
        if self._real is None:
            self._real = cached_real_statistics(
                self.extractor, self.real_images, self.num_real, self.cache_path
            )
        return self._real

    def evaluate(self) -> dict[str, float]:
        """Score the model's generator now; also records the result in `history`."""
        started = time.perf_counter()
        scores = evaluate_generator(
            self._generate_function(),
            self.model.latent_dim,
            self.extractor,
            self.real_statistics(),
            strategy=getattr(self.model, "distribute_strategy", None),
            **self._settings,
        )
        self._epoch_scores = scores
        self.history.append({"epoch": self._epoch, "step": self._step, **scores})
        if self.verbose:
            seconds = time.perf_counter() - started
            where = f"epoch {self._epoch + 1}, step {self._step}"
            print(f"\nFIDCallback, {where}: {format_scores(scores)} ({seconds:.1f} s)")
        return scores

    def _generate_function(self) -> Callable[[tf.Tensor], tf.Tensor]:
        """Inference with the sampling generator; the same function while the generator is
        the same, so the extractor's compiled step for it is reused, not traced again."""
        prepare = getattr(self.model, "prepare_sampling_generator", None)
        generator = self.model.generator if prepare is None else prepare()
        if self._generate is None or self._generate[0] is not generator:
            self._generate = (generator, lambda latents: generator(latents, training=False))
        return self._generate[1]

    def _counts_generator_steps(self) -> bool:
        # A GAN's own step counter survives a resume; batches seen by this process do not.
        return getattr(self.model, "step", None) is not None

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._counts_generator_steps():
            self._step = generator_step(self.model)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._epoch_first_step = self._step
        self._epoch_scores = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        previous = self._step
        self._step = (generator_step(self.model) if self._counts_generator_steps()
                      else self._epoch_first_step + batch + 1)
        # With `steps_per_execution` > 1 only every k-th batch is reported: evaluate once a
        # multiple of N has been passed, not only when it is hit.
        if self.every_n_steps and self._step // self.every_n_steps > previous // self.every_n_steps:
            scores = self.evaluate()
            if logs is not None:
                logs.update(scores)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0:
            self.evaluate()
        if logs is not None:
            logs.update(self._epoch_scores or dict.fromkeys(self.metric_names, float("nan")))
