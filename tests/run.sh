#!/usr/bin/env bash
# The test suite: everything under the TensorFlow backend, then the backend-agnostic library
# tests again under JAX and under PyTorch (each when installed). All passes always run; the
# script fails if any failed, and says which. Tests run on every core (pytest-xdist), a test
# module per worker at a time: most of a test's time is single-threaded (Python, TensorFlow's
# tracing).
set -uo pipefail
cd "$(dirname "$0")/.."
parallel=(-n auto --dist loadscope)
library_tests=(tests/keras_bssn/test_wrappers.py tests/keras_bssn/test_keras_internals.py
  tests/keras_bssn/test_diagnostics.py tests/keras_bssn/test_operator_norms.py
  tests/keras_bssn/test_convert.py tests/keras_bssn/test_strict.py
  tests/keras_bssn/test_constraints.py tests/keras_bssn/test_docstring_examples.py)

python -m pytest -q "${parallel[@]}" "$@"
tensorflow_pass=$?

# The library tests under the Keras backend $2 (also its module's name), called $1; sets
# backend_pass.
library_pass() {
  if python -c "import $2" 2>/dev/null; then
    KERAS_BACKEND=$2 python -m pytest -q "${parallel[@]}" "${library_tests[@]}"
    backend_pass=$?
  else
    echo "$1 pass: skipped ($2 is not installed)"
    backend_pass=0
  fi
}
library_pass JAX jax
jax_pass=${backend_pass}
library_pass PyTorch torch
torch_pass=${backend_pass}

echo "TensorFlow pass: exit ${tensorflow_pass}; JAX pass: exit ${jax_pass};" \
  "PyTorch pass: exit ${torch_pass}"
if [ "${tensorflow_pass}" -ne 0 ] || [ "${jax_pass}" -ne 0 ] || [ "${torch_pass}" -ne 0 ]; then
  exit 1
fi
