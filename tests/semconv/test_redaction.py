"""The redaction policy: which names are secret, and how command lines and URLs are cleaned."""

from __future__ import annotations

import pytest

from provtel.semconv.redaction import (
    REDACTED,
    is_secret,
    redact_argv,
    redact_attributes,
    redact_text,
    redact_url,
    redact_value,
)


@pytest.mark.parametrize(
    "name",
    [
        "api_key",
        "--api-key",
        "API_KEY",
        "hub_token",
        "db_password",
        "client_secret",
        "aws_credentials",
        "wandb.api_key",
        "optimizer.passwd",
        "+db.password",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret(name)


@pytest.mark.parametrize("name", ["lr", "batch_size", "--epochs", "optimizer.momentum", "seed"])
def test_plain_names(name: str) -> None:
    assert not is_secret(name)


def test_patterns_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not is_secret("sentry_dsn")
    monkeypatch.setenv("OTEL_PYTHON_PROVTEL_REDACT", " *dsn* , WANDB_*")
    assert is_secret("sentry_dsn")
    assert is_secret("--wandb-entity")
    assert is_secret("api_key")  # the defaults stay
    assert not is_secret("lr")


def test_argv_values_are_redacted() -> None:
    argv = [
        "train.py",
        "--api-key=sk-live-XYZ",
        "--db-password",
        "hunter2",
        "--token=abc",
        "--lr",
        "0.1",
        "db.password=x",
        "--repo=https://oauth2:glpat-AB@CD@gitlab.com/x.git",
        "--verbose",
    ]
    assert redact_argv(argv) == [
        "train.py",
        f"--api-key={REDACTED}",
        "--db-password",
        REDACTED,
        f"--token={REDACTED}",
        "--lr",
        "0.1",
        f"db.password={REDACTED}",
        "--repo=https://gitlab.com/x.git",
        "--verbose",
    ]
    # an option that looks secret but is followed by another option has no value to hide
    assert redact_argv(["t.py", "--use-token", "--lr", "1"]) == ["t.py", "--use-token", "--lr", "1"]


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://oauth2:glpat-AB@CD@gitlab.com/x.git", "https://gitlab.com/x.git"),
        ("https://user:pw@github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://ghp_abc@github.com/o/r", "https://github.com/o/r"),
        ("https://host/x?access_token=t0k&page=2", "https://host/x?page=2"),
        ("https://s3/b/o?X-Amz-Signature=ab&X-Amz-Credential=cd&v=1", "https://s3/b/o?v=1"),
        ("https://blob/c?sv=2020&sig=abc%3D", "https://blob/c?sv=2020"),
        ("https://host/x?api_key=1&key=2&password=3&secret=4&token=5", "https://host/x"),
        ("git+https://github.com/o/r.git@v1.0", "git+https://github.com/o/r.git@v1.0"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("https://github.com/o/r.git", "https://github.com/o/r.git"),
    ],
)
def test_urls(url: str, clean: str) -> None:
    assert redact_url(url) == clean


def test_urls_in_text_and_values() -> None:
    text = "cloned from https://u:p@host/r.git and s3://k:s@bucket/x"
    assert redact_text(text) == "cloned from https://host/r.git and s3://bucket/x"
    assert redact_value("remote", "https://u:p@host/r.git") == "https://host/r.git"
    assert redact_value("api_key", 1234) == REDACTED
    assert redact_value("lr", 0.1) == 0.1
    assert redact_value("urls", ["https://u:p@h/x", 3]) == ["https://h/x", 3]


def test_attributes_judged_after_their_prefix() -> None:
    attrs = {
        "ml.hparam.api_key": "sk-1",
        "ml.hparam.lr": 0.1,
        "ml.hparam.wandb.token": "t",
        "ml.step.tokens": [1, 2],  # not under the prefix: not judged
    }
    assert redact_attributes(attrs, prefix="ml.hparam.") == {
        "ml.hparam.api_key": REDACTED,
        "ml.hparam.lr": 0.1,
        "ml.hparam.wandb.token": REDACTED,
        "ml.step.tokens": [1, 2],
    }
