"""Runs the real `tidings serve` entry point as a subprocess on a free port (end-to-end tests)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

KEY_PATTERN = re.compile(r"tdg_[A-Za-z0-9_-]{40,}")
TIDINGS = Path(sys.executable).parent / "tidings"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PortTaken(Exception):
    pass


class LiveServer:
    def __init__(self, workdir: Path, database_url: str | None = None) -> None:
        self.workdir = workdir
        self.database_url = database_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.output_path = workdir / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60, attempts: int = 3) -> LiveServer:
        """Start and wait for /health; a port taken meanwhile by another process means retry."""
        for attempt in range(attempts):
            try:
                return self._start_once(timeout)
            except PortTaken:
                if attempt == attempts - 1:
                    raise
                self.port = free_port()
                self.base_url = f"http://127.0.0.1:{self.port}"
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> LiveServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        if self.database_url:
            env["TIDINGS_DATABASE_URL"] = self.database_url
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(
                [str(TIDINGS), "serve", "--port", str(self.port)],
                cwd=self.workdir,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "address already in use" in self.output:
                    raise PortTaken(self.port)
                raise RuntimeError(f"tidings serve exited early:\n{self.output}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"tidings serve did not become healthy:\n{self.output}")

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def printed_keys(self) -> list[str]:
        return KEY_PATTERN.findall(self.output)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
