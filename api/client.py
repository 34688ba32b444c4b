"""A Python client of the service for notebooks and scripts; the `nas` CLI uses it too.

    from api.client import Client

    nas = Client("http://127.0.0.1:8000")
    job = nas.wait(nas.submit({"name": "quick", "dataset": "builtin:stdlib"})["id"])
    nas.front(job["id"], frame=True)  # a pandas DataFrame (pip install pandas)

Refusals raise `ApiError` with the server's problems as `field: message` lines; an
unreachable server raises httpx's own `TransportError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import pandas as pd
    from pydantic import BaseModel

FINAL = ("completed", "failed", "cancelled")
PAGE = 1000  # the candidates endpoint's largest page
BUDGETS = ("budget_s", "budget_steps", "budget_flops")

Json = dict[str, Any]
# Where a field is in the file a request came from: its line (0: not in the file) and how to
# say it, `job.yaml, line 4: ` (or `job.yaml: `).
Locate = Callable[[Sequence[str]], tuple[int, str]]


def problems(detail: Any, locate: Locate | None = None) -> list[str]:
    """The server's refusal, one line per problem: `field: message`, the field named once (by
    the error's `loc`, without `body` / `query`); with `locate`, after where it is in the file,
    in the file's order."""
    if not isinstance(detail, list):
        return [str(detail)]
    lines = []
    for item in detail:
        loc = [str(part) for part in (item.get("loc") or [])[1:]]
        field = ".".join(loc)
        message = str(item.get("msg", "")).removeprefix("Value error, ")
        while field and message.startswith(f"{field}: "):  # an older server's `field: field: `
            message = message.removeprefix(f"{field}: ")
        line, where = locate(loc) if locate else (0, "")
        lines.append((line, f"{where}{field}: {message}" if field else f"{where}{message}"))
    return [text for _, text in sorted(lines, key=lambda pair: pair[0])]


class ApiError(Exception):
    """The server refused a request: its status code, and its problems as `field: message`
    lines (`detail` as the server sent it)."""

    def __init__(self, status_code: int, problems: list[str], detail: Any) -> None:
        super().__init__(f"{status_code}: {'; '.join(problems)}")
        self.status_code, self.problems, self.detail = status_code, problems, detail


def resolve_dataset(config: Json, base: Path) -> Json:
    """A job config whose relative `text:` / `tokens:` path is made relative to `base` (the
    job file's folder), wherever the server runs."""
    dataset = config.get("dataset")
    if isinstance(dataset, str) and dataset.partition(":")[0] in ("text", "tokens"):
        scheme, _, path = dataset.partition(":")
        if path and not Path(path).expanduser().is_absolute():
            return {**config, "dataset": f"{scheme}:{(base / path).resolve()}"}
    return config


def merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> Json:
    """`changes` over `base`, section by section. A budget given replaces the base's: a trial
    has one (budget_s, budget_steps or budget_flops)."""
    merged = dict(base)
    if any(key in changes for key in BUDGETS):
        merged = {key: value for key, value in merged.items() if key not in BUDGETS}
    for key, value in changes.items():
        below = merged.get(key)
        both = isinstance(value, Mapping) and isinstance(below, Mapping)
        merged[key] = merge(below, value) if both else value
    return merged


