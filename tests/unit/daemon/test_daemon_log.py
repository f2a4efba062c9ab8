"""Daemon logging: redaction of secrets, journald priorities, JSON lines, no forged lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from kdf_remote.daemon.daemon_log import Redactor, configure_logging, redactor

pytestmark = pytest.mark.unit


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Root logging configured into a buffer; the previous handlers restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"passphrase": "a b c", "netid": 8762}', '{"passphrase": ***, "netid": 8762}'),
        ("userpass=hunter2 method=version", "userpass=*** method=version"),
        ("Authorization: Bearer abc.def", "Authorization: ***"),
        ("rpc_password: 'x y'", "rpc_password: ***"),
        ("i_am_seed: true seednodes: [a]", "i_am_seed: true seednodes: [a]"),
    ],
)
def test_key_value_forms_are_redacted(text: str, expected: str) -> None:
    """Secret-looking keys lose their values whatever the syntax; look-alikes are left alone."""
    assert Redactor()(text) == expected


def test_registered_values_are_redacted_anywhere() -> None:
    """A registered secret is removed wherever it appears, longest match first."""
    r = Redactor()
    r.register("S3cret-Pass!", "abc", None)
    assert r("got S3cret-Pass! and abc") == "got *** and abc"


def test_plain_lines_under_journald_carry_priorities(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under journald each line starts with its syslog priority and has no timestamp."""
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    configure_logging("debug", json_logs=False, stream=captured)
    logging.getLogger("kdf_remote.daemon").warning("careful")
    logging.getLogger("kdf_remote.daemon").error("broken")
    assert captured.getvalue().splitlines() == [
        "<4>kdf_remote.daemon: careful",
        "<3>kdf_remote.daemon: broken",
    ]


def test_json_lines_are_redacted_and_one_per_record(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JSON mode writes one object per record, secrets and exception text redacted."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    redactor.register("Very-Secret-Value-1")
    configure_logging("info", json_logs=True, stream=captured)
    log = logging.getLogger("kdf_remote.daemon")
    log.info("config %s", {"wallet_password": "pw-123456"})
    try:
        raise RuntimeError("failed with Very-Secret-Value-1")
    except RuntimeError:
        log.exception("oops\nforged line")
    first, second = (json.loads(line) for line in captured.getvalue().splitlines())
    assert first["msg"] == "config {'wallet_password': ***}"
    assert first["level"] == "info"
    assert second["msg"] == "oops\nforged line"
    assert "Very-Secret-Value-1" not in second["exc"]
    assert "***" in second["exc"]


def test_plain_lines_cannot_be_forged(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CR/LF inside a message stays on its line."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    configure_logging("info", json_logs=False, stream=captured)
    logging.getLogger("kdf_remote.daemon").info("path %r then %s", "/x", "a\nINFO forged")
    (line,) = captured.getvalue().splitlines()
    assert line.endswith("kdf_remote.daemon: path '/x' then a\\nINFO forged")
