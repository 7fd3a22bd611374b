"""Progress bars for commands that read large documents or many runs (tqdm, on a terminal)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def progress_bar(enabled: bool | None = None) -> Any:
    """A ``progress(items, total, what)`` function for :func:`~.analysis.analyse`.

    Bars are drawn on stderr with tqdm when it is installed (``provtel-exporter[report]``) and
    stderr is a terminal (or ``enabled`` is True); otherwise items pass through untouched.
    """
    show = sys.stderr.isatty() if enabled is None else enabled
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None

    def progress(items: Iterable[T], total: int, what: str) -> Iterable[T]:
        if not show or tqdm is None or total < 1:
            return items
        return tqdm(
            items, total=total, desc=f"provtel: {what}", unit="file", leave=False, file=sys.stderr
        )

    return progress
