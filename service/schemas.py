"""Request and response models of the REST API (pydantic 2); bounds here are the hard caps."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from lsr.index.base import MAX_K  # the hard cap on k; a server answers up to its --max-k of it

from lsr.index.filter import MetadataFilter

from .collection import MAX_DIM, MAX_WEIGHT  # the storage layer's caps, checked here at the edge

MAX_TEXT = 100_000
MAX_BATCH_DOCS = 1000
MAX_BATCH_QUERIES = 256
MAX_TERM_ID = MAX_DIM - 1  # term ids are int32 in every index


def _utf8(value: str) -> str:
    """Reject text that cannot be stored as UTF-8 (lone surrogates from ``\\ud800`` escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text is not valid Unicode (unpaired surrogate at position {exc.start})") from None
    return value


def _plain_json(value: Any) -> Any:
    if value is not None:
        try:
            json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (ValueError, UnicodeEncodeError):
            raise ValueError("metadata must be plain JSON (finite numbers, valid Unicode)") from None
    return value


def _filter(value: Any) -> Any:
    if value is not None:
        MetadataFilter.parse(value)  # a FilterError (ValueError) names the field at fault
    return value


Text = Annotated[str, AfterValidator(_utf8)]
Weight = Annotated[float, Field(gt=0, le=MAX_WEIGHT, allow_inf_nan=False)]
TermId = Annotated[int, Field(ge=0, le=MAX_TERM_ID)]
Token = Annotated[Text, Field(min_length=1, max_length=256)]
DocId = Annotated[Text, Field(min_length=1, max_length=512)]
CollectionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
Metadata = Annotated[dict[str, Any] | None, AfterValidator(_plain_json)]
Filter = Annotated[dict[str, Any] | None, AfterValidator(_filter)]
DenseVector = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]] | None, Field(max_length=4096)]
_WEIGHT_SCHEMA = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_WEIGHT}
# JSON object keys are strings: say in the schema that these are decimal term ids (< 10^9 < 2^31)
IdVector = Annotated[
    dict[TermId, Weight],
    WithJsonSchema({"type": "object", "propertyNames": {"pattern": "^(0|[1-9][0-9]{0,8})$"},
                    "additionalProperties": _WEIGHT_SCHEMA}),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(BaseModel):
    error: str = Field(description="machine-readable error kind")
    detail: str = Field(description="what is wrong with the request")


# ---------------------------------------------------------------------------- collections
class IndexParams(_Strict):
    """Seismic build parameters; omitted ones take lsr.index's defaults."""

    n_postings: int | None = Field(default=None, ge=1, le=10_000_000, description="postings kept per term")
    centroid_fraction: float | None = Field(default=None, gt=0, le=1, description="blocks per posting list, as a fraction")
    summary_energy: float | None = Field(default=None, gt=0, le=1, description="share of a block summary's mass kept")
    pruning: Literal["global", "fixed"] | None = Field(default=None, description="posting pruning: one global threshold or top-n per term")
    max_fraction: float | None = Field(default=None, ge=1, le=1000, description="global pruning: longest list as a multiple of n_postings")
    min_cluster_size: int | None = Field(default=None, ge=1, le=100_000)
    doc_cut: int | None = Field(default=None, ge=1, le=100_000, description="clustering looks at a document's top doc_cut terms")
    nknn: int | None = Field(default=None, ge=0, le=64, description="neighbours per document in the kNN graph")


class CollectionCreate(_Strict):
    name: CollectionName
    model: Text | None = Field(
        None,
        max_length=256,
        description="encoder for text (short name or folder). Omitted: the server's default model. "
        "null: no model (documents and queries must carry vectors; give `dim`).",
    )
    dim: int | None = Field(default=None, ge=1, le=MAX_DIM, description="vocabulary size; implied by the model")
    index: IndexParams = Field(default_factory=IndexParams)
    dense_model: Text | None = Field(
        default=None, max_length=256, description="a sentence-transformers model (e.g. minilm) whose embedding of "
        "each document is kept beside its sparse vector, for mode=hybrid searches")


class SegmentInfo(BaseModel):
    name: str
    kind: str
    documents: int
    deleted: int
    bytes: int


class CollectionInfo(BaseModel):
    name: str
    status: Literal["ok", "degraded", "failed"] = "ok"
    reason: str | None = Field(default=None, description="why a failed collection could not be opened (repair it "
                               "with `lsr repair NAME`), or why a degraded one answers only in part")
    model: str | None = None
    dim: int | None = None
    dense_model: str | None = None
    index: dict[str, Any] = Field(default_factory=dict)
    documents: int = 0
    fresh_documents: int = 0
    segments: list[SegmentInfo] = Field(default_factory=list)
    bytes: int = 0
    wal_bytes: int = 0
    created_at: float | None = None


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


class Deleted(BaseModel):
    deleted: str


class MergeResult(BaseModel):
    merged: bool
    collection: CollectionInfo


# ---------------------------------------------------------------------------- documents
class _VectorFields(_Strict):
    vector: dict[Token, Weight] | None = Field(
        None, description="sparse vector as {token: weight} (or {\"term id\": weight} for a collection without a "
        f"model); weights finite, > 0 and <= {MAX_WEIGHT:g}"
    )
    vector_ids: IdVector | None = Field(
        None, description="sparse vector as {term id: weight}; ids below the collection's dim"
    )


class DocumentIn(_VectorFields):
    id: DocId | Annotated[int, Field(ge=0, le=2**63 - 1)]
    text: Text | None = Field(default=None, max_length=MAX_TEXT, description="stored; encoded when no vector is given")
    metadata: Metadata = None
    dense_vector: DenseVector = Field(default=None, description="the document's dense embedding (a collection with "
                                      "a dense_model); omitted: its text is embedded")


class DocumentsUpsert(_Strict):
    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_BATCH_DOCS)


