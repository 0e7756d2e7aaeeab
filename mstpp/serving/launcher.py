"""serve.py in a child process on free loopback ports: what performance_serving.py and the tests start."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

#: The directory that holds the ``mstpp`` package.
REPO = Path(__file__).resolve().parents[2]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ServerProcess:
    """``serve.py ARGS`` in its own session (so a kill reaches tritonserver too), output to ``log_path``."""

    def __init__(self, args: Sequence[str], log_path: str | Path, python: str = sys.executable) -> None:
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.log_path = Path(log_path)
        # ``-m``: works from a checkout and from an installed package alike (REPO is then site-packages).
        cmd = [python, "-m", "mstpp.scripts.serve", *args, "--http-port", str(self.http_port),
               "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port)]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def url(self, protocol: str) -> str:
        return f"127.0.0.1:{self.grpc_port if protocol == 'grpc' else self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float) -> None:
        """Return once both models answer ready; RuntimeError with the log's tail otherwise."""
        from .client import wait_ready

        try:
            wait_ready("http", self.url("http"), timeout_s, alive=lambda: self.proc.poll() is None)
        except (TimeoutError, RuntimeError) as exc:
            self.kill()
            raise RuntimeError(f"{exc}; server log:\n{self.log()[-4000:]}") from None

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (drain, exit 0); the exit code, or None when it had to be killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = wait_exit(self.proc, timeout_s)
        self.kill()
        return code

    def kill(self) -> None:
        """Always safe: SIGKILL to the server's whole session (tritonserver may outlive its parent briefly)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        if not self._log.closed:
            self._log.close()


def wait_exit(proc: subprocess.Popen, timeout_s: float) -> int | None:
    """The exit code once ``proc`` ends within ``timeout_s``, else None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc.returncode
        time.sleep(0.2)
    return None
