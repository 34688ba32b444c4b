"""Notes are Markdown; the API renders them once, safely, for the dashboard.

CommonMark with raw HTML off: a note's `<script>` is shown as text, and links keep
markdown-it's check that refuses `javascript:` and the like.
"""

from __future__ import annotations

from functools import cache

from markdown_it import MarkdownIt


@cache
def _renderer() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def render(text: str | None) -> str | None:
    return None if not text else _renderer().render(text)
