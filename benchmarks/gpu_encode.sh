#!/usr/bin/env bash
# Document-encoding throughput on one GPU, from the repository root, in about 3 minutes (at most 4):
#   1. benchmarks/encode.py on the whole SciFact corpus (5,183 docs, <= 256 tokens): lsr vs
#      sentence-transformers' SparseEncoder at batch 32 and 512, fp32 and bf16, plus lsr with a
#      65,536-token budget, and the profiled time breakdown (-> $OUT/encode.md, encode.json);
#   2. lsr alone over more batch sizes and token budgets (-> $OUT/sweep.md, sweep.json);
#   3. the CUDA tests of the encode pipeline, where pytest is installed (-> $OUT/tests.txt).
# Carry: .lsr-gpu/models/splade-tiny (or set SPLADE_TINY to a SPLADE-tiny folder: config.json,
# model.safetensors, tokenizer.json, tokenizer_config.json; an fp16 copy is cast back to fp32 here).
#   bash benchmarks/gpu_encode.sh
#   CPU smoke test of the script itself: DEVICE=cpu LIMIT=40 PYTHON=.venv/bin/python bash benchmarks/gpu_encode.sh
set -u
T0=$(date +%s)
PY=${PYTHON:-python3}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=${TMPDIR:-/tmp}/lsr-gpu-encode
mkdir -p "$WORK"
say() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/progress.log"; }
SRC_MODEL=${SPLADE_TINY:-.lsr-gpu/models/splade-tiny}
CORPUS=tests/data/beir/scifact/corpus.jsonl.gz
DEVICE=${DEVICE:-cuda}
LIMIT=${LIMIT:-0}

# 1. lsr importable: installed without dependencies, else the installed layout mirrored with links
if ! "$PY" -c "import lsr.index, lsr.models" 2>/dev/null; then
  timeout 90 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$WORK/pip.log" 2>&1 \
    || say "pip install -e . failed (see below); mirroring the package layout instead"
fi
if ! "$PY" -c "import lsr.index, lsr.models" 2>/dev/null; then
  rm -rf "$WORK/src" && mkdir -p "$WORK/src/lsr"
  for f in lsr/*; do ln -s "$PWD/$f" "$WORK/src/lsr/$(basename "$f")"; done
  for m in index eval service; do ln -s "$PWD/$m" "$WORK/src/lsr/$m"; done
  export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$WORK/src"
fi
timeout 60 "$PY" -c "import lsr.index, lsr.models" || { say "lsr does not import"; tail -5 "$WORK/pip.log"; exit 3; }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_NO_INDEX=1 TOKENIZERS_PARALLELISM=true

# 2. the model in float32 (both encoders then start from the same fp32 weights)
[ -f "$SRC_MODEL/config.json" ] || { say "no model folder at $SRC_MODEL (set SPLADE_TINY)"; exit 3; }
MODEL=$WORK/models/splade-tiny
rm -rf "$WORK/models" && mkdir -p "$WORK/models"
timeout 60 "$PY" - "$SRC_MODEL" "$MODEL" <<'EOF' || { say "model copy failed"; exit 3; }
import shutil, sys
from pathlib import Path
import torch
from transformers import AutoModelForMaskedLM
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
m = AutoModelForMaskedLM.from_pretrained(src, dtype=torch.float32)
m.save_pretrained(dst, safe_serialization=True)
for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
    if (src / f).exists():
        shutil.copy(src / f, dst / f)
print(f"model {src} -> {dst} (float32, {sum(p.numel() for p in m.parameters()):,} parameters)")
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
"$PY" -c "import torch, transformers, tokenizers, sentence_transformers as st; print('python', __import__('sys').version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__, 'sentence-transformers', st.__version__)" | tee -a "$OUT/gpu.txt"
say "set up"

# 3. lsr vs sentence-transformers, side by side, with the profiled breakdown
timeout 160 "$PY" benchmarks/encode.py --corpus "$CORPUS" --model "$MODEL" --limit "$LIMIT" --device "$DEVICE" \
  --batch-sizes 32,512 --precisions fp32,bf16 --max-tokens 65536 --repeats 3 --skip-onnx --skip-queries \
  --json "$OUT/encode.json" 2> "$OUT/encode.err" | tee "$OUT/encode.md"
say "encode.py rc=${PIPESTATUS[0]}"
tail -3 "$OUT/encode.err"

# 4. lsr alone: larger batches and token budgets (what the pipelined path reaches)
timeout 60 "$PY" benchmarks/encode.py --corpus "$CORPUS" --model "$MODEL" --limit "$LIMIT" --device "$DEVICE" \
  --batch-sizes 256,1024,2048 --precisions bf16,fp32 --max-tokens 262144 --repeats 3 --skip-st --skip-onnx \
  --skip-queries --json "$OUT/sweep.json" 2> "$OUT/sweep.err" | tee "$OUT/sweep.md"
say "sweep rc=${PIPESTATUS[0]}"
tail -3 "$OUT/sweep.err"

# 5. the pipeline's CUDA tests against the CPU reference (skipped where pytest is missing)
if [ $(( $(date +%s) - T0 )) -gt 190 ]; then
  say "CUDA tests not run: over the time box"
elif "$PY" -c "import pytest" 2>/dev/null; then
  mkdir -p "$WORK/cache" && rm -rf "$WORK/cache/splade-tiny" && cp -r "$MODEL" "$WORK/cache/splade-tiny"
  LSR_CACHE=$WORK/cache timeout 45 "$PY" -m pytest -q -p no:cacheprovider tests/models/test_encode_pipeline.py \
    -k "cuda or reference_in_input_order" > "$OUT/tests.txt" 2>&1
  say "tests rc=$? $(tail -1 "$OUT/tests.txt")"
else
  say "pytest not installed: CUDA tests not run"
fi
say "done"
