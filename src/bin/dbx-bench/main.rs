//! `dbx-bench`: a load generator for the DBX WebSocket data store.
//!
//! Each worker thread (one by default) runs its own mio loop driving a share of
//! the connections. Every connection keeps up to `--pipeline` requests in flight.
//! Two modes:
//!
//! * closed loop (default): a reply immediately frees a slot for the next request;
//!   latency = reply time - send time.
//! * open loop (`--rate R`): requests are scheduled at R per second in total; a
//!   request that cannot go out on time (all slots busy) waits, and its latency is
//!   measured from its *intended* send time (coordinated-omission correction).
//!
//! Pub/sub fan-out (`--subscribers N`): N extra connections subscribe to `--channel`
//! and count the events they receive; the active connections publish to it (use
//! `--mix publish=1`). Each publish carries its publisher, sequence number and send
//! time, so subscribers check per-publisher order and measure delivery latency.
//!
//! Phases (connect, preload, warm-up, measurement, drain) each have a deadline.
//! The last line of output is one JSON object with the results.

mod cli;
mod frame;
mod handshake;
mod reply;
mod report;
mod request;
mod worker;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Parser;

use cli::{parse_mix, Opts};
use frame::{Ws, OP_TEXT};
use handshake::{finish_handshake, parse_target, start_handshake};
use report::Stats;
use request::{Gen, Kind, Rng};
use worker::{ns_since, Conn, Phase, Worker};

fn raise_nofile(need: u64) {
    // SAFETY: plain libc calls on a zero-initialised struct we own.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return;
        }
        if (rl.rlim_cur as u64) >= need {
            return;
        }
        let want = if rl.rlim_max == libc::RLIM_INFINITY {
            need as libc::rlim_t
        } else {
            (need as libc::rlim_t).min(rl.rlim_max)
        };
        rl.rlim_cur = want;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
    }
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return Duration::ZERO;
        }
        let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        Duration::from_micros(us(ru.ru_utime) + us(ru.ru_stime))
    }
}

fn main() {
    let o = Opts::parse();
    if let Err(e) = real_main(o) {
        eprintln!("dbx-bench: {e}");
        // Still print a JSON line so scripts can parse the failure.
        println!("{}", serde_json::json!({ "error": e }));
        std::process::exit(1);
    }
}

/// `--connect-only N`: N connections one after another (TCP connect, TLS handshake on
/// wss://, upgrade request and 101 answer), each closed before the next; prints
/// connections per second.
fn connect_only(o: &Opts, target: &handshake::Target, rng: &mut Rng) -> Result<(), String> {
    let t0 = Instant::now();
    let deadline = t0 + o.connect_timeout.max(Duration::from_secs(1)) * 10;
    let mut lat = hdrhistogram::Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    for i in 0..o.connect_only {
        let t = Instant::now();
        let (s, key) =
            start_handshake(target, o.token.as_deref(), deadline, rng).map_err(|e| format!("connection {i}: {e}"))?;
        let ws = finish_handshake(s, &key, deadline, 4096, rng.next()).map_err(|e| format!("connection {i}: {e}"))?;
        let _ = lat.record(t.elapsed().as_micros() as u64);
        drop(ws);
    }
    let secs = t0.elapsed().as_secs_f64();
    let per_sec = o.connect_only as f64 / secs;
    let tls = o.url.starts_with("wss://");
    if !o.json_only {
        eprintln!(
            "dbx-bench: {} connections in {secs:.2}s = {per_sec:.0}/s ({}; p50 {} µs, p99 {} µs)",
            o.connect_only,
            if !tls {
                "plaintext"
            } else if o.no_resume {
                "full TLS handshakes"
            } else {
                "TLS, resumed after the first"
            },
            lat.value_at_quantile(0.5),
            lat.value_at_quantile(0.99)
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "connect_only": o.connect_only, "seconds": secs, "per_sec": per_sec, "tls": tls,
            "resume": tls && !o.no_resume, "p50_us": lat.value_at_quantile(0.5), "p99_us": lat.value_at_quantile(0.99)
        })
    );
    Ok(())
}

