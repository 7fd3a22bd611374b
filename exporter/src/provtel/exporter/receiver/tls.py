"""The TLS certificate and key of ``provtel serve``, checked once for both transports.

Loading is done here, before either server listens, so that a problem with the files is one
clear error naming the file (not grpcio's "Failed to bind", not a traceback), and so that an
encrypted private key fails at once instead of OpenSSL prompting for a pass phrase on the
terminal of a server that nobody watches.
"""

from __future__ import annotations

import ssl
from pathlib import Path


class TlsError(ValueError):
    """The certificate or key cannot be used (the message says which file and why)."""


def _readable(path: Path, what: str) -> None:
    if not path.exists():
        raise TlsError(f"TLS {what} {path}: no such file")
    if not path.is_file():
        raise TlsError(f"TLS {what} {path}: not a file")


def server_context(cert: Path, key: Path | None) -> ssl.SSLContext:
    """A server-side TLS context for ``cert`` (PEM chain) and ``key`` (PEM, unencrypted)."""
    if key is None:
        raise TlsError("TLS needs both --tls-cert and --tls-key")
    _readable(cert, "certificate")
    _readable(key, "key")

    def no_pass_phrase() -> str:
        raise TlsError(
            f"TLS key {key} is encrypted; provtel serve does not ask for pass phrases: "
            "give it an unencrypted key (e.g. openssl pkey -in KEY -out PLAIN_KEY) with "
            "permissions 0600"
        )

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=no_pass_phrase)
    except TlsError:
        raise
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        raise TlsError(
            f"TLS certificate {cert} / key {key} cannot be used ({reason}): both must be PEM, "
            "the key unencrypted and matching the certificate"
        ) from None
    except OSError as exc:
        raise TlsError(f"TLS certificate {cert} / key {key}: {exc.strerror or exc}") from None
    return context
