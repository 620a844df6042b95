"""One APIRouter per resource: collections, documents, search, encode, ops (health, ready, metrics, docs)."""

from __future__ import annotations

from typing import Any

from .. import schemas as S

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": S.Error, "description": "bad request"},
    401: {"model": S.Error, "description": "API key missing"},
    403: {"model": S.Error, "description": "API key wrong"},
    404: {"model": S.Error, "description": "not found"},
    413: {"model": S.Error, "description": "request body too large"},
    422: {"model": S.Error, "description": "invalid input"},
    503: {"model": S.Error, "description": "overloaded (see Retry-After), not ready, or the collection failed"},
    507: {"model": S.Error, "description": "the server's disk is full; nothing was written"},
}
