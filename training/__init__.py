"""The GAN training system around `keras_bssn`: networks, losses, data, the GAN and its
training loop, metrics and evaluation, with thin commands on top (`python -m training.train`,
`generate`, `evaluate`, `fid_stats`, `analyze`). It runs from the repository checkout.

TensorFlow starts quietly unless TF_CPP_MIN_LOG_LEVEL is set (0 shows everything): the
package runs first, before any command or module imports TensorFlow.
"""

import os

if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
    from training.cli import start_tensorflow_quietly

    start_tensorflow_quietly()
