#!/usr/bin/env bash
# The label-free run on one GPU: configs/label-free.toml from the SciFact and NFCorpus corpora alone
# (pseudo-queries, mining, ensemble labels, training), then the final model evaluated once with
# lsr-eval on SciFact test and NFCorpus dev. What it needs (data, SPLADE-tiny, MiniLM, the SmolLM2
# GGUF, wheels the machine lacks) travels as one tarball of .lsr-gpu/ split into 42 MiB parts, one
# part per call (a call carries at most 64 MiB; the tracked tree takes ~14): `stage` calls copy
# .lsr-lf/pNN/partNN to /tmp, `run` joins them (the models barely compress: plain tar).
#   here:   tar cf b.tar .lsr-gpu && split -b 42M -d -a 2 b.tar part   (then partNN into .lsr-lf/pNN/)
#   device: bash configs/gpu_label_free_run.sh stage      (once per part but the last)
#           bash configs/gpu_label_free_run.sh run [STEPS] [TRAIN_SECONDS] [--set key=value ...]
# Results and the cached artefacts (queries, candidates, teacher scores) land in $OUT (or ./gpu-out).
set -u
MODE=${1:-run}
STEPS=${2:-1200}
LIMIT=${3:-420}
shift $(( $# < 3 ? $# : 3 ))
OUT=${OUT:-gpu-out}
P=/tmp/lsr-lf-parts
mkdir -p "$OUT" "$P" runs
cp .lsr-lf/*/part* "$P"/ 2>/dev/null
ls -la "$P" | tail -n +2 | awk '{print $5, $9}'
[ "$MODE" = stage ] && exit 0

t_all=$(date +%s)
if [ ! -d .lsr-gpu/models ]; then
  cat "$P"/part* | tar x || { echo "bundle incomplete"; exit 3; }
fi
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
# MiniLM travels in fp16 (half the bytes); the teacher runs from the same weights cast back to fp32
python3 - <<'EOF'
import torch, os
from safetensors.torch import load_file, save_file
p = os.environ["LSR_CACHE"] + "/all-MiniLM-L6-v2/model.safetensors"
sd = load_file(p)
if any(v.dtype == torch.float16 for v in sd.values()):
    save_file({k: (v.float() if v.dtype == torch.float16 else v).contiguous() for k, v in sd.items()}, p, metadata={"format": "pt"})
EOF
python3 -c "import torch, transformers, sentence_transformers, pydantic, gguf; print('torch', torch.__version__, 'transformers', transformers.__version__, 'st', sentence_transformers.__version__)" | tee -a "$OUT/gpu.txt"

t0=$(date +%s)
timeout "$LIMIT" python3 -m lsr.cli.train configs/label-free.toml --set train.steps=$STEPS --set train.progress=false \
  --set pseudo_queries.generator="\"$LSR_CACHE/smollm2-135m\"" "$@" > runs/label-free.log 2>&1
echo "label-free train rc=$? $(( $(date +%s) - t0 ))s" | tee -a "$OUT/gpu.txt"
grep -E "pseudo-queries \{|training data:|step [0-9]+ |Error|error" runs/label-free.log | cut -c1-300 | tail -12

m=runs/label-free/final
[ -d "$m" ] || m=$(ls -d runs/label-free/checkpoint-*/model 2>/dev/null | sort -V | tail -1)
tar cf - .cache/label-free | xz -T0 -6 > /tmp/cache.tar.xz && split -b 15M -d /tmp/cache.tar.xz "$OUT/cache.tar.xz.part"
if [ -n "$m" ]; then
  echo "model $m" | tee -a "$OUT/gpu.txt"
  tar czf /tmp/model.tgz -C "$(dirname "$m")" "$(basename "$m")" && split -b 15M -d /tmp/model.tgz "$OUT/model.tgz.part"
  t0=$(date +%s)
  for ds in scifact:test nfcorpus:dev; do
    timeout 120 python3 -c "import sys; from lsr.eval.cli import main; sys.exit(main(sys.argv[1:]))" run \
      --dataset "$LSR_DATA/beir/${ds%%:*}" --split "${ds##*:}" --k 100 --latency-queries 0 --no-progress \
      --system "inference-free:$m,name=label-free IF,batch_size=256" \
      --system "inference-free:models/inference-free-splade-tiny-scifact-nfcorpus,name=supervised IF,batch_size=256" \
      --out "runs/eval-${ds%%:*}.json" >> runs/eval.log 2>&1
    echo "lsr-eval $ds rc=$?" | tee -a "$OUT/gpu.txt"
  done
  echo "eval $(( $(date +%s) - t0 ))s" | tee -a "$OUT/gpu.txt"
  cat runs/eval-*.md 2>/dev/null
fi
tar czf "$OUT/logs.tgz" runs/label-free.log runs/eval.log runs/eval-*.json runs/eval-*.md runs/label-free/log.jsonl \
  runs/label-free/label_free_stats.json runs/label-free/config.toml 2>/dev/null
echo "total $(( $(date +%s) - t_all ))s" | tee -a "$OUT/gpu.txt"
ls -la "$OUT"
