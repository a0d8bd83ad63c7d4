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
    /// Figures over `elapsed`.
    pub fn report(&self, elapsed: Duration) -> DirReport {
        let secs = elapsed.as_secs_f64();
        let (iops, bw) = if secs > 0.0 {
            (self.ios as f64 / secs, self.bytes as f64 / secs)
        } else {
            (0.0, 0.0)
        };
        DirReport {
            ios: self.ios,
            bytes: self.bytes,
            runtime_ms: elapsed.as_secs_f64() * 1e3,
            iops,
            bw_bytes_per_sec: bw,
            lat_ns: self.lat.summary(),
        }
    }
}

/// Reported figures of one direction.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DirReport {
    pub ios: u64,
    pub bytes: u64,
    pub runtime_ms: f64,
    pub iops: f64,
    pub bw_bytes_per_sec: f64,
    pub lat_ns: LatSummary,
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
    fn empty_is_zero() {
        let s = DirStats::default().report(Duration::ZERO);
        assert_eq!(s.iops, 0.0);
        assert_eq!(s.lat_ns, LatSummary::default());
    }
}
