//! Results: latency histograms and counters per worker ([`Stats`], merged at the
//! end), and the report: the human-readable table (stderr, unless `--json-only`)
//! and the final JSON line (stdout) that scripts parse.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::cli::Opts;
use crate::request::KINDS;

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) error_codes: BTreeMap<String, u64>,
    pub(crate) unsolicited: BTreeMap<String, u64>,
    /// Fan-out: events received inside the measurement window / in total.
    pub(crate) deliveries: u64,
    pub(crate) deliveries_total: u64,
    /// Fan-out: events that came after a later one of the same publisher.
    pub(crate) out_of_order: u64,
    /// Fan-out: subscribe confirmations.
    pub(crate) subscribed: u64,
    pub(crate) id_mismatch: u64,
    pub(crate) bad_replies: u64,
    pub(crate) conns_closed: u64,
    pub(crate) active_closed: u64,
    pub(crate) lost_in_flight: u64,
    pub(crate) sent: u64,
}

pub(crate) struct Stats {
    pub(crate) hist: Histogram<u64>,
    /// Fan-out: publish send → event receipt, inside the measurement window.
    pub(crate) dhist: Histogram<u64>,
    pub(crate) by_kind: Vec<Histogram<u64>>,
    pub(crate) c: Counters,
    /// ns spent outside epoll_wait during the measurement window.
    pub(crate) busy_ns: u64,
    /// Open loop: requests scheduled but never sent / sent late.
    pub(crate) unsent: u64,
    pub(crate) late: u64,
    pub(crate) unanswered: u64,
}

fn new_hist() -> Histogram<u64> {
    // 1 ns .. 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram bounds")
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            hist: new_hist(),
            dhist: new_hist(),
            by_kind: KINDS.iter().map(|_| new_hist()).collect(),
            c: Counters::default(),
            busy_ns: 0,
            unsent: 0,
            late: 0,
            unanswered: 0,
        }
    }
    pub(crate) fn merge(&mut self, o: Stats) {
        let _ = self.hist.add(&o.hist);
        for (a, b) in self.by_kind.iter_mut().zip(o.by_kind.iter()) {
            let _ = a.add(b);
        }
        self.c.ok += o.c.ok;
        self.c.errors += o.c.errors;
        for (k, v) in o.c.error_codes {
            *self.c.error_codes.entry(k).or_default() += v;
        }
        for (k, v) in o.c.unsolicited {
            *self.c.unsolicited.entry(k).or_default() += v;
        }
        self.c.deliveries += o.c.deliveries;
        self.c.deliveries_total += o.c.deliveries_total;
        self.c.out_of_order += o.c.out_of_order;
        self.c.subscribed += o.c.subscribed;
        let _ = self.dhist.add(&o.dhist);
        self.c.id_mismatch += o.c.id_mismatch;
        self.c.bad_replies += o.c.bad_replies;
        self.c.conns_closed += o.c.conns_closed;
        self.c.active_closed += o.c.active_closed;
        self.c.lost_in_flight += o.c.lost_in_flight;
        self.c.sent += o.c.sent;
        self.busy_ns += o.busy_ns;
        self.unsent += o.unsent;
        self.late += o.late;
        self.unanswered += o.unanswered;
    }
}

fn q(h: &Histogram<u64>, quant: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(quant) as f64 / 1000.0
    }
}

fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Print the table and the JSON line for the measured run. An aborted run (every
/// active connection closed before the window ended) still prints its JSON line,
/// with `error`, then exits with status 1.
pub(crate) fn report(o: &Opts, threads: usize, pre: &Stats, st: &Stats, wall: Duration, cpu: Duration, aborted: bool) {
    // Subscribers confirm while the preload runs when there is one.
    let subscribed = pre.c.subscribed + st.c.subscribed;
    let rate = o.rate;
    let dur_ns = o.duration.as_nanos() as u64;
    let secs = if aborted { wall.as_secs_f64().max(1e-3) } else { o.duration.as_secs_f64() };
    let ops = st.c.ok as f64 / secs;
    let cpu_pct = 100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    let busy_pct = 100.0 * st.busy_ns as f64 / (dur_ns as f64 * threads as f64);
    let h = &st.hist;
    let mut by_method = serde_json::Map::new();
    for k in KINDS {
        let hk = &st.by_kind[k as usize];
        if !hk.is_empty() {
            by_method.insert(
                k.name().into(),
                serde_json::json!({
                    "ops": hk.len(),
                    "p50_us": r1(q(hk, 0.5)),
                    "p99_us": r1(q(hk, 0.99)),
                    "max_us": r1(hk.max() as f64 / 1000.0),
                }),
            );
        }
    }
    if !o.json_only {
        let summary = Summary { secs, ops, cpu_pct, busy_pct, subscribed, by_method: &by_method };
        print_table(o, st, &summary);
    }
    let mut out = serde_json::json!({
        "ops_per_sec": r1(ops),
        "p50_us": r1(q(h, 0.5)),
        "p90_us": r1(q(h, 0.9)),
        "p99_us": r1(q(h, 0.99)),
        "p999_us": r1(q(h, 0.999)),
        "max_us": r1(h.max() as f64 / 1000.0),
        "mean_us": r1(if h.is_empty() { 0.0 } else { h.mean() / 1000.0 }),
        "errors": st.c.errors,
        "errors_by_code": st.c.error_codes,
        "cpu_pct": r1(cpu_pct),
        "busy_pct": r1(busy_pct),
        "ok": st.c.ok,
        "sent": st.c.sent,
        "unanswered": st.unanswered,
        "bad_replies": st.c.bad_replies,
        "id_mismatch": st.c.id_mismatch,
        "conns_closed": st.c.conns_closed,
        "mode": if rate.is_some() { "open" } else { "closed" },
        "rate": rate,
        "late": st.late,
        "unsent": st.unsent,
        "connections": o.connections,
        "pipeline": o.pipeline,
        "idle": o.idle,
        "threads": threads,
        "duration_s": secs,
        "warmup_s": o.warmup.as_secs_f64(),
        "mix": o.mix,
        "keyspace": o.keyspace,
        "value_size": o.value_size,
        "preloaded": pre.c.ok,
        "by_method": by_method,
    });
    if o.subscribers > 0 {
        let d = &st.dhist;
        out["subscribers"] = o.subscribers.into();
        out["subscribed"] = subscribed.into();
        out["deliveries"] = st.c.deliveries.into();
        out["deliveries_total"] = st.c.deliveries_total.into();
        out["deliveries_per_sec"] = r1(st.c.deliveries as f64 / secs).into();
        out["out_of_order"] = st.c.out_of_order.into();
        out["delivery_p50_us"] = r1(q(d, 0.5)).into();
        out["delivery_p99_us"] = r1(q(d, 0.99)).into();
        out["delivery_max_us"] = r1(d.max() as f64 / 1000.0).into();
    }
    if aborted {
        let msg = format!(
            "run aborted: all active connections were closed ({} closed, {} requests lost)",
            st.c.conns_closed, st.c.lost_in_flight
        );
        out["error"] = serde_json::Value::String(msg.clone());
        println!("{out}");
        eprintln!("dbx-bench: {msg}");
        std::process::exit(1);
    }
    println!("{out}");
}

/// What the table and the JSON line both show.
struct Summary<'a> {
    secs: f64,
    ops: f64,
    cpu_pct: f64,
    busy_pct: f64,
    subscribed: u64,
    by_method: &'a serde_json::Map<String, serde_json::Value>,
}

/// The human-readable table (stderr).
fn print_table(o: &Opts, st: &Stats, s: &Summary) {
    let Summary { secs, ops, cpu_pct, busy_pct, subscribed, by_method } = *s;
    let rate = o.rate;
    let h = &st.hist;
    eprintln!("ops/s      {:>12.0}   ({} ok in {:.1}s)", ops, st.c.ok, secs);
    eprintln!(
        "latency us p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}{}",
        q(h, 0.5),
        q(h, 0.9),
        q(h, 0.99),
        q(h, 0.999),
        h.max() as f64 / 1000.0,
        if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
        if rate.is_some() { "  (from intended send time)" } else { "" }
    );
    for (name, v) in by_method {
        eprintln!("  {name:<8} {v}");
    }
    eprintln!(
        "errors     {} {:?}   bad replies {}   id mismatches {}   closed conns {} (lost {} in flight)",
        st.c.errors, st.c.error_codes, st.c.bad_replies, st.c.id_mismatch, st.c.conns_closed, st.c.lost_in_flight
    );
    if rate.is_some() {
        eprintln!("open loop  sent late (>1ms) {}   never sent {}", st.late, st.unsent);
    }
    eprintln!(
        "bench cpu  {cpu_pct:.1}% of one core (loop busy {busy_pct:.1}%){}",
        if cpu_pct > 90.0 && rate.is_none() {
            "  -- WARNING: the generator may be the bottleneck (try --threads)"
        } else {
            ""
        }
    );
    if o.subscribers > 0 {
        let d = &st.dhist;
        eprintln!(
            "fan-out    {:.0} deliveries/s to {} subscribers ({} subscribed; {} in window, {} total)   out of order {}",
            st.c.deliveries as f64 / secs,
            o.subscribers,
            subscribed,
            st.c.deliveries,
            st.c.deliveries_total,
            st.c.out_of_order
        );
        eprintln!(
            "delivery us p50 {:.1}  p99 {:.1}  max {:.1}  (publish sent -> event received)",
            q(d, 0.5),
            q(d, 0.99),
            d.max() as f64 / 1000.0
        );
    }
    if !st.c.unsolicited.is_empty() {
        eprintln!("unsolicited {:?}", st.c.unsolicited);
    }
}
