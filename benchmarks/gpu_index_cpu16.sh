#!/usr/bin/env bash
# lsr SeismicIndex vs pyseismic-lsr on the CPU cores of the GPU host (16 cores), Zipf data (DATA=real:
# the real SPLADE-tiny vectors, unpacked from .devgpu/real-compact.npz, see gpu_bench.sh), 200k
# documents, from the repository root, in under 4 minutes (each stage has a hard time limit and
# writes its JSON as it goes, so a stage cut short keeps what it measured):
#   1. latency at Recall@10 >= 0.95: both indexes built on all cores (n_postings 3500), traced
#      single-thread over query_cut x heap_factor, each read at its cheapest point that reaches
#      0.95 (-> $OUT/index-latency-cpu16-$TAG.md, .json);
#   2. build time: n_postings 500, 1000, 3500, 5000 on 16 threads, then 1, 2, 4, 8 threads at
#      n_postings 500 (-> $OUT/index-build-cpu16-$TAG.md, .json).
# Needs: python3 with numpy, numba and scipy; pyseismic-lsr installed (the `seismic` module), else its
# wheel carried in .devgpu/ (installed with --no-index). Nothing is downloaded. DATA=real also carries
# .devgpu/real-compact.npz. On real 200k the whole script needs about 400 s (BUDGET=400): at 210 s the
# latency stage was cut after the two builds, and the build stage after its first row.
#   OUT=/tmp/out bash benchmarks/gpu_index_cpu16.sh
#   smoke test elsewhere: N_DOCS=20000 THREADS=2 PYTHON=.venv/bin/python OUT=/tmp/o bash benchmarks/gpu_index_cpu16.sh
set -u
T0=$(date +%s)
PY=${PYTHON:-python3}
OUT=${OUT:-gpu-out}
N_DOCS=${N_DOCS:-200000}
DATA=${DATA:-zipf}
TAG=$DATA$(( N_DOCS / 1000 ))k
THREADS=${THREADS:-16}
BUDGET=${BUDGET:-225}  # seconds for the whole script
ROUNDS=${ROUNDS:-1}    # latency rounds per search point (a quiet host needs one; 2 costs ~20 s more)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=${TMPDIR:-/tmp}/lsr-index-cpu16
mkdir -p "$WORK"
say() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/progress.log"; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }

# lsr importable: installed, else the installed layout mirrored with links (no pip, no network); the
# repository root holds a top-level lsr/ without index/, so the current folder must not lead sys.path
export PYTHONSAFEPATH=1
if ! "$PY" -c "import lsr.index" 2>/dev/null; then
  rm -rf "$WORK/src" && mkdir -p "$WORK/src/lsr"
  for f in lsr/*; do ln -s "$PWD/$f" "$WORK/src/lsr/$(basename "$f")"; done
  for m in index eval service; do ln -s "$PWD/$m" "$WORK/src/lsr/$m"; done
  export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$WORK/src"
fi
timeout 60 "$PY" -c "import lsr.index, scipy" || { say "lsr.index (or scipy) does not import"; exit 3; }
if ! timeout 30 "$PY" -c "import seismic" 2>/dev/null; then  # the carried wheel, if any (no index)
  for w in .devgpu/pyseismic_lsr-*.whl; do [ -f "$w" ] && "$PY" -m pip install -q --no-index --no-deps "$w"; done
fi
timeout 30 "$PY" -c "import seismic" || { say "pyseismic-lsr (module seismic) is not installed"; exit 3; }
export PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR="$WORK/numba-cache" LSR_COMMIT=${LSR_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
{ nproc; lscpu 2>/dev/null | grep -E "Model name|^CPU\(s\)|Thread|Socket|NUMA node\(s\)"; "$PY" -c "import sys, numpy, numba; from importlib.metadata import version; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'numba', numba.__version__, 'pyseismic-lsr', version('pyseismic-lsr'))"; } > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
COMMON=(--data "$DATA" --n-docs "$N_DOCS" --n-queries 300 --threads "$THREADS" --cache "$WORK/data-$TAG")
if [ "$DATA" = real ]; then
  if [ ! -d /tmp/real ] && [ -f .devgpu/real-compact.npz ]; then
    "$PY" benchmarks/real_vectors.py unpack --packed .devgpu/real-compact.npz --out /tmp/real
  fi
  COMMON+=(--vectors /tmp/real)
fi
say "set up; generating the data and compiling lsr's kernels (cached for stage 2)"

# 1. latency at matched recall (also the 16-thread build at n_postings 3500)
timeout $(( $(left) * 60 / 100 )) "$PY" benchmarks/index.py "${COMMON[@]}" --rounds "$ROUNDS" \
  --points 3:1.0,4:1.0,4:0.9,5:1.0,5:0.9,5:0.8,6:1.0,6:0.9,6:0.8,8:1.0,8:0.9,8:0.8,10:1.0,10:0.9,15:0.9 \
  --json "$OUT/index-latency-cpu16-$TAG.json" > "$OUT/index-latency-cpu16-$TAG.md" 2> "$OUT/latency.err"
rc=$?
say "latency stage exit $rc"
[ $rc -eq 0 ] || tail -5 "$OUT/latency.err"

# 2. build time vs n_postings (16 threads) and vs threads (n_postings 500); no new build after the budget
rest=$(left)
if [ "$rest" -gt 20 ]; then
  TLIST=$THREADS
  for t in 1 2 4 8 16; do [ "$t" -lt "$THREADS" ] && TLIST="$TLIST,$t"; done
  timeout $(( rest - 5 )) "$PY" benchmarks/index.py "${COMMON[@]}" --build-scaling "$TLIST" \
    --n-postings 500,1000,3500,5000 --build-grid axes --time-budget $(( rest * 70 / 100 )) \
    --json "$OUT/index-build-cpu16-$TAG.json" > "$OUT/index-build-cpu16-$TAG.md" 2> "$OUT/build.err"
  rc=$?
  say "build stage exit $rc"
  if [ $rc -ne 0 ] && [ -f "$OUT/index-build-cpu16-$TAG.json" ]; then
    # cut short: the JSON written after the last finished build still holds its table
    "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['report'])" "$OUT/index-build-cpu16-$TAG.json" \
      > "$OUT/index-build-cpu16-$TAG.md"
  fi
else
  say "no time left for the build stage"
fi
cat "$OUT/index-latency-cpu16-$TAG.md" "$OUT/index-build-cpu16-$TAG.md" 2>/dev/null
say "done"
