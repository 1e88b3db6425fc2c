"""postfix's smtp-sink and smtp-source, the SMTP benchmarks' peers (``apt-get install postfix``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SESSIONS = 16  # smtp-source -s 16: the line rate as issue 6 defines it


def installed() -> bool:
    return os.path.exists(SINK) and os.path.exists(SOURCE)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def smtp_sink(port: int) -> Iterator[None]:
    """smtp-sink on the port (it refuses to run as root without -u), until the block ends."""
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen(
        [SINK, *user, f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield
    finally:
        sink.terminate()
        sink.wait()


def source_rate(port: int, count: int, size: int, *, keep_connections: bool = False) -> float:
    """Messages per second of smtp-source with 16 sessions (-d: keeping its connections)."""
    command = [SOURCE, "-s", str(SESSIONS), "-m", str(count), "-l", str(size)]
    command += ["-d"] if keep_connections else []
    command += ["-f", "a@example.com", "-t", "b@example.com", f"127.0.0.1:{port}"]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return count / (time.perf_counter() - start)
