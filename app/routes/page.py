"""``/``: the web page (plain HTML/JS from app/static)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    """The interactive page: paint a reference mask, segment targets, match points."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
