"""The context named by ``provtel.context(name)``, shared by the API and the torch hooks."""

from __future__ import annotations

from contextvars import ContextVar

#: The innermost ``provtel.context(name)`` (None outside one).
USER_CONTEXT: ContextVar[str | None] = ContextVar("provtel_context", default=None)
