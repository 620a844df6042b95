#!/usr/bin/env bash
# benchmarks/cluster.py at 1M documents on the GPU host (16 cores, one GPU), across several device calls.
# The whole run (generate 1M docs, fill the single-process collection and 1/2/4/8-shard collections,
# Ray Data encoding of SciFact, then latency / throughput of every system) takes longer than one
# 10-minute call, and a device call ends every process it started, so the run goes in two calls while
# the machine stays warm (it keeps /tmp about 30 s between calls; the data and every filled system are
# kept in $WORK with a marker each, so a later call reuses them and refills only a system cut short):
#   device, call 1:  STAGE=fill bash benchmarks/gpu_cluster.sh      generate, fill all systems at once
#   device, call 2:  STAGE=measure bash benchmarks/gpu_cluster.sh   encoding, fill what is missing, measure
#   local smoke:     N_DOCS=20000 PYTHON=.venv/bin/python OUT=/tmp/o STAGE=measure bash benchmarks/gpu_cluster.sh
# Carry .whl/: ray-pruned.tar.xz (the ray 2.60.0 cp312 wheel unpacked, minus jars, the dashboard's
# client build and rllib) and the wheels the image lacks (jsonschema, referencing, rpds_py, fastapi,
# starlette, pydantic, pydantic_core, annotated_types, typing_inspection, uvicorn, opentelemetry_api,
# importlib_metadata, orjson). $OUT: machine.txt, progress.log (the tables and progress lines),
# cluster.json (rows as they are measured), run.log.gz (the whole log).
set -u
PY=${PYTHON:-python3}
case "$PY" in */*) PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY");; esac
OUT=${OUT:-gpu-out}
N_DOCS=${N_DOCS:-1000000}
LIMIT=${LIMIT:-560}  # seconds for this call's python run
W=${WORK:-/tmp/lsr-cluster-bench}
mkdir -p "$OUT" "$W"
OUT=$(cd "$OUT" && pwd)

if [ ! -f "$W/env.sh" ]; then
  # 1. packages, once per machine
  if ! "$PY" -c "import ray, fastapi, pydantic, orjson" 2>/dev/null; then
    mkdir -p "$W/site"
    [ -d "$W/site/ray" ] || tar -xJf .whl/ray-pruned.tar.xz -C "$W/site" || { echo "no .whl/ray-pruned.tar.xz"; exit 3; }
    ls .whl/*.whl >/dev/null 2>&1 && "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --target "$W/site" .whl/*.whl
  fi
  # 2. a private copy of the sources in the installed layout (lsr.index <- index/, ...)
  rm -rf "$W/src" && mkdir -p "$W/src/lsr" "$W/run"
  cp -r lsr/. "$W/src/lsr/" && for m in index eval service; do cp -r "$m" "$W/src/lsr/$m"; done
  cp -r benchmarks "$W/run/" && mkdir -p "$W/run/tests/data/beir" "$W/run/models"
  cp -r tests/data/beir/scifact "$W/run/tests/data/beir/" && cp -r models/. "$W/run/models/"
  COMMIT=${LSR_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}  # the device copy's HEAD can be the checkout base: pass it
  {
    echo "export PYTHONPATH=$W/site:$W/src PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1 LSR_COMMIT=$COMMIT"
    echo "export NUMBA_CACHE_DIR=$W/numba HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1"
  } > "$W/env.sh"
  . "$W/env.sh"
  (cd "$W/run" && "$PY" -c "import ray, lsr.cluster, lsr.index; print('ray', ray.__version__)") || { rm "$W/env.sh"; exit 3; }
fi
. "$W/env.sh"
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null; nproc; } > "$OUT/machine.txt"
C="--n-docs $N_DOCS --n-queries 1000 --shards 1,2,4,8 --clients 16 --seconds 6 --latency-queries 300 --work $W/data"
if [ "${STAGE:-fill}" = fill ]; then  # 3a. generate, then fill every system at once (the build times are then not comparable)
  ARGS="$C --stage fill --concurrent-fill"
else                                 # 3b. encoding, then fill what is missing and measure every system
  ARGS="$C --corpus tests/data/beir/scifact/corpus.jsonl.gz --model models/inference-free-splade-tiny-scifact-nfcorpus \
    --encode-batch 128 --json $W/cluster.json"
fi
echo "stage ${STAGE:-fill} from $(date -u +%T): $ARGS"
(cd "$W/run" && timeout "$LIMIT" "$PY" benchmarks/cluster.py $ARGS > "$W/run-${STAGE:-fill}.log" 2>&1); echo "rc $?"
grep -hE "^#|^\{|^\||^## |Error|error|Traceback|same terms" "$W"/run-*.log | grep -v Warning > "$OUT/progress.log"
[ -f "$W/cluster.json" ] && cp "$W/cluster.json" "$OUT/cluster.json"
cat "$W"/run-*.log | gzip -c > "$OUT/run.log.gz"
cat "$OUT/progress.log"
