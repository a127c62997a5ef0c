"""Kill-and-restart of the real server: reconnect, in-flight requests rejected, watch resumed."""
from __future__ import annotations

import asyncio
import re

from dbx_client import DBXError, DBXWebSocket

from conftest import API_KEY
from test_client import until


def client(server, **kw) -> DBXWebSocket:
    opts = dict(api_key=API_KEY, request_timeout=5.0, reconnect_base_delay=0.1, reconnect_max_delay=0.5)
    opts.update(kw)
    return DBXWebSocket(server.url, **opts)


def track(dbx: DBXWebSocket, key: str) -> dict[str, list]:
    seen: dict[str, list] = {"events": [], "resyncs": [], "resumes": [], "reconnects": [], "disconnects": []}
    dbx.on("keyspace", lambda e: seen["events"].append(e) if e.get("key") == key else None)
    dbx.on("resync", seen["resyncs"].append)
    dbx.on("resume", seen["resumes"].append)
    dbx.on("reconnect", seen["reconnects"].append)
    dbx.on("disconnect", seen["disconnects"].append)
    return seen


async def test_kill_rejects_inflight_and_reconnects(fresh_server):
    server = fresh_server
    dbx = client(server)
    seen = track(dbx, "none")
    try:
        await dbx.connect()
        await dbx.string.set("rk:a", "1")
        server.pause()
        inflight = [asyncio.ensure_future(dbx.string.get("rk:a")), asyncio.ensure_future(dbx.server.ping())]
        await asyncio.sleep(0.1)
        server.kill()
        results = await asyncio.gather(*inflight, return_exceptions=True)
        for r, method in zip(results, ["string.get", "server.ping"]):
            assert isinstance(r, DBXError), f"{method} was not rejected: {r!r}"
            assert r.code == "disconnected" and r.method == method
            assert re.search(rf"Connection lost \(code \d+.*\) before the reply to {re.escape(method)} \(id msg_\d+\)", str(r)), str(r)
        assert dbx.pending_requests == 0
        await until(lambda: dbx.get_state() == "reconnecting", 2, "state reconnecting")
        waiting = asyncio.ensure_future(dbx.server.ping())  # waits for the reconnect
        server.start()
        assert (await waiting)["pong"] is True
        await until(lambda: len(seen["reconnects"]) == 1, 10, "the reconnect event")
        assert dbx.get_state() == "connected"
        await dbx.string.set("rk:a", "2")
        assert (await dbx.string.get("rk:a"))["value"] == "2"
    finally:
        await dbx.disconnect()


async def test_kill_restart_resumes_without_missing_a_change(persistent_server):
    server = persistent_server
    writer = client(server)
    watcher = client(server, reconnect_base_delay=1.5, reconnect_max_delay=2.0)
    try:
        await writer.connect()
        await watcher.connect()
        await writer.string.set("rk:counter", "1")
        seen = track(watcher, "rk:counter")
        w = await watcher.key.watch(["rk:counter"])
        assert w["values"]["rk:counter"]["value"] == "1"
        await writer.string.set("rk:counter", "2")
        await until(lambda: len(seen["events"]) == 1, 3, "the first change")

        server.pause()  # the server cannot answer the next request...
        inflight = asyncio.ensure_future(watcher.string.get("rk:counter"))
        await asyncio.sleep(0.1)
        server.kill()  # ...and dies with it in flight
        try:
            await inflight
            raise AssertionError("the in-flight request was not rejected")
        except DBXError as e:
            assert e.code == "disconnected"
            assert e.method == "string.get"
            assert "before the reply to string.get" in str(e) and "may or may not have been applied" in str(e)
        await until(lambda: watcher.get_state() == "reconnecting", 2, "state reconnecting")

        server.start()  # same port, same data dir
        await until(lambda: writer.is_connected(), 5, "the writer to reconnect")
        await writer.string.set("rk:counter", "3")
        assert not watcher.is_connected(), "the change must happen while the watcher is away"

        await until(lambda: len(seen["reconnects"]) == 1, 10, "the watcher to reconnect")
        saw_replay = any(e.get("replayed") and e["rev"] > w["rev"] for e in seen["events"])
        saw_resync = any(r["values"].get("rk:counter", {}).get("value") == "3" for r in seen["resyncs"])
        assert saw_replay or saw_resync, f"missed the change made while disconnected: {seen}"

        n = len(seen["events"])
        await writer.string.set("rk:counter", "4")
        await until(lambda: len(seen["events"]) > n, 3, "a live event after reconnect")
        assert (await watcher.string.get("rk:counter"))["value"] == "4"
    finally:
        await watcher.disconnect()
        await writer.disconnect()


async def test_connection_lost_resumes_with_since(fresh_server):
    server = fresh_server
    writer = client(server)
    watcher = client(server, liveness_timeout=1.5, connect_timeout=1.0)
    try:
        await writer.connect()
        await watcher.connect()
        seen = track(watcher, "rs:k")
        w = await watcher.key.watch(["rs:k"])
        await writer.string.set("rs:k", "a")
        await until(lambda: len(seen["events"]) == 1, 3, "the first change")
        first = seen["events"][0]["rev"]

        server.pause()
        await until(lambda: len(seen["disconnects"]) == 1, 5, "the watcher to notice the silence")
        pending = asyncio.ensure_future(writer.string.set("rs:k", "b"))
        await asyncio.sleep(0.05)
        server.resume()
        wr = await pending
        await until(lambda: len(seen["reconnects"]) == 1, 10, "the watcher to reconnect")
        await until(lambda: any(e["rev"] > first for e in seen["events"]), 3, "the change made during the outage")
        assert seen["resyncs"] == [], f"expected a resume, not a resync: {seen['resyncs']}"
        ev = next(e for e in seen["events"] if e["rev"] > first)
        if isinstance(wr.get("rev"), int):
            assert ev["rev"] == wr["rev"]
        assert w["rev"] < ev["rev"]
    finally:
        await watcher.disconnect()
        await writer.disconnect()
