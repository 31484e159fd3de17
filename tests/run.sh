#!/usr/bin/env bash
# The test suite: everything under the TensorFlow backend, then the backend-agnostic library
# tests again under JAX (when JAX is installed). Both passes always run; the script fails if
# either failed, and says which. Tests run on every core (pytest-xdist), a test module per
# worker at a time: most of a test's time is single-threaded (Python, TensorFlow's tracing).
set -uo pipefail
cd "$(dirname "$0")/.."
parallel=(-n auto --dist loadscope)
python -m pytest -q "${parallel[@]}" "$@"
tensorflow_pass=$?
jax_pass=0
if python -c "import jax" 2>/dev/null; then
  KERAS_BACKEND=jax python -m pytest -q "${parallel[@]}" tests/keras_bssn/test_wrappers.py \
    tests/keras_bssn/test_keras_internals.py \
    tests/keras_bssn/test_diagnostics.py tests/keras_bssn/test_convert.py \
    tests/keras_bssn/test_strict.py tests/keras_bssn/test_constraints.py
  jax_pass=$?
else
  echo "JAX pass: skipped (jax is not installed)"
fi
echo "TensorFlow pass: exit ${tensorflow_pass}; JAX pass: exit ${jax_pass}"
if [ "${tensorflow_pass}" -ne 0 ] || [ "${jax_pass}" -ne 0 ]; then
  exit 1
fi
