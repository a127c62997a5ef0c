#!/usr/bin/env python3
"""A minimal DBX client for operations scripts (scripts/backup.sh): the Python standard
library only, so that a backup needs nothing installed but python3.

  dbxws.py call METHOD [PARAMS_JSON]   one request; prints its `result` as JSON
                                       (exit 1 with the error on stderr otherwise)
  dbxws.py hello                       prints the server's hello message
  dbxws.py save-and-wait [TIMEOUT_S]   server.save, then polls /health until that
                                       snapshot (or one that was already running) is
                                       done; prints {"generation","ms","bytes","rev",
                                       "epoch","appendfsync"} (rev/epoch from
                                       server.info just before the save)
  dbxws.py free-port                   prints a free TCP port on 127.0.0.1

Environment:
  DBX_URL          ws://HOST:PORT[/PATH] or wss://… (default ws://127.0.0.1:8080; the
                   path defaults to /ws)
  DBX_API_KEY      credential (API key or JWT), sent as `Authorization: Bearer` so that
                   it never appears in a URL or a log
  DBX_HEALTH_URL   /health URL (default: same host and port as DBX_URL, http/https)
  DBX_CA_FILE      CA bundle for wss:// and https:// (default: the system's)
"""
import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT = 10.0
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def die(msg):
    print(f"dbxws: {msg}", file=sys.stderr)
    sys.exit(1)


def ws_url():
    u = urllib.parse.urlsplit(os.environ.get("DBX_URL") or "ws://127.0.0.1:8080")
    if u.scheme not in ("ws", "wss", "http", "https") or not u.hostname:
        die(f"DBX_URL must be ws://HOST:PORT or wss://HOST:PORT, not {u.geturl()!r}")
    tls = u.scheme in ("wss", "https")
    port = u.port or (443 if tls else 80)
    return tls, u.hostname, port, (u.path if u.path not in ("", "/") else "/ws")


def ssl_context():
    return ssl.create_default_context(cafile=os.environ.get("DBX_CA_FILE") or None)


class Ws:
    """One client WebSocket: handshake, masked text frames out, frames in."""

    def __init__(self):
        tls, host, port, path = ws_url()
        s = socket.create_connection((host, port), timeout=TIMEOUT)
        if tls:
            s = ssl_context().wrap_socket(s, server_hostname=host)
        self.s = s
        self.buf = b""
        key = base64.b64encode(os.urandom(16))
        req = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\n"
        )
        cred = os.environ.get("DBX_API_KEY")
        if cred:
            req += f"Authorization: Bearer {cred}\r\n"
        s.sendall((req + "\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            body = self.buf.decode("utf-8", "replace")
            die(f"handshake refused: {lines[0]} {body.strip()}")
        want = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        accept = [l.split(":", 1)[1].strip() for l in lines[1:] if l.lower().startswith("sec-websocket-accept:")]
        if accept != [want]:
            die("handshake: wrong Sec-WebSocket-Accept")

    def _fill(self):
        b = self.s.recv(65536)
        if not b:
            die("connection closed by the server")
        self.buf += b

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send_frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.s.sendall(head + mask + masked)

    def send(self, obj):
        self._send_frame(1, json.dumps(obj).encode())

    def recv(self):
        """The next text message, as JSON (pings answered, fragments joined)."""
        msg = b""
        while True:
            b0, b1 = self._take(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._take(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._take(8))
            payload = self._take(n)
            op = b0 & 0x0F
            if op == 9:
                self._send_frame(10, payload)
            elif op == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                die(f"server closed the connection ({code} {payload[2:].decode('utf-8', 'replace')})")
            elif op in (0, 1):
                msg += payload
                if b0 & 0x80:
                    return json.loads(msg)

    def call(self, method, params=None):
        rid = f"ops-{os.getpid()}-{time.monotonic_ns()}"
        self.send({"id": rid, "method": method, "params": params or {}})
        while True:
            m = self.recv()
            if m.get("id") == rid:
                if "error" in m:
                    die(f"{method}: {m['error'].get('code')}: {m['error'].get('message')}")
                return m.get("result")

    def close(self):
        try:
            self._send_frame(8, struct.pack("!H", 1000))
            self.s.close()
        except OSError:
            pass


def connect():
    ws = Ws()
    hello = ws.recv()
    if hello.get("type") != "hello":
        die(f"expected hello, got {hello}")
    return ws, hello


def health():
    url = os.environ.get("DBX_HEALTH_URL")
    if not url:
        tls, host, port, _ = ws_url()
        url = f"{'https' if tls else 'http'}://{host}:{port}/health"
    ctx = ssl_context() if url.startswith("https") else None
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT, context=ctx) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # 503 while degraded: the body still says why
        return json.loads(e.read() or b"{}")
    except (OSError, ValueError) as e:
        die(f"cannot read {url}: {e}")


def save_and_wait(timeout_s):
    h0 = health()
    if h0.get("persistence") in (None, "off"):
        die("persistence is off on this server: there is nothing to back up")
    # The last completed snapshot before the request: any snapshot completing after
    # it (ours, or one already running, whose generation may equal the current log's)
    # plus the logs after it holds every write acknowledged before the request.
    last0 = (h0.get("last_snapshot") or {}).get("generation", -1)
    ws, _ = connect()
    info = ws.call("server.info")
    started = ws.call("server.save").get("started")
    ws.close()
    deadline = time.monotonic() + timeout_s
    h = h0
    while time.monotonic() < deadline:
        h = health()
        last = h.get("last_snapshot") or {}
        # One started after our request (started=true) or the one that was already
        # running (started=false). Another may already be running (automatic snapshots
        # under heavy writes can follow each other with no gap to see): the completed
        # one is enough.
        if last.get("generation", -1) > last0:
            if not last.get("ok"):
                die(f"snapshot {last.get('generation')} failed (see the server's log); no backup taken")
            print(
                json.dumps(
                    {
                        "generation": last["generation"],
                        "ms": last.get("ms"),
                        "bytes": last.get("bytes"),
                        "started": started,
                        "rev": info.get("rev"),
                        "epoch": info.get("epoch"),
                        "appendfsync": h.get("appendfsync"),
                    }
                )
            )
            return
        time.sleep(0.05)
    die(f"the snapshot did not finish within {timeout_s} s (last /health: {json.dumps(h)})")


def main():
    if len(sys.argv) < 2:
        die(__doc__)
    cmd = sys.argv[1]
    if cmd == "call" and len(sys.argv) in (3, 4):
        ws, _ = connect()
        params = json.loads(sys.argv[3]) if len(sys.argv) == 4 else {}
        print(json.dumps(ws.call(sys.argv[2], params)))
        ws.close()
    elif cmd == "hello":
        ws, hello = connect()
        print(json.dumps(hello))
        ws.close()
    elif cmd == "save-and-wait":
        save_and_wait(float(sys.argv[2]) if len(sys.argv) > 2 else 600)
    elif cmd == "free-port":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            print(s.getsockname()[1])
    else:
        die(__doc__)


if __name__ == "__main__":
    main()
