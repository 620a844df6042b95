#!/usr/bin/env bash
# One GPU call that runs configs/gpu_issue17_run.sh (a subset of its jobs, ISSUE17_ONLY) and a
# decoder run (configs/gpu_decoder_run.sh) side by side: the BERT-tiny trainings leave most of the
# GPU idle. Carry .lsr-gpu/ (as gpu_issue17_run.sh) and keep a converted SmolLM2 in
# $LSR_CACHE/smollm2-135m from an earlier call of the same warm machine (configs/gpu_generate_run.sh).
# The decoder reads the data and the cached teacher scores that gpu_issue17_run.sh unpacks.
#   ISSUE17_ONLY="sup-protocol abl-random-span" DEC_CONFIG=configs/decoder-vocab.toml \
#     bash configs/gpu_issue17_decoder.sh STEPS TRAIN_SECONDS [--set key=value ...]   (decoder overrides)
# SMOKE=1: the issue-17 jobs in their --smoke form (CPU check). $OUT: the two runs' results in at most 8 files (issue17-*.{json,md}, decoder-*, logs.tgz).
set -u
T0=$(date +%s)
STEPS=${1:-600}
LIMIT=${2:-350}
shift $(( $# < 2 ? $# : 2 ))
PY=${PYTHON:-python3}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=${TMPDIR:-/tmp}/lsr-dec
I17=${TMPDIR:-/tmp}/lsr-issue17
mkdir -p "$WORK"
say() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$WORK/progress.log"; }
export LSR_CACHE=${LSR_CACHE:-/tmp/lsr-models}
[ -f "$LSR_CACHE/smollm2-135m/config.json" ] || { say "no converted SmolLM2 in $LSR_CACHE/smollm2-135m"; exit 3; }

rm -f "$I17/progress.log"
OUT=$WORK/i17 ISSUE17_TOTAL=${ISSUE17_TOTAL:-450} bash configs/gpu_issue17_run.sh ${SMOKE:+--smoke} > "$WORK/i17.log" 2>&1 &
I17_PID=$!
# the decoder starts once the data and teacher caches are unpacked
for _ in $(seq 1 120); do grep -q "setup done" "$WORK/i17/progress.log" 2>/dev/null && break; sleep 1; done
grep -q "setup done" "$WORK/i17/progress.log" 2>/dev/null || { say "issue-17 setup did not finish"; tail -5 "$WORK/i17.log"; }
source configs/gpu_lsr_path.sh
ln -sfn "$I17/models/splade-tiny" "$LSR_CACHE/splade-tiny"
say "decoder starts"
OUT=$WORK/dec CONFIG=${DEC_CONFIG:-configs/decoder-vocab.toml} LSR_DATA=$I17/unpack/data TEACHER_CACHE=.cache/teachers \
  bash configs/gpu_decoder_run.sh "$STEPS" "$LIMIT" "$@" > "$WORK/dec.log" 2>&1
say "decoder rc=$?"
wait $I17_PID
say "issue-17 jobs rc=$?"
cp "$WORK/i17/results.json" "$OUT/issue17-results.json" 2>/dev/null
cp "$WORK/i17/results.md" "$OUT/issue17-results.md" 2>/dev/null
for f in "$WORK"/dec/results-*.json; do [ -f "$f" ] && cp "$f" "$OUT/decoder-$(basename "$f")"; done
ls "$WORK"/i17/model-*.tgz >/dev/null 2>&1 && cp "$(ls "$WORK"/i17/model-*.tgz | head -1)" "$OUT/"
tar czf "$OUT/logs.tgz" --exclude='*.tgz' -C "$WORK" progress.log i17.log dec.log i17 dec 2>/dev/null
cat "$WORK/i17/results.md" 2>/dev/null | head -40
grep -E "rc=|on scifact|on nfcorpus" "$WORK/dec.log" | cut -c1-300
ls -la "$OUT"
