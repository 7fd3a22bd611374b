"""Environment variables read by the PyTorch instrumentation.

``opentelemetry-instrument`` turns each into a command-line flag:
``OTEL_PYTHON_PROVTEL_TORCH_BLOCK_STEPS`` becomes ``--provtel_torch_block_steps``.
"""

OTEL_PYTHON_PROVTEL_TORCH_BLOCK_STEPS = "OTEL_PYTHON_PROVTEL_TORCH_BLOCK_STEPS"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_TORCH_BLOCK_STEPS

Most steps in one step block (one ``ml.step_block`` span with per-step arrays). Default: 1000.
"""

OTEL_PYTHON_PROVTEL_TORCH_BLOCK_SECONDS = "OTEL_PYTHON_PROVTEL_TORCH_BLOCK_SECONDS"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_TORCH_BLOCK_SECONDS

Longest time a step block covers before it is ended, in seconds, so that live backends and
the journal stay fresh. A block that has seen no step end for half a second (or this long, if
shorter) is handed over by a background thread, so a process killed with SIGKILL during a pause
loses no step that ended about a second before (with the exporter's 0.5 s batch delay).
Default: 1.
"""

OTEL_PYTHON_PROVTEL_TORCH_CHECKPOINT_DIGEST = "OTEL_PYTHON_PROVTEL_TORCH_CHECKPOINT_DIGEST"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_TORCH_CHECKPOINT_DIGEST

``true`` (default) or ``false``: compute the SHA-256 digest of each checkpoint written or read
with ``torch.save``/``torch.load``, on a background thread.
"""

OTEL_PYTHON_PROVTEL_TORCH_CUDA_EVENTS = "OTEL_PYTHON_PROVTEL_TORCH_CUDA_EVENTS"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_TORCH_CUDA_EVENTS

``true`` (default) or ``false``: on CUDA, time backward and optimizer steps with CUDA events
(read once per block, no synchronisation per step) instead of host wall time.
"""

OTEL_PYTHON_PROVTEL_TORCH_LIVE_METRICS = "OTEL_PYTHON_PROVTEL_TORCH_LIVE_METRICS"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_TORCH_LIVE_METRICS

``true``, ``false`` or unset (default): record the live training metrics (``ml.step.duration``,
``ml.steps``, ``ml.samples``, ``ml.loss``, ``ml.throughput``), once per step block. Unset, they
are recorded when a metric backend other than the PROV document is configured
(``OTEL_METRICS_EXPORTER`` names something other than ``prov`` and ``none``, or a
``meter_provider`` is passed to ``instrument()``): the PROV document has every step's values in
its step series already.
"""
