"""asyncio client for the DBX WebSocket data store, on the `websockets` package."""
from __future__ import annotations

import asyncio
import base64
import inspect
import itertools
import json
import logging
import random
import ssl as ssl_module
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, Literal, Union
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ._generated import GeneratedMethods

log = logging.getLogger("dbx_client")

State = Literal["disconnected", "connecting", "connected", "reconnecting"]
TokenProvider = Callable[[], Union[str, Awaitable[str]]]
Handler = Callable[[Any], Any]


class DBXError(Exception):
    """Every failure the client reports. `code` is the server's error code (`not_found`,
    `wrong_type`, `rate_limited`, ...) or the client's own: `timeout`, `disconnected`,
    `not_connected`, `connect_failed`, `connect_timeout`."""

    def __init__(self, code: str, message: str, *, method: str | None = None, id: str | None = None,
                 close_code: int | None = None, retry_after_ms: int | None = None,
                 details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.method = method
        self.id = id
        self.close_code = close_code
        self.retry_after_ms = retry_after_ms
        self.details = dict(details) if details else None

    def __repr__(self) -> str:
        return f"DBXError({self.code!r}, {self.message!r})"


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim (unix seconds) of a JWT, or None."""
    try:
        part = token.split(".")[1]
        payload = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        exp = payload.get("exp")
        return float(exp) if isinstance(exp, (int, float)) else None
    except Exception:
        return None


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    q = [(k, "***" if k == "api_key" else v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(q)))


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    if isinstance(v, (str, bytes)):
        return [v]
    return list(v)


class EventStream:
    """`async for ev in dbx.events("keyspace")`: yields message dicts (each has a `type`) until
    `disconnect()` is called or the stream is closed."""

    _END = object()

    def __init__(self, client: DBXWebSocket, types: set[str] | None, maxsize: int) -> None:
        self._client = client
        self._types = types
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.dropped = 0
        client._streams.add(self)

    def _push(self, item: Any) -> None:
        if item is not self._END and self._types is not None and item.get("type") not in self._types:
            return
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except asyncio.QueueFull:  # a slow consumer loses the oldest events, and is told how many
                self._queue.get_nowait()
                self.dropped += 1

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        item = await self._queue.get()
        if item is self._END:
            self._client._streams.discard(self)
            raise StopAsyncIteration
        return item

    async def next(self, timeout: float | None = None) -> dict[str, Any]:
        """The next event, waiting at most `timeout` seconds (asyncio.TimeoutError after)."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    def close(self) -> None:
        self._client._streams.discard(self)
        self._push(self._END)

    async def aclose(self) -> None:
        self.close()


class _Pending:
    __slots__ = ("future", "method")

    def __init__(self, future: asyncio.Future[Any], method: str) -> None:
        self.future = future
        self.method = method


class DBXWebSocket(GeneratedMethods):
    """A connection to DBX.

    ``dbx = DBXWebSocket("ws://127.0.0.1:8080/ws", api_key="...")``; ``await dbx.connect()``;
    ``await dbx.string.set("k", "v")``; ``await dbx.key.watch(["k"])``;
    ``async for ev in dbx.events("keyspace"): ...``. Also an async context manager.
    For ``wss://`` with a private CA pass ``ssl=ssl.create_default_context(cafile="ca.pem")``.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        token: str | TokenProvider | None = None,
        token_in: Literal["header", "subprotocol"] = "header",
        client_id: str | None = None,
        version: str | None = None,
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        reconnect: bool = True,
        max_reconnect_attempts: int | None = None,
        reconnect_base_delay: float = 0.25,
        reconnect_max_delay: float = 30.0,
        heartbeat: bool = True,
        liveness_timeout: float | None = None,
        refresh_margin: float = 30.0,
        wait_for_reconnect: bool = True,
        max_pending_per_connection: int = 100,
        event_queue_size: int = 10000,
        ssl: ssl_module.SSLContext | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url
        # wss://: the TLS context (e.g. ssl.create_default_context(cafile="ca.pem") for a
        # private CA); None uses the system's trusted CAs. Passed to websockets.connect.
        self.ssl = ssl
        self.api_key = api_key
        self.client_id = client_id
        self.version = version
        self.token_in = token_in
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.max_reconnect_attempts = max_reconnect_attempts
        self.reconnect_base_delay = reconnect_base_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.heartbeat = heartbeat
        self.liveness_timeout = liveness_timeout
        self.refresh_margin = refresh_margin
        self.wait_for_reconnect = wait_for_reconnect
        self.max_pending_per_connection = max_pending_per_connection
        self.event_queue_size = event_queue_size
        self.connect_kwargs = dict(connect_kwargs or {})

        self._token_source = token
        self._token: str | None = token if isinstance(token, str) else None
        self.hello: dict[str, Any] | None = None
        self.reconnect_attempts = 0
        self._state: State = "disconnected"
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._handlers: dict[str, list[Handler]] = {}
        self._streams: set[EventStream] = set()
        self._waiters: set[asyncio.Future[None]] = set()
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._bg: set[asyncio.Task[Any]] = set()
        self._connect_future: asyncio.Future[dict[str, Any]] | None = None
        self._closed_by_user = False
        self._last_rx = 0.0
        self._subs: dict[str, set[str]] = {"channels": set(), "patterns": set()}
        self._watch_keys: set[str] = set()
        self._watch_patterns: set[str] = set()
        self._watch_rev: int | None = None
        self._watch_epoch: str | None = None
        self._init_namespaces()

    # ---- state
    def get_state(self) -> State:
        return self._state

    @property
    def state(self) -> State:
        return self._state

    def is_connected(self) -> bool:
        return self._state == "connected" and self._ws is not None

    def is_available(self) -> bool:
        return self.is_connected() and len(self._pending) < self.max_pending_per_connection

    @property
    def pending_requests(self) -> int:
        return len(self._pending)

    @property
    def subprotocol(self) -> str | None:
        return self._ws.subprotocol if self._ws is not None else None

    def watch_position(self) -> tuple[int | None, str | None]:
        """(highest rev seen for the live watches, the epoch it belongs to)."""
        return self._watch_rev, self._watch_epoch

    # ---- events
    def on(self, event: str, handler: Handler) -> None:
        self._handlers.setdefault(event, []).append(handler)

    def off(self, event: str, handler: Handler) -> None:
        handlers = self._handlers.get(event)
        if handlers and handler in handlers:
            handlers.remove(handler)

    def emit(self, event: str, data: Any = None) -> None:
        for handler in list(self._handlers.get(event, ())):
            try:
                r = handler(data)
                if inspect.isawaitable(r):
                    self._spawn(r)
            except Exception:
                log.exception("error in DBX event handler for %s", event)
        if event != "message":
            item = data if isinstance(data, dict) and data.get("type") == event else {"type": event, **(data if isinstance(data, dict) else {"data": data})}
            for stream in list(self._streams):
                stream._push(item)

    def events(self, *types: str) -> EventStream:
        """An async iterator over unsolicited messages and connection events, as dicts with a
        `type`: `keyspace`, `event`, `heartbeat`, `resync`, `gap`, `resume`, `connect`,
        `disconnect`, `reconnecting`, `reconnect`, `token_refreshed`, `error`. No types: all but
        `heartbeat`."""
        wanted = set(types) if types else {
            "keyspace", "event", "hello", "resync", "gap", "resume", "connect", "disconnect",
            "reconnecting", "reconnect", "reconnect_failed", "token_refreshed", "error"}
        return EventStream(self, wanted, self.event_queue_size)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self.events()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return task

    # ---- connection
    async def __aenter__(self) -> DBXWebSocket:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    async def connect(self) -> dict[str, Any]:
        """Opens the connection; returns the server's hello message."""
        if self._state == "connected" and self.hello is not None:
            return self.hello
        if self._connect_future is not None:
            return await asyncio.shield(self._connect_future)
        self._closed_by_user = False
        self._state = "connecting"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._connect_future = fut
        try:
            hello = await self._open()
            await self._after_connect(hello, reconnected=False)
            fut.set_result(hello)
            return hello
        except BaseException as error:
            if self._state == "connecting":
                self._state = "disconnected"
            self._reject_waiters(error if isinstance(error, DBXError) else DBXError("connect_failed", str(error)))
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # mark retrieved
            raise
        finally:
            self._connect_future = None

    async def disconnect(self) -> None:
        """Closes the connection (code 1000) and stops reconnecting."""
        self._closed_by_user = True
        current = asyncio.current_task()
        task = self._tasks.pop("reconnect", None)
        if task is not None and task is not current:
            task.cancel()
        self._stop_timers()
        ws, self._ws = self._ws, None
        err = DBXError("disconnected", "disconnect() was called")
        self._reject_pending(lambda _id, _p: err)
        self._reject_waiters(err)
        self._subs = {"channels": set(), "patterns": set()}
        self._watch_keys, self._watch_patterns = set(), set()
        self._watch_rev = self._watch_epoch = None
        was = self._state != "disconnected"
        self._state = "disconnected"
        if was:
            self.emit("disconnect", {"code": 1000, "reason": "Client disconnect", "was_clean": True})
        reader = self._tasks.pop("reader", None)
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(1000, "Client disconnect"), 2)
            except Exception:
                pass
        if reader is not None and reader is not current:
            reader.cancel()
        for stream in list(self._streams):
            stream.close()

    def _build_url(self) -> str:
        parts = urlsplit(self.url)
        q = parse_qsl(parts.query)
        for k, v in (("api_key", self.api_key), ("client_id", self.client_id), ("version", self.version)):
            if v:
                q = [(a, b) for a, b in q if a != k] + [(k, v)]
        return urlunsplit(parts._replace(query=urlencode(q)))

    async def _current_token(self) -> str | None:
        src = self._token_source
        if src is None or isinstance(src, str):
            return self._token
        exp = jwt_expiry(self._token) if self._token else None
        if self._token is None or (exp is not None and exp - time.time() < 1):
            self._token = await self._call_provider()
        return self._token

    async def _call_provider(self) -> str:
        assert callable(self._token_source)
        r = self._token_source()
        if inspect.isawaitable(r):
            r = await r
        return str(r)

    async def _open(self) -> dict[str, Any]:
        url = self._build_url()
        where = _redact(url)
        token = await self._current_token()
        kwargs: dict[str, Any] = {
            "open_timeout": self.connect_timeout, "ping_interval": None, "max_size": None,
            "close_timeout": 2, "compression": None,
        }
        if self.ssl is not None:
            if not url.startswith("wss://"):
                raise DBXError("invalid_params", "ssl= is for wss:// URLs")
            kwargs["ssl"] = self.ssl
        if token:
            if self.token_in == "subprotocol":
                kwargs["subprotocols"] = ["dbx.v1", f"bearer.{token}"]
            else:
                kwargs["additional_headers"] = {"Authorization": f"Bearer {token}"}
        kwargs.update(self.connect_kwargs)
        try:
            ws = await ws_connect(url, **kwargs)
        except InvalidStatus as e:
            status = e.response.status_code
            body = e.response.body.decode("utf-8", "replace") if e.response.body else ""
            code = "connect_failed"
            try:
                code = json.loads(body)["error"]["code"]
            except Exception:
                pass
            raise DBXError(code if code in ("unauthorized", "overloaded", "unsupported_version") else "connect_failed",
                           f"Connection to {where} refused: HTTP {status} {body[:200]}".strip()) from e
        except (OSError, InvalidHandshake, asyncio.TimeoutError) as e:
            raise DBXError("connect_failed", f"Could not connect to {where}: {e!r}") from e
        try:
            raw = await asyncio.wait_for(ws.recv(), self.connect_timeout)
            hello = json.loads(raw)
        except asyncio.TimeoutError as e:
            await ws.close()
            raise DBXError("connect_timeout", f"No hello from {where} within {self.connect_timeout} s") from e
        except (ConnectionClosed, ValueError) as e:
            await ws.close()
            raise DBXError("connect_failed", f"Connection to {where} failed before hello: {e!r}") from e
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            await ws.close()
            raise DBXError("connect_failed", f"Expected a hello message from {where}, got {str(raw)[:200]}")
        self._ws = ws
        self.hello = hello
        self._last_rx = time.monotonic()
        self._tasks["reader"] = asyncio.create_task(self._read_loop(ws))
        return hello

    async def _read_loop(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self._last_rx = time.monotonic()
                try:
                    msg = json.loads(raw)
                except ValueError as e:
                    self.emit("error", DBXError("invalid_message", f"Unparseable message from server: {e}"))
                    continue
                self.handle_message(msg)
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception as e:  # pragma: no cover - defensive
            log.exception("DBX reader failed")
            self.emit("error", DBXError("internal", f"reader failed: {e!r}"))
        self._on_close(ws, ws.close_code or 1006, ws.close_reason or "")

    async def _after_connect(self, hello: dict[str, Any], *, reconnected: bool) -> None:
        self._state = "connected"
        self.reconnect_attempts = 0
        self._start_timers(hello)
        restored: dict[str, Any] = {}
        if reconnected:
            restored = await self._restore(hello)
        if self._state != "connected":
            return
        for w in list(self._waiters):
            if not w.done():
                w.set_result(None)
        self._waiters.clear()
        self.emit("connect", hello)
        if reconnected:
            self.emit("reconnect", {"hello": hello, **restored})

    def _start_timers(self, hello: dict[str, Any]) -> None:
        self._stop_timers()
        hb = max(1.0, float(hello.get("heartbeat_interval") or 30))
        if self.heartbeat:
            self._tasks["heartbeat"] = asyncio.create_task(self._heartbeat_loop(hb))
        self._schedule_refresh()

    def _stop_timers(self) -> None:
        current = asyncio.current_task()
        for name in ("heartbeat", "refresh"):
            task = self._tasks.pop(name, None)
            if task is not None and task is not current:
                task.cancel()

    async def _heartbeat_loop(self, hb: float) -> None:
        liveness = self.liveness_timeout if self.liveness_timeout is not None else hb * 2 + 2
        step = min(hb, liveness / 2, 1.0)
        next_beat = time.monotonic() + hb
        while True:
            await asyncio.sleep(step)
            ws = self._ws
            if ws is None:
                return
            if time.monotonic() - self._last_rx > liveness:
                self._abandon(ws, 4000, f"no message from the server for {liveness} s")
                return
            if time.monotonic() >= next_beat:
                next_beat += hb
                try:
                    await ws.send(json.dumps({"type": "heartbeat", "timestamp": _now_iso()}))
                except ConnectionClosed:
                    return

    def _schedule_refresh(self) -> None:
        if not callable(self._token_source) or not self._token:
            return
        exp = jwt_expiry(self._token)
        if exp is None:
            return
        left = exp - time.time()
        margin = min(self.refresh_margin, left / 2)
        self._tasks["refresh"] = asyncio.create_task(self._refresh_after(max(0.0, left - margin)))

    async def _refresh_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        while self.is_connected():
            try:
                token = await self._call_provider()
                result = await self.send_request("auth.refresh", {"token": token})
                self._token = token
                self.emit("token_refreshed", result)
                self._tasks.pop("refresh", None)
                self._schedule_refresh()
                return
            except Exception as e:
                self.emit("error", DBXError(getattr(e, "code", "refresh_failed"), f"auth.refresh failed: {e}"))
                await asyncio.sleep(1)

    def _abandon(self, ws: ClientConnection, code: int, reason: str) -> None:
        """Drops a connection that looks dead without waiting for a close handshake."""
        self._on_close(ws, code, reason)
        try:
            ws.transport.abort()
        except Exception:
            pass

    def _on_close(self, ws: ClientConnection, code: int, reason: str) -> None:
        if ws is not self._ws:
            return
        self._ws = None
        self._stop_timers()
        why = f"code {code}" + (f", {reason}" if reason else "")
        self._reject_pending(lambda id_, p: DBXError(
            "disconnected",
            f"Connection lost ({why}) before the reply to {p.method} (id {id_}); it may or may not have been applied",
            method=p.method, id=id_, close_code=code))
        self.emit("disconnect", {"code": code, "reason": reason, "was_clean": code == 1000})
        if self._closed_by_user or not self.reconnect:
            self._state = "disconnected"
            self._reject_waiters(DBXError("disconnected", f"Connection closed ({why})", close_code=code))
            return
        self._state = "reconnecting"
        self._tasks["reconnect"] = asyncio.ensure_future(self._reconnect_loop())

    def _backoff(self, attempt: int) -> float:
        cap = min(self.reconnect_max_delay, self.reconnect_base_delay * (2 ** attempt))
        return cap / 2 + random.random() * cap / 2  # exponential, with jitter

    async def _reconnect_loop(self) -> None:
        attempts: Iterable[int] = range(self.max_reconnect_attempts) if self.max_reconnect_attempts is not None else itertools.count()
        for attempt in attempts:
            self.reconnect_attempts = attempt + 1
            delay = self._backoff(attempt)
            self.emit("reconnecting", {"attempt": attempt + 1, "delay": delay})
            await asyncio.sleep(delay)
            if self._closed_by_user:
                return
            try:
                hello = await self._open()
                if self._closed_by_user:
                    return
                self._tasks.pop("reconnect", None)
                await self._after_connect(hello, reconnected=True)
                return
            except DBXError as e:
                self.emit("error", e)
        self._tasks.pop("reconnect", None)
        self._state = "disconnected"
        err = DBXError("disconnected", f"Gave up reconnecting after {self.max_reconnect_attempts} attempts")
        self._reject_waiters(err)
        self.emit("reconnect_failed", err)

    async def _restore(self, hello: dict[str, Any]) -> dict[str, Any]:
        """After a reconnect: subscribe again, and resume the watches from the last rev seen."""
        out: dict[str, Any] = {"resubscribed": [], "resumed": False, "resync": False}
        try:
            if self._subs["channels"] or self._subs["patterns"]:
                params: dict[str, Any] = {}
                if self._subs["channels"]:
                    params["channels"] = sorted(self._subs["channels"])
                if self._subs["patterns"]:
                    params["patterns"] = sorted(self._subs["patterns"])
                r = await self.send_request("pubsub.subscribe", params, _internal=True)
                out["resubscribed"] = (r or {}).get("subscribed", [])
            if self._watch_keys or self._watch_patterns:
                base: dict[str, Any] = {}
                if self._watch_keys:
                    base["keys"] = sorted(self._watch_keys)
                if self._watch_patterns:
                    base["patterns"] = sorted(self._watch_patterns)
                reason = "no_revision" if self._watch_rev is None else "epoch_changed"
                if self._watch_rev is not None and self._watch_epoch is not None and self._watch_epoch == hello.get("epoch"):
                    since = self._watch_rev
                    r = await self.send_request("key.watch", {**base, "since": since, "epoch": self._watch_epoch}, _internal=True)
                    if isinstance(r, dict) and not r.get("gap") and isinstance(r.get("replay"), list):
                        n = 0
                        for ev in r["replay"]:
                            if isinstance(ev.get("rev"), int) and ev["rev"] <= since:
                                continue
                            n += 1
                            self._on_keyspace({**ev, "type": "keyspace", "replayed": True})
                        if isinstance(r.get("rev"), int) and r["rev"] > (self._watch_rev or -1):
                            self._watch_rev = r["rev"]
                        out.update(resumed=True, replayed=n)
                        self.emit("resume", {"since": since, "rev": self._watch_rev, "replayed": n, "watching": r.get("watching")})
                        return out
                    reason = "gap" if isinstance(r, dict) and r.get("gap") else "no_replay"
                    if isinstance(r, dict) and not r.get("gap") and "values" in r:
                        self._resync(r, hello, reason)
                        out["resync"] = True
                        return out
                r = await self.send_request("key.watch", base, _internal=True)
                self._resync(r, hello, reason)
                out["resync"] = True
        except DBXError as e:
            self.emit("error", DBXError(e.code, f"Could not restore subscriptions/watches after reconnect: {e}"))
        return out

    def _resync(self, result: dict[str, Any], hello: dict[str, Any], reason: str) -> None:
        self._watch_rev = result.get("rev") if isinstance(result.get("rev"), int) else None
        self._watch_epoch = hello.get("epoch")
        payload = {"reason": reason, "rev": result.get("rev"), "values": result.get("values") or {}, "watching": result.get("watching")}
        self.emit("gap", dict(payload))
        self.emit("resync", dict(payload))

    def _reject_pending(self, make_error: Callable[[str, _Pending], DBXError]) -> None:
        pending, self._pending = self._pending, {}
        for id_, p in pending.items():
            if not p.future.done():
                p.future.set_exception(make_error(id_, p))

    def _reject_waiters(self, error: BaseException) -> None:
        for w in list(self._waiters):
            if not w.done():
                w.set_exception(error)
                w.exception()
        self._waiters.clear()

    # ---- requests
    async def send_request(self, method: str, params: Mapping[str, Any] | None = None, *,
                           timeout: float | None = None, _internal: bool = False) -> Any:
        """Sends one request and returns its `result`; raises DBXError."""
        timeout = self.request_timeout if timeout is None else timeout
        params = dict(params or {})
        if not _internal and not self.is_connected():
            if self._state in ("connecting", "reconnecting") and self.wait_for_reconnect:
                w: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._waiters.add(w)
                try:
                    await asyncio.wait_for(asyncio.shield(w), timeout)
                except asyncio.TimeoutError:
                    raise DBXError("timeout", f"Not reconnected within {timeout} s; {method} was not sent", method=method) from None
                finally:
                    self._waiters.discard(w)
            else:
                raise DBXError("not_connected", f"WebSocket not connected (state: {self._state}); {method} was not sent", method=method)
        ws = self._ws
        if ws is None:
            raise DBXError("not_connected", f"WebSocket not connected (state: {self._state}); {method} was not sent", method=method)
        id_ = f"msg_{next(self._ids)}"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[id_] = _Pending(fut, method)
        try:
            await ws.send(json.dumps({"id": id_, "method": method, "params": params, "timestamp": _now_iso()}))
        except ConnectionClosed as e:
            self._pending.pop(id_, None)
            if fut.done():
                fut.exception()
                raise fut.exception() from None  # type: ignore[misc]
            raise DBXError("disconnected", f"Could not send {method}: the connection is closed", method=method, id=id_) from e
        try:
            result = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self._pending.pop(id_, None)
            raise DBXError("timeout", f"No reply to {method} (id {id_}) within {timeout} s", method=method, id=id_) from None
        if not _internal:
            self._track(method, params, result)
        return result

    async def batch_operations(self, operations: Iterable[Mapping[str, Any]], *, timeout: float | None = None) -> dict[str, Any]:
        """Runs `[{"method", "params"}]` as one `batch`; returns `{"results": [{"result"}|{"error"}]}`."""
        return await self.send_request("batch", {"operations": [dict(o) for o in operations]}, timeout=timeout)

    def _track(self, method: str, params: dict[str, Any], result: Any) -> None:
        if method == "pubsub.subscribe":
            self._subs["channels"].update(_as_list(params.get("channels")))
            self._subs["patterns"].update(_as_list(params.get("patterns")))
        elif method == "pubsub.unsubscribe":
            if params.get("channels") is None and params.get("patterns") is None:
                self._subs = {"channels": set(), "patterns": set()}
            self._subs["channels"].difference_update(_as_list(params.get("channels")))
            self._subs["patterns"].difference_update(_as_list(params.get("patterns")))
        elif method == "key.watch":
            self._watch_keys.update(_as_list(params.get("keys")))
            self._watch_patterns.update(_as_list(params.get("patterns")))
            if isinstance(result, dict):
                for ev in result.get("replay") or []:
                    self._on_keyspace({**ev, "type": "keyspace", "replayed": True})
                rev = result.get("rev")
                if isinstance(rev, int) and (self._watch_rev is None or rev > self._watch_rev):
                    self._watch_rev = rev
            self._watch_epoch = (self.hello or {}).get("epoch")
        elif method == "key.unwatch":
            if params.get("keys") is None and params.get("patterns") is None:
                self._watch_keys, self._watch_patterns = set(), set()
            self._watch_keys.difference_update(_as_list(params.get("keys")))
            self._watch_patterns.difference_update(_as_list(params.get("patterns")))

    def _on_keyspace(self, msg: dict[str, Any]) -> None:
        rev = msg.get("rev")
        if isinstance(rev, int) and (self._watch_rev is None or rev > self._watch_rev):
            self._watch_rev = rev
        self.emit("keyspace", msg)
        self.emit("message", msg)

    def handle_message(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        if data.get("type") == "heartbeat":
            self.emit("heartbeat", data)
            return
        id_ = data.get("id")
        if id_ is not None and str(id_) in self._pending:
            p = self._pending.pop(str(id_))
            if p.future.done():
                return
            err = data.get("error")
            if err:
                p.future.set_exception(DBXError(
                    err.get("code", "error"), err.get("message") or err.get("code") or "request failed",
                    method=p.method, id=str(id_), retry_after_ms=err.get("retry_after_ms"), details=err))
            else:
                p.future.set_result(data.get("result"))
            return
        kind = data.get("type")
        if kind == "keyspace":
            self._on_keyspace(data)
            return
        if kind in ("event", "hello"):
            self.emit(kind, data)
        elif data.get("error"):
            e = data["error"]
            self.emit("error", DBXError(e.get("code", "error"), e.get("message", "server error"), details=e))
        self.emit("message", data)


DBXClient = DBXWebSocket


class DBXWebSocketPool:
    """A small pool of connections, as in the original document."""

    def __init__(self, url: str, *, max_connections: int = 5, **options: Any) -> None:
        self.url = url
        self.options = options
        self.pool: list[DBXWebSocket] = []
        self.max_connections = max_connections
        self.current_connections = 0

    async def get_connection(self, timeout: float | None = None) -> DBXWebSocket:
        for conn in self.pool:
            if conn.is_available():
                return conn
        if self.current_connections < self.max_connections:
            self.current_connections += 1
            conn = DBXWebSocket(self.url, **self.options)
            try:
                await conn.connect()
            except BaseException:
                self.current_connections -= 1
                raise
            self.pool.append(conn)
            return conn
        deadline = time.monotonic() + (timeout if timeout is not None else self.options.get("request_timeout", 30.0))
        while time.monotonic() < deadline:
            for conn in self.pool:
                if conn.is_available():
                    return conn
            await asyncio.sleep(0.05)
        raise DBXError("timeout", "No pooled connection became free in time")

    async def send_request(self, method: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        conn = await self.get_connection()
        return await conn.send_request(method, params, timeout=timeout)

    async def disconnect(self) -> None:
        conns, self.pool = self.pool, []
        self.current_connections = 0
        await asyncio.gather(*(c.disconnect() for c in conns), return_exceptions=True)

    async def __aenter__(self) -> DBXWebSocketPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()