class UpsertResult(BaseModel):
    upserted: int
    ids: list[str]
    seq: int


class DeleteRequest(_Strict):
    ids: list[DocId | Annotated[int, Field(ge=0, le=2**63 - 1)]] = Field(min_length=1, max_length=MAX_BATCH_DOCS)


class DeleteResult(BaseModel):
    deleted: list[str]
    not_found: list[str]


class Document(BaseModel):
    id: str
    text: str | None = None
    metadata: dict[str, Any] | None = None
    vector: dict[str, float] | None = None


# ---------------------------------------------------------------------------- search
class Knobs(_Strict):
    k: int = Field(10, ge=1, le=MAX_K, description="hits to return, at most the server's --max-k (default 1000)")
    query_cut: int | None = Field(default=None, ge=1, le=10_000, description="Seismic: query terms kept (top by weight)")
    heap_factor: float | None = Field(
        None, gt=0, le=1, description="Seismic: a block is scored when its summary reaches heap_factor x the k-th score"
    )
    explain: bool = Field(False, description="add matching terms and their contributions to each hit")
    mode: Literal["sparse", "hybrid"] = Field(
        "sparse", description="hybrid: fuse the sparse ranking with the dense one (a collection with a dense_model)")
    alpha: float | None = Field(default=None, ge=0, le=1, description="hybrid: weight of the dense side in a convex "
                                "combination of per-query min-max normalised scores (0: sparse only; default 0.5)")
    fusion: Literal["convex", "rrf"] = Field("convex", description="hybrid: convex combination, or reciprocal rank "
                                             "fusion (k=60)")
    candidates: int | None = Field(default=None, ge=1, le=MAX_K, description="hybrid: each side's top list "
                                   "(default max(k, 100)); the fused ranking is over their union")
    filter: Filter = Field(
        default=None, description="rank only documents whose metadata match: {field: value} (equality), "
        "{field: [values]} (any of), {field: {gte|gt|lte|lt: bound}} (range; numbers, or strings such as ISO "
        "dates); fields are top-level metadata keys, conditions are combined with AND")
    include_text: bool = Field(True, description="return the stored text with each hit")
    allow_partial: bool = Field(False, description="sharded collections (lsr serve --cluster): when a shard has no "
                                "live replica, answer from the others with `partial: true` instead of a 503")


class QueryIn(_VectorFields):
    text: Text | None = Field(default=None, max_length=MAX_TEXT, description="encoded with the collection's model; "
                              "a text with no vocabulary terms (empty, whitespace, emoji only) is a 422. With "
                              "mode=hybrid and a sparse vector given, the text is embedded for the dense side only")
    dense_vector: DenseVector = Field(default=None, description="mode=hybrid: the query's dense embedding "
                                      "(omitted: the text is embedded by the collection's dense model)")


class SearchRequest(Knobs, QueryIn):
    pass


class BatchSearchRequest(Knobs):
    queries: list[QueryIn] = Field(min_length=1, max_length=MAX_BATCH_QUERIES)


class TermContribution(BaseModel):
    term: str
    term_id: int
    query_weight: float
    doc_weight: float
    contribution: float


class Explanation(BaseModel):
    score: float
    terms: list[TermContribution]


class Hit(BaseModel):
    id: str
    score: float
    sparse_score: float | None = Field(default=None, description="mode=hybrid: the sparse dot product")
    dense_score: float | None = Field(default=None, description="mode=hybrid: the dense dot product")
    metadata: dict[str, Any] | None = None
    text: str | None = None
    explanation: Explanation | None = None


class SearchResponse(BaseModel):
    hits: list[Hit]
    took_ms: float
    partial: bool | None = Field(default=None, description="present and true when shards were left out "
                                 "(allow_partial); their ids are in missing_shards")
    missing_shards: list[int] | None = None


class BatchSearchResponse(BaseModel):
    results: list[SearchResponse]
    took_ms: float


# ---------------------------------------------------------------------------- encode
class EncodeRequest(_Strict):
    texts: list[Annotated[Text, Field(max_length=MAX_TEXT)]] = Field(min_length=1, max_length=64)
    model: Text | None = Field(default=None, max_length=256, description="a model the server serves; default: its default")
    kind: Literal["query", "document"] = "query"
    top_k: int | None = Field(default=None, ge=1, le=100_000, description="keep each vector's top_k weights")


class EncodeResponse(BaseModel):
    model: str
    vectors: list[dict[str, float]]


class Health(BaseModel):
    status: str = Field(description="ok (liveness); ready, degraded (some collections failed) or loading")
    collections: int | None = None
    phase: str | None = None
    failed: dict[str, str] | None = Field(default=None, description="failed collections and why")
    models: list[str] | None = Field(default=None, description="models loaded (and warmed up) before ready")
