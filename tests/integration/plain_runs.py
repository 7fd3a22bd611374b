"""Training scripts run without instrumentation, many times, by one process that imported torch.

A plain reference run (``python script.py``, nothing of provtel, compared bit for bit with the
instrumented run) spent ~6 of its ~7 s of CPU importing torch and ``torch._dynamo`` (which the
first optimizer imports), twelve times in ``test_torch_scripts.py``. :class:`PlainRunner` starts
one server process (this file as a script) that imports both once and forks a child per run. The
child takes the run's folder, environment, ``sys.argv`` and ``sys.path[0]`` (the script's folder),
writes its stdout and stderr to files and runs the script as ``__main__``; it ends the way
``python script.py`` ends: its exit status, an uncaught exception's traceback and status 1, the
atexit handlers. Nothing in the server imports provtel or OpenTelemetry.
"""

from __future__ import annotations

import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn


class PlainRunner:
    """Runs scripts as ``python script.py`` would, forked from one process that imported torch."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self._server: subprocess.Popen[str] | None = None
        self._files = tempfile.TemporaryDirectory(prefix="plain-runs-")
        self._count = 0

    def run(
        self, script: Path, *args: str, cwd: Path, env: dict[str, str], timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``script args...`` in ``cwd`` with exactly the environment ``env``."""
        server = self._start()
        assert server.stdin is not None and server.stdout is not None
        self._count += 1
        stdout, stderr = (Path(self._files.name) / f"{self._count}.{n}" for n in ("out", "err"))
        request = {
            "script": str(script),
            "args": list(args),
            "cwd": str(cwd),
            "env": env,
            "stdout": str(stdout),
            "stderr": str(stderr),
        }
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        ready, _, _ = select.select([server.stdout], [], [], timeout)
        if not ready:  # the run hangs: end it with its server, as subprocess.run's timeout would
            self._stop(kill=True)
            raise subprocess.TimeoutExpired([str(script), *args], timeout)
        returncode = json.loads(server.stdout.readline())
        return subprocess.CompletedProcess(
            [sys.executable, str(script), *args],
            returncode,
            stdout.read_text(encoding="utf-8"),
            stderr.read_text(encoding="utf-8"),
        )

    def close(self) -> None:
        """Stop the server (and a run still going) and remove the output files."""
        self._stop(kill=False)
        self._files.cleanup()

    def _stop(self, kill: bool) -> None:
        if self._server is not None:
            assert self._server.stdin is not None
            if not kill:  # the end of its requests: the server returns
                self._server.stdin.close()
                try:
                    self._server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    kill = True
            if kill and self._server.poll() is None:
                os.killpg(self._server.pid, signal.SIGKILL)
            self._server.wait(timeout=30)
            for pipe in (self._server.stdin, self._server.stdout):
                if pipe is not None:
                    pipe.close()
            self._server = None

    def _start(self) -> subprocess.Popen[str]:
        if self._server is None:
            self._server = subprocess.Popen(
                [sys.executable, __file__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=self._env,
                text=True,
                start_new_session=True,  # its own process group: a timeout ends a hung run too
            )
        return self._server


def _serve() -> None:
    """Import torch once, then fork a child per request line; answer each with its status."""
    import torch._dynamo  # noqa: F401  (imports torch too)

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _run_in_child(request)
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(json.dumps(os.waitstatus_to_exitcode(status)) + "\n")
        sys.stdout.flush()


def _run_in_child(request: dict[str, Any]) -> NoReturn:
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        target = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(  # noqa: SIM115
        2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
    )
    sys.argv = [request["script"], *request["args"]]
    sys.path[0] = os.path.dirname(request["script"])
    runpy.run_path(request["script"], run_name="__main__")
    # as the interpreter ends after the script's last line: SystemExit unwinds _serve in this
    # child (never in the server), and the exit runs the atexit handlers and flushes
    raise SystemExit(0)


if __name__ == "__main__":
    _serve()
