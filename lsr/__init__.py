"""lsr: learned sparse retrieval. Train sparse encoders, index, serve, evaluate.

Importing ``lsr`` is cheap and torch-free; encoders are loaded lazily on first use.
"""

from lsr.index.sparse import SparseBatch, SparseBatchError, load_vectors, save_vectors

__version__ = "0.1.0"

__all__ = ["SparseBatch", "SparseBatchError", "load_vectors", "save_vectors", "SparseEncoder", "__version__"]


def __getattr__(name):
    # Encoders pull torch/transformers; keep them out of `import lsr`.
    if name == "SparseEncoder":
        from lsr.models import SparseEncoder

        return SparseEncoder
    raise AttributeError(f"module 'lsr' has no attribute {name!r}")