def _frame(rows: Iterable[Json]) -> pd.DataFrame:
    """Records as a DataFrame, each candidate's `features` as `feature.<name>` columns."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("frame=True needs pandas: pip install pandas") from exc
    flat = [
        {key: value for key, value in row.items() if key != "features"}
        | {f"feature.{name}": value for name, value in (row.get("features") or {}).items()}
        for row in rows
    ]
    return pd.DataFrame(flat)


class Client:
    """The service's API (`{server}/api/v1`), one connection pool; usable as a context manager."""

    def __init__(
        self,
        server: str,
        token: str | None = None,
        timeout: float = 120,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self._http = httpx.Client(
            base_url=f"{self.server}/api/v1",
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=timeout,
            transport=transport,  # tests: the app in-process
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request (`path` under /api/v1); raises `ApiError` for a status >= 400."""
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = response.text
            detail = body.get("detail", body) if isinstance(body, dict) else body
            raise ApiError(response.status_code, problems(detail), detail)
        return response

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """`call`, its JSON body decoded (None when empty)."""
        response = self.call(method, path, **kwargs)
        return response.json() if response.content else None

    # --- jobs -------------------------------------------------------------------------------

    def submit(self, config: Mapping[str, Any] | Path) -> Json:
        """Submit a job: its config, or a YAML / JSON job file (relative dataset paths are
        relative to the file). Returns the job."""
        if isinstance(config, Path):
            import yaml

            config = resolve_dataset(yaml.safe_load(config.read_text()), config.parent)
        return self.request("POST", "/jobs", json=dict(config))

    def job(self, job_id: int) -> Json:
        return self.request("GET", f"/jobs/{job_id}")

    def jobs(self) -> list[Json]:
        return self.request("GET", "/jobs")["items"]

    def like(self, job_id: int, changes: Mapping[str, Any] | None = None) -> Json:
        """Job `job_id`'s config ready to resubmit, `changes` merged into it section by
        section, named `<its name> (copy)` unless `changes` names it."""
        config = self.job(job_id)["config"]
        return merge({**config, "name": f"{config['name']} (copy)"}, changes or {})

    def pause(self, job_id: int) -> Json:
        return self.request("POST", f"/jobs/{job_id}/pause")

    def resume(self, job_id: int) -> Json:
        return self.request("POST", f"/jobs/{job_id}/resume")

    def cancel(self, job_id: int) -> Json:
        return self.request("POST", f"/jobs/{job_id}/cancel")

    def wait(
        self,
        job_id: int,
        progress: bool = True,
        interval: float = 2.0,
        timeout: float | None = None,
    ) -> Json:
        """Poll the job until it ends and return it; `progress`: a bar of trials done / total
        and its status. Raises TimeoutError after `timeout` seconds."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        deadline = None if timeout is None else time.monotonic() + timeout
        columns = (TextColumn(f"job {job_id}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TextColumn("{task.fields[status]}"), disable=not progress) as bar:
            task = bar.add_task("", total=None, status="")
            while True:
                job = self.job(job_id)
                counts = job.get("progress") or {}
                bar.update(
                    task,
                    completed=counts.get("done", 0),
                    total=counts.get("total"),
                    status=job["status"],
                )
                if job["status"] in FINAL:
                    return job
                if deadline is not None and time.monotonic() + interval > deadline:
                    raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout} s")
                time.sleep(interval)

    def note(self, job_id: int, text: str) -> Json:
        """Set the job's Markdown note ("" clears it); returns the job."""
        return self.request("PUT", f"/jobs/{job_id}/note", json={"note": text})

    # --- results ----------------------------------------------------------------------------

    def candidates(
        self,
        job_id: int,
        status: str | None = None,
        sort: str = "birth",
        order: str = "asc",
        frame: bool = False,
    ) -> list[Json] | pd.DataFrame:
        """Every candidate of the job (all pages), optionally of one status."""
        found: list[Json] = []
        params: Json = {"sort": sort, "order": order, "limit": PAGE}
        if status is not None:
            params["status"] = status
        while True:
            page = self.request(
                "GET", f"/jobs/{job_id}/candidates", params={**params, "offset": len(found)}
            )
            found += page["items"]
            if not page["items"] or len(found) >= page["total"]:
                return _frame(found) if frame else found

    def candidate(self, candidate_id: int) -> Json:
        """One candidate in full: spec, curve, lineage, runs."""
        return self.request("GET", f"/candidates/{candidate_id}")

    def candidate_note(self, candidate_id: int, text: str) -> Json:
        """Set the candidate's Markdown note ("" clears it); returns the candidate."""
        return self.request("PUT", f"/candidates/{candidate_id}/note", json={"note": text})

    def pareto(self, job_id: int) -> Json:
        """The scored candidates column by column, the front's ids and the baselines'."""
        return self.request("GET", f"/jobs/{job_id}/pareto")

    def front(self, job_id: int, frame: bool = False) -> list[Json] | pd.DataFrame:
        """The Pareto front of (perplexity, step-time ratio) as candidate records, by ratio."""
        ids = self.pareto(job_id)["front"]
        completed = {c["id"]: c for c in self.candidates(job_id, status="completed")}
        rows = [completed[i] for i in ids]
        return _frame(rows) if frame else rows

    def importance(self, job_id: int) -> Json:
        """How much of the variance of perplexity and of step time each feature explains."""
        return self.request("GET", f"/jobs/{job_id}/importance")

    def compare(self, ids: Iterable[int], frame: bool = False) -> list[Json] | pd.DataFrame:
        """Jobs side by side, each front normalised by its own baseline; as a frame, one row
        per front point with its job's id, name, device kind and baseline."""
        jobs = self.request("GET", "/compare", params={"jobs": ",".join(map(str, ids))})["jobs"]
        if not frame:
            return jobs
        return _frame(
            {
                "job_id": job["id"],
                "job": job["name"],
                "device_kind": job["device_kind"],
                "baseline": job["baseline"],
                **point,
            }
            for job in jobs
            for point in job["front"]
        )

    def export(self, candidate_id: int, format: str = "json", target: str | None = None) -> str:
        """A candidate as JSON with its manifest, a Flax module (`flax`) or a scaled config
        (`config`); `target`: 100M, 1B, 8B or a parameter count."""
        params = {"format": format, **({"target": target} if target else {})}
        return self.call("GET", f"/candidates/{candidate_id}/export", params=params).text

    def enqueue(
        self, job_id: int, spec: Mapping[str, Any] | BaseModel, note: str | None = None
    ) -> Json:
        """Queue a block by hand: the job trains it next. Returns the queued request."""
        body = spec if isinstance(spec, Mapping) else spec.model_dump(mode="json")
        return self.request(
            "POST", f"/jobs/{job_id}/candidates", json={"spec": dict(body), "note": note}
        )
