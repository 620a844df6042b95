"""The evaluation protocol's splits: a fixed, seeded hold-out of a train split for model selection
(``train-dev``) and its complement for fitting (``train-fit``), and the rule that test judgments
are never read for training or selection (see ``eval/PROTOCOL.md``).

A dataset without a dev split (SciFact) gets one from its train queries: the queries are sorted by
id and permuted by ``numpy.random.default_rng(HOLDOUT_SEED)``; the first ``HOLDOUT_FRACTION`` of the
permutation is ``train-dev``, the rest ``train-fit``. The split depends on the query ids alone, so
every run, machine and config agrees on it.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

__all__ = [
    "HOLDOUT_FRACTION", "HOLDOUT_SEED", "VIRTUAL_SPLITS", "ProtocolError",
    "heldout_split", "is_test_split", "resolve_split", "check_selection_split",
]

HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 20_241_107
# virtual split name -> (qrels split it is cut from, which side of the hold-out)
VIRTUAL_SPLITS = {"train-dev": ("train", "dev"), "train-fit": ("train", "fit")}


class ProtocolError(ValueError):
    """A config or call that would read test judgments for training or model selection."""


def heldout_split(qids: Iterable[str], fraction: float = HOLDOUT_FRACTION,
                  seed: int = HOLDOUT_SEED) -> tuple[list[str], list[str]]:
    """``(fit, dev)``: disjoint, sorted lists whose union is the distinct ``qids``.

    ``dev`` holds ``round(fraction * n)`` queries (at least one when ``n >= 2`` and ``fraction > 0``),
    chosen by a permutation seeded with ``seed`` over the sorted ids; the input order does not matter.

    >>> heldout_split(["q3", "q1", "q2", "q4", "q5"], 0.4, seed=1) == heldout_split(["q5", "q4", "q3", "q2", "q1"], 0.4, seed=1)
    True
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"hold-out fraction must be in [0, 1), got {fraction}")
    ids = sorted(set(str(q) for q in qids))
    n = len(ids)
    n_dev = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        n_dev = min(max(n_dev, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    dev = sorted(ids[i] for i in perm[:n_dev])
    dev_set = set(dev)
    return [q for q in ids if q not in dev_set], dev


def is_test_split(split: str) -> bool:
    """True for ``test`` and names built on it (``test-a``, ``test_2019``)."""
    s = split.strip().lower()
    return s == "test" or s.startswith(("test-", "test_", "test."))


def check_selection_split(split: str, what: str) -> str:
    """Return ``split`` if training or model selection may read it, else raise :class:`ProtocolError`."""
    if is_test_split(split):
        raise ProtocolError(
            f"{what} split {split!r} holds test judgments, which training and model selection never read "
            "(eval/PROTOCOL.md): select on a dev split ('dev', or 'train-dev', the seeded hold-out of train) "
            "and read test once, at the end, with lsr-eval")
    return split


def resolve_split(split: str) -> tuple[str, str | None]:
    """``(qrels split to read, hold-out side or None)`` for a split name, virtual or not."""
    if split in VIRTUAL_SPLITS:
        return VIRTUAL_SPLITS[split]
    return split, None
