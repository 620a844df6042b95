#!/usr/bin/env bash
# The real run on one GPU (the device machine): baselines, the main inference-free model and its
# ablations, then every model evaluated the same way. Data and model files come from
# .lsr-gpu/ (a git-excluded copy of ../shared/data and the cached models, carried to the machine);
# results land in $OUT (or ./gpu-out). Each step is time-boxed so a slow one cannot eat the rest.
#   bash configs/gpu_real_run.sh main|ablations [STEPS]
set -u
MODE=${1:-main}
STEPS=${2:-800}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT" runs
source "$(dirname "$0")/gpu_env.sh"
export TOKENIZERS_PARALLELISM=true
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, sentence_transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'st', sentence_transformers.__version__, 'accelerate', accelerate.__version__)" | tee -a "$OUT/gpu.txt"

train() {  # name, time limit, overrides...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" python3 -m lsr.cli.train configs/inference-free.toml --set train.output_dir="\"runs/$name\"" \
    --set train.steps=$STEPS --set teachers.cache_dir='"runs/teacher-cache"' "$@" > "runs/$name.log" 2>&1
  echo "$name rc=$? $(( $(date +%s) - t0 ))s" | tee -a "$OUT/gpu.txt"
  grep -E "step [0-9]+ |eval step" "runs/$name.log" | tail -4
}
model() {  # final folder, else the newest checkpoint's model
  if [ -d "runs/$1/final" ]; then echo "runs/$1/final"; else ls -d runs/$1/checkpoint-*/model 2>/dev/null | sort -V | tail -1; fi
}

evaluate() {  # limit, extra args, names...
  local limit=$1 extra=$2; shift 2
  local args=()
  for n in "$@"; do m=$(model $n); [ -n "$m" ] && args+=(--model "$n=$m"); done
  timeout "$limit" python3 -m lsr.train.baselines --data "$LSR_DATA" --out runs/eval --batch-size 256 $extra "${args[@]}" >> runs/eval.log 2>&1
  echo "eval $* rc=$?" | tee -a "$OUT/gpu.txt"
}

if [ "$MODE" = main ]; then
  train main 330
  evaluate 150 "" main
elif [ "$MODE" = round2 ]; then  # (raw IDF table) the main config, one variant, the ablations
  train main 125 --set model.normalize_query_weights=false
  train low-lambda 115 --set loss.lambda_doc=1e-4 --set model.normalize_query_weights=false
  train plain-flops 115 --set model.query_weights='"ones"'
  train single-teacher 115 --set 'teachers.models=[{kind="dense", model="minilm", weight=1.0}]' --set model.normalize_query_weights=false
  train explicit-idf-flops 115 --set loss.regularizer='"idf_flops"' --set model.normalize_query_weights=false
  evaluate 100 --no-baselines main low-lambda plain-flops single-teacher explicit-idf-flops
elif [ "$MODE" = round4 ]; then  # longer runs of the main config (STEPS), one with more BM25 in the ensemble
  train main-long 260
  train main-long-bm25 230 --set 'teachers.models=[{kind="dense", model="minilm", weight=0.3}, {kind="sparse", model="splade-tiny", weight=0.3}, {kind="bm25", weight=0.4}]'
  evaluate 90 --no-baselines main-long main-long-bm25
else  # round3: normalised IDF table (the default): main and its ablations
  train main 170
  train single-teacher 120 --set 'teachers.models=[{kind="dense", model="minilm", weight=1.0}]'
  train explicit-idf-flops 120 --set loss.regularizer='"idf_flops"'
  evaluate 100 --no-baselines main single-teacher explicit-idf-flops
fi
cp runs/eval/results.json "$OUT/results-$MODE.json" 2>/dev/null
tar czf "$OUT/runs-$MODE.tgz" runs/eval/runs runs/*.log runs/*/log.jsonl runs/*/eval.jsonl runs/*/metrics.json runs/*/config.toml 2>/dev/null
if [ "$MODE" = round4 ]; then
  for n in main-long main-long-bm25; do m=$(model $n); [ -n "$m" ] && tar czf "$OUT/model-$n.tgz" -C "$(dirname "$m")" "$(basename "$m")"; done
else
  m=$(model main); [ "$MODE" != round2 ] && [ -n "$m" ] && tar czf "$OUT/model-main.tgz" -C "$(dirname "$m")" "$(basename "$m")"
fi
ls -la "$OUT"
