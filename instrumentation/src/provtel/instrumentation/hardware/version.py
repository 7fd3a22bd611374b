"""Version of the hardware instrumentation scope (kept equal to provtel-instrumentation's)."""

__version__ = "0.1.0"
