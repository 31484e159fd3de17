"""The paper's analysis experiments, one module each, run by `python -m training.analyze`.

- `init_variance`: the weight variance each normalization gives at initialization.
- `gradients`: the discriminator's weight-gradient norms over the first training steps.
- `sweep`: short training runs over normalizations x scales x seeds, with KID over steps.
- `collapse`: the seed study of when (if ever) the CIFAR-10 CNN GAN collapses, per setting.
- `artifacts`: the share of a run's samples that is one pattern repeated in every image.

Each writes `<experiment>.csv` and `<experiment>.png` to the folder it is given. What more than
one of them uses: `normalizations` (names and scales), `reporting` (CSV files and figures) and
`training_runs` (run configurations, resumable run folders). `cells` names the collapse study's
cells without importing TensorFlow, for the command line's defaults.
"""
