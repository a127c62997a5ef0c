#!/usr/bin/env python3
"""Kill-and-restart chaos for DBX (run by scripts/chaos.sh; 127.0.0.1 only, bounded).

Each cycle: start the server on the same data directory; verify everything known so
far; run a verifying writer (CONNS connections, DEPTH requests in flight each:
`string.set` of fresh keys and `string.incr` of one counter per connection, sometimes a
`server.save` so that kills land in snapshots too) for a random time; SIGKILL the
server. Some cycles also kill a server while it is still loading.

Verified after every restart:
  - every acknowledged `string.set` is there with its value (`always`: a loss is a
    violation; `everysec`: counted and reported as lost);
  - a write that was sent but never acknowledged may be there or not, with its value;
  - each counter is at least its last acknowledged value and at most that plus the
    increments still in flight;
  - `server.dbsize` equals the keys known to exist: nothing that was never written;
  - the epoch: kept under `always`, new after each crash under `everysec`;
  - rev never goes back within an epoch (hello.rev >= every acknowledged rev).
Prints one line per cycle and a JSON summary; exits 1 on a violation.
"""
import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time

import websockets

TIMEOUT = 15


class Violation(Exception):
    pass


class State:
    def __init__(self, conns):
        self.expected = {}  # key -> value: acknowledged (or seen after a restart)
        self.pending_sets = {}  # key -> value: sent, not acknowledged when the server died
        self.counter = [0] * conns  # last acknowledged (or verified) value
        self.pending_incr = [0] * conns
        self.max_rev = 0  # highest acknowledged rev in the current epoch
        self.epoch = None
        self.acked_total = 0
        self.lost_total = 0
        self.unacked_present = 0
        self.epoch_changes = 0
        self.violations = []


async def call(ws, rid, method, params):
    await ws.send(json.dumps({"id": rid, "method": method, "params": params}))
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if m.get("id") == rid:
            if "error" in m:
                raise Violation(f"{method} failed: {m['error']}")
            return m["result"]


async def connect(url):
    ws = await asyncio.wait_for(websockets.connect(url, max_size=None, ping_interval=None), TIMEOUT)
    hello = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return ws, hello


async def writer(url, c, cycle, depth, st, stop):
    """One connection: keep DEPTH requests in flight until the connection dies."""
    try:
        ws, _ = await connect(url)
    except (OSError, asyncio.TimeoutError, websockets.WebSocketException):
        return
    inflight = {}  # id -> ("set", key, value) | ("incr",)
    slots = asyncio.Semaphore(depth)
    last_rev = 0
    seq = 0

    async def send_loop():
        nonlocal seq
        while not stop.is_set():
            await slots.acquire()
            seq += 1
            rid = seq
            if seq % 4 == 0:
                inflight[rid] = ("incr",)
                st.pending_incr[c] += 1
                msg = {"id": rid, "method": "string.incr", "params": {"key": f"ctr:{c}"}}
            else:
                key, val = f"k{cycle}-{c}-{seq}", f"v{cycle}-{c}-{seq}"
                # Recorded before it is sent: once sent it may be applied.
                inflight[rid] = ("set", key, val)
                st.pending_sets[key] = val
                msg = {"id": rid, "method": "string.set", "params": {"key": key, "value": val}}
            await ws.send(json.dumps(msg))

    async def recv_loop():
        nonlocal last_rev
        while True:
            m = json.loads(await ws.recv())
            op = inflight.pop(m.get("id"), None)
            if op is None:
                continue  # heartbeat
            slots.release()
            if "error" in m:
                st.violations.append(f"cycle {cycle}: write refused: {m['error']}")
                continue
            r = m["result"]
            rev = r["rev"]
            if rev <= last_rev:
                st.violations.append(f"cycle {cycle}: rev went back on one connection ({last_rev} -> {rev})")
            last_rev = rev
            st.max_rev = max(st.max_rev, rev)
            st.acked_total += 1
            if op[0] == "set":
                st.expected[op[1]] = op[2]
                del st.pending_sets[op[1]]
            else:
                st.pending_incr[c] -= 1
                if r["value"] != st.counter[c] + 1:
                    st.violations.append(f"cycle {cycle}: ctr:{c} went from {st.counter[c]} to {r['value']}")
                st.counter[c] = r["value"]

    tasks = [asyncio.create_task(send_loop()), asyncio.create_task(recv_loop())]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def mget(ws, keys):
    out = []
    for i in range(0, len(keys), 1000):
        chunk = keys[i : i + 1000]
        r = await call(ws, f"m{i}", "string.mget", {"keys": chunk})
        out.extend(r["values"])
    return out


