#!/usr/bin/env bash
# The one command for a lent GPU machine (see benchmarks/gpu_run.py and docs/backends.md):
#   run(command="bash benchmarks/gpu_run.sh", carry=[".whl", ".gpu"], timeout_s=560)
# There: Python 3.12 with JAX, no TensorFlow or Keras; the carried wheels (.whl/) bring Keras, namex,
# optree and nibabel. Without .whl/ (the CPU rehearsal) the environment's own packages are used.
# Extra arguments go to gpu_run.py (e.g. --dry-run, --budget-s 300, --only env throughput).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_run_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ -d .whl ] && "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl; then
    export PYTHONPATH=/tmp/site:$PWD
elif [ -d .whl ] && ! KERAS_BACKEND=jax "$PY" -c "import keras, nibabel" 2>/dev/null; then
    echo "error: installing the carried wheels failed, and $PY has no Keras and nibabel of its own" >&2; exit 3
else
    # no .whl/ (the CPU rehearsal), or wheels for another Python (.whl/ holds the GPU machine's 3.12 wheels in a
    # developer's checkout): this environment's own packages
    [ -d .whl ] && echo "warning: the carried wheels in .whl/ do not install for $PY; using its own Keras" >&2
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=3
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" >"$OUT/nvidia-smi.txt"
"$PY" benchmarks/gpu_run.py --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
