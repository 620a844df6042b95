# Sourced by the GPU driver scripts: wheels carried in .lsr-gpu/whl, the copied data and models,
# offline Hugging Face, unbuffered logs.
if ls .lsr-gpu/whl/*.whl >/dev/null 2>&1 && ! python3 -c "import pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .lsr-gpu/whl/*.whl
  export PYTHONPATH=/tmp/site
fi
# LSR_DATA / LSR_CACHE set by the caller win (e.g. data unpacked by configs/gpu_issue17_run.sh)
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" LSR_DATA=${LSR_DATA:-$PWD/.lsr-gpu/data} LSR_CACHE=${LSR_CACHE:-$PWD/.lsr-gpu/models}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# teacher scores computed elsewhere travel as one xz archive (the raw .npz files are ~14 MB each)
if [ -f .lsr-gpu/tc.tar.xz ] && [ ! -d .lsr-gpu/teacher-cache ]; then tar xJf .lsr-gpu/tc.tar.xz -C .lsr-gpu; fi
if ! python3 -c "import lsr.index" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "lsr not installed"
fi
