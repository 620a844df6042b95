# Sourced by the GPU driver scripts: smollm2_from_parts DEST joins the SmolLM2 GGUF parts in
# /tmp/gguf-parts (copied there by earlier calls of a warm machine), checks the sha256 against
# GGUF_SHA when set, and converts it once into a plain checkpoint in DEST (lsr.models.hub._gguf_to_hf),
# under a lock so that two runs starting together convert it once. Python: $PY (default python3).
# Prints what it did; on failure DEST is removed and the status is non-zero.
smollm2_from_parts() {
  local dest=$1
  (
    flock 9
    [ -f "$dest/config.json" ] && exit 0
    mkdir -p "$dest"
    cat /tmp/gguf-parts/part* > "$dest/model.gguf"
    local sha
    sha=$(sha256sum "$dest/model.gguf" | cut -d' ' -f1)
    echo "gguf $(stat -c %s "$dest/model.gguf") bytes, sha256 $sha"
    if [ -n "${GGUF_SHA:-}" ] && [ "$sha" != "$GGUF_SHA" ]; then
      echo "gguf sha256 differs from $GGUF_SHA: parts missing?"; rm -rf "$dest"; exit 3
    fi
    timeout 180 "${PY:-python3}" -c "import sys; from pathlib import Path; from lsr.models.hub import _gguf_to_hf; _gguf_to_hf(Path(sys.argv[1]))" \
      "$dest" 2>&1 | tail -3
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "gguf conversion failed"; rm -rf "$dest"; exit 3; }
    echo "converted to $dest"
  ) 9>/tmp/gguf-parts.lock
}
