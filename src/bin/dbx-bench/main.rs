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
mod connect;
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
use handshake::{finish_handshake, parse_target, start_handshake};
use report::Stats;
use request::{Gen, Kind, Rng};
use worker::{ns_since, Conn, Phase, Worker};

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

/// Connect, preload, warm up, measure, drain, report: each phase in its own function.
fn real_main(o: Opts) -> Result<(), String> {
    cli::validate(&o)?;
    let threads = o.threads.clamp(1, o.connections);
    let mix = parse_mix(&o.mix)?;
    let target = parse_target(&o)?;
    // One descriptor per connection: the same raise as the server's.
    dbx::server::sys::raise_nofile_limit();
    let base = Instant::now();
    let mut rng = Rng::new(o.seed ^ 0x9e37_79b9_7f4a_7c15);

    if o.connect_only > 0 {
        return connect_only(&o, &target, &mut rng);
    }
    let channel = o.channel.clone().unwrap_or_else(|| format!("{}chan", o.key_prefix));
    let channel_json = serde_json::to_string(&channel).unwrap_or_default();

    let t_conn = Instant::now();
    let opened = connect::open_all(&o, &target, &channel_json, &mut rng)?;
    say(
        &o,
        format!(
            "dbx-bench: {} active + {} idle + {} subscriber connections to {} in {:.2}s",
            opened.active.len(),
            opened.idle.len(),
            opened.subs.len(),
            o.url.split('?').next().unwrap_or(""),
            t_conn.elapsed().as_secs_f64()
        ),
    );
    let per = opened.distribute(threads);
    let shared = Shared::new(threads);
    let handles = spawn_workers(&o, per, &mix, &channel_json, base, &shared)?;

    // Preload barrier, then publish the start of the run.
    let t_pre = Instant::now();
    shared.barrier.wait();
    if o.preload {
        say(&o, format!("dbx-bench: preload phase took {:.2}s", t_pre.elapsed().as_secs_f64()));
    }
    let start = ns_since(base) + 5_000_000;
    shared.run_start.store(start, Ordering::SeqCst);
    shared.barrier.wait();
    say(
        &o,
        format!(
            "dbx-bench: {} (mix {}, {} conns x {} in flight{}), warm-up {:.1}s, measuring {:.1}s",
            if o.rate.is_some() { "open loop" } else { "closed loop" },
            o.mix,
            o.connections,
            o.pipeline,
            o.rate.map(|r| format!(", {r} req/s")).unwrap_or_default(),
            o.warmup.as_secs_f64(),
            o.duration.as_secs_f64()
        ),
    );
    let m = measure(&o, base, start, &handles, &shared.stop);
    let (pre, st) = join(handles)?;
    if o.preload {
        report_preload(&o, &pre);
    }
    report::report(&o, threads, &pre, &st, m.wall, m.cpu, m.aborted);
    Ok(())
}

fn say(o: &Opts, s: String) {
    if !o.json_only {
        eprintln!("{s}");
    }
}

/// What the main thread and the workers share: the stop flag, the start of the
/// run (published by the main thread) and the barrier around the preload.
struct Shared {
    stop: Arc<AtomicBool>,
    run_start: Arc<AtomicU64>,
    barrier: Arc<Barrier>,
}

impl Shared {
    fn new(threads: usize) -> Shared {
        Shared {
            stop: Arc::new(AtomicBool::new(false)),
            run_start: Arc::new(AtomicU64::new(0)),
            barrier: Arc::new(Barrier::new(threads + 1)),
        }
    }
}

type WorkerResult = Result<(Stats, Stats), String>;

