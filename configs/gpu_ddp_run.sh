#!/usr/bin/env bash
# Same config on 1 GPU and on 2 GPUs (DDP through torchrun + accelerate), train.batch_size per GPU
# (so the 2-GPU run's global batch is twice the 1-GPU one): compares loss curves and samples/s. Needs .lsr-gpu/ as in gpu_real_run.sh; teacher scores are read
# from .lsr-gpu/teacher-cache when an earlier run (on any machine) left them there.
#   bash configs/gpu_ddp_run.sh [STEPS]
set -u
STEPS=${1:-300}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT" runs
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
common=(configs/inference-free.toml --set train.steps=$STEPS --set 'eval=[]' --set train.progress=false
        --set train.log_every=20 --set teachers.cache_dir='".lsr-gpu/teacher-cache"')
t0=$(date +%s)
CUDA_VISIBLE_DEVICES=0 timeout 220 python3 -m lsr.cli.train "${common[@]}" --set train.output_dir='"runs/gpu1"' > runs/gpu1.log 2>&1
echo "1 GPU rc=$? $(( $(date +%s) - t0 ))s" | tee -a "$OUT/gpu.txt"
t0=$(date +%s)
timeout 220 torchrun --standalone --nproc_per_node 2 -m lsr.cli.train "${common[@]}" --set train.output_dir='"runs/gpu2"' > runs/gpu2.log 2>&1
echo "2 GPUs rc=$? $(( $(date +%s) - t0 ))s" | tee -a "$OUT/gpu.txt"
cp runs/gpu1/log.jsonl "$OUT/gpu1-log.jsonl"; cp runs/gpu2/log.jsonl "$OUT/gpu2-log.jsonl"
tail -c 4000 runs/gpu2.log > "$OUT/gpu2-tail.log"
python3 - <<'PY' | tee -a "$OUT/gpu.txt"
import json
for n in ("gpu1", "gpu2"):
    try:
        rows = [json.loads(l) for l in open(f"runs/{n}/log.jsonl")]
    except OSError:
        print(n, "no log"); continue
    sps = [r["samples_per_s"] for r in rows[1:]] or [0]
    print(n, "loss", [round(r["loss"], 4) for r in rows], "median samples/s", sorted(sps)[len(sps) // 2])
PY
