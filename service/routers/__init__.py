"""One APIRouter per resource: collections, documents, search, encode, ops."""