async def verify(url, mode, cycle, st, crashed):
    """After a restart: check the store against what was acknowledged."""
    ws, hello = await connect(url)
    epoch, rev = hello["epoch"], hello["rev"]
    lost = 0
    changed = st.epoch is not None and epoch != st.epoch
    if crashed and st.epoch is not None:
        if mode == "always" and changed:
            st.violations.append(f"cycle {cycle}: the epoch changed after a crash under always")
        if mode != "always" and not changed:
            st.violations.append(f"cycle {cycle}: the epoch did not change after a crash under {mode}")
    if changed:
        st.epoch_changes += 1
    elif st.epoch is not None and rev < st.max_rev:
        st.violations.append(f"cycle {cycle}: rev went back from {st.max_rev} to {rev} in epoch {epoch}")
    keys = list(st.expected)
    for k, v in zip(keys, await mget(ws, keys)):
        if v is None:
            lost += 1
            del st.expected[k]
        elif v != st.expected[k]:
            st.violations.append(f"cycle {cycle}: {k} = {v!r}, acknowledged {st.expected[k]!r}")
    pend = list(st.pending_sets)
    for k, v in zip(pend, await mget(ws, pend)):
        if v is not None:
            if v != st.pending_sets[k]:
                st.violations.append(f"cycle {cycle}: unacknowledged {k} = {v!r}, sent {st.pending_sets[k]!r}")
            st.expected[k] = v
            st.unacked_present += 1
    st.pending_sets.clear()
    ctrs = [f"ctr:{c}" for c in range(len(st.counter))]
    for c, v in enumerate(await mget(ws, ctrs)):
        n = int(v) if v is not None else 0
        lo, hi = st.counter[c], st.counter[c] + st.pending_incr[c]
        if n > hi:
            st.violations.append(f"cycle {cycle}: ctr:{c} = {n}, more than the {hi} ever sent")
        if n < lo:
            lost += lo - n
        st.counter[c] = n
        st.pending_incr[c] = 0
    present_ctrs = sum(1 for n in st.counter if n > 0)
    dbsize = (await call(ws, "dbsize", "server.dbsize", {}))["keys"]
    if dbsize != len(st.expected) + present_ctrs:
        st.violations.append(
            f"cycle {cycle}: dbsize {dbsize} but {len(st.expected) + present_ctrs} keys were written and are there"
        )
    if lost and mode == "always":
        st.violations.append(f"cycle {cycle}: {lost} acknowledged writes lost under always")
    st.lost_total += lost
    st.epoch = epoch
    # A new epoch restarts the rev promise from what is there now.
    st.max_rev = rev if changed else max(st.max_rev, rev)
    await ws.close()
    return {"epoch": epoch, "epoch_changed": changed, "rev": rev, "keys": dbsize, "lost": lost}


