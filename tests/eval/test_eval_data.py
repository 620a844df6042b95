"""lsr.eval.data: BEIR folders (plain and gz), errors naming file and line, ir-datasets ids."""

from __future__ import annotations

import gzip
import json
import logging
import shutil

import pytest

from lsr.eval.data import DatasetError, load_beir, load_dataset, load_irds, read_qrels

from eval_data_paths import MSMARCO, SCIFACT


def test_plain_and_gz_corpora_load_the_same(scifact_small, scifact_small_gz):
    a = load_beir(scifact_small, "test")
    b = load_beir(scifact_small_gz, "test")
    assert a.doc_ids == b.doc_ids and a.texts == b.texts and a.titles == b.titles
    assert a.queries == b.queries and a.qrels == b.qrels
    assert len(a.queries) == 20 and not a.missing_docs
    assert all(d in set(a.doc_ids) for rel in a.qrels.values() for d in rel)


def test_full_scifact_counts():
    if not SCIFACT.exists():
        pytest.skip("SciFact not available")
    ds = load_dataset(SCIFACT, "test")
    assert (len(ds), len(ds.queries), sum(map(len, ds.qrels.values()))) == (5183, 300, 339)
    assert ds.doc_texts()[0].startswith(ds.titles[0] + " ")


def test_unicode_line_separators_do_not_split_lines():
    # Four msmarco-sample passages hold U+2028/U+2029; str.splitlines() would break their JSON.
    if not MSMARCO.exists():
        pytest.skip("msmarco-sample not available")
    ds = load_beir(MSMARCO, "test")
    assert len(ds) == 5000
    assert any(("\u2028" in t) or ("\u2029" in t) or ("\x85" in t) for t in ds.texts)


def test_malformed_corpus_line_names_file_and_line(tmp_path, scifact_small):
    d = tmp_path / "bad"
    shutil.copytree(scifact_small, d)
    lines = (d / "corpus.jsonl").read_text(encoding="utf-8").split("\n")
    lines[6] = '{"_id": "x", "text": "unterminated'
    (d / "corpus.jsonl").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"corpus\.jsonl:7: invalid JSON"):
        load_beir(d, "test")


