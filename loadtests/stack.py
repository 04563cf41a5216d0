"""Start and stop the EduConnect stack for a load test, and run Locust headless.

`Stack` runs `infra/run-all.sh` (the streaming indexer + the API with `API_WORKERS`
uvicorn workers) in its own process group on a chosen port, waits for `/readyz`, and
stops the whole group afterwards. `prepare_database` migrates and seeds the database the
way `make run` does (`--if-changed`: a second run reuses the seed). `run_locust` runs the
locustfile headless with CSV (full history), the HTML report and the summary JSON.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def bin_dir() -> Path:
    """The directory of this interpreter's scripts (the venv's `bin`)."""
    return Path(sys.executable).parent


def prepare_database(tutors: int, coaches: int, students: int, seed: int = 42) -> None:
    """Migrate and seed `DATABASE_URL` like `make run` (skipped when already seeded with
    the same parameters)."""
    cli = str(bin_dir() / "educonnect")
    subprocess.run([cli, "db", "upgrade"], check=True, cwd=ROOT)
    subprocess.run(
        [cli, "seed", "--tutors", str(tutors), "--coaches", str(coaches),
         "--students", str(students), "--seed", str(seed), "--if-changed"],
        check=True, cwd=ROOT,
    )  # fmt: skip


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (at the time of the call)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when GET `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - our own URL
            return bool(r.status == 200)
    except Exception:
        return False


class Stack:
    """The indexer + API (`infra/run-all.sh`) on 127.0.0.1:`port`, as a context manager."""

    def __init__(
        self,
        port: int = 8100,
        workers: int = 2,
        cache: bool = True,
        indexer_metrics_port: int = 9118,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port, self.workers, self.cache = port, workers, cache
        self.indexer_metrics_port = indexer_metrics_port
        self.log_path = log_path
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        """Base URL of the API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        """Start the processes and wait until `/readyz` answers 200."""
        if http_ok(f"{self.url}/healthz", 0.5):
            raise RuntimeError(f"port {self.port} is already serving: choose another --port")
        env = dict(os.environ)
        env.update(
            BIN=str(bin_dir()),
            API_WORKERS=str(self.workers),
            SEARCH_CACHE_ENABLED="true" if self.cache else "false",
            INDEXER_METRICS_PORT=str(self.indexer_metrics_port),
            LOG_LEVEL=env.get("LOADTEST_LOG_LEVEL", "WARNING"),
            # one client address signs in every simulated provider: lift the per-IP login
            # throttle of this private stack (the per-account one stays)
            LOGIN_MAX_ATTEMPTS_PER_IP="100000",
        )
        env.update(self.extra_env)
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ["bash", str(ROOT / "infra" / "run-all.sh"), "127.0.0.1", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"the stack exited with {self.proc.returncode} (log: {self.log_path})"
                )
            if http_ok(f"{self.url}/readyz", 1.0):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"the API did not become ready in {timeout:.0f} s (log: {self.log_path})"
        )

    def stop(self) -> None:
        """Stop the process group (TERM, then KILL after 15 s)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        # uvicorn workers and the relay are in the same group: make sure none is left
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_locust(
    host: str,
    out_dir: Path,
    users: int,
    spawn_rate: float,
    duration: str,
    wait_scale: float = 1.0,
    reset_stats: bool = False,
    classes: list[str] | None = None,
    env: dict[str, str] | None = None,
    quiet: bool = False,
) -> Path:
    """Run the locustfile headless against `host`; CSV (`locust_*.csv`, full history),
    `report.html` and `summary.json` go to `out_dir`. Returns the summary path (Locust's
    own exit code is ignored: the gate decides)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = out_dir / "summary.json"
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", str(users), "-r", str(spawn_rate), "-t", duration, "--host", host,
        "--csv", str(out_dir / "locust"), "--csv-full-history",
        "--html", str(out_dir / "report.html"), "--summary-json", str(summary),
        "--wait-scale", str(wait_scale), "--stop-timeout", "10", "--loglevel", "WARNING",
    ]  # fmt: skip
    if quiet:
        cmd.append("--only-summary")
    if reset_stats:
        cmd.append("--reset-stats")
    cmd += classes or []
    full_env = dict(os.environ)
    full_env.update(env or {})
    subprocess.run(cmd, cwd=ROOT, env=full_env, check=False)
    if not summary.exists():
        raise RuntimeError(f"Locust wrote no summary ({summary})")
    return summary
