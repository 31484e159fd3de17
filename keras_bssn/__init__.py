"""keras_bssn: spectral normalization (SN, SSN, BSN, BSSN) for Keras 3 layers."""

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
