"""The Python client against the real dbx binary."""
from __future__ import annotations

import asyncio
import time

import pytest

from dbx_client import DBXError, DBXWebSocket, DBXWebSocketPool, jwt_expiry

from conftest import API_KEY, make_jwt


async def until(pred, timeout: float = 5.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def client(server, **kw) -> DBXWebSocket:
    kw.setdefault("api_key", API_KEY)
    kw.setdefault("request_timeout", 5.0)
    return DBXWebSocket(server.url, **kw)


async def test_connect_hello_and_state(server):
    dbx = client(server, client_id="py-test")
    seen: list[str] = []
    dbx.on("connect", lambda _h: seen.append("connect"))
    dbx.on("disconnect", lambda _d: seen.append("disconnect"))
    assert dbx.get_state() == "disconnected" and not dbx.is_connected()
    hello = await dbx.connect()
    assert hello["type"] == "hello" and hello["version"] == "1.0"
    assert isinstance(hello["epoch"], str) and isinstance(hello["rev"], int)
    assert dbx.get_state() == "connected" and dbx.is_connected()
    await dbx.disconnect()
    assert dbx.get_state() == "disconnected"
    assert seen == ["connect", "disconnect"]


async def test_bad_api_key_refused(server):
    dbx = client(server, api_key="wrong", reconnect=False)
    with pytest.raises(DBXError) as e:
        await dbx.connect()
    assert e.value.code in ("unauthorized", "connect_failed")
    assert "401" in str(e.value)


async def test_not_connected(server):
    with pytest.raises(DBXError) as e:
        await client(server).string.get("x")
    assert e.value.code == "not_connected"


async def test_typed_helpers_and_errors(server):
    async with client(server) as dbx:
        assert (await dbx.send_request("string.set", {"key": "py:a", "value": "hello"}))["set"] is True
        assert (await dbx.string.get("py:a"))["value"] == "hello"
        await dbx.string.set("py:t", "v", ttl=100)
        assert 0 < (await dbx.string.get("py:t"))["ttl"] <= 100
        assert (await dbx.string.incr("py:n"))["value"] == 1
        assert (await dbx.string.incr("py:n", by=5))["value"] == 6
        await dbx.hash.set("py:h", {"f1": "a", "f2": "b"})
        await dbx.hash.set("py:h", "f3", "c")
        assert (await dbx.hash.get("py:h"))["fields"] == {"f1": "a", "f2": "b", "f3": "c"}
        assert (await dbx.hash.get("py:h", "f3"))["value"] == "c"
        await dbx.set.add("py:s", ["x", "y"])
        assert (await dbx.set.contains("py:s", "x"))["contains"] is True
        await dbx.list.push("py:l", ["1", "2", "3"])
        assert (await dbx.list.range("py:l", 0, -1))["values"] == ["1", "2", "3"]
        assert (await dbx.key.delete(["py:a", "py:missing"]))["deleted"] == 1
        assert (await dbx.server.ping())["pong"] is True
        with pytest.raises(DBXError) as e:
            await dbx.string.get("py:does-not-exist")
        assert e.value.code == "not_found" and e.value.method == "string.get"
        with pytest.raises(DBXError) as e:
            await dbx.send_request("nope.nope")
        assert e.value.code == "method_not_found"


async def test_batch(server):
    async with client(server) as dbx:
        r = await dbx.batch_operations([
            {"method": "string.set", "params": {"key": "py:b1", "value": "v1"}},
            {"method": "string.get", "params": {"key": "py:b1"}},
            {"method": "string.get", "params": {"key": "py:b-missing"}},
        ])
        assert r["results"][1]["result"]["value"] == "v1"
        assert r["results"][2]["error"]["code"] == "not_found"


async def test_timeout(server):
    async with client(server) as dbx:
        server.pause()
        try:
            with pytest.raises(DBXError) as e:
                await dbx.server.ping(timeout=0.3)
        finally:
            server.resume()
        assert e.value.code == "timeout"
        assert "No reply to server.ping" in str(e.value)
        assert (await dbx.server.ping())["pong"] is True
        assert dbx.pending_requests == 0


async def test_heartbeat_events(server):
    async with client(server) as dbx:
        stream = dbx.events("heartbeat")
        ev = await stream.next(timeout=4)
        assert ev["type"] == "heartbeat"


async def test_pubsub_async_iterator(server):
    async with client(server) as sub, client(server) as pub:
        stream = sub.events("event")
        assert (await sub.pubsub.subscribe(["py:chan"]))["subscribed"] == ["py:chan"]
        assert (await pub.pubsub.publish("py:chan", {"hello": 1}))["receivers"] == 1
        ev = await stream.next(timeout=3)
        assert ev["channel"] == "py:chan" and ev["data"] == {"hello": 1}


async def test_watch_sees_change_by_other_client(server):
    async with client(server) as watcher, client(server) as writer:
        await writer.string.set("py:w", "one")
        stream = watcher.events("keyspace")
        w = await watcher.key.watch(["py:w"])
        assert w["watching"] == ["py:w"]
        assert w["values"]["py:w"] == {"type": "string", "value": "one"}
        s = await writer.string.set("py:w", "two")
        ev = await stream.next(timeout=3)
        assert ev["key"] == "py:w" and ev["event"] == "string.set" and ev["rev"] > w["rev"]
        if isinstance(s.get("rev"), int):
            assert ev["rev"] == s["rev"]
        assert watcher.watch_position()[0] == ev["rev"]


@pytest.mark.parametrize("token_in", ["header", "subprotocol"])
async def test_jwt(server, token_in):
    async with client(server, api_key=None, token=make_jwt(), token_in=token_in) as dbx:
        if token_in == "subprotocol":
            assert dbx.subprotocol == "dbx.v1"
        await dbx.string.set("py:jwt", "ok")
        assert (await dbx.string.get("py:jwt"))["value"] == "ok"


async def test_token_provider_refreshes(server):
    issued = 0

    async def provider() -> str:
        nonlocal issued
        issued += 1
        return make_jwt(ttl=3)

    dbx = client(server, api_key=None, token=provider, reconnect=False)
    refreshed: list[dict] = []
    closes: list[dict] = []
    dbx.on("token_refreshed", refreshed.append)
    dbx.on("disconnect", closes.append)
    async with dbx:
        first_exp = jwt_expiry(dbx._token or "")
        assert first_exp
        await until(lambda: refreshed, 4, "auth.refresh")
        assert refreshed[0]["expires_at"] >= first_exp
        await asyncio.sleep(max(0.0, first_exp - time.time()) + 1.2)
        assert closes == [], "closed with 4001"
        assert (await dbx.server.ping())["pong"] is True
    assert issued >= 2


async def test_pool(server):
    async with DBXWebSocketPool(server.url, api_key=API_KEY, max_connections=2, max_pending_per_connection=1) as pool:
        rs = await asyncio.gather(*(pool.send_request("string.set", {"key": f"py:p{i}", "value": str(i)}) for i in range(6)))
        assert len(rs) == 6 and 1 <= len(pool.pool) <= 2
        conn = await pool.get_connection()
        assert (await conn.string.get("py:p5"))["value"] == "5"
