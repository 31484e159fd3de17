"""The GAN training system around `keras_bssn`: networks, losses, data, the GAN and its
training loop, metrics and evaluation, with thin commands on top (`python -m training.train`,
`generate`, `evaluate`, `fid_stats`, `analyze`). It runs from the repository checkout.

Commands start TensorFlow with `training.cli.start_tensorflow` after their cheap checks, and
quietly unless TF_CPP_MIN_LOG_LEVEL is set; they import the modules that need it only then.
"""

import os

# TensorFlow's x86 builds turn on their oneDNN kernels by default only on CPUs with AVX-512 VNNI
# or BF16 or AMX; on an AVX2-only CPU they make the GAN step twice as fast (docs/speed.md). This
# runs before any module of the training system imports TensorFlow; TF_ENABLE_ONEDNN_OPTS=0 in
# the environment still turns them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