class Server:
    def __init__(self, args):
        self.args = args
        self.proc = None
        self.log = os.path.join(args.work, "server.log")

    def spawn(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBX_")}
        env.update(
            DBX_HOST="127.0.0.1",
            DBX_PORT=str(self.args.port),
            DBX_DATA_DIR=os.path.join(self.args.work, "data"),
            DBX_APPENDFSYNC=self.args.mode,
            DBX_WS_RATE_LIMIT="0",
            DBX_AOF_REWRITE_MIN_SIZE=self.args.rewrite_min,
            DBX_LOG="info",
        )
        pin = ["taskset", "-c", self.args.pin_server] if self.args.pin_server else []
        with open(self.log, "ab") as f:
            f.write(f"--- start {time.strftime('%H:%M:%S')}\n".encode())
            f.flush()
            self.proc = subprocess.Popen(pin + [self.args.bin], env=env, stdout=f, stderr=f, stdin=subprocess.DEVNULL)
        self.mark = os.path.getsize(self.log)

    def output(self):
        with open(self.log, "rb") as f:
            f.seek(self.mark)
            return f.read().decode("utf-8", "replace")

    async def listening(self, within=60):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if "listening on" in self.output():
                return
            if self.proc.poll() is not None:
                raise Violation(f"the server exited at start ({self.proc.returncode}):\n{self.output()[-2000:]}")
            await asyncio.sleep(0.02)
        raise Violation("the server did not listen within 60 s")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait()

    def term(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


async def run(args):
    rng = random.Random(args.seed)
    url = f"ws://127.0.0.1:{args.port}/ws"
    st = State(args.conns)
    srv = Server(args)
    t0 = time.monotonic()
    deadline = t0 + args.deadline
    startup_kills = saves = done = 0
    write_secs = 0.0
    crashed = False
    try:
        for cycle in range(args.cycles):
            if time.monotonic() > deadline:
                print(f"chaos: deadline reached after {done} cycles", file=sys.stderr)
                break
            loading_kill = crashed and rng.random() < args.startup_kill
            if loading_kill:
                # Kill it again while it is loading (or just after).
                srv.spawn()
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                srv.kill()
                startup_kills += 1
            srv.spawn()
            await srv.listening()
            v = await verify(url, args.mode, cycle, st, crashed)
            acked0 = st.acked_total
            stop = asyncio.Event()
            tasks = [asyncio.create_task(writer(url, c, cycle, args.depth, st, stop)) for c in range(args.conns)]
            t_run = time.monotonic()
            dur = rng.uniform(args.min_run, args.max_run)
            saved = False
            if rng.random() < 0.5:
                # A snapshot somewhere in the window: the kill may land inside it.
                await asyncio.sleep(rng.uniform(0, dur))
                ws, _ = await connect(url)
                await call(ws, "save", "server.save", {})
                await ws.close()
                saved = True
                saves += 1
                await asyncio.sleep(rng.uniform(0, 0.2))
            else:
                await asyncio.sleep(dur)
            srv.kill()
            ran = time.monotonic() - t_run
            crashed = True
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), TIMEOUT)
            write_secs += ran
            done += 1
            print(
                f"cycle {cycle + 1:3}: start{' (after a kill while loading)' if loading_kill else ''}: "
                f"{v['keys']} keys, rev {v['rev']}, epoch {'changed' if v['epoch_changed'] else 'kept'}, "
                f"lost {v['lost']}; then {st.acked_total - acked0} writes acknowledged in {ran:4.2f} s, "
                f"SIGKILL{' during/after server.save' if saved else ''}",
                flush=True,
            )
        # The last kill is checked too, then a clean stop must keep the epoch.
        srv.spawn()
        await srv.listening()
        v = await verify(url, args.mode, args.cycles, st, crashed)
        print(f"final    : restart found {v['keys']} keys, rev {v['rev']}, epoch "
              f"{'changed' if v['epoch_changed'] else 'kept'}, lost {v['lost']}")
        code = srv.term()
        if code != 0:
            st.violations.append(f"SIGTERM: exit status {code}")
        srv.spawn()
        await srv.listening()
        v = await verify(url, args.mode, args.cycles + 1, st, False)
        if v["epoch_changed"] or v["lost"]:
            st.violations.append(f"a clean restart changed the epoch or lost writes: {v}")
        srv.term()
    except Violation as e:
        st.violations.append(str(e))
    except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as e:
        st.violations.append(f"client error: {e!r}")
    finally:
        srv.kill()
    summary = {
        "mode": args.mode,
        "cycles": done,
        "kills": done + startup_kills,
        "kills_while_loading": startup_kills,
        "kills_after_save": saves,
        "acked_writes": st.acked_total,
        "acked_writes_per_s": round(st.acked_total / write_secs) if write_secs else 0,
        "acked_lost": st.lost_total,
        "unacked_found": st.unacked_present,
        "epoch_changes": st.epoch_changes,
        "keys_at_end": len(st.expected) + sum(1 for n in st.counter if n > 0),
        "violations": len(st.violations),
        "secs": round(time.monotonic() - t0, 1),
    }
    for v in st.violations[:20]:
        print(f"VIOLATION: {v}", file=sys.stderr)
    print(json.dumps(summary), flush=True)
    return 1 if st.violations else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--mode", choices=["always", "everysec", "no"], required=True)
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--deadline", type=float, default=600)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--min-run", type=float, default=0.2)
    p.add_argument("--max-run", type=float, default=2.0)
    p.add_argument("--startup-kill", type=float, default=0.2)
    p.add_argument("--rewrite-min", default="2mb")
    p.add_argument("--pin-server", default="")
    args = p.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 32)
    print(f"chaos: mode {args.mode}, {args.cycles} cycles, {args.conns} connections x {args.depth} in flight, seed {args.seed}",
          flush=True)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
