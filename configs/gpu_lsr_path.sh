# Sourced by the GPU driver scripts (needs WORK, PY and a say function): wheels the machine lacks
# installed from the carried folder WHL (default .lsr-gpu/whl, else .whl) when pydantic or ir_measures
# (or, with NEED_GGUF=1, gguf) is missing, and lsr importable without installing it.
_need="import pydantic, ir_measures${NEED_GGUF:+, gguf}"
if ! "$PY" -c "$_need" 2>/dev/null; then
  _whl=${WHL:-.lsr-gpu/whl}; ls $_whl/*.whl >/dev/null 2>&1 || _whl=.whl
  ls $_whl/*.whl >/dev/null 2>&1 || { say "no wheels in $_whl, and one of pydantic, ir_measures${NEED_GGUF:+, gguf} missing"; exit 3; }
  timeout 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" $_whl/*.whl \
    || { say "wheel install failed"; exit 3; }
  export PYTHONPATH="$WORK/site"
fi
if ! "$PY" -c "import lsr.index, lsr.eval" 2>/dev/null; then
  # the distribution maps index/, eval/, service/ to lsr.index, lsr.eval, lsr.service: mirror that with links
  rm -rf "$WORK/src" && mkdir -p "$WORK/src/lsr"
  for f in lsr/*; do ln -s "$PWD/$f" "$WORK/src/lsr/$(basename "$f")"; done
  for m in index eval service; do ln -s "$PWD/$m" "$WORK/src/lsr/$m"; done
  # PYTHONSAFEPATH: python -m / -c must not put the working directory (whose lsr/ lacks index/) first
  export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$WORK/src" PYTHONSAFEPATH=1
  say "lsr from links in $WORK/src"
fi
timeout 60 "$PY" -c "import lsr.index, lsr.eval, pydantic, ir_measures" || { say "lsr does not import"; exit 3; }
