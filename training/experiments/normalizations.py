"""The settings the experiments compare (normalizations, and initializations for
`init_variance`): how figures and summaries name them, and which of them take the scale c."""

from __future__ import annotations

_LABELS = {"none": "none (reference init)", "lecun": "LeCun init", "sn": "SN", "ssn": "SSN",
           "strict": "strict SN", "bsn": "BSN", "bssn": "BSSN"}


def label(setting: str, scale: float = 1.0) -> str:
    """The name of `setting` in figures and summaries, with its scale c when c is not 1."""
    return _LABELS.get(setting, setting) + (f" (c = {scale:g})" if scale != 1.0 else "")


def scale_of(norm: str, scale: float) -> float:
    """The scale c applies to the scaled variants only; the others keep c = 1."""
    return scale if norm in ("ssn", "bssn") else 1.0
