"""Decoder-only sparse encoder ("Mistral-SPLADE"): a causal LM's vocabulary logits pooled like SPLADE.

A causal token sees only its left context, so the text is fed twice (echo input,
``[bos] text text``) and only the second copy is pooled: each of its tokens has read the whole text.
LoRA adapters come through peft; ``save`` writes them merged into the weights or as a separate folder.
A per-term bias (``fit_term_bias``: the LM's surprisal of each term on a corpus sample) makes the vectors
sparse and IDF-like; it trains with the adapters and is saved as ``term_bias.safetensors``.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from lsr.models.base import LSR_CONFIG, SparseEncoder
from lsr.models.inference_free import check_texts
from lsr.models.splade import SpladeEncoder, projection_input

__all__ = ["DecoderSpladeEncoder", "echo_batch", "ADAPTER_DIR", "TERM_BIAS_FILE", "TermBiasFit",
           "corpus_term_statistics", "term_surprisal", "solve_tau"]

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
TERM_BIAS_FILE = "term_bias.safetensors"


def echo_batch(ids: list[list[int]], *, bos: int | None, pad: int, echo: bool = True):
    """Token id lists -> ``(input_ids, attention_mask, pool_mask)`` LongTensors, right-padded.

    With ``echo`` a row is ``[bos] x x`` and ``pool_mask`` covers the second ``x``; without it the row is
    ``[bos] x`` and ``pool_mask`` covers ``x``. An empty text pools nothing (a zero vector).
    """
    head = [bos] if bos is not None else []
    rows = [head + x + x if echo else head + x for x in ids]
    L = max(1, max((len(r) for r in rows), default=1))
    B = len(rows)
    input_ids = torch.full((B, L), pad, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    pool = torch.zeros((B, L), dtype=torch.long)
    for i, (r, x) in enumerate(zip(rows, ids)):
        if r:
            input_ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
            attn[i, : len(r)] = 1
        start = len(head) + (len(x) if echo else 0)
        pool[i, start : start + len(x)] = 1
    return input_ids, attn, pool


@dataclass
class TermBiasFit:
    """What :meth:`DecoderSpladeEncoder.fit_term_bias` found, for the logs."""

    tau: float  # the bias is min(-log pbar_v, max_surprisal) - tau
    mean_active: float  # active terms per sample document with that bias (before training)
    target_terms: float
    docs: int  # sample documents with at least one token
    tokens: int  # pooled positions the marginal pbar is averaged over
    clamped: int  # terms whose surprisal hit max_surprisal (never or almost never predicted)
    seconds: float
    suppressed: list[str] = field(default_factory=list)  # the 10 terms the LM predicts most on this corpus

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def corpus_term_statistics(enc: "DecoderSpladeEncoder", texts: list[str], batch_size: int = 16,
                           show_progress_bar: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The LM's next-token distributions over the pooled positions of ``texts``:
    ``(pbar, peak, tokens)``. ``pbar`` (V,) float64 is the mean over all pooled positions of
    ``p(v | context)``; ``peak`` (D, V) float32 is each document's max over its positions of
    ``log p(v | context)`` (documents with no token are left out); ``tokens`` the positions averaged.
    Runs the backbone as it is (LoRA included), in eval mode, under whatever autocast the caller set.
    """
    texts = check_texts(texts)
    dev = enc.device
    total = torch.zeros(enc.dim, dtype=torch.float64, device=dev)
    peaks: list[torch.Tensor] = []
    tokens = 0
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)  # less padding per batch
    bar = None
    if show_progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), desc="term bias: corpus statistics", unit="doc")
    was_training = enc.training
    enc.eval()  # no (LoRA) dropout in the statistics
    try:
        for s in range(0, len(texts), batch_size):
            feats = enc.tokenize([texts[i] for i in order[s:s + batch_size]], side="document")
            logp = torch.log_softmax(SpladeEncoder._logits(enc, feats).float(), dim=-1)
            mask = feats["pool_mask"].bool()
            total += torch.einsum("blv,bl->v", logp.exp(), mask.float()).double()
            tokens += int(mask.sum())
            keep = mask.any(dim=1)
            peaks.append(logp.masked_fill_(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)[keep])
            if bar is not None:
                bar.update(len(mask))
    finally:
        enc.train(was_training)
        if bar is not None:
            bar.close()
    if tokens == 0:
        raise ValueError("cannot fit a term bias: the sample documents have no tokens")
    return total / tokens, torch.cat(peaks), tokens


