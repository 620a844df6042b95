"""Request and response models of the REST API (pydantic 2); bounds here are the hard caps."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]
DocId = Annotated[str, Field(min_length=1, max_length=512)]
CollectionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]

MAX_TEXT = 100_000
MAX_K = 1000
MAX_BATCH_DOCS = 1000
MAX_BATCH_QUERIES = 256


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(BaseModel):
    error: str = Field(description="machine-readable error kind")
    detail: str = Field(description="what is wrong with the request")


# ---------------------------------------------------------------------------- collections
class IndexParams(_Strict):
    """Seismic build parameters; omitted ones take lsr.index's defaults."""

    n_postings: int | None = Field(None, ge=1, le=10_000_000, description="postings kept per term")
    centroid_fraction: float | None = Field(None, gt=0, le=1, description="blocks per posting list, as a fraction")
    summary_energy: float | None = Field(None, gt=0, le=1, description="share of a block summary's mass kept")
    pruning: Literal["global", "fixed"] | None = Field(None, description="posting pruning: one global threshold or top-n per term")
    max_fraction: float | None = Field(None, ge=1, le=1000, description="global pruning: longest list as a multiple of n_postings")
    min_cluster_size: int | None = Field(None, ge=1, le=100_000)
    doc_cut: int | None = Field(None, ge=1, le=100_000, description="clustering looks at a document's top doc_cut terms")
    nknn: int | None = Field(None, ge=0, le=64, description="neighbours per document in the kNN graph")


class CollectionCreate(_Strict):
    name: CollectionName
    model: str | None = Field(
        None,
        max_length=256,
        description="encoder for text (short name or folder). Omitted: the server's default model. "
        "null: no model (documents and queries must carry vectors; give `dim`).",
    )
    dim: int | None = Field(None, ge=1, le=10_000_000, description="vocabulary size; implied by the model")
    index: IndexParams = Field(default_factory=IndexParams)


class SegmentInfo(BaseModel):
    name: str
    kind: str
    documents: int
    deleted: int
    bytes: int


class CollectionInfo(BaseModel):
    name: str
    model: str | None
    dim: int
    index: dict[str, Any]
    documents: int
    fresh_documents: int
    segments: list[SegmentInfo]
    bytes: int
    created_at: float


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


class Deleted(BaseModel):
    deleted: str


class MergeResult(BaseModel):
    merged: bool
    collection: CollectionInfo


# ---------------------------------------------------------------------------- documents
class _VectorFields(_Strict):
    vector: dict[Annotated[str, Field(min_length=1, max_length=256)], Weight] | None = Field(
        None, description="sparse vector as {token: weight} (or {\"term id\": weight} for a collection without a model)"
    )
    vector_ids: dict[Annotated[int, Field(ge=0)], Weight] | None = Field(
        None, description="sparse vector as {term id: weight}"
    )


class DocumentIn(_VectorFields):
    id: DocId | int
    text: str | None = Field(None, max_length=MAX_TEXT, description="stored; encoded when no vector is given")
    metadata: dict[str, Any] | None = None


class DocumentsUpsert(_Strict):
    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_BATCH_DOCS)


class UpsertResult(BaseModel):
    upserted: int
    ids: list[str]
    seq: int


class DeleteRequest(_Strict):
    ids: list[DocId | int] = Field(min_length=1, max_length=MAX_BATCH_DOCS)


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
    k: int = Field(10, ge=1, le=MAX_K)
    query_cut: int | None = Field(None, ge=1, le=10_000, description="Seismic: query terms kept (top by weight)")
    heap_factor: float | None = Field(
        None, gt=0, le=1, description="Seismic: a block is scored when its summary reaches heap_factor x the k-th score"
    )
    explain: bool = Field(False, description="add matching terms and their contributions to each hit")
    include_text: bool = Field(True, description="return the stored text with each hit")


class QueryIn(_VectorFields):
    text: str | None = Field(None, max_length=MAX_TEXT)


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
    metadata: dict[str, Any] | None = None
    text: str | None = None
    explanation: Explanation | None = None


class SearchResponse(BaseModel):
    hits: list[Hit]
    took_ms: float


class BatchSearchResponse(BaseModel):
    results: list[SearchResponse]
    took_ms: float


# ---------------------------------------------------------------------------- encode
class EncodeRequest(_Strict):
    texts: list[Annotated[str, Field(max_length=MAX_TEXT)]] = Field(min_length=1, max_length=64)
    model: str | None = Field(None, max_length=256, description="a model the server serves; default: its default")
    kind: Literal["query", "document"] = "query"
    top_k: int | None = Field(None, ge=1, le=100_000, description="keep each vector's top_k weights")


class EncodeResponse(BaseModel):
    model: str
    vectors: list[dict[str, float]]


class Health(BaseModel):
    status: str
    collections: int | None = None
    phase: str | None = None
