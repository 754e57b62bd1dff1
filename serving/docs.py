"""The API's documentation pages (Swagger UI at /docs, ReDoc at /redoc) with their assets served locally.

FastAPI's own pages load their JavaScript and CSS from a CDN, so on a host without internet they
are blank. The assets come from the installed ``fastapi-offline`` package (the serving extra) and
are mounted as static files under ``DOCS_ASSETS``: nothing is fetched at run time.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

DOCS_ASSETS = "/docs-assets"


def assets_directory() -> str:
    """The installed package's static folder: swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon."""
    return str(files("fastapi_offline") / "static")


def add_offline_docs(app: FastAPI) -> None:
    """/docs and /redoc on the app's OpenAPI document, assets from DOCS_ASSETS (create the app with docs_url=None)."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets_directory()), name="docs-assets")
    title = f"{app.title} - API reference"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=title,
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            oauth2_redirect_url=None,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url,
            title=title,
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
