"""Version of the PyTorch instrumentation (its instrumentation scope version)."""

__version__ = "0.1.0"
