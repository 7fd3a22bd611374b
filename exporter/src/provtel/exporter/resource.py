"""provtel's resource detector: what identifies the process of a training run."""

from __future__ import annotations

import contextlib
import getpass
import os
import sys

from opentelemetry.sdk.resources import Resource, ResourceDetector

from provtel.exporter import job
from provtel.exporter.run_name import default_run_name
from provtel.semconv import attributes as sc
from provtel.semconv.redaction import redact_argv


class ProvtelResourceDetector(ResourceDetector):
    """Command line (secrets redacted), OS user and script; ``service.name`` defaults to the
    script name."""

    def detect(self) -> Resource:
        attributes: dict[str, object] = {
            "service.name": default_run_name(),
            # Secret-looking option values never leave the process (provtel.semconv.redaction).
            "process.command_args": redact_argv(sys.argv) if sys.argv else [sys.executable],
            "process.pid": os.getpid(),
        }
        if sys.argv and sys.argv[0] and sys.argv[0] not in ("-c", "-m", "-"):
            attributes[sc.ML_RUN_SCRIPT] = os.path.abspath(sys.argv[0])
        # No passwd entry (containers with arbitrary uids): no owner, no person agent.
        with contextlib.suppress(KeyError, OSError):
            attributes["process.owner"] = getpass.getuser()
        attributes.update(job.detect().attributes())
        return Resource(attributes)  # type: ignore[arg-type]
