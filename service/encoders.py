"""The service's encoders: vocabularies, query encoders and document encoders, loaded once per model.

An inference-free model's query side is its tokenizer plus a weight table
(:class:`lsr.models.inference_free.IdfQueryEncoder`): it never imports torch. Queries for model-based
encoders (SPLADE, decoder) go through a :class:`QueryBatcher`: requests that arrive within a few
milliseconds of each other are encoded in one forward pass. A model folder written by ``lsr export-onnx``
(or, where torch is not installed, a model folder with such an export in ``onnx/``) runs through ONNX
Runtime (:class:`lsr.models.onnx.OnnxSparseEncoder`): serving it never imports torch.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import queue
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from lsr.index.sparse import SparseBatch

if TYPE_CHECKING:
    from lsr.models.base import SparseEncoder
    from lsr.models.inference_free import IdfQueryEncoder
    from lsr.models.onnx import OnnxSparseEncoder

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class ModelUnavailable(ValueError):
    """The named model cannot be resolved or loaded (a 4xx for the request that named it)."""


class EncoderBusy(RuntimeError):
    """The query batcher's queue is full: shed the request (503 + Retry-After)."""


def known_model(name: str) -> bool:
    """True if ``name`` is a folder or a short model name lsr can fetch (nothing is downloaded)."""
    if not name or "\x00" in name:
        return False
    try:
        if Path(name).expanduser().is_dir():
            return True
    except (OSError, ValueError, RuntimeError):
        return False
    from lsr.models.hub import _ALIASES, KNOWN_MODELS  # noqa: PLC0415

    return name in KNOWN_MODELS or name.lower() in _ALIASES


def _model_dir(name: str) -> Path | None:
    """The folder of a known model (fetched if need be), None for an unknown name.

    A known model whose fetch fails raises :class:`ModelUnavailable` (details in the log, not to
    the client) rather than passing for an unknown name; nothing is cached, so a later request retries.
    """
    if not known_model(name):
        return None
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    try:
        from lsr.models.hub import model_path  # noqa: PLC0415

        return Path(model_path(name))
    except Exception as exc:  # noqa: BLE001 - the fetch failed: this request's error, details in the log
        log.warning("model %r cannot be fetched: %s", name, exc)
        raise ModelUnavailable(f"model {name!r} cannot be fetched ({type(exc).__name__}); see the server log") from None


def model_kind(folder: Path) -> str | None:
    """``kind`` of an lsr model folder (``splade``, ``inference-free``, ``decoder``), None if not said."""
    cfg = folder / "lsr_config.json"
    if not cfg.exists():
        return None
    try:
        kind: str | None = json.loads(cfg.read_text(encoding="utf-8")).get("kind")
        return kind
    except (OSError, ValueError):
        return None


def _vocab_from_folder(folder: Path) -> list[str] | None:
    tok = folder / "tokenizer.json"
    if tok.exists():
        data = json.loads(tok.read_text(encoding="utf-8"))
        vocab = (data.get("model") or {}).get("vocab")
        if isinstance(vocab, dict) and vocab:
            out = [""] * (max(vocab.values()) + 1)
            for t, i in vocab.items():
                out[i] = t
            return out
    txt = folder / "vocab.txt"
    if txt.exists():
        return txt.read_text(encoding="utf-8").split("\n")[:-1] or None
    return None


def torch_available() -> bool:
    """True when torch can be imported (it is not imported here)."""
    if "torch" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def onnx_dir(folder: Path) -> Path | None:
    """The ONNX export that serves ``folder``: the folder itself when it is one; its ``onnx/`` subfolder
    only when torch is not installed (with torch, a checkpoint folder runs through torch)."""
    from lsr.models.onnx import is_onnx_folder  # noqa: PLC0415 - torch-free

    if is_onnx_folder(folder):
        return folder
    if (folder / "onnx").is_dir() and is_onnx_folder(folder / "onnx") and not torch_available():
        return folder / "onnx"
    return None


_Job = tuple[list[str], Future[SparseBatch]]  # a request's texts and the Future of their vectors


