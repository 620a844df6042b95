"""Training: the TOML config schema, the trainer behind ``lsr-train`` (checkpoints, exact resume,
accelerate DDP, bf16) and dev evaluation; the student is an ``lsr.models.SparseEncoder``.
"""

from lsr.train.config import ConfigError, TrainConfig, load_config

__all__ = ["TrainConfig", "load_config", "ConfigError", "Trainer", "train"]


def __getattr__(name):
    if name == "Trainer":
        from lsr.train.trainer import Trainer

        return Trainer
    raise AttributeError(name)


def train(config_path, *, resume: bool = False, overrides=None, stop_after: int | None = None,
          queries_only: bool = False) -> dict:
    """Run ``lsr-train`` from Python; returns the final eval metrics (empty without [[eval]]).
    ``queries_only``: a label-free config's pseudo-queries alone (per corpus: cache file and counts)."""
    from lsr.train.trainer import Trainer

    cfg, text = load_config(config_path, overrides)
    if queries_only:
        return Trainer(cfg, text).generate_queries()
    return Trainer(cfg, text).run(resume=resume, stop_after=stop_after)
