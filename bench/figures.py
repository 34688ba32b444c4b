"""What every benchmark does with its figures: write them as JSON where `--json` says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: Path | None, figures: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {path}")