fn real_main(o: Opts) -> Result<(), String> {
    if o.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if o.pipeline == 0 {
        return Err("--pipeline must be at least 1".into());
    }
    if o.keyspace == 0 {
        return Err("--keyspace must be at least 1".into());
    }
    if o.duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    if let Some(r) = o.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err("--rate must be a positive number of requests per second".into());
        }
    }
    let threads = o.threads.clamp(1, o.connections);
    let mix = parse_mix(&o.mix)?;
    let target = parse_target(&o)?;
    let say = |s: String| {
        if !o.json_only {
            eprintln!("{s}");
        }
    };
    raise_nofile((o.connections + o.idle + o.subscribers) as u64 + 64);

    let base = Instant::now();
    let mut rng = Rng::new(o.seed ^ 0x9e37_79b9_7f4a_7c15);

    if o.connect_only > 0 {
        return connect_only(&o, &target, &mut rng);
    }

    // --- connect (bounded by --connect-timeout)
    let t_conn = Instant::now();
    let deadline = t_conn + o.connect_timeout;
    let mut active = Vec::with_capacity(o.connections);
    let mut idle = Vec::with_capacity(o.idle);
    let mk = |ws: Ws, idle: bool, sub: bool, gid: usize| Conn {
        ws,
        idle: idle || sub,
        sub,
        gid,
        last_seq: Vec::new(),
        alive: true,
        inflight: VecDeque::with_capacity(o.pipeline.max(16)),
        backlog: VecDeque::new(),
        next_id: 1,
    };
    // Handshakes go out in batches so the server accepts many per loop turn.
    const BATCH: usize = 64;
    let token = o.token.as_deref();
    let open_batch = |n: usize, read_buf: usize, rng: &mut Rng| -> Result<Vec<Ws>, String> {
        let mut started = Vec::with_capacity(n);
        for _ in 0..n {
            let (s, key) = start_handshake(&target, token, deadline, rng)?;
            started.push((s, key, rng.next()));
        }
        started.into_iter().map(|(s, key, seed)| finish_handshake(s, &key, deadline, read_buf, seed)).collect()
    };
    while active.len() < o.connections {
        let n = BATCH.min(o.connections - active.len());
        // The read buffer is allocated once (no zero-fill per read, unlike tungstenite's),
        // so it can hold many pipelined replies.
        let batch = open_batch(n, 32 * 1024, &mut rng)
            .map_err(|e| format!("opening active connections ({} open): {e}", active.len()))?;
        let first = active.len();
        active.extend(batch.into_iter().enumerate().map(|(i, ws)| mk(ws, false, false, first + i)));
    }
    while idle.len() < o.idle {
        let n = BATCH.min(o.idle - idle.len());
        let batch = open_batch(n, 4096, &mut rng)
            .map_err(|e| format!("opened only {} of {} idle connections: {e}", idle.len(), o.idle))?;
        idle.extend(batch.into_iter().map(|ws| mk(ws, true, false, 0)));
    }
    // Fan-out subscribers: subscribe right away; the confirmations are counted by
    // the workers (the warm-up gives them time to arrive).
    let channel = o.channel.clone().unwrap_or_else(|| format!("{}chan", o.key_prefix));
    let channel_json = serde_json::to_string(&channel).unwrap_or_default();
    let mut subs = Vec::with_capacity(o.subscribers);
    while subs.len() < o.subscribers {
        let n = BATCH.min(o.subscribers - subs.len());
        let batch = open_batch(n, 16 * 1024, &mut rng)
            .map_err(|e| format!("opened only {} of {} subscribers: {e}", subs.len(), o.subscribers))?;
        for mut ws in batch {
            let req = format!(r#"{{"id":0,"method":"pubsub.subscribe","params":{{"channels":[{channel_json}]}}}}"#);
            ws.push_frame(OP_TEXT, req.as_bytes());
            ws.flush().map_err(|e| format!("subscribe: {e}"))?;
            subs.push(mk(ws, true, true, 0));
        }
    }
    say(format!(
        "dbx-bench: {} active + {} idle + {} subscriber connections to {} in {:.2}s",
        active.len(),
        idle.len(),
        subs.len(),
        o.url.split('?').next().unwrap_or(""),
        t_conn.elapsed().as_secs_f64()
    ));

    // --- distribute connections over workers
    let mut per: Vec<Vec<Conn>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in active.into_iter().enumerate() {
        per[i % threads].push(c);
    }
    for (i, c) in idle.into_iter().chain(subs).enumerate() {
        per[i % threads].push(c);
    }
    let prefix = {
        let s = serde_json::to_string(&o.key_prefix).unwrap_or_default();
        s[1..s.len() - 1].to_string()
    };
    let value = "x".repeat(o.value_size);
    let mut table = Vec::new();
    for &(k, w) in &mix {
        table.extend(std::iter::repeat_n(k, w as usize));
    }
    let preload_kinds: Vec<Kind> = {
        let mut v = Vec::new();
        if mix.iter().any(|(k, _)| matches!(k, Kind::Get | Kind::Set)) {
            v.push(Kind::Set);
        }
        if mix.iter().any(|(k, _)| matches!(k, Kind::HGet | Kind::HSet)) {
            v.push(Kind::HSet);
        }
        v
    };

    // Shared timing: phase starts are published by the main thread.
    let stop = Arc::new(AtomicBool::new(false));
    let run_start = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let preload = o.preload;
    let warmup_ns = o.warmup.as_nanos() as u64;
    let dur_ns = o.duration.as_nanos() as u64;
    let drain_ns = o.drain_timeout.as_nanos() as u64;
    let preload_ns = o.preload_timeout.as_nanos() as u64;
    let rate = o.rate;
    let pipeline = o.pipeline;
    let keyspace = o.keyspace;

    let mut handles = Vec::new();
    for (w, conns) in per.into_iter().enumerate() {
        let gen = Gen {
            table: table.clone(),
            rng: Rng::new(o.seed.wrapping_add((w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))),
            keyspace,
            prefix: prefix.clone(),
            value: value.clone(),
            channel: channel_json[1..channel_json.len() - 1].to_string(),
        };
        let stop = stop.clone();
        let run_start = run_start.clone();
        let barrier = barrier.clone();
        let preload_kinds = preload_kinds.clone();
        let h = std::thread::Builder::new()
            .name(format!("bench-{w}"))
            .spawn(move || -> Result<(Stats, Stats), String> {
                let mut wk = Worker::new(conns, gen, base, stop).map_err(|e| e.to_string());
                // Preload: this worker's share of the keys.
                let mut pre = Stats::new();
                if let Ok(wk) = wk.as_mut() {
                    if preload && !preload_kinds.is_empty() {
                        let mut qv = VecDeque::new();
                        for &k in &preload_kinds {
                            for key in (w as u64..keyspace).step_by(threads) {
                                qv.push_back((k, key));
                            }
                        }
                        let now = ns_since(base);
                        let mut ph = Phase {
                            preload: Some(qv),
                            send_until: now + preload_ns,
                            rec_from: u64::MAX,
                            rec_until: u64::MAX,
                            hard_end: now + preload_ns,
                            interval_ns: None,
                            start: now,
                            pipeline: pipeline.max(32),
                        };
                        pre = wk.run(&mut ph);
                        pre.unsent = ph.preload.map_or(0, |q| q.len() as u64);
                    }
                }
                barrier.wait();
                barrier.wait();
                let wk = wk?;
                let mut wk = wk;
                let start = run_start.load(Ordering::SeqCst);
                let mut ph = Phase {
                    preload: None,
                    start,
                    rec_from: start + warmup_ns,
                    rec_until: start + warmup_ns + dur_ns,
                    send_until: start + warmup_ns + dur_ns,
                    hard_end: start + warmup_ns + dur_ns + drain_ns,
                    interval_ns: rate.map(|r| 1e9 / (r / threads as f64)),
                    pipeline,
                };
                let st = wk.run(&mut ph);
                wk.close_all();
                Ok((pre, st))
            })
            .map_err(|e| format!("spawn: {e}"))?;
        handles.push(h);
    }

    // Preload barrier, then publish the start of the run.
    let t_pre = Instant::now();
    barrier.wait();
    if preload {
        say(format!("dbx-bench: preload phase took {:.2}s", t_pre.elapsed().as_secs_f64()));
    }
    let start = ns_since(base) + 5_000_000;
    run_start.store(start, Ordering::SeqCst);
    barrier.wait();
    say(format!(
        "dbx-bench: {} (mix {}, {} conns x {} in flight{}), warm-up {:.1}s, measuring {:.1}s",
        if rate.is_some() { "open loop" } else { "closed loop" },
        o.mix,
        o.connections,
        o.pipeline,
        rate.map(|r| format!(", {r} req/s")).unwrap_or_default(),
        o.warmup.as_secs_f64(),
        o.duration.as_secs_f64()
    ));

    // Measure our own CPU over the measurement window. Stop early if every worker
    // is done before the window ends (the server closed all connections).
    let all_done = |hs: &[std::thread::JoinHandle<_>]| hs.iter().all(|h| h.is_finished());
    let sleep_until = |t: u64, hs: &[std::thread::JoinHandle<_>]| loop {
        let now = ns_since(base);
        if now >= t || all_done(hs) {
            break;
        }
        std::thread::sleep(Duration::from_nanos((t - now).min(10_000_000)));
    };
    sleep_until(start + warmup_ns, &handles);
    let cpu0 = cpu_time();
    let w0 = Instant::now();
    sleep_until(start + warmup_ns + dur_ns, &handles);
    let cpu1 = cpu_time();
    let wall = w0.elapsed();
    let aborted = ns_since(base) < start + warmup_ns + dur_ns;
    // Every worker ends by its hard deadline; this is a safety net.
    let guard_deadline = Instant::now() + o.drain_timeout + Duration::from_secs(5);
    while handles.iter().any(|h| !h.is_finished()) {
        if Instant::now() >= guard_deadline {
            stop.store(true, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut pre = Stats::new();
    let mut st = Stats::new();
    for h in handles {
        match h.join() {
            Ok(Ok((p, s))) => {
                pre.merge(p);
                st.merge(s);
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("worker thread panicked".into()),
        }
    }
    if preload {
        let failed = pre.c.errors + pre.unsent + pre.unanswered + pre.c.lost_in_flight;
        if failed > 0 {
            say(format!(
                "dbx-bench: WARNING preload incomplete: {} ok, {} errors {:?}, {} not sent, {} unanswered",
                pre.c.ok, pre.c.errors, pre.c.error_codes, pre.unsent, pre.unanswered
            ));
        } else {
            say(format!("dbx-bench: preloaded {} keys", pre.c.ok));
        }
    }

    report::report(&o, threads, &pre, &st, wall, cpu1.saturating_sub(cpu0), aborted);
    Ok(())
}