class QueryBatcher:
    """One thread per model that encodes queued query texts in batches.

    ``submit(texts)`` returns a Future of the texts' ``SparseBatch``. The thread takes the first
    waiting request, then collects more for up to ``max_wait_ms`` (or until ``max_batch`` texts),
    runs ``encode_fn`` once on them all, and splits the rows back. The queue holds at most
    ``max_queue`` requests; past that ``submit`` raises :class:`EncoderBusy`.
    """

    def __init__(self, encode_fn: Callable[[list[str]], SparseBatch], *, max_batch: int = 32,
                 max_wait_ms: float = 2.0, max_queue: int = 256, name: str = "model"):
        self.encode_fn = encode_fn
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000
        self._queue: queue.Queue[_Job | tuple[None, None]] = queue.Queue(maxsize=max(1, int(max_queue)))
        self.batches = 0
        self.texts = 0
        self._thread = threading.Thread(target=self._loop, name=f"lsr-batch-{name}"[:40], daemon=True)
        self._thread.start()

    def submit(self, texts: list[str]) -> Future[SparseBatch]:
        fut: Future[SparseBatch] = Future()
        try:
            self._queue.put_nowait((list(texts), fut))
        except queue.Full:
            raise EncoderBusy("the query encoder is overloaded; retry shortly") from None
        return fut

    def close(self) -> None:
        self._queue.put((None, None))

    def _loop(self) -> None:
        while True:
            texts, fut = self._queue.get()
            if texts is None or fut is None:  # close()'s (None, None)
                return
            jobs = [(texts, fut)]
            n = len(texts)
            deadline = time.monotonic() + self.max_wait
            while n < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item[1] is None:  # close(): finish this batch, then stop
                    self._queue.put(item)
                    break
                jobs.append(item)
                n += len(item[0])
            self._run(jobs)

    def _run(self, jobs: list[_Job]) -> None:
        jobs = [(t, f) for t, f in jobs if f.set_running_or_notify_cancel()]
        if not jobs:
            return
        try:
            batch = self.encode_fn([t for texts, _ in jobs for t in texts])
        except BaseException as exc:  # every waiter gets the error (a 4xx/5xx for its own request)
            for _, f in jobs:
                f.set_exception(exc)
            return
        self.batches += 1
        self.texts += len(batch)
        start = 0
        for texts, f in jobs:
            f.set_result(batch[start:start + len(texts)] if len(jobs) > 1 else batch)
            start += len(texts)


