# Sourced by the GPU driver scripts: wheels carried in .lsr-gpu/whl, the copied data and models,
# offline Hugging Face, unbuffered logs.
if ls .lsr-gpu/whl/*.whl >/dev/null 2>&1 && ! python3 -c "import pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .lsr-gpu/whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" LSR_DATA=$PWD/.lsr-gpu/data LSR_CACHE=$PWD/.lsr-gpu/models
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
