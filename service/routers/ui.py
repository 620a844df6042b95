"""The search page at ``/``: static HTML, CSS and JavaScript from the package (``service/static/``).

The page holds no data: its script calls the same REST routes as any client (collections, search
with ``explain``, encode), sending the API key the user typed once (kept in the tab's session
storage). So the page itself is open even when reads need a key; the data behind it is not. Every
response carries a strict Content-Security-Policy: scripts, styles and requests from this origin
only, no inline script, no frames, no plugins.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-cache",
}
_TYPES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}


def _asset(name: str) -> bytes:
    return resources.files("lsr.service").joinpath("static", name).read_bytes()


# read once: the files ship with the package and do not change while it runs
_ASSETS = {name: _asset(name) for name in _TYPES}


@router.api_route("/", methods=["GET", "HEAD"])
async def page() -> Response:
    """The search page."""
    return Response(_ASSETS["index.html"], media_type=_TYPES["index.html"], headers=HEADERS)


@router.api_route("/ui/{name}", methods=["GET", "HEAD"])
async def asset(name: str) -> Response:
    """The page's script and style sheet."""
    if name not in _ASSETS or name == "index.html":
        raise HTTPException(404, f"no such file: {name}")
    return Response(_ASSETS[name], media_type=_TYPES[name], headers=HEADERS)


@router.get("/favicon.ico")
async def favicon() -> Response:
    """No icon (browsers ask for one; a 204 keeps their consoles free of a 404)."""
    return Response(status_code=204, headers=HEADERS)
