//! The Prometheus endpoint (`--metrics ADDR`): the run's [`Summary`] as
//! metrics, so the values a scrape returns are those the summary prints.
//! Updating is pure (the summary in, atomics out); [`serve`] runs a small
//! HTTP server on its own thread that encodes them on each scrape.

use crate::{ledger::Kind, model::LIFETIME_BUCKETS_NS, views::summary::Summary};
use anyhow::{bail, Context as _, Result};
use prometheus_client::{
    encoding::{text::encode, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, MetricType, TypedMetric},
    registry::Registry,
};
use std::{
    net::{SocketAddr, ToSocketAddrs},
    sync::{atomic::AtomicU64, Arc, Mutex},
};

/// A histogram set whole from the summary on each update (sum, count and
/// the count in each bucket, `+Inf` last), where prometheus-client's own
/// only observes one value at a time: the summary already holds them all.
#[derive(Clone, Debug, Default)]
struct SetHistogram(Arc<Mutex<HistogramValues>>);

/// Sum, count, and (upper bound, count) per bucket.
type HistogramValues = (f64, u64, Vec<(f64, u64)>);

impl SetHistogram {
    fn set(&self, sum: f64, count: u64, buckets: Vec<(f64, u64)>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = (sum, count, buckets);
    }
}

impl TypedMetric for SetHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SetHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric, by the name it is exposed under (counters get `_total`).
pub struct Metrics {
    registry: Registry,
    info: Family<Labels, Gauge>,
    pages: Counters,
    calls: Counters,
    failed_calls: Counters,
    released: Counters,
    release_calls: Counter,
    unknown_releases: Counter,
    outstanding: Family<Labels, Gauge>,
    findings: Counter,
    failures: Counter,
    events: Counter,
    lost: Counters,
    decode_errors: Counter,
    block_requests: Counter,
    block_errors: Counter,
    lifetimes: Counter,
    lifetime_histogram: SetHistogram,
    uptime: FloatGauge,
    stacks: Counters,
}

/// Metric names and help, as documented in the README.
pub const NAMES: [(&str, &str); 19] = [
    (
        "pintrace_info",
        "The kernel, attach plan and mode of this run (value 1)",
    ),
    (
        "pintrace_pages_acquired",
        "Pages acquired, by kind (pin, longterm_pin, get)",
    ),
    (
        "pintrace_acquire_calls",
        "Acquire calls that grabbed pages, by kind",
    ),
    (
        "pintrace_acquire_failed_calls",
        "Acquire calls that failed or grabbed nothing, by kind",
    ),
    (
        "pintrace_refs_released",
        "References released through gup_put_folio, by kind (pin, get)",
    ),
    ("pintrace_release_calls", "gup_put_folio calls"),
    (
        "pintrace_unknown_releases",
        "Pin releases of folios pinned before tracing began",
    ),
    ("pintrace_outstanding_refs", "References held now, by kind"),
    (
        "pintrace_findings",
        "Findings reported (leaks, mismatches, long-term pins held at the end)",
    ),
    ("pintrace_finding_failures", "Findings that fail a check"),
    ("pintrace_events", "Events received from the probes"),
    (
        "pintrace_events_lost",
        "Events the probes could not deliver, by cause",
    ),
    ("pintrace_decode_errors", "Records that did not decode"),
    (
        "pintrace_block_requests_completed",
        "Block requests completed",
    ),
    (
        "pintrace_block_request_errors",
        "Block requests completed with an error",
    ),
    (
        "pintrace_pin_lifetimes",
        "Pin references released with a known acquire time",
    ),
    (
        "pintrace_pin_lifetime_seconds",
        "Pin lifetime (acquire to release), a histogram of decades from 1 us to 10 s",
    ),
    (
        "pintrace_uptime_seconds",
        "Seconds of the run so far (recorded time on replay)",
    ),
    (
        "pintrace_stacks",
        "Acquire and release events by whether they carry a kernel stack (taken, sampled_out, failed)",
    ),
];

fn set(c: &Counter, v: u64) {
    let cur = c.get();
    if v > cur {
        c.inc_by(v - cur);
    }
}

/// The kind as the JSON summary names it.
fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Pin => "pin",
        Kind::LongtermPin => "longterm_pin",
        Kind::Get => "get",
    }
}