def test_malformed_gz_corpus_line_names_file_and_line(tmp_path):
    d = tmp_path / "bad"
    (d / "qrels").mkdir(parents=True)
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (d / "queries.jsonl").write_text('{"_id": "q1", "text": "hi"}\n')
    with gzip.open(d / "corpus.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write('{"_id": "d1", "text": "a"}\n{"text": "no id"}\n')
    with pytest.raises(DatasetError, match=r"corpus\.jsonl\.gz:2: record has no '_id'"):
        load_beir(d, "test")


def test_malformed_qrels_and_queries(tmp_path, scifact_small):
    d = tmp_path / "bad"
    shutil.copytree(scifact_small, d)
    q = d / "qrels" / "test.tsv"
    q.write_text(q.read_text() + "only\ttwo\n", encoding="utf-8")
    n = len(q.read_text().rstrip("\n").split("\n"))
    with pytest.raises(DatasetError, match=rf"test\.tsv:{n}: expected 3 columns"):
        load_beir(d, "test")
    q.write_text("query-id\tcorpus-id\tscore\n1\t2\tgood\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"test\.tsv:2: relevance 'good'"):
        read_qrels(q)
    shutil.copy(scifact_small / "qrels" / "test.tsv", q)
    (d / "queries.jsonl").write_text('{"_id": "1", "text": "ok"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"queries\.jsonl:2: expected a JSON object"):
        load_beir(d, "test")


def test_missing_files_are_named(tmp_path, scifact_small):
    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        load_dataset(tmp_path / "nope", "test")
    with pytest.raises(FileNotFoundError, match=r"qrels/dev\.tsv is missing \(splits here: \['test'\]\)"):
        load_beir(scifact_small, "dev")
    d = tmp_path / "noc"
    shutil.copytree(scifact_small, d)
    (d / "corpus.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="no corpus.jsonl or corpus.jsonl.gz"):
        load_beir(d, "test")
    (d / "queries.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="queries.jsonl"):
        load_beir(d, "test")


def test_judged_docs_absent_from_corpus_are_reported(tmp_path, scifact_small, caplog):
    d = tmp_path / "miss"
    shutil.copytree(scifact_small, d)
    q = d / "qrels" / "test.tsv"
    first_q = q.read_text().split("\n")[1].split("\t")[0]
    q.write_text(q.read_text() + f"{first_q}\tNOT-A-DOC\t1\nNOQUERY\tNOT-A-DOC\t1\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="lsr.eval.data"):
        ds = load_beir(d, "test")
    assert (first_q, "NOT-A-DOC") in ds.missing_docs
    assert ds.missing_queries == ["NOQUERY"] and "NOQUERY" not in ds.qrels
    assert "not in the corpus" in caplog.text and "NOT-A-DOC" in caplog.text
    assert ds.summary()["missing_docs"] == 2


def test_subset_keeps_judged_docs(scifact_small):
    ds = load_beir(scifact_small, "test")
    sub = ds.subset(n_docs=40, n_queries=5)
    assert len(sub.queries) == 5 and len(sub) == 40
    assert all(d in set(sub.doc_ids) for rel in sub.qrels.values() for d in rel)


# ---------------------------------------------------------------------------------- ir-datasets
@pytest.fixture(autouse=True, scope="module")
def _irds_home(tmp_path_factory):
    # ir-datasets builds a docstore under its home; keep it out of ~/.ir_datasets and fresh per run.
    mp = pytest.MonkeyPatch()
    mp.setenv("IR_DATASETS_HOME", str(tmp_path_factory.mktemp("irds_home")))
    yield
    mp.undo()


def _register(name: str, folder):
    """Register a local BEIR folder through ir-datasets' own classes (as its beir module does)."""
    ir_datasets = pytest.importorskip("ir_datasets")
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.datasets.beir import BeirDocs, BeirQrels, BeirQueries, BeirTitleDoc
    from ir_datasets.formats import GenericQuery
    from ir_datasets.util import GzipExtract, LocalDownload

    if name in ir_datasets.registry:
        return
    corpus = folder / "corpus.jsonl"
    docs_dlc = LocalDownload(corpus) if corpus.exists() else GzipExtract(LocalDownload(folder / "corpus.jsonl.gz"))
    docs = BeirDocs(name, docs_dlc, BeirTitleDoc)
    queries = BeirQueries(name, LocalDownload(folder / "queries.jsonl"), GenericQuery)
    qrels = BeirQrels(LocalDownload(folder / "qrels" / "test.tsv"), qrels_defs={})
    ir_datasets.registry.register(name, Dataset(docs))
    ir_datasets.registry.register(f"{name}/test", Dataset(docs, queries, qrels))


def test_irds_id_matches_the_folder(scifact_small_gz):
    _register("lsr-test/scifact-small", scifact_small_gz)
    folder = load_beir(scifact_small_gz, "test")
    for ds in (load_dataset("lsr-test/scifact-small/test"), load_dataset("lsr-test/scifact-small", "test")):
        assert ds.doc_ids == folder.doc_ids
        assert ds.doc_texts() == folder.doc_texts()
        assert ds.queries == folder.queries and ds.qrels == folder.qrels
        assert ds.source == "ir_datasets:lsr-test/scifact-small/test"


def test_irds_errors(scifact_small):
    pytest.importorskip("ir_datasets")
    with pytest.raises(ValueError, match="unknown dataset 'no-such/dataset'"):
        load_irds("no-such/dataset", "test")
    _register("lsr-test/scifact-plain", scifact_small)
    with pytest.raises(ValueError, match="lacks docs, queries or qrels"):
        load_irds("lsr-test/scifact-plain")
