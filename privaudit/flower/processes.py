"""Processes of a loopback Flower deployment: free ports, start, wait until ready, tear down.

Every process is started in its own session (process group) with its output in a log file.
`Processes.stop` ends each started process and every descendant it spawned (Flower's SuperExec,
``flwr-serverapp``, ``flwr-clientapp``): SIGTERM to each group and to each descendant found with
psutil, then SIGKILL to whatever is left after a grace period. `Processes.alive` lists the PIDs
that still run (zombies, which only their parent can reap, count as gone). A PID is remembered
with its process's start time, so a PID the system has since given to another process is never
signalled or counted.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_port_free(port: int) -> None:
    """A clear error when ``port`` on 127.0.0.1 is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise OSError(f"port {port} on 127.0.0.1 is already taken ({exc.strerror}); choose another") from None


def tail(path: Path, chars: int = 1500) -> str:
    """The end of a log file (empty when there is none)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@dataclass
class Processes:
    """The processes one deployment started, and every PID seen under them."""

    env: dict[str, str]
    started: list[tuple[str, subprocess.Popen, Path]] = field(default_factory=list)
    seen: dict[int, float] = field(default_factory=dict)  # PID -> its process's start time

    def start(self, name: str, command: list[str], log: Path) -> subprocess.Popen:
        """Start ``command`` in its own session, output to ``log``."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.started.append((name, proc, log))
        self._remember(psutil.Process(proc.pid))
        return proc

    def _remember(self, process: psutil.Process) -> None:
        try:
            self.seen.setdefault(process.pid, process.create_time())
        except psutil.NoSuchProcess:
            return

    def wait_for(self, name: str, proc: subprocess.Popen, log: Path, text: str, timeout: float) -> None:
        """Wait until ``text`` appears in ``log``; a RuntimeError with the log's end if ``proc`` exits or time runs out."""
        deadline = time.monotonic() + timeout
        while text not in tail(log, 100_000):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode} before it was ready; its log {log}:\n{tail(log)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} was not ready within {timeout:.0f} s; its log {log}:\n{tail(log)}")
            self.remember_descendants()
            time.sleep(0.1)
        self.remember_descendants()

    def remember_descendants(self) -> None:
        for _, proc, _ in self.started:
            try:
                children = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for child in children:
                self._remember(child)

    def alive(self) -> list[int]:
        """PIDs among those seen that still run."""
        out = []
        for pid, started in sorted(self.seen.items()):
            try:
                process = psutil.Process(pid)
                if process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE:
                    out.append(pid)
            except psutil.NoSuchProcess:
                continue
        return out

    def stop(self, grace: float = 10.0) -> list[int]:
        """End every started process and its descendants; returns the PIDs still alive (none, normally)."""
        self.remember_descendants()
        for _, proc, _ in reversed(self.started):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for pid in self.alive():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + grace
        while self.alive() and time.monotonic() < deadline:
            for _, proc, _ in self.started:
                proc.poll()
            time.sleep(0.1)
        for pid in self.alive():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        for _, proc, _ in self.started:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                continue
        time.sleep(0.2)
        return self.alive()