/// One thread per worker, each with its share of the connections and its own
/// request generator: preload its share of the keys, wait for the start, run.
fn spawn_workers(
    o: &Opts,
    per: Vec<Vec<Conn>>,
    mix: &[(Kind, u32)],
    channel_json: &str,
    base: Instant,
    shared: &Shared,
) -> Result<Vec<std::thread::JoinHandle<WorkerResult>>, String> {
    let threads = per.len();
    let prefix = {
        let s = serde_json::to_string(&o.key_prefix).unwrap_or_default();
        s.get(1..s.len().saturating_sub(1)).unwrap_or_default().to_string()
    };
    let value = "x".repeat(o.value_size);
    let mut table = Vec::new();
    for &(k, w) in mix {
        table.extend(std::iter::repeat_n(k, w as usize));
    }
    let mut preload_kinds = Vec::new();
    if mix.iter().any(|(k, _)| matches!(k, Kind::Get | Kind::Set)) {
        preload_kinds.push(Kind::Set);
    }
    if mix.iter().any(|(k, _)| matches!(k, Kind::HGet | Kind::HSet)) {
        preload_kinds.push(Kind::HSet);
    }
    let timing = Timing {
        preload: o.preload,
        warmup_ns: o.warmup.as_nanos() as u64,
        dur_ns: o.duration.as_nanos() as u64,
        drain_ns: o.drain_timeout.as_nanos() as u64,
        preload_ns: o.preload_timeout.as_nanos() as u64,
        rate: o.rate,
        pipeline: o.pipeline,
        keyspace: o.keyspace,
        threads,
    };
    let mut handles = Vec::new();
    for (w, conns) in per.into_iter().enumerate() {
        let gen = Gen {
            table: table.clone(),
            rng: Rng::new(o.seed.wrapping_add((w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))),
            keyspace: o.keyspace,
            prefix: prefix.clone(),
            value: value.clone(),
            channel: channel_json.get(1..channel_json.len().saturating_sub(1)).unwrap_or_default().to_string(),
        };
        let (stop, run_start, barrier) = (shared.stop.clone(), shared.run_start.clone(), shared.barrier.clone());
        let preload_kinds = preload_kinds.clone();
        let h = std::thread::Builder::new()
            .name(format!("bench-{w}"))
            .spawn(move || -> WorkerResult {
                let mut wk = Worker::new(conns, gen, base, stop).map_err(|e| e.to_string());
                let pre = match wk.as_mut() {
                    Ok(wk) => preload(wk, w, &preload_kinds, &timing, base),
                    Err(_) => Stats::new(),
                };
                barrier.wait();
                barrier.wait();
                let mut wk = wk?;
                let start = run_start.load(Ordering::SeqCst);
                let t = &timing;
                let mut ph = Phase {
                    preload: None,
                    start,
                    rec_from: start + t.warmup_ns,
                    rec_until: start + t.warmup_ns + t.dur_ns,
                    send_until: start + t.warmup_ns + t.dur_ns,
                    hard_end: start + t.warmup_ns + t.dur_ns + t.drain_ns,
                    interval_ns: t.rate.map(|r| 1e9 / (r / t.threads as f64)),
                    pipeline: t.pipeline,
                };
                let st = wk.run(&mut ph);
                wk.close_all();
                Ok((pre, st))
            })
            .map_err(|e| format!("spawn: {e}"))?;
        handles.push(h);
    }
    Ok(handles)
}

/// The phase settings every worker reads.
#[derive(Clone, Copy)]
struct Timing {
    preload: bool,
    warmup_ns: u64,
    dur_ns: u64,
    drain_ns: u64,
    preload_ns: u64,
    rate: Option<f64>,
    pipeline: usize,
    keyspace: u64,
    threads: usize,
}

/// Preload worker `w`'s share of the keys (every `threads`-th one).
fn preload(wk: &mut Worker, w: usize, kinds: &[Kind], t: &Timing, base: Instant) -> Stats {
    if !t.preload || kinds.is_empty() {
        return Stats::new();
    }
    let mut qv = VecDeque::new();
    for &k in kinds {
        for key in (w as u64..t.keyspace).step_by(t.threads) {
            qv.push_back((k, key));
        }
    }
    let now = ns_since(base);
    let mut ph = Phase {
        preload: Some(qv),
        send_until: now + t.preload_ns,
        rec_from: u64::MAX,
        rec_until: u64::MAX,
        hard_end: now + t.preload_ns,
        interval_ns: None,
        start: now,
        pipeline: t.pipeline.max(32),
    };
    let mut pre = wk.run(&mut ph);
    pre.unsent = ph.preload.map_or(0, |q| q.len() as u64);
    pre
}

struct Measured {
    wall: Duration,
    cpu: Duration,
    /// Every worker ended before the window did (the server closed the connections).
    aborted: bool,
}

/// Measure our own CPU over the measurement window, stopping early if every worker
/// is done before it ends; then wait (bounded) for the workers to drain.
fn measure<T>(
    o: &Opts,
    base: Instant,
    start: u64,
    handles: &[std::thread::JoinHandle<T>],
    stop: &AtomicBool,
) -> Measured {
    let (warmup_ns, dur_ns) = (o.warmup.as_nanos() as u64, o.duration.as_nanos() as u64);
    let all_done = |hs: &[std::thread::JoinHandle<T>]| hs.iter().all(|h| h.is_finished());
    let sleep_until = |t: u64| loop {
        let now = ns_since(base);
        if now >= t || all_done(handles) {
            break;
        }
        std::thread::sleep(Duration::from_nanos((t - now).min(10_000_000)));
    };
    sleep_until(start + warmup_ns);
    let cpu0 = cpu_time();
    let w0 = Instant::now();
    sleep_until(start + warmup_ns + dur_ns);
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
    Measured { wall, cpu: cpu1.saturating_sub(cpu0), aborted }
}

/// The workers' preload and run statistics, merged.
fn join(handles: Vec<std::thread::JoinHandle<WorkerResult>>) -> Result<(Stats, Stats), String> {
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
    Ok((pre, st))
}

fn report_preload(o: &Opts, pre: &Stats) {
    let failed = pre.c.errors + pre.unsent + pre.unanswered + pre.c.lost_in_flight;
    if failed > 0 {
        say(
            o,
            format!(
                "dbx-bench: WARNING preload incomplete: {} ok, {} errors {:?}, {} not sent, {} unanswered",
                pre.c.ok, pre.c.errors, pre.c.error_codes, pre.unsent, pre.unanswered
            ),
        );
    } else {
        say(o, format!("dbx-bench: preloaded {} keys", pre.c.ok));
    }
}