class ModelRegistry:
    """Resolves model names to vocabularies, query encoders and document encoders; each is loaded once.

    >>> models = ModelRegistry("splade-tiny")                        # doctest: +SKIP
    >>> models.submit_queries("splade-tiny", ["what causes fever"]).result()   # doctest: +SKIP
    """

    def __init__(self, default: str | None = "splade-tiny", *, allow_load: bool = True, batch_max: int = 32,
                 batch_wait_ms: float = 2.0, batch_queue: int = 256, threads: int | None = None):
        self.default = default
        self.allow_load = allow_load
        self.threads = threads  # intra-op threads of a loaded model (torch or ONNX Runtime; None: their default)
        self.batch_opts: dict[str, Any] = {"max_batch": batch_max, "max_wait_ms": batch_wait_ms, "max_queue": batch_queue}
        self._encoders: dict[str, SparseEncoder | OnnxSparseEncoder] = {}  # torch or ONNX Runtime encoders
        self._tables: dict[str, IdfQueryEncoder] = {}  # torch-free query encoders (inference-free)
        self._batchers: dict[str, QueryBatcher] = {}
        self._vocabs: dict[str, list[str]] = {}
        self._folders: dict[str, Path | None] = {}
        self._kinds: dict[str, bool] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock_for(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def folder(self, name: str) -> Path | None:
        if name not in self._folders:
            self._folders[name] = _model_dir(name)
        return self._folders[name]

    def _unavailable(self, name: str) -> ModelUnavailable:
        # The message names the model as the client gave it, never a server path.
        return ModelUnavailable(f"model {name!r} is not available on this server (not a known model name "
                                "or a model folder it can read)")

    def is_table(self, name: str) -> bool:
        """True when the model's query side is a weight table (inference-free: no model call)."""
        hit = self._kinds.get(name)
        if hit is None:
            folder = self.folder(name)
            hit = self._kinds[name] = folder is not None and model_kind(folder) == "inference-free"
        return hit

    def vocab(self, name: str) -> list[str]:
        hit = self._vocabs.get(name)
        if hit is not None:
            return hit
        folder = self.folder(name)
        if folder is None:
            raise self._unavailable(name)
        try:
            vocab = _vocab_from_folder(folder)
        except (OSError, ValueError) as exc:
            log.warning("model %r: cannot read its vocabulary: %s", name, exc)
            raise ModelUnavailable(f"model {name!r}: its vocabulary cannot be read") from None
        if vocab is None:
            vocab = list(self.encoder(name).vocab)
        self._vocabs[name] = vocab
        return vocab

    def loaded(self) -> list[str]:
        return sorted({*self._encoders, *self._tables})

    def table(self, name: str) -> IdfQueryEncoder:
        """The torch-free query encoder of an inference-free model."""
        def load() -> IdfQueryEncoder:
            from lsr.models.inference_free import IdfQueryEncoder  # noqa: PLC0415

            try:
                return IdfQueryEncoder.load(self.folder(name))
            except (OSError, ValueError) as exc:
                log.warning("model %r: cannot load its query table: %s", name, exc)
                raise self._unavailable(name) from None

        return self._load_once(self._tables, name, name + ":table", load)

    def encoder(self, name: str) -> SparseEncoder | OnnxSparseEncoder:
        """The model encoder (documents of every model; queries of SPLADE and decoder models): ONNX
        Runtime for an ONNX export (see :func:`onnx_dir`), else torch."""
        def load() -> SparseEncoder | OnnxSparseEncoder:
            folder = self.folder(name)
            if folder is None:
                raise self._unavailable(name)
            onnx = onnx_dir(folder)
            if onnx is not None:
                return self._load_onnx(name, onnx)
            if not torch_available():
                raise ModelUnavailable(
                    f"model {name!r} needs torch to encode text, and torch is not installed: serve an ONNX export "
                    "of it (`lsr export-onnx MODEL OUT` where torch is installed, then --model OUT) or install "
                    "lsr[encoders]")
            try:
                from lsr.models import SparseEncoder as Encoder  # noqa: PLC0415

                log.info("loading encoder %s", name)
                enc: SparseEncoder = Encoder.load(folder)
                if self.threads:
                    import torch  # noqa: PLC0415 - loaded by now

                    torch.set_num_threads(self.threads)
            except Exception as exc:  # noqa: BLE001 - any load failure is this model's, said in the log
                log.warning("model %r cannot be loaded: %s", name, exc, exc_info=True)
                raise ModelUnavailable(f"model {name!r} cannot be loaded ({type(exc).__name__}); "
                                       "see the server log") from None
            return enc

        return self._load_once(self._encoders, name, name, load)

    def _load_onnx(self, name: str, folder: Path) -> OnnxSparseEncoder:
        try:
            from lsr.models.onnx import OnnxSparseEncoder  # noqa: PLC0415

            log.info("loading ONNX encoder %s", name)
            return OnnxSparseEncoder(folder, threads=self.threads)
        except Exception as exc:  # noqa: BLE001 - any load failure is this model's, said in the log
            log.warning("model %r cannot be loaded through ONNX Runtime: %s", name, exc, exc_info=True)
            raise ModelUnavailable(f"model {name!r} cannot be loaded ({type(exc).__name__}); "
                                   "see the server log") from None

    def _load_once(self, cache: dict[str, _T], name: str, lock_key: str, load: Callable[[], _T]) -> _T:
        """``cache[name]``, else ``load()`` once (under the lock ``lock_key``; other callers wait) and cached."""
        hit = cache.get(name)
        if hit is not None:
            return hit
        if not self.allow_load:
            raise ModelUnavailable(f"model {name!r} is not loaded and this server does not load models")
        with self._lock_for(lock_key):
            hit = cache.get(name)
            if hit is None:
                hit = cache[name] = load()
        return hit

    def preload(self, name: str) -> None:
        """Load what text queries will need: the table of an inference-free model, else the encoder."""
        if self.is_table(name):
            self.table(name)
        else:
            self._batcher(name)

    def _batcher(self, name: str) -> QueryBatcher:
        b = self._batchers.get(name)
        if b is not None:
            return b
        enc = self.encoder(name)
        with self._lock_for(name + ":batcher"):
            b = self._batchers.get(name)
            if b is None:
                run_lock = self._lock_for(name + ":run")

                def encode(texts: list[str]) -> SparseBatch:
                    with run_lock:  # documents and queries share the model's cores
                        return self._with_vocab(name, enc.encode_queries(texts, batch_size=len(texts)))

                b = self._batchers[name] = QueryBatcher(encode, name=name, **self.batch_opts)
        return b

    def _with_vocab(self, name: str, batch: SparseBatch) -> SparseBatch:
        return batch if batch.vocab is not None else batch.with_vocab(self.vocab(name))

    def submit_queries(self, name: str, texts: list[str]) -> Future[SparseBatch]:
        """A Future of the queries' vectors: computed now for a table, else by the model's batcher."""
        if self.is_table(name):
            fut: Future[SparseBatch] = Future()
            try:
                fut.set_result(self._with_vocab(name, self.table(name).encode_queries(texts)))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the Future
                fut.set_exception(exc)
            return fut
        return self._batcher(name).submit(texts)

    def encode_queries(self, name: str, texts: list[str]) -> SparseBatch:
        return self.submit_queries(name, texts).result()

    def encode_documents(self, name: str, texts: list[str]) -> SparseBatch:
        enc = self.encoder(name)
        with self._lock_for(name + ":run"):  # torch already uses every core per call
            batch = enc.encode_documents(texts)
        return self._with_vocab(name, batch)

    def close(self) -> None:
        for b in list(self._batchers.values()):
            b.close()

