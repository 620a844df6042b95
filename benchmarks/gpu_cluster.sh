#!/usr/bin/env bash
# benchmarks/cluster.py at 1M documents on the GPU host (16 cores, one GPU), across several device calls.
# The whole run (generate 1M docs, fill the single-process collection and 1/2/4/8-shard collections,
# Ray Data encoding of SciFact, then latency / throughput of every system) takes longer than one
# 10-minute call, so the first call starts it as a detached process (setsid) and every call, the
# first included, follows it for up to WAIT seconds; the machine keeps /tmp while it stays warm
# (about 30 s between calls), so the next call picks the run up where it is:
#   device, call 1..n:  bash benchmarks/gpu_cluster.sh        (carry: .whl with the wheels, README below)
#   local smoke:        N_DOCS=20000 PYTHON=.venv/bin/python OUT=/tmp/o bash benchmarks/gpu_cluster.sh
# Carry .whl/: ray-pruned.tar.xz (the ray 2.60.0 cp312 wheel unpacked, minus jars, the dashboard's
# client build and rllib) and the wheels the image lacks (jsonschema, referencing, rpds_py, fastapi,
# starlette, pydantic, pydantic_core, annotated_types, typing_inspection, uvicorn, opentelemetry_api,
# importlib_metadata). $OUT: progress.log (filtered log), cluster.json (rows as they are measured),
# cluster.md (the final tables), run.log.gz (the whole log).
set -u
PY=${PYTHON:-python3}
case "$PY" in */*) PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY");; esac
OUT=${OUT:-gpu-out}
N_DOCS=${N_DOCS:-1000000}
WAIT=${WAIT:-540}
W=${WORK:-/tmp/lsr-cluster-bench}
mkdir -p "$OUT" "$W"
OUT=$(cd "$OUT" && pwd)
T0=$(date +%s)

if [ ! -f "$W/started" ]; then
  # 1. packages, once per machine
  if ! "$PY" -c "import ray, fastapi, pydantic" 2>/dev/null; then
    mkdir -p "$W/site"
    [ -d "$W/site/ray" ] || tar -xJf .whl/ray-pruned.tar.xz -C "$W/site" || { echo "no .whl/ray-pruned.tar.xz"; exit 3; }
    ls .whl/*.whl >/dev/null 2>&1 && "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --target "$W/site" .whl/*.whl
  fi
  # 2. a private copy of the sources in the installed layout (lsr.index <- index/, ...): the working
  # tree of a later call may be replaced while the detached run still imports from it
  rm -rf "$W/src" && mkdir -p "$W/src/lsr" "$W/run"
  cp -r lsr/. "$W/src/lsr/" && for m in index eval service; do cp -r "$m" "$W/src/lsr/$m"; done
  cp -r benchmarks "$W/run/" && mkdir -p "$W/run/tests/data/beir" "$W/run/models"
  cp -r tests/data/beir/scifact "$W/run/tests/data/beir/" && cp -r models/. "$W/run/models/"
  COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  {
    echo "export PYTHONPATH=$W/site:$W/src PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1 LSR_COMMIT=$COMMIT"
    echo "export NUMBA_CACHE_DIR=$W/numba HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1"
  } > "$W/env.sh"
  . "$W/env.sh"
  (cd "$W/run" && "$PY" -c "import ray, lsr.cluster, lsr.index; print('ray', ray.__version__)") || exit 3
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null > "$OUT/machine.txt"
  nproc >> "$OUT/machine.txt"
  # 3. the run, detached: encoding first (the cheaper part), then fill every system, then measure
  (cd "$W/run" && setsid nohup "$PY" benchmarks/cluster.py --n-docs "$N_DOCS" --n-queries 1000 \
      --shards 1,2,4,8 --clients 16 --seconds 8 --latency-queries 300 --work "$W/data" \
      --corpus tests/data/beir/scifact/corpus.jsonl.gz --model models/inference-free-splade-tiny-scifact-nfcorpus \
      --encode-batch 128 --json "$W/cluster.json" > "$W/run.log" 2>&1 < /dev/null & echo $! > "$W/pid")
  touch "$W/started"
  echo "started pid $(cat "$W/pid") at $(date -u +%T)"
fi

show() {
  grep -E "^#|^\{|^\||^## |Error|error|Traceback|built SeismicIndex: [0-9]{6,}" "$W/run.log" | grep -v "Warning" \
    | sed -E 's/\(SeismicParams[^)]*\)//' > "$OUT/progress.log"
  [ -f "$W/cluster.json" ] && cp "$W/cluster.json" "$OUT/cluster.json"
}
while kill -0 "$(cat "$W/pid")" 2>/dev/null && [ $(( $(date +%s) - T0 )) -lt "$WAIT" ]; do sleep 5; done
show
if kill -0 "$(cat "$W/pid")" 2>/dev/null; then
  echo "STILL RUNNING after $(( $(date +%s) - T0 )) s of this call; call again within 30 s"
  tail -n 25 "$OUT/progress.log"
else
  sed -n '/^## lsr on Ray/,$p' "$W/run.log" | grep -v "pid=" > "$OUT/cluster.md"
  gzip -c "$W/run.log" > "$OUT/run.log.gz"
  echo "FINISHED"; cat "$OUT/progress.log" | tail -n 12; cat "$OUT/cluster.md"
fi
