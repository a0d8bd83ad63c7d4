//! Per-direction counters and latency histograms (HdrHistogram, 3 significant
//! digits, 1 ns .. 100 s; longer latencies are counted as 100 s).

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

const LAT_MAX_NS: u64 = 100_000_000_000;

/// Latency histogram in nanoseconds. Recording does not allocate.
#[derive(Debug, Clone)]
pub struct LatHist(Histogram<u64>);

impl Default for LatHist {
    fn default() -> Self {
        LatHist(Histogram::new_with_bounds(1, LAT_MAX_NS, 3).expect("valid histogram bounds"))
    }
}

impl LatHist {
    #[inline]
    pub fn record(&mut self, ns: u64) {
        // Within bounds by construction: cannot fail.
        let _ = self.0.record(ns.clamp(1, LAT_MAX_NS));
    }
    pub fn add(&mut self, other: &LatHist) {
        let _ = self.0.add(&other.0);
    }
    /// The value at percentile `p` (0..=100); 0 when empty.
    pub fn at_percentile(&self, p: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_percentile(p)
        }
    }
    pub fn summary(&self) -> LatSummary {
        if self.0.is_empty() {
            return LatSummary::default();
        }
        let h = &self.0;
        LatSummary {
            min: h.min(),
            max: h.max(),
            mean: h.mean(),
            stdev: h.stdev(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
        }
    }
}

/// Latency figures in nanoseconds (percentiles are within 0.1 % of the truth).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatSummary {
    pub min: u64,
    pub max: u64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    #[serde(rename = "p99.9")]
    pub p99_9: u64,
}

/// Counters of one direction (reads or writes) of one job.
#[derive(Debug, Clone, Default)]
pub struct DirStats {
    pub ios: u64,
    pub bytes: u64,
    pub lat: LatHist,
}

impl DirStats {
    #[inline]
    pub fn record(&mut self, bytes: u64, lat_ns: u64) {
        self.ios += 1;
        self.bytes += bytes;
        self.lat.record(lat_ns);
    }
    pub fn add(&mut self, other: &DirStats) {
        self.ios += other.ios;
        self.bytes += other.bytes;
        self.lat.add(&other.lat);
    }
    /// Figures over `elapsed`, with fio's default percentiles.
    #[cfg(test)]
    pub fn report(&self, elapsed: Duration) -> DirReport {
        self.report_with(elapsed, FIO_PERCENTILES)
    }

    /// Figures over `elapsed`, `percentiles` (0 < p <= 100) in `clat_ns`.
    pub fn report_with(&self, elapsed: Duration, percentiles: &[f64]) -> DirReport {
        let secs = elapsed.as_secs_f64();
        let (iops, bw) = if secs > 0.0 {
            (self.ios as f64 / secs, self.bytes as f64 / secs)
        } else {
            (0.0, 0.0)
        };
        let lat = self.lat.summary();
        DirReport {
            ios: self.ios,
            bytes: self.bytes,
            runtime_ms: elapsed.as_secs_f64() * 1e3,
            iops,
            bw_bytes_per_sec: bw,
            lat_ns: lat,
            io_bytes: self.bytes,
            io_kbytes: self.bytes >> 10,
            bw_bytes: bw as u64,
            bw: (bw / 1024.0) as u64,
            runtime: elapsed.as_millis() as u64,
            total_ios: self.ios,
            clat_ns: ClatNs {
                min: lat.min,
                max: lat.max,
                mean: lat.mean,
                stddev: lat.stdev,
                n: self.ios,
                percentile: Percentiles(
                    percentiles
                        .iter()
                        .map(|&p| (p, self.lat.at_percentile(p)))
                        .collect(),
                ),
            },
        }
    }
}

/// fio's default `percentile_list`.
pub const FIO_PERCENTILES: &[f64] = &[
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95,
    99.99,
];

/// Completion latency as fio 3.x's JSON has it (`clat_ns`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClatNs {
    pub min: u64,
    pub max: u64,
    pub mean: f64,
    pub stddev: f64,
    #[serde(rename = "N")]
    pub n: u64,
    pub percentile: Percentiles,
}

/// Percentiles and their values, as fio writes them: an object keyed by
/// the percentile with six decimals (`"99.900000"`), in the list's order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Percentiles(pub Vec<(f64, u64)>);

impl Serialize for Percentiles {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (p, v) in &self.0 {
            m.serialize_entry(&format!("{p:.6}"), v)?;
        }
        m.end()
    }
}

