#!/usr/bin/env bash
# Create .venv and install the project with its dev tools.
#
# The first install compiles llama-cpp-python (several minutes on 2 cores): we show the
# compiler's [n/m] progress instead of going quiet, keep the full log in .venv/install.log,
# and let pip reuse its cached wheel on later installs.
set -euo pipefail

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

# CPU features are fixed rather than detected: a portable AVX2 build, without the AMX
# kernels that crash on some CPUs, and without llama.cpp's tools, server and examples.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi

log="$VENV/install.log"
echo "==> installing chatsessions (the first run compiles llama-cpp-python: about 5-8 minutes)"
start=$(date +%s)
set +e
"$VENV/bin/python" -m pip install --verbose --progress-bar off -e ".[dev]" 2>&1 \
  | tee "$log" \
  | grep --line-buffered -E '^(Collecting|Building wheel|Successfully|ERROR|error)|^\s*\[[0-9]+/[0-9]+\]|Using cached|Created wheel' \
  | sed -u -E 's/^\s*(\[[0-9]+\/[0-9]+\]) .* -o ([^ ]+) .*/   compiling \1 \2/; s/^\s*(\[[0-9]+\/[0-9]+\]) (.{0,90}).*/   compiling \1 \2/'
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  echo "==> install failed (exit $status); the last lines of $log:" >&2
  tail -n 40 "$log" >&2
  exit "$status"
fi
echo "==> installed in $(( $(date +%s) - start ))s"
