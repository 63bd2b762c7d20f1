#!/usr/bin/env bash
# One prepared run on a CUDA GPU machine, in a few minutes, each part under
# its own time limit so that a slow part leaves the others their time:
#
#   1. the core tests on the GPU (float32 matmuls at full precision, since
#      the tests compare against float64 NumPy references);
#   2. the benchmark grid, an older jaxrnn against this one, interleaved
#      (benchmarks.compare_commits; OLD is a folder holding that jaxrnn/
#      package, or a git revision where the history is present);
#   3. the grid against PyTorch's cuDNN and jax.experimental.rnn's cuDNN
#      LSTM (benchmarks.run --device gpu);
#   4. the engine settings at the long-sequence and batch-1 points
#      (benchmarks.tune --device gpu).
#
# Usage: OUT=folder OLD=folder-or-revision bash benchmarks/gpu.sh
# Needs jax with CUDA, pytest, pytest-xdist, hypothesis, optax and (for part
# 3) torch with CUDA on the machine. Logs and JSON go to $OUT.
set -u
OUT=${OUT:-benchmarks/results/gpu}
OLD=${OLD:-}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # test workers share the GPU
PY=${PY:-python3}

$PY - <<'EOF' 2>&1 | tee "$OUT/env.txt"
import jax, jaxlib, sys
print("python", sys.version.split()[0], "jax", jax.__version__, "jaxlib", jaxlib.__version__)
print("devices", jax.devices())
EOF

echo "== 1. core tests on the GPU"
JAX_DEFAULT_MATMUL_PRECISION=highest timeout "${TEST_S:-170}" $PY -m pytest -q -n 8 \
  -p no:cacheprovider -k "not torch" --junitxml="$OUT/tests.xml" \
  tests/test_transformations.py tests/test_cells.py tests/test_layers.py \
  tests/test_lengths.py tests/test_gradients.py tests/test_segments.py \
  tests/test_regularisers.py tests/test_dtypes.py tests/test_errors.py \
  > "$OUT/tests.txt" 2>&1
echo "tests exit $?"; tail -n 15 "$OUT/tests.txt"

if [ -n "$OLD" ]; then
  echo "== 2. old against new"
  timeout "${COMPARE_S:-130}" $PY -m benchmarks.compare_commits "$OLD" --target-s 0.3 \
    --out "$OUT/compare_commits.json" 2>&1 | tee "$OUT/compare_commits.txt"
fi

echo "== 3. against cuDNN"
timeout "${PEERS_S:-120}" $PY -m benchmarks.run --device gpu --parts speed \
  --peers jaxrnn,torch,jax-cudnn --target-s 0.3 --out "$OUT/bench.json" \
  2>&1 | tee "$OUT/bench.txt" | tail -n 40

echo "== 4. engine settings"
timeout "${TUNE_S:-60}" $PY -m benchmarks.tune --device gpu --shapes 1,3 \
  --cells lstm,gru,elman --target-s 0.2 --min-repeats 5 --max-repeats 20 \
  --out "$OUT/tune.json" 2>&1 | tee "$OUT/tune.txt" | tail -n 30