/// Parses fio's `--percentile-list` (`99:99.9:99.99`): each above 0 and
/// at most 100.
pub fn parse_percentiles(s: &str) -> Result<Vec<f64>, String> {
    s.split(':')
        .map(|p| match p.trim().parse::<f64>() {
            Ok(v) if v > 0.0 && v <= 100.0 => Ok(v),
            Ok(v) => Err(format!("{v} is not a percentile (above 0, at most 100)")),
            Err(_) => Err(format!(
                "{p:?} is not a number (a list like 99:99.9, colon-separated)"
            )),
        })
        .collect()
}

/// Reported figures of one direction: the engine's own, then the same in
/// fio 3.x's JSON names and units, so fio's readers read it as they are.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DirReport {
    pub ios: u64,
    pub bytes: u64,
    pub runtime_ms: f64,
    pub iops: f64,
    pub bw_bytes_per_sec: f64,
    pub lat_ns: LatSummary,
    /// fio: bytes moved.
    pub io_bytes: u64,
    /// fio: KiB moved.
    pub io_kbytes: u64,
    /// fio: bytes per second.
    pub bw_bytes: u64,
    /// fio: KiB per second.
    pub bw: u64,
    /// fio: milliseconds.
    pub runtime: u64,
    pub total_ios: u64,
    pub clat_ns: ClatNs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = LatHist::default();
        for v in 1..=10_000u64 {
            h.record(v * 1000); // 1 us .. 10 ms
        }
        let s = h.summary();
        let close = |got: u64, want: u64| (got as f64 - want as f64).abs() / want as f64 <= 0.002;
        assert!(close(s.p50, 5_000_000), "{}", s.p50);
        assert!(close(s.p90, 9_000_000), "{}", s.p90);
        assert!(close(s.p99, 9_900_000), "{}", s.p99);
        assert!(close(s.p99_9, 9_990_000), "{}", s.p99_9);
        assert!(close(s.min, 1000) && close(s.max, 10_000_000));
        assert!((s.mean - 5_000_500.0).abs() / 5e6 < 0.002, "{}", s.mean);
    }

    #[test]
    fn tail_and_merge() {
        let mut a = DirStats::default();
        for _ in 0..999 {
            a.record(4096, 100_000);
        }
        a.record(4096, 50_000_000);
        let mut b = DirStats::default();
        b.record(4096, 200_000_000_000); // beyond the range: clamped
        a.add(&b);
        assert_eq!(a.ios, 1001);
        let s = a.lat.summary();
        assert!(s.p50 >= 99_900 && s.p50 <= 100_100);
        assert!(s.p99_9 >= 49_000_000, "{}", s.p99_9);
        assert!(s.max >= 99_000_000_000);
        let r = a.report(Duration::from_secs(2));
        assert!((r.iops - 500.5).abs() < 1e-9);
        assert!((r.bw_bytes_per_sec - 1001.0 * 4096.0 / 2.0).abs() < 1e-6);
    }

    #[test]
    fn fio_shaped_figures() {
        let mut d = DirStats::default();
        for v in 1..=1000u64 {
            d.record(8192, v * 1000); // 1 us .. 1 ms
        }
        let r = d.report_with(Duration::from_secs(2), &[50.0, 99.0, 99.9]);
        assert_eq!(
            (r.io_bytes, r.io_kbytes, r.total_ios),
            (8192 * 1000, 8000, 1000)
        );
        assert_eq!((r.bw_bytes, r.bw, r.runtime), (4096 * 1000, 4000, 2000));
        assert_eq!((r.clat_ns.min, r.clat_ns.n), (1000, 1000));
        let close = |got: u64, want: u64| (got as f64 - want as f64).abs() / want as f64 <= 0.002;
        let p = &r.clat_ns.percentile.0;
        assert!(close(p[0].1, 500_000) && close(p[1].1, 990_000) && close(p[2].1, 999_000));
        let json = serde_json::to_value(&r).unwrap();
        let keys: Vec<&String> = json["clat_ns"]["percentile"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(keys, ["50.000000", "99.000000", "99.900000"]);
        assert_eq!(json["clat_ns"]["N"], 1000);
        assert!(json["clat_ns"]["stddev"].as_f64().unwrap() > 0.0);
        // In the list's order, not the keys' (text) order.
        let s = serde_json::to_string(&Percentiles(vec![(5.0, 1), (10.0, 2)])).unwrap();
        assert_eq!(s, r#"{"5.000000":1,"10.000000":2}"#);
    }

    #[test]
    fn percentile_lists_are_checked() {
        assert_eq!(parse_percentiles("99:99.9").unwrap(), [99.0, 99.9]);
        assert_eq!(parse_percentiles("100").unwrap(), [100.0]);
        for bad in ["0", "101", "99:", "abc", "99,99.9"] {
            assert!(parse_percentiles(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_is_zero() {
        let s = DirStats::default().report(Duration::ZERO);
        assert_eq!(s.iops, 0.0);
        assert_eq!(s.lat_ns, LatSummary::default());
    }
}