def term_surprisal(pbar: torch.Tensor, max_surprisal: float) -> torch.Tensor:
    """``min(-log pbar_v, max_surprisal)`` as float32: a term the LM never predicts on the corpus
    (``pbar`` 0 or tiny) gets ``max_surprisal``, not an unbounded bias."""
    if not max_surprisal > 0 or not np.isfinite(max_surprisal):
        raise ValueError(f"max_surprisal must be a positive finite number, got {max_surprisal!r}")
    return (-torch.log(pbar.double())).clamp(max=float(max_surprisal)).float()


def solve_tau(scores: torch.Tensor, target_terms: float) -> float:
    """The ``tau`` with ``mean_d #{v : scores[d, v] > tau} == target_terms`` (up to ties).

    The mean count is a step function of ``tau`` that drops by one per entry passed, so instead of
    bisecting on it we read the solution off the order statistics: with ``k = round(D * target)``,
    ``tau`` is the midpoint between the ``k``-th and ``(k+1)``-th largest of the ``D x V`` scores,
    which leaves exactly ``k`` entries above it (what bisection converges to, in one ``topk``).
    """
    D, V = scores.shape
    if D == 0:
        raise ValueError("cannot solve for tau without documents")
    if not target_terms > 0 or not target_terms < V:
        raise ValueError(f"target_terms must be in (0, {V}) (the vocabulary size), got {target_terms!r}")
    k = max(1, int(round(D * float(target_terms))))
    top = scores.reshape(-1).float().topk(min(k + 1, D * V)).values
    if k >= D * V:
        return float(top[-1]) - 1.0
    return float((top[k - 1].double() + top[k].double()) / 2)


