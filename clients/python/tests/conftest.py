"""Starts the real DBX server binary ($DBX_BIN, default <repo>/target/debug/dbx) for the tests."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
DBX_BIN = (REPO_ROOT / os.environ["DBX_BIN"]) if os.environ.get("DBX_BIN") else REPO_ROOT / "target/debug/dbx"
API_KEY = "testkey"
JWT_SECRET = "client-test-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_jwt(claims: dict[str, Any] | None = None, ttl: float = 300, secret: str = JWT_SECRET) -> str:
    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({"sub": "test", "role": "write", "iat": now, "exp": int(now + ttl), **(claims or {})}).encode())
    sig = b64(hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest())
    return f"{header}.{payload}.{sig}"


def dev_certs() -> Path:
    """A local CA and a localhost certificate from scripts/dev-cert.sh (openssl)."""
    d = Path(tempfile.mkdtemp(prefix="dbx-py-certs-"))
    subprocess.run(["bash", str(REPO_ROOT / "scripts/dev-cert.sh"), str(d)], check=True, capture_output=True)
    return d


class Server:
    def __init__(self, data_dir: str | None = None, certs: Path | None = None) -> None:
        if not DBX_BIN.exists():
            raise RuntimeError(f"DBX server binary not found at {DBX_BIN} (build it with `cargo build` or set DBX_BIN)")
        self.port = free_port()
        self.certs = certs
        self.url = f"wss://localhost:{self.port}/ws" if certs else f"ws://127.0.0.1:{self.port}/ws"
        self.env = {
            **os.environ,
            "DBX_HOST": "127.0.0.1", "DBX_PORT": str(self.port), "DBX_API_KEYS": API_KEY,
            "DBX_JWT_SECRET": JWT_SECRET, "DBX_WS_HEARTBEAT_INTERVAL": "1", "DBX_WS_RATE_LIMIT": "0",
            "DBX_LOG": "warn",
        }
        if data_dir:
            self.env.update(DBX_PERSIST="true", DBX_DATA_DIR=data_dir, DBX_APPENDFSYNC="always")
        else:
            self.env["DBX_PERSIST"] = "false"
        if certs:
            self.env.update(DBX_TLS_CERT=str(certs / "cert.pem"), DBX_TLS_KEY=str(certs / "key.pem"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([str(DBX_BIN)], env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if self.certs:
                    ctx = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))
                    health = urllib.request.urlopen(f"https://localhost:{self.port}/health", timeout=1, context=ctx)
                else:
                    health = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1)
                with health as r:
                    if r.status == 200:
                        return
            except Exception as e:  # noqa: BLE001
                last = e
            time.sleep(0.05)
        self.log.seek(0)
        out = self.log.read().decode(errors="replace")[-4000:]
        self.kill()
        raise RuntimeError(f"dbx did not become healthy on port {self.port}: {last!r}\n--- server output ---\n{out}")

    def pause(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL also kills a stopped process, which must not run (and answer) first
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def persistent_server() -> Iterator[Server]:
    d = tempfile.mkdtemp(prefix="dbx-py-")
    s = Server(data_dir=d)
    yield s
    s.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fresh_server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tls_server() -> Iterator[Server]:
    certs = dev_certs()
    s = Server(certs=certs)
    yield s
    s.stop()
    shutil.rmtree(certs, ignore_errors=True)
