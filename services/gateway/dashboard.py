"""The operations dashboard: one static page that polls GET /v1/operations/overview."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

PAGE = Path(__file__).parent / "dashboard.html"
# The page holds its own script and style, and nothing may frame it or load from elsewhere.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def dashboard_handler() -> Callable[[web.Request], Awaitable[web.Response]]:
    """Serves the page, read once here so a missing file fails at start, not on a visit."""
    page = PAGE.read_text()

    async def dashboard(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", headers=HEADERS)

    return dashboard
