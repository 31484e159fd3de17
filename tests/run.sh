#!/usr/bin/env bash
# The test suite: everything under the TensorFlow backend, then the backend-agnostic library
# tests again under JAX (when JAX is installed).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest -q "$@"
if python -c "import jax" 2>/dev/null; then
  KERAS_BACKEND=jax python -m pytest -q tests/keras_bssn/test_wrappers.py tests/keras_bssn/test_diagnostics.py tests/keras_bssn/test_convert.py tests/keras_bssn/test_strict.py
fi
