"""Files of a run: private permissions and line-atomic appends.

Run folders are created ``0700`` and their files ``0600`` (training data paths, hyperparameters
and host names are nobody else's business); ``OTEL_PYTHON_PROVTEL_FILE_MODE`` (octal, e.g.
``0640``) sets the file mode, and folders get the same bits plus ``x`` wherever ``r`` is set
(``0640`` -> ``0750``). The mode is applied with ``fchmod``/``chmod``, so the umask cannot
widen or narrow it.

:class:`AppendFile` appends whole lines with one ``write`` each time. A write that fails or
lands partially (a full disk: the kernel writes what fits, then ``ENOSPC``) is cut back to the
last complete line at once, and again before the next append if that cut failed, so a line
that was refused can never be glued to the next one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from pathlib import Path
from typing import Protocol

from provtel.exporter.environment_variables import OTEL_PYTHON_PROVTEL_FILE_MODE

logger = logging.getLogger(__name__)

DEFAULT_FILE_MODE = 0o600
_reported: set[str] = set()


def file_mode() -> int:
    """The permission bits of files provtel creates (``OTEL_PYTHON_PROVTEL_FILE_MODE``)."""
    text = os.environ.get(OTEL_PYTHON_PROVTEL_FILE_MODE, "").strip()
    if not text:
        return DEFAULT_FILE_MODE
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777 or not mode & stat.S_IRUSR or not mode & stat.S_IWUSR:
        if text not in _reported:
            _reported.add(text)
            logger.error(
                "provtel: %s=%r is not an octal file mode the owner can read and write "
                "(e.g. 0600, 0640); using 0600",
                OTEL_PYTHON_PROVTEL_FILE_MODE,
                text,
            )
        return DEFAULT_FILE_MODE
    return mode


def dir_mode(mode: int | None = None) -> int:
    """The folder mode that goes with a file mode: ``x`` added wherever ``r`` is set."""
    mode = file_mode() if mode is None else mode
    return mode | ((mode & 0o444) >> 2)


def make_dir(path: Path, exist_ok: bool = False) -> None:
    """Create one folder with the configured mode (``FileExistsError`` unless ``exist_ok``)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not exist_ok or not path.is_dir():
            raise
        return
    os.chmod(path, dir_mode())


def make_dirs(path: Path) -> None:
    """Create a folder and its missing parents (parents the user names, such as the output
    folder, keep the user's umask; the run folders below them are private)."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)


def open_private(path: Path, flags: int, mode: int | None = None) -> int:
    """``os.open`` a file, creating it with ``mode`` (default: the configured mode, looked up
    each call); returns the descriptor."""
    mode = file_mode() if mode is None else mode
    fd = os.open(path, flags | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), mode)
    if flags & os.O_TRUNC or os.fstat(fd).st_size == 0:
        with contextlib.suppress(OSError):  # a file we do not own: keep what it has
            os.fchmod(fd, mode)
    return fd


def write_private(path: Path, data: bytes) -> None:
    """Write a whole small file (``path`` replaced atomically) with the configured mode."""
    tmp = path.with_name(path.name + ".tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_TRUNC)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - regular files never return 0 for a non-empty write
            raise OSError("write returned 0")
        view = view[n:]


class RawFile(Protocol):
    """What :class:`AppendFile` needs of a file: a descriptor-like object (tests pass one
    that fails half-way, as a full disk does)."""

    def write(self, data: bytes | memoryview, /) -> int | None: ...
    def truncate(self, size: int, /) -> int: ...
    def flush(self) -> None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


class _Fd:
    """A plain descriptor opened for appending, as a :class:`RawFile`."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes | memoryview, /) -> int:
        return os.write(self.fd, data)

    def truncate(self, size: int, /) -> int:
        os.ftruncate(self.fd, size)
        return size

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        os.close(self.fd)


