"""GET /: the web console, a static page that calls the public API from the browser (api/static/console)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.docs import STATIC

router = APIRouter(tags=["console"])


@router.get("/", include_in_schema=False)
def read_console() -> FileResponse:
    """The console page; it asks for the admin token itself and keeps it for the browser session."""
    return FileResponse(STATIC / "console" / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico", include_in_schema=False)
def read_favicon() -> FileResponse:
    """The icon browsers ask for on their own."""
    return FileResponse(STATIC / "vendor" / "swagger-ui" / "favicon-32x32.png", media_type="image/png")