fn kind(k: &str) -> Labels {
    vec![("kind", k.to_owned())]
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            info: Family::default(),
            pages: Family::default(),
            calls: Family::default(),
            failed_calls: Family::default(),
            released: Family::default(),
            release_calls: Counter::default(),
            unknown_releases: Counter::default(),
            outstanding: Family::default(),
            findings: Counter::default(),
            failures: Counter::default(),
            events: Counter::default(),
            lost: Family::default(),
            decode_errors: Counter::default(),
            stacks: Family::default(),
            block_requests: Counter::default(),
            block_errors: Counter::default(),
            lifetimes: Counter::default(),
            lifetime_histogram: SetHistogram::default(),
            uptime: FloatGauge::default(),
        };
        let mut r = Registry::default();
        let help = |i: usize| (NAMES[i].0, NAMES[i].1);
        let (n, h) = help(0);
        r.register(n, h, m.info.clone());
        let (n, h) = help(1);
        r.register(n, h, m.pages.clone());
        let (n, h) = help(2);
        r.register(n, h, m.calls.clone());
        let (n, h) = help(3);
        r.register(n, h, m.failed_calls.clone());
        let (n, h) = help(4);
        r.register(n, h, m.released.clone());
        let (n, h) = help(5);
        r.register(n, h, m.release_calls.clone());
        let (n, h) = help(6);
        r.register(n, h, m.unknown_releases.clone());
        let (n, h) = help(7);
        r.register(n, h, m.outstanding.clone());
        let (n, h) = help(8);
        r.register(n, h, m.findings.clone());
        let (n, h) = help(9);
        r.register(n, h, m.failures.clone());
        let (n, h) = help(10);
        r.register(n, h, m.events.clone());
        let (n, h) = help(11);
        r.register(n, h, m.lost.clone());
        let (n, h) = help(12);
        r.register(n, h, m.decode_errors.clone());
        let (n, h) = help(13);
        r.register(n, h, m.block_requests.clone());
        let (n, h) = help(14);
        r.register(n, h, m.block_errors.clone());
        let (n, h) = help(15);
        r.register(n, h, m.lifetimes.clone());
        let (n, h) = help(16);
        r.register(n, h, m.lifetime_histogram.clone());
        let (n, h) = help(17);
        r.register(n, h, m.uptime.clone());
        let (n, h) = help(18);
        r.register(n, h, m.stacks.clone());
        Metrics { registry: r, ..m }
    }

    /// Sets every metric from the summary of the run so far.
    pub fn update(&self, s: &Summary, mode: &str) {
        self.info
            .get_or_create(&vec![
                ("kernel", s.kernel.clone()),
                ("plan", s.plan.clone()),
                ("mode", mode.to_owned()),
            ])
            .set(1);
        for (k, c) in &s.by_kind {
            let l = kind(kind_name(*k));
            set(&self.pages.get_or_create(&l), c.pages);
            set(&self.calls.get_or_create(&l), c.calls);
            set(&self.failed_calls.get_or_create(&l), c.failed_calls);
        }
        set(
            &self.released.get_or_create(&kind("pin")),
            s.releases.pin_refs,
        );
        set(
            &self.released.get_or_create(&kind("get")),
            s.releases.get_refs,
        );
        set(&self.release_calls, s.releases.calls);
        set(&self.unknown_releases, s.unknown_releases);
        for (k, v) in &s.outstanding {
            self.outstanding
                .get_or_create(&kind(kind_name(*k)))
                .set(*v as i64);
        }
        set(&self.findings, s.findings);
        set(&self.failures, s.failures);
        set(&self.events, s.events);
        for (cause, v) in &s.lost {
            set(
                &self.lost.get_or_create(&vec![("cause", cause.to_string())]),
                *v,
            );
        }
        set(&self.decode_errors, s.decode_errors);
        for (outcome, v) in [
            ("taken", s.stacks.taken),
            ("sampled_out", s.stacks.sampled_out),
            ("failed", s.stacks.failed),
        ] {
            set(
                &self
                    .stacks
                    .get_or_create(&vec![("outcome", outcome.to_owned())]),
                v,
            );
        }
        set(&self.block_requests, s.completions.requests);
        set(&self.block_errors, s.completions.errors);
        let l = &s.pin_lifetime;
        set(&self.lifetimes, l.count);
        // Per bucket, not cumulative: the encoder adds them up; the last,
        // f64::MAX, is written as +Inf and holds what lies beyond 10 s.
        let mut buckets: Vec<(f64, u64)> = LIFETIME_BUCKETS_NS
            .iter()
            .zip(l.buckets)
            .map(|(&le, n)| (le as f64 / 1e9, n))
            .collect();
        buckets.push((
            f64::MAX,
            l.count - l.buckets.iter().sum::<u64>().min(l.count),
        ));
        self.lifetime_histogram.set(l.sum_s, l.count, buckets);
        self.uptime.set(s.duration_s);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Parses `--metrics`: `PORT`, `HOST:PORT` or `[V6]:PORT`. Loopback only
/// unless `allow_remote`.
pub fn parse_addr(s: &str, allow_remote: bool) -> Result<SocketAddr> {
    let addr = if let Ok(port) = s.parse::<u16>() {
        SocketAddr::from(([127, 0, 0, 1], port))
    } else {
        s.to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .with_context(|| {
                format!("--metrics `{s}`: not an address (PORT, HOST:PORT or [IPv6]:PORT)")
            })?
    };
    if !addr.ip().is_loopback() && !allow_remote {
        bail!(
            "--metrics `{s}` is not a loopback address: anyone who can reach it could read the metrics; add --metrics-allow-remote to serve on it anyway"
        );
    }
    Ok(addr)
}

/// Serves `GET /metrics` on `addr` from its own thread; returns the bound
/// address (the port chosen when `addr` has port 0).
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("--metrics {addr}: cannot listen: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .context("--metrics: not an IP listener")?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let content_type = tiny_http::Header::from_bytes(
                "Content-Type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .expect("a valid header");
            for req in server.incoming_requests() {
                let path = req.url().split('?').next().unwrap_or("");
                let resp = if path == "/metrics" {
                    tiny_http::Response::from_string(metrics.encode())
                        .with_header(content_type.clone())
                } else {
                    tiny_http::Response::from_string("pintrace: see /metrics\n")
                        .with_status_code(404)
                };
                if let Err(e) = req.respond(resp) {
                    log::debug!("metrics: answering a scrape: {e}");
                }
            }
        })
        .context("starting the metrics thread")?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{kernel::flags::FollFlags, ledger::Tally};
    use std::collections::BTreeMap;

    #[test]
    fn the_summary_is_what_is_exposed() {
        let t = Tally::new(FollFlags::FROM_6_3);
        let mut lost = BTreeMap::new();
        lost.insert("ringbuf_full", 4);
        let mut s = Summary::new(&t, "6.12".into(), "p=fexit".into(), 2.5, lost, 1);
        s.by_kind.get_mut(&crate::ledger::Kind::Pin).unwrap().pages = 2048;
        s.releases.pin_refs = 2000;
        s.findings = 3;
        s.pin_lifetime.count = 2000;
        s.pin_lifetime.p50_us = 250.0;
        // 1500 at up to 1 ms, 480 more at up to 10 ms, 20 beyond 10 s.
        s.pin_lifetime.buckets[3] = 1500;
        s.pin_lifetime.buckets[4] = 480;
        s.pin_lifetime.sum_s = 250.5;
        s.stacks.sampled_out = 7;
        let m = Metrics::new();
        m.update(&s, "live");
        m.update(&s, "live");
        let text = m.encode();
        for line in [
            "pintrace_pages_acquired_total{kind=\"pin\"} 2048",
            "pintrace_refs_released_total{kind=\"pin\"} 2000",
            "pintrace_findings_total 3",
            "pintrace_events_lost_total{cause=\"ringbuf_full\"} 4",
            "pintrace_decode_errors_total 1",
            "# TYPE pintrace_pin_lifetime_seconds histogram",
            "pintrace_pin_lifetime_seconds_sum 250.5",
            "pintrace_pin_lifetime_seconds_count 2000",
            "pintrace_pin_lifetime_seconds_bucket{le=\"0.000001\"} 0",
            "pintrace_pin_lifetime_seconds_bucket{le=\"0.0001\"} 0",
            "pintrace_pin_lifetime_seconds_bucket{le=\"0.001\"} 1500",
            "pintrace_pin_lifetime_seconds_bucket{le=\"0.01\"} 1980",
            "pintrace_pin_lifetime_seconds_bucket{le=\"10.0\"} 1980",
            "pintrace_pin_lifetime_seconds_bucket{le=\"+Inf\"} 2000",
            "pintrace_uptime_seconds 2.5",
            "pintrace_stacks_total{outcome=\"sampled_out\"} 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("quantile"), "no quantile gauges:\n{text}");
        for (name, _) in NAMES {
            assert!(text.contains(&format!("# HELP {name}")), "{name}");
        }
    }

    #[test]
    fn only_loopback_unless_allowed() {
        assert_eq!(
            parse_addr("9100", false).unwrap(),
            "127.0.0.1:9100".parse().unwrap()
        );
        assert!(parse_addr("[::1]:0", false).is_ok());
        let e = parse_addr("0.0.0.0:9100", false).unwrap_err().to_string();
        assert!(
            e.contains("--metrics") && e.contains("--metrics-allow-remote"),
            "{e}"
        );
        assert!(parse_addr("0.0.0.0:9100", true).is_ok());
        assert!(parse_addr("nonsense", false)
            .unwrap_err()
            .to_string()
            .contains("--metrics `nonsense`"));
    }
}
