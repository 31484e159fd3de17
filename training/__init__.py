"""The GAN training system around `keras_bssn`: networks, losses, data, the GAN and its
training loop, metrics and evaluation, with thin commands on top (`python -m training.train`,
`generate`, `evaluate`, `fid_stats`, `analyze`). It runs from the repository checkout.

Commands start TensorFlow with `training.cli.start_tensorflow` after their cheap checks, and
quietly unless TF_CPP_MIN_LOG_LEVEL is set; they import the modules that need it only then.
"""
