"""sentence-transformers v5+ ``SparseEncoder`` folders: read their layout, write ours alongside.

Read: ``modules.json`` with an MLM transformer (``MLMTransformer`` or ``Transformer`` with
``transformer_task="fill-mask"``) + ``SpladePooling``, or a ``Router`` whose query route is
``SparseStaticEmbedding`` (inference-free). Write: the files ST needs to open an lsr SPLADE or
inference-free folder.
No sentence-transformers import: these are plain JSON files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["STLayout", "is_sparse_layout", "read_st_layout", "write_st_splade_files", "write_st_router_files"]


@dataclass
class STLayout:
    kind: str
    transformer_dir: Path
    pooling: str = "max"
    activation: str = "relu"
    max_seq_length: int | None = None
    query_dir: Path | None = None  # SparseStaticEmbedding folder (inference-free)
    extra: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pooling": self.pooling, "activation": self.activation, "st_layout": self}
        if self.max_seq_length:  # ST truncates queries and documents alike
            out["max_doc_length"] = self.max_seq_length
            out["max_query_length"] = self.max_seq_length
        return out


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _short(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


def _pooling_from(folder: Path) -> tuple[str, str]:
    cfg = _read_json(folder / "config.json")
    return cfg.get("pooling_strategy", "max"), cfg.get("activation_function", "relu")


def _max_len(folder: Path) -> int | None:
    v = _read_json(folder / "sentence_bert_config.json").get("max_seq_length")
    return int(v) if v else None


def _splade_chain(root: Path, modules: list[tuple[str, str]], where: str) -> tuple[Path, str, str, int | None]:
    """``[(type, path)]`` of an MLM transformer then SpladePooling -> (model dir, pooling, activation, max len)."""
    names = [_short(t) for t, _ in modules]
    if len(modules) < 2 or names[0] not in ("MLMTransformer", "Transformer") or names[1] != "SpladePooling":
        raise ValueError(f"{where}: expected an MLM transformer followed by SpladePooling, got {names}")
    tdir = root / modules[0][1] if modules[0][1] else root
    task = _read_json(tdir / "sentence_bert_config.json").get("transformer_task", "fill-mask")
    if task != "fill-mask":
        raise ValueError(f"{where}: transformer_task {task!r} is not 'fill-mask'; not a SPLADE model")
    pooling, activation = _pooling_from(root / modules[1][1])
    extra = names[2:]
    if extra:
        raise ValueError(f"{where}: modules after SpladePooling ({extra}) are not supported")
    return tdir, pooling, activation, _max_len(tdir)


def is_sparse_layout(folder: Path) -> bool:
    """True when ``modules.json`` describes a sparse model (SpladePooling or a Router)."""
    mods = json.loads((Path(folder) / "modules.json").read_text(encoding="utf-8"))
    return any(_short(m.get("type", "")) in ("SpladePooling", "Router", "SparseStaticEmbedding") for m in mods)


def read_st_layout(folder: Path) -> STLayout:
    folder = Path(folder)
    mods = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    mods = sorted(mods, key=lambda m: m.get("idx", 0))
    chain = [(m["type"], m.get("path", "")) for m in mods]
    if len(chain) == 1 and _short(chain[0][0]) == "Router":
        rdir = folder / chain[0][1] if chain[0][1] else folder
        rc = _read_json(rdir / "router_config.json")
        types, structure = rc.get("types", {}), rc.get("structure", {})
        q, d = structure.get("query", []), structure.get("document", [])
        if [_short(types.get(n, "")) for n in q] != ["SparseStaticEmbedding"]:
            raise ValueError(f"{folder}: Router query route {q} is not a single SparseStaticEmbedding; "
                             "only inference-free routers are supported")
        tdir, pooling, activation, max_len = _splade_chain(rdir, [(types[n], n) for n in d], f"{folder} (document route)")
        return STLayout("inference-free", tdir, pooling, activation, max_len, query_dir=rdir / q[0])
    tdir, pooling, activation, max_len = _splade_chain(folder, chain, str(folder))
    return STLayout("splade", tdir, pooling, activation, max_len)


_ST_CONFIG = {"model_type": "SparseEncoder", "prompts": {"query": "", "document": ""}, "default_prompt_name": None,
              "similarity_fn_name": "dot"}


def _write_common(folder: Path, *, pooling: str, activation: str, max_seq_length: int, dim: int, pool_dir: str) -> None:
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": int(max_seq_length), "do_lower_case": False}, indent=2) + "\n", encoding="utf-8")
    (folder / pool_dir).mkdir(exist_ok=True)
    (folder / pool_dir / "config.json").write_text(
        json.dumps({"pooling_strategy": pooling, "activation_function": activation, "word_embedding_dimension": dim},
                   indent=2) + "\n", encoding="utf-8")
    (folder / "config_sentence_transformers.json").write_text(json.dumps(_ST_CONFIG, indent=2) + "\n", encoding="utf-8")


def write_st_splade_files(folder: Path, *, pooling: str, activation: str, max_seq_length: int, dim: int) -> None:
    """Make an lsr SPLADE folder loadable by ``sentence_transformers.SparseEncoder(folder)``.

    The transformer sits at the folder root (``path: ""``) so the weights are not duplicated. The
    module types use the v5 names, which v5 and later both resolve.
    """
    folder = Path(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.sparse_encoder.models.MLMTransformer"},
        {"idx": 1, "name": "1", "path": "1_SpladePooling",
         "type": "sentence_transformers.sparse_encoder.models.SpladePooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    _write_common(folder, pooling=pooling, activation=activation, max_seq_length=max_seq_length, dim=dim,
                  pool_dir="1_SpladePooling")


def write_st_router_files(folder: Path, *, pooling: str, activation: str, max_seq_length: int, dim: int,
                          query_weights, query_max_length: int) -> None:
    """Make an lsr inference-free folder loadable by ``sentence_transformers.SparseEncoder(folder)``:
    a ``Router`` whose query route is ``SparseStaticEmbedding`` (``query_0_SparseStaticEmbedding/``:
    tokenizer copy + weight vector) and whose document route is the root transformer (module id
    ``"."``, so the weights are not duplicated) + ``SpladePooling``."""
    import shutil

    import numpy as np
    from safetensors.numpy import save_file

    folder = Path(folder)
    pool_dir = "document_1_SpladePooling"
    _write_common(folder, pooling=pooling, activation=activation, max_seq_length=max_seq_length, dim=dim,
                  pool_dir=pool_dir)
    qdir = folder / "query_0_SparseStaticEmbedding"
    qdir.mkdir(exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).exists():
            shutil.copy(folder / name, qdir / name)
    cfg_path = qdir / "tokenizer_config.json"
    if cfg_path.exists():  # ST truncates queries at the tokenizer's model_max_length
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["model_max_length"] = int(query_max_length)
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    save_file({"weight": np.ascontiguousarray(np.asarray(query_weights, dtype=np.float32))}, str(qdir / "model.safetensors"))
    (qdir / "config.json").write_text(json.dumps({"frozen": False}, indent=2) + "\n", encoding="utf-8")
    router = {
        "types": {
            "query_0_SparseStaticEmbedding": "sentence_transformers.sparse_encoder.models.SparseStaticEmbedding",
            ".": "sentence_transformers.sparse_encoder.models.MLMTransformer",
            pool_dir: "sentence_transformers.sparse_encoder.models.SpladePooling",
        },
        "structure": {"query": ["query_0_SparseStaticEmbedding"], "document": [".", pool_dir]},
        "parameters": {"default_route": "document", "allow_empty_key": True},
    }
    (folder / "router_config.json").write_text(json.dumps(router, indent=2) + "\n", encoding="utf-8")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Router"}]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
