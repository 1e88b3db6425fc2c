"""The SMTP transport against postfix's smtp-sink, a real MTA front end with PIPELINING (.ci/run
installs postfix; elsewhere the test is skipped without it)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime

import pytest

from tests.conftest import in_ci
from tests.delivery.support import free_port
from tidings.delivery.mime import MessageHeaders, build_message, message_id
from tidings.transports.base import Outcome, OutgoingMessage
from tidings.transports.smtp import SmtpConfig, SmtpTransport

SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def start_sink(port: int) -> subprocess.Popen[str]:
    if not os.path.exists(SINK):
        missing = "postfix's smtp-sink is not installed (apt-get install postfix)"
        if in_ci():
            pytest.fail(missing)
        pytest.skip(missing)
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen(
        [SINK, "-c", *user, f"127.0.0.1:{port}", "100"], stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return sink
        time.sleep(0.05)
    sink.kill()
    raise AssertionError("smtp-sink did not start")


def message(n: int) -> OutgoingMessage:
    headers = MessageHeaders(
        "news@example.com", f"r{n}@example.org", "Hi", message_id(n, "example.com"),
        datetime.now(UTC),
    )  # fmt: skip
    body = ".leading dot\n" + "line of text\n" * 200
    return OutgoingMessage(
        n, "news@example.com", f"r{n}@example.org", build_message(headers, body, None)
    )


async def test_a_pool_of_pipelined_sessions_delivers_a_batch_to_smtp_sink() -> None:
    port = free_port()
    sink = start_sink(port)
    try:
        transport = SmtpTransport(SmtpConfig("127.0.0.1", port, connections=4))
        results = await transport.send([message(n) for n in range(500)])
        await transport.close()
        assert {r.outcome for r in results} == {Outcome.accepted}
        assert [r.delivery_id for r in results] == list(range(500))
    finally:
        sink.terminate()
        output, _ = sink.communicate(timeout=10)
    counts = re.findall(r"mesg=(\d+)", output)
    assert counts and int(counts[-1]) == 500
