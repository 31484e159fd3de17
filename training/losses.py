"""GAN losses, per example: the GAN model sums them and divides by the global batch."""

from __future__ import annotations

from keras import ops

LOSSES = ("hinge", "non_saturating", "wasserstein")


def check_loss_name(name: str) -> None:
    """Refuses an unknown loss name, listing the valid ones."""
    if name not in LOSSES:
        raise ValueError(f"Unknown GAN loss {name!r}; choose one of {', '.join(LOSSES)}.")


def discriminator_loss(name: str, real_logits, fake_logits) -> tuple:
    """The discriminator's loss on real and on fake examples, each of shape (batch,).

    Args:
        name: "hinge" (the paper's), "non_saturating" or "wasserstein".
        real_logits: D(x), shape (batch, 1) or (batch,).
        fake_logits: D(G(z)), same shape.

    Returns:
        (real_term, fake_term); the loss is their sum.
    """
    check_loss_name(name)
    real, fake = ops.reshape(real_logits, (-1,)), ops.reshape(fake_logits, (-1,))
    if name == "hinge":
        return ops.relu(1.0 - real), ops.relu(1.0 + fake)
    if name == "non_saturating":
        return ops.softplus(-real), ops.softplus(fake)
    return -real, fake


def generator_loss(name: str, fake_logits):
    """The generator's loss per example: -D(G(z)) for hinge and Wasserstein."""
    check_loss_name(name)
    fake = ops.reshape(fake_logits, (-1,))
    if name == "non_saturating":
        return ops.softplus(-fake)
    return -fake
