"""lsr.service: the FastAPI search service."""
