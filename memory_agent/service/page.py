"""The web page at ``/``: static HTML, CSS and JS that call the REST API with the key the user pastes.

No build step and nothing from a CDN: the three files live in ``static/`` (package
data) and are served from here. Every response carries a strict
Content-Security-Policy (scripts and styles only from this origin, no inline
script, requests only to this origin), so even a memory text that reached the
DOM as markup could not run; the page itself only ever inserts memory text as
text nodes.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse

__all__ = ["mount_page", "PAGE", "STATIC"]

STATIC = Path(__file__).parent / "static"
PAGE = STATIC / "index.html"

_ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def mount_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html; charset=utf-8", headers=_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        if name not in _ASSETS:  # a fixed list: no path from the request reaches the file system
            raise HTTPException(404, "not found")
        return FileResponse(STATIC / name, media_type=f"{_ASSETS[name]}; charset=utf-8", headers=_HEADERS)
