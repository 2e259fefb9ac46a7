//! Pure arithmetic and formatting of what a run measured.

use std::time::Duration;

/// Latencies (microseconds) and failures of one kind of request.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub micros: Vec<u32>,
    pub errors: u64,
}

impl Tally {
    pub fn record(&mut self, took: Duration) {
        self.micros
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
    }

    pub fn merge(&mut self, other: Tally) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
    }

    /// Successful requests.
    pub fn count(&self) -> usize {
        self.micros.len()
    }

    /// Successful requests per second over `elapsed`.
    pub fn per_s(&self, elapsed: Duration) -> f64 {
        if elapsed.is_zero() {
            return 0.0;
        }
        self.count() as f64 / elapsed.as_secs_f64()
    }

    /// The `q` quantile (0..=1) of the latencies in milliseconds, by the
    /// nearest-rank method; 0 without samples.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let mut sorted = self.micros.clone();
        sorted.sort_unstable();
        nearest_rank(&sorted, q) as f64 / 1000.0
    }

    /// `name: requests=… per_s=… p50_ms=… p99_ms=… errors=…`.
    pub fn line(&self, name: &str, elapsed: Duration) -> String {
        format!(
            "{name}: requests={} per_s={:.0} p50_ms={:.1} p99_ms={:.1} errors={}",
            self.count(),
            self.per_s(elapsed),
            self.quantile_ms(0.50),
            self.quantile_ms(0.99),
            self.errors
        )
    }
}

fn nearest_rank(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The figures the closing line reports.
pub struct Summary {
    pub submit_per_s: f64,
    pub submit_p99_ms: f64,
    pub get_per_s: f64,
    pub errors: u64,
}

/// Issue 14's targets on the two-core reference machine.
pub const TARGETS: &str = "submit >= 2500/s with p99 <= 25 ms, get >= 8000/s, 0 errors";

impl Summary {
    pub fn meets_targets(&self) -> bool {
        self.submit_per_s >= 2500.0
            && self.submit_p99_ms <= 25.0
            && self.get_per_s >= 8000.0
            && self.errors == 0
    }

    /// The one closing line.
    pub fn line(&self) -> String {
        format!(
            "api-load: submit_per_s={:.0} submit_p99_ms={:.1} get_per_s={:.0} errors={}",
            self.submit_per_s, self.submit_p99_ms, self.get_per_s, self.errors
        )
    }
}

/// `(end - start) / start` in percent.
pub fn change_pct(start: u64, end: u64) -> f64 {
    if start == 0 {
        return 0.0;
    }
    (end as f64 - start as f64) * 100.0 / start as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(millis: &[u32]) -> Tally {
        Tally {
            micros: millis.iter().map(|m| m * 1000).collect(),
            errors: 0,
        }
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let t = tally(&(1..=100).collect::<Vec<_>>());
        assert_eq!(t.quantile_ms(0.99), 99.0);
        assert_eq!(t.quantile_ms(0.50), 50.0);
        assert_eq!(t.quantile_ms(1.0), 100.0);
        assert_eq!(tally(&[7]).quantile_ms(0.99), 7.0);
        assert_eq!(Tally::default().quantile_ms(0.99), 0.0);
    }

    #[test]
    fn rates_and_merging() {
        let mut a = tally(&[1, 2]);
        let mut b = tally(&[3]);
        b.errors = 2;
        a.merge(b);
        assert_eq!((a.count(), a.errors), (3, 2));
        assert_eq!(a.per_s(Duration::from_millis(1500)), 2.0);
        assert_eq!(a.per_s(Duration::ZERO), 0.0);
        assert_eq!(
            a.line("get", Duration::from_secs(3)),
            "get: requests=3 per_s=1 p50_ms=2.0 p99_ms=3.0 errors=2"
        );
    }

    #[test]
    fn the_closing_line_and_the_targets() {
        let mut s = Summary {
            submit_per_s: 2600.4,
            submit_p99_ms: 24.96,
            get_per_s: 8123.0,
            errors: 0,
        };
        assert_eq!(
            s.line(),
            "api-load: submit_per_s=2600 submit_p99_ms=25.0 get_per_s=8123 errors=0"
        );
        assert!(s.meets_targets());
        s.errors = 1;
        assert!(!s.meets_targets());
        s.errors = 0;
        s.submit_p99_ms = 25.1;
        assert!(!s.meets_targets());
    }

    #[test]
    fn memory_change_in_percent() {
        assert_eq!(change_pct(100, 110), 10.0);
        assert_eq!(change_pct(200, 150), -25.0);
        assert_eq!(change_pct(0, 5), 0.0);
    }
}
