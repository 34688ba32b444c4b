"""Swagger UI at /docs without a CDN: its assets come from the fastapi-offline package."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

SWAGGER_STATIC = "/static/swagger"


def install_offline_docs(app: FastAPI, docs_url: str = "/docs") -> None:
    """Serve Swagger UI at `docs_url` with its JS, CSS and favicon under /static/swagger.

    Create the app with `docs_url=None, redoc_url=None`: FastAPI's own /docs (which loads
    its assets from a CDN) would otherwise be registered first and win.
    """
    openapi_url = app.openapi_url
    if openapi_url is None:
        raise ValueError("offline docs need the app's OpenAPI schema (openapi_url is None)")
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url
    app.mount(
        SWAGGER_STATIC,
        StaticFiles(packages=[("fastapi_offline", "static")]),
        name="swagger-static",
    )

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{SWAGGER_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{SWAGGER_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{root}{SWAGGER_STATIC}/favicon.png",
            oauth2_redirect_url=root + oauth2_redirect_url if oauth2_redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    app.add_api_route(docs_url, swagger_ui, methods=["GET"], include_in_schema=False)
    if oauth2_redirect_url:

        async def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

        app.add_api_route(
            oauth2_redirect_url, swagger_ui_redirect, methods=["GET"], include_in_schema=False
        )
