"""keras_bssn: spectral normalization (SN, SSN, BSN, BSSN) for Keras 3 layers.

Wrap a layer (`SpectralNormalization`, `BidirectionalSpectralNormalization`,
`StrictSpectralNormalization`), convert a whole model (`spectral_normalize`), or project the
kernel after each update instead (`constraints`); read the sigmas (`collect_sigmas`) and see
what a normalization does to a model (`diagnostics`). Backend-agnostic: only `keras.ops`.

Example:

```python
import keras
import keras_bssn

discriminator = keras.Sequential([
    keras.Input((32, 32, 3)),
    keras_bssn.BidirectionalSpectralNormalization(keras.layers.Conv2D(64, 3), scale=1.2),
    keras.layers.Flatten(),
    keras_bssn.SpectralNormalization(keras.layers.Dense(1)),
])
```

Reference:
    Lin, Sekar & Fanti, "Why Spectral Normalization Stabilizes GANs: Analysis and
    Improvements", NeurIPS 2021 (arXiv 2009.02773).
"""

from keras_bssn import constraints, diagnostics, spectral
from keras_bssn.convert import advance_power_iteration, collect_sigmas, spectral_normalize
from keras_bssn.strict import StrictSpectralNormalization
from keras_bssn.wrappers import BidirectionalSpectralNormalization, SpectralNormalization

# The one source of the version: setuptools reads it for the wheel (pyproject.toml).
__version__ = "0.2.0"

__all__ = [
    "BidirectionalSpectralNormalization",
    "SpectralNormalization",
    "StrictSpectralNormalization",
    "advance_power_iteration",
    "collect_sigmas",
    "constraints",
    "diagnostics",
    "spectral",
    "spectral_normalize",
]