class AppendFile:
    """A file that grows by whole lines only (see the module docstring)."""

    def __init__(self, path: Path, raw: RawFile | None = None, mode: int | None = None) -> None:
        self.path = path
        self._raw: RawFile = (
            raw if raw is not None else _Fd(open_private(path, os.O_WRONLY | os.O_APPEND, mode))
        )
        self.size = os.fstat(self._raw.fileno()).st_size
        self._dirty = False  # a failed write may have left bytes past ``size``

    def append(self, data: bytes) -> None:
        """Append ``data`` (whole lines, ending with ``\\n``) or nothing at all; raises the
        ``OSError`` of a failed write after cutting the file back."""
        if self._dirty:
            self._raw.truncate(self.size)
            self._dirty = False
        view = memoryview(data)
        try:
            while view:
                n = self._raw.write(view)
                if not n:
                    raise OSError("short write")
                view = view[n:]
            self._raw.flush()
        except BaseException:
            self._dirty = True
            try:
                self._raw.truncate(self.size)
                self._dirty = False
            except OSError:
                logger.debug("provtel: cannot cut %s back yet", self.path, exc_info=True)
            raise
        self.size += len(data)

    def sync(self) -> None:
        """``fsync``: what was appended survives a power cut."""
        os.fsync(self._raw.fileno())

    def close(self) -> None:
        """Close the file (a pending cut is tried once more)."""
        try:
            if self._dirty:
                self._raw.truncate(self.size)
        finally:
            self._raw.close()


class OpenFiles:
    """Append-only files kept open, at most ``limit`` of them (the least recently used is
    closed first), so that a series append is one ``write``: no ``open``, ``fstat``, ``close``
    or mode lookup per append. The file mode is resolved once, when created; ``limit`` 0 opens
    and closes each time.

    One pool may serve many runs (``provtel serve``: one per process, sized from the
    descriptor limit); appends and closes are serialised by a lock, and :meth:`close` with
    ``under`` closes only one run's files.
    """

    def __init__(self, limit: int = 64, mode: int | None = None) -> None:
        self.limit = limit
        self.mode = file_mode() if mode is None else mode
        self._open: dict[Path, AppendFile] = {}
        self._lock = threading.Lock()

    def append(self, path: Path, data: bytes, header: bytes = b"") -> None:
        """Append whole lines (or records) line-atomically; ``header`` is written first when the
        file is new or empty."""
        with self._lock:
            out = self._open.pop(path, None)
            if out is None:
                out = AppendFile(path, mode=self.mode)
            try:
                out.append(header + data if header and out.size == 0 else data)
            finally:
                if self.limit <= 0:
                    out.close()
                else:
                    self._open[path] = out  # most recently used last
                    while len(self._open) > self.limit:
                        self._open.pop(next(iter(self._open))).close()

    def close(self, under: Path | None = None) -> None:
        """Close the open files (only those below folder ``under`` when given). Idempotent;
        the files reopen on the next append."""
        with self._lock:
            if under is None:
                paths = list(self._open)
            else:
                paths = [p for p in self._open if p.is_relative_to(under)]
            errors = []
            for path in paths:
                try:
                    self._open.pop(path).close()
                except OSError as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]


def append_lines(path: Path, data: bytes, header: bytes = b"") -> None:
    """Open, append whole lines line-atomically, close: for the many small series files, which
    cannot all stay open. ``header`` is written first when the file is new or empty."""
    out = AppendFile(path)
    try:
        out.append(header + data if out.size == 0 else data)
    finally:
        out.close()


def cut_torn_tail(path: Path) -> int:
    """Cut a last line without its newline (a writer killed or refused mid-line); return
    the number of bytes cut. Reads only the tail of the file."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        end = size
        block = 1 << 16
        while end > 0:
            start = max(0, end - block)
            chunk = os.pread(fd, end - start, start)
            if end == size and chunk.endswith(b"\n"):
                return 0
            at = chunk.rfind(b"\n")
            if at >= 0:
                end = start + at + 1
                break
            end = start
        os.ftruncate(fd, end)
        return size - end
    finally:
        os.close(fd)
