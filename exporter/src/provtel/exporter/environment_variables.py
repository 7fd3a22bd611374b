"""Environment variables read by provtel-exporter.

``opentelemetry-instrument`` turns each into a command-line flag: ``OTEL_PYTHON_PROVTEL_OUTPUT_DIR``
becomes ``--provtel_output_dir``.
"""

OTEL_PYTHON_PROVTEL_OUTPUT_DIR = "OTEL_PYTHON_PROVTEL_OUTPUT_DIR"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_OUTPUT_DIR

Directory that receives one folder per run, ``<dir>/<run>/prov.json``. Default: ``./prov``.
"""

OTEL_PYTHON_PROVTEL_FORMATS = "OTEL_PYTHON_PROVTEL_FORMATS"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_FORMATS

Comma-separated serialisations to write: ``json`` (always written), ``provn``, ``xml``,
``turtle``, ``trig``, ``jsonld``. The extra ones are produced with the ``prov`` package at
shutdown; ``xml`` needs ``provtel-exporter[xml]``, ``turtle``/``trig`` need
``provtel-exporter[rdf]``.
Default: ``json``.
"""

OTEL_PYTHON_PROVTEL_RUN_NAME = "OTEL_PYTHON_PROVTEL_RUN_NAME"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_RUN_NAME

Prefix of the run folder name. Default: the script's file name without extension.
"""

OTEL_PYTHON_PROVTEL_REDACT = "OTEL_PYTHON_PROVTEL_REDACT"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_REDACT

Comma-separated extra name patterns (shell wildcards, case-insensitive, e.g. ``*dsn*,wandb_*``)
whose values are recorded as ``[redacted]``, beside the built-in ``*key*``, ``*token*``,
``*secret*``, ``*password*``, ``*passwd*``, ``*credential*``: command-line arguments,
hyperparameters and configurations (see :mod:`provtel.semconv.redaction`, which reads it).
Default: unset.
"""