class DecoderSpladeEncoder(SpladeEncoder):
    """Any ``AutoModelForCausalLM`` (Mistral, Llama, Qwen, Gemma, ...) as a SPLADE-style encoder.

    ``forward_documents`` / ``forward_queries`` pool ``log1p(relu(logits))`` over the second copy of
    the echoed text. ``add_lora(...)`` wraps the backbone in a peft LoRA model.

    ``logit_shift``: a causal LM's logits are defined up to a per-position constant (softmax ignores
    it) and most of them are positive, so ``log1p(relu(logits))`` is dense: every one of SmolLM2's
    49,152 terms is active before training. With ``logit_shift = s`` the activation reads
    ``log1p(relu(log_softmax(logits) + s))``: a term is active where the LM gives it a probability
    above ``exp(-s)`` (for SmolLM2-135M, s = 6 leaves about 150-250 terms per document, s = 8 about
    800). ``None`` keeps the raw logits.

    ``term_bias`` (a trainable ``(V,)`` parameter, or ``None``): the activation reads
    ``log1p(relu(log_softmax(logits)_v + term_bias_v))``, one threshold per term instead of one shared
    shift. :meth:`fit_term_bias` sets it to ``min(-log pbar_v, max_surprisal) - tau`` from a corpus
    sample (``pbar_v``: the LM's mean probability of ``v`` over the pooled positions), so a term is
    active where the LM predicts it ``exp(tau)`` times above its corpus-wide rate (a pointwise mutual
    information): function words and tokens predicted everywhere are suppressed. It excludes
    ``logit_shift`` (``tau`` plays the shift's part).
    """

    kind = "decoder"
    term_bias: torch.nn.Parameter | None

    def __init__(self, model, tokenizer, *, echo: bool = True, logit_shift: float | None = None,
                 term_bias=None, **kw):
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.convert_ids_to_tokens(0)
        super().__init__(model, tokenizer, **kw)
        self.echo = bool(echo)
        if logit_shift is not None and not (isinstance(logit_shift, (int, float)) and logit_shift == logit_shift):
            raise ValueError(f"logit_shift must be a number or None, got {logit_shift!r}")
        self.logit_shift = None if logit_shift is None else float(logit_shift)
        self.register_parameter("term_bias", None)
        if term_bias is not None:
            if self.logit_shift is not None:
                raise ValueError("term_bias and logit_shift exclude each other: the bias holds the shift (-tau)")
            self.set_term_bias(term_bias)

    def set_term_bias(self, bias) -> "DecoderSpladeEncoder":
        """Set (``(V,)`` numbers, a trainable float32 parameter on the model's device) or remove
        (``None``) the per-term bias."""
        if bias is None:
            self.term_bias = None
            return self
        b = torch.as_tensor(np.asarray(bias.detach().cpu() if isinstance(bias, torch.Tensor) else bias,
                                       dtype=np.float32)).reshape(-1)
        if b.numel() != self.dim:
            raise ValueError(f"term_bias has {b.numel()} entries but the vocabulary has {self.dim}")
        if not bool(torch.isfinite(b).all()):
            raise ValueError("term_bias has a NaN or infinite entry")
        self.term_bias = torch.nn.Parameter(b.to(self.device))
        return self

    def _logits(self, feats) -> torch.Tensor:
        return self._transform(super()._logits(feats))

    def _transform(self, logits: torch.Tensor) -> torch.Tensor:
        """Raw LM logits -> the logits that are pooled (per-term bias, shift, or unchanged)."""
        if self.term_bias is not None:
            return torch.log_softmax(logits.float(), dim=-1) + self.term_bias
        if self.logit_shift is None:
            return logits
        return torch.log_softmax(logits.float(), dim=-1) + self.logit_shift

    def _pooled_logits(self, feats) -> tuple[torch.Tensor, torch.Tensor]:
        """The pooled logits at the pooled positions only: ``(B, W, V)`` and a ``(B, W)`` mask, ``W``
        the longest pooled span. With echo input the first copy is never pooled, so projecting
        only the second copy halves the vocabulary head's work and the ``(B, L, V)`` tensors (and
        the softmax over them) that training keeps for the backward pass. Each row's pooled
        positions are contiguous (:func:`echo_batch`); the backbone runs up to the head once."""
        head = self.model.get_output_embeddings()
        pool = feats.get("pool_mask", feats["attention_mask"]).bool()
        if not isinstance(head, torch.nn.Linear) or pool.shape[1] == 0:
            return super()._pooled_logits(feats)
        hidden = projection_input(self.model, head, input_ids=feats["input_ids"], attention_mask=feats["attention_mask"])
        lens = pool.sum(dim=1)
        width = max(1, int(lens.max()))
        start = torch.where(lens > 0, pool.int().argmax(dim=1), torch.zeros_like(lens))
        offs = torch.arange(width, device=pool.device)
        pos = (start[:, None] + offs[None, :]).clamp_(max=pool.shape[1] - 1)
        window = torch.gather(hidden, 1, pos[:, :, None].expand(-1, -1, hidden.shape[-1]))
        return self._transform(head(window)), offs[None, :] < lens[:, None]

    def _pool_inference(self, feats, side):
        if self.logit_shift is None and self.term_bias is None:
            return super()._pool_inference(feats, side)
        return SparseEncoder._pool_inference(self, feats, side)  # the softmax needs every logit: no fused head

    def fit_term_bias(self, texts, *, target_terms: float = 200, max_surprisal: float = 20.0, batch_size: int = 16,
                      show_progress_bar: bool = False) -> TermBiasFit:
        """Set ``term_bias`` from a corpus sample ``texts`` (see the class docstring) so that these
        documents have ``target_terms`` active terms on average; replaces ``logit_shift``.

        ``max_surprisal`` caps ``-log pbar_v``: a term the LM never predicts here would otherwise get a
        bias so large that it fires wherever it is predicted at all. Run it under the autocast used in
        training so the statistics see the same numerics.
        """
        t0 = time.perf_counter()
        pbar, peak, tokens = corpus_term_statistics(self, texts, batch_size, show_progress_bar)
        surprisal = term_surprisal(pbar, max_surprisal)
        scores = peak + surprisal  # active iff log p - log pbar > tau at some pooled position
        tau = solve_tau(scores, target_terms)
        mean_active = float((scores > tau).sum(dim=1).float().mean())
        self.logit_shift = None
        self.set_term_bias(surprisal - tau)
        vocab = self.vocab
        fit = TermBiasFit(tau=tau, mean_active=mean_active, target_terms=float(target_terms), docs=int(peak.shape[0]),
                          tokens=tokens, clamped=int((surprisal >= float(max_surprisal)).sum()),
                          seconds=time.perf_counter() - t0,
                          suppressed=[vocab[i] for i in surprisal.topk(10, largest=False).indices.tolist()])
        logger.info("term bias fitted on %d documents (%d tokens) in %.1fs: tau %.3f, %.1f active terms per document "
                    "(target %g), %d terms clamped at surprisal %g; most predicted: %s", fit.docs, fit.tokens,
                    fit.seconds, fit.tau, fit.mean_active, fit.target_terms, fit.clamped, max_surprisal,
                    " ".join(fit.suppressed))
        return fit

    @property
    def bos_token_id(self) -> int | None:
        """The tokenizer's BOS, else the model config's (a row starts with it when there is one)."""
        bos = self.tokenizer.bos_token_id
        if bos is None:
            cfg = getattr(self.model, "config", None)
            bos = getattr(cfg, "bos_token_id", None)
        return bos if isinstance(bos, int) and 0 <= bos < self.dim else None

    def _token_ids(self, texts, side, max_length):
        enc = self.tokenizer(texts, truncation=True, max_length=self._max_length(side, max_length),
                             add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
        return enc["input_ids"]

    def _collate(self, ids, side):
        input_ids, attn, pool = echo_batch(ids, bos=self.bos_token_id, pad=self.tokenizer.pad_token_id,
                                           echo=self.echo)
        dev = self.device
        return {"input_ids": input_ids.to(dev), "attention_mask": attn.to(dev), "pool_mask": pool.to(dev)}

    # ------------------------------------------------------------------ LoRA
    @property
    def has_lora(self) -> bool:
        return hasattr(self.model, "peft_config")

    def add_lora(self, r: int = 16, lora_alpha: int = 32, lora_dropout: float = 0.0, target_modules="all-linear",
                 **kw) -> "DecoderSpladeEncoder":
        """Wrap the backbone in LoRA adapters (peft); only the adapters are trainable afterwards."""
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules, **kw)
        self.model = get_peft_model(self.model, cfg)
        return self

    # ------------------------------------------------------------------ persistence
    def lsr_config(self):
        cfg = super().lsr_config()
        cfg["echo"] = self.echo
        cfg["logit_shift"] = self.logit_shift
        cfg["adapter"] = getattr(self, "_saved_adapter", None)
        cfg["term_bias"] = TERM_BIAS_FILE if self.term_bias is not None else None
        return cfg

    def save(self, folder, merge_lora: bool = True) -> Path:
        """Save in HF layout. With LoRA: ``merge_lora=True`` folds the adapters into the weights (a plain
        checkpoint); ``False`` saves the base weights plus ``adapter/`` (peft's adapter files)."""
        self._saved_adapter = ADAPTER_DIR if (self.has_lora and not merge_lora) else None
        try:
            return super().save(folder, merge_lora=merge_lora)
        finally:
            self._saved_adapter = None

    def _save_model(self, folder: Path, merge_lora: bool = True, **kw) -> None:
        self._save_backbone(folder, merge_lora)
        stale = folder / TERM_BIAS_FILE
        if self.term_bias is None:
            stale.unlink(missing_ok=True)  # an older save into this folder must not come back on load
            return
        from safetensors.torch import save_file

        save_file({"term_bias": self.term_bias.detach().float().cpu().contiguous()}, str(folder / TERM_BIAS_FILE))

    def _save_backbone(self, folder: Path, merge_lora: bool) -> None:
        if not self.has_lora:
            self.model.save_pretrained(folder, safe_serialization=True)
            return
        if merge_lora:
            merged = copy.deepcopy(self.model).merge_and_unload()
            merged.save_pretrained(folder, safe_serialization=True)
            return
        base = copy.deepcopy(self.model).unload()
        base.save_pretrained(folder, safe_serialization=True)
        self.model.save_pretrained(folder / ADAPTER_DIR, safe_serialization=True)

    _auto_model = "AutoModelForCausalLM"

    @classmethod
    def _from_folder(cls, folder: Path, **settings) -> "DecoderSpladeEncoder":
        settings.pop("st_layout", None)
        dtype = settings.pop("dtype", None)
        adapter = settings.pop("adapter", None)
        lora = settings.pop("lora", None)
        if isinstance(settings.get("term_bias"), str):  # the file lsr_config.json names
            settings["term_bias"] = _load_term_bias(folder, settings["term_bias"])
        model, tokenizer = cls._load_backbone(folder, dtype)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, folder / adapter, is_trainable=True)
        enc = cls(model, tokenizer, **settings)
        if lora:
            enc.add_lora(**(lora if isinstance(lora, dict) else {}))
        return enc


def _load_term_bias(folder: Path, name: str) -> torch.Tensor:
    """The bias in ``folder / name`` (the file ``lsr_config.json`` names under ``"term_bias"``)."""
    path = folder / name
    if not path.exists():
        raise FileNotFoundError(f"{folder / LSR_CONFIG} names a term bias {name!r}, but {path} does not exist")
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    if "term_bias" not in tensors:
        raise ValueError(f"{path}: expected a tensor named 'term_bias', found {sorted(tensors)}")
    return tensors["term_bias"]
