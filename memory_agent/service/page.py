"""The web page at ``/``: a static HTML file that calls the REST API with the key the user pastes."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

__all__ = ["mount_page", "PAGE"]

PAGE = Path(__file__).parent / "static" / "index.html"


def mount_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")
