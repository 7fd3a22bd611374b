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

OTEL_PYTHON_PROVTEL_FILE_MODE = "OTEL_PYTHON_PROVTEL_FILE_MODE"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_FILE_MODE

Octal permission bits of the files provtel writes (journal, series, documents); run folders get
the same bits plus ``x`` wherever ``r`` is set. Default: ``0600`` (folders ``0700``): only the
owner can read what a run recorded. ``0640`` shares it with the group.
"""

OTEL_PYTHON_PROVTEL_UPLOAD_URL = "OTEL_PYTHON_PROVTEL_UPLOAD_URL"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_UPLOAD_URL

Base URL of a yProvStore (e.g. ``https://yprov.example.org``): when set, each run's document is
uploaded there when it is written (``provtel upload`` does it by hand). A failed upload leaves
the run on disk and is recorded in ``upload.json`` of the run folder. Default: unset.
"""

OTEL_PYTHON_PROVTEL_UPLOAD_TOKEN = "OTEL_PYTHON_PROVTEL_UPLOAD_TOKEN"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_UPLOAD_TOKEN

Bearer token for the yProvStore upload; without it provtel logs in with
``OTEL_PYTHON_PROVTEL_UPLOAD_EMAIL`` and ``OTEL_PYTHON_PROVTEL_UPLOAD_PASSWORD``.
"""

OTEL_PYTHON_PROVTEL_UPLOAD_EMAIL = "OTEL_PYTHON_PROVTEL_UPLOAD_EMAIL"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_UPLOAD_EMAIL

Account email to log in to yProvStore with (``POST /login``).
"""

OTEL_PYTHON_PROVTEL_UPLOAD_PASSWORD = "OTEL_PYTHON_PROVTEL_UPLOAD_PASSWORD"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_UPLOAD_PASSWORD

Password of ``OTEL_PYTHON_PROVTEL_UPLOAD_EMAIL``; never written to disk or logged.
"""

OTEL_PYTHON_PROVTEL_UPLOAD_PARENT_PID = "OTEL_PYTHON_PROVTEL_UPLOAD_PARENT_PID"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_UPLOAD_PARENT_PID

PID of the stored document this run derives from (sent as ``parent_document_pid``). Default:
found from lineage, the uploaded run that generated a checkpoint this run loaded, if any.
"""

OTEL_PYTHON_PROVTEL_UPLOAD_TIMEOUT = "OTEL_PYTHON_PROVTEL_UPLOAD_TIMEOUT"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_UPLOAD_TIMEOUT

Seconds each upload request may take before it is retried. Default: ``30``.
"""

OTEL_PYTHON_PROVTEL_SUMMARY = "OTEL_PYTHON_PROVTEL_SUMMARY"
"""
.. envvar:: OTEL_PYTHON_PROVTEL_SUMMARY

Print a short summary of the run on stderr when its document is written (folder, passes,
steps, where the time went, final loss and evaluation results, energy and carbon). ``false``
turns it off. Default: ``true``.
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
