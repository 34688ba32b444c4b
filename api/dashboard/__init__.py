"""The dashboard: one static page at `/` that reads the REST API, with no build step.

Its HTML, JS modules and CSS live in `static/` beside this file; plotly.js comes from the
installed `plotly` package, so the page works offline (no CDN).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = "/static/dashboard"
PLOTLY_JS = "/static/plotly.min.js"


def _plotly_js() -> Path:
    path = Path(str(files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():
        raise RuntimeError(f"plotly.js is missing from the installed plotly package ({path})")
    return path


def install_dashboard(app: FastAPI) -> None:
    """Serve the page at `/`, its files under /static/dashboard and plotly.js."""
    plotly_js = _plotly_js()
    index = (Path(__file__).parent / "static" / "index.html").read_text(encoding="utf-8")
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    def dashboard() -> HTMLResponse:
        return HTMLResponse(index, headers={"Cache-Control": "no-cache"})

    @router.get(PLOTLY_JS)
    def plotly() -> FileResponse:
        # Versioned by the installed package: a day of caching is safe and saves 4.8 MB a load.
        return FileResponse(
            plotly_js, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
        )

    app.include_router(router)
    app.mount(STATIC, StaticFiles(packages=[("api.dashboard", "static")]), name="dashboard")
