#!/usr/bin/env bash
# benchmarks/gpu.py on the GPU machine, from the repository root, one call:
#   LSR_COMMIT=$(git rev-parse HEAD) DATA=real,synthetic N_DOCS=1000000 bash benchmarks/gpu_bench.sh
# Carry .devgpu/ (git-ignored), made here with:
#   mkdir -p .devgpu && pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_34_x86_64 -d .devgpu pyseismic-lsr
#   python benchmarks/real_vectors.py pack --vectors .cache/bench/real --out .devgpu/real-compact.npz
# The real vectors travel packed (10 MB instead of 36: a call carries at most 64 MiB with the
# tree) and are unpacked there. GPU_SMI=0 skips nvidia-smi (CPU smoke test:
#   OUT=/tmp/o DATA=synthetic N_DOCS=20000 N_QUERIES=256 GPU_SMI=0 \
#     EXTRA="--device cpu --batches 64 --profile-batches 64 --threads 2" bash benchmarks/gpu_bench.sh)
# KERNEL_CHECK="<args>" first runs benchmarks/gpu_kernel_check.py; BENCH=0 skips the benchmark.
# Output: $OUT/gpu-bench.{md,json,log} (and kernel-check.{txt,json}).
set -u
T0=$(date +%s)
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
DATA=${DATA:-real,synthetic}
N_DOCS=${N_DOCS:-1000000}
N_QUERIES=${N_QUERIES:-10000}
EXTRA=${EXTRA:-}
say() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
export PYTHONUNBUFFERED=1 PIP_NO_INDEX=1
if ls .devgpu/pyseismic_lsr-*.whl >/dev/null 2>&1 && ! python3 -c "import seismic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .devgpu/pyseismic_lsr-*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! python3 -c "import lsr.index" 2>/dev/null; then
  timeout 90 python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/tmp/pip-lsr.log 2>&1 \
    || { say "pip install -e . failed"; tail -5 /tmp/pip-lsr.log; }
fi
python3 -c "import lsr.index, seismic" || say "lsr or pyseismic-lsr does not import"
if [ -f .devgpu/real-compact.npz ] && [ ! -d /tmp/real ]; then
  python3 benchmarks/real_vectors.py unpack --packed .devgpu/real-compact.npz --out /tmp/real || say "unpack failed"
fi
[ "${GPU_SMI:-1}" = 0 ] || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ -n "${KERNEL_CHECK:-}" ]; then  # e.g. KERNEL_CHECK="--n-docs 200000 --n-queries 500"
  say "kernel check starts"
  python3 benchmarks/gpu_kernel_check.py $KERNEL_CHECK --out "$OUT/kernel-check.json" 2>&1 | tee "$OUT/kernel-check.txt"
fi
[ "${BENCH:-1}" = 0 ] && { say "done (no benchmark)"; exit 0; }
say "benchmark starts"
set -o pipefail
python3 benchmarks/gpu.py --data "$DATA" --n-docs "$N_DOCS" --n-queries "$N_QUERIES" --real-vectors /tmp/real \
  --out "$OUT/gpu-bench.json" $EXTRA 2>&1 | tee "$OUT/gpu-bench.log" | grep -v "^USDT"
say "done rc=$?"
sed -n '/^### /,$p' "$OUT/gpu-bench.log" | grep -v "^USDT\|^\[" > "$OUT/gpu-bench.md"
