#!/usr/bin/env python3
"""Helpers for scripts/bench-persist.sh (127.0.0.1 only, bounded in time).

  persist_bench.py fill PORT N        write N keys with string.mset (10,000 per call)
  persist_bench.py save PORT [DELAY]  after DELAY s call server.save, wait for it, print
                                      the snapshot's duration and size as JSON
"""
import asyncio, json, sys, time, urllib.request

import websockets


async def call(ws, i, method, params):
    await ws.send(json.dumps({"id": i, "method": method, "params": params}))
    while True:
        m = json.loads(await ws.recv())
        if m.get("id") == i:
            return m


async def fill(port, n):
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
        await ws.recv()  # hello
        t0 = time.time()
        for start in range(0, n, 10_000):
            pairs = {f"key:{i}": f"value-{i:08d}-xxxxxxxxxxxxxxxx" for i in range(start, min(n, start + 10_000))}
            r = await call(ws, start, "string.mset", {"pairs": pairs})
            assert "result" in r, r
        print(json.dumps({"filled": n, "secs": round(time.time() - t0, 2)}))


def health(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


async def save(port, delay):
    await asyncio.sleep(delay)
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.recv()
        t0 = time.time()
        r = await call(ws, 1, "server.save", {})
        assert r["result"]["started"], r
        deadline = t0 + 120
        while time.time() < deadline:
            h = health(port)
            if not h.get("snapshot_in_progress") and h.get("last_snapshot"):
                print(json.dumps({"snapshot": h["last_snapshot"], "wall_secs": round(time.time() - t0, 3)}))
                return
            await asyncio.sleep(0.05)
        print(json.dumps({"error": "snapshot did not finish in 120 s"}))


if __name__ == "__main__":
    cmd, port = sys.argv[1], int(sys.argv[2])
    if cmd == "fill":
        asyncio.run(fill(port, int(sys.argv[3])))
    elif cmd == "save":
        asyncio.run(save(port, float(sys.argv[3]) if len(sys.argv) > 3 else 0))
