//! CPU time spent per phase by the server, PostgreSQL and the load process
//! itself (which also runs kube-sim), from /proc. On a shared machine the
//! rate of a phase swings with whatever else runs; CPU per request does
//! not, so it is what tells whether a change made a request cheaper.

use std::time::Duration;

/// Cumulative CPU times at one instant, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuSample {
    pub server: u64,
    pub postgres: u64,
    pub load: u64,
    /// All CPUs, busy (everything but idle and iowait).
    pub machine_busy: u64,
    pub machine_total: u64,
}

/// CPU used between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUse {
    pub server: Duration,
    pub postgres: Duration,
    pub load: Duration,
    pub machine_busy_pct: f64,
}

impl CpuSample {
    /// Reads the server's (`server_pid`), every `postgres` process's and
    /// this process's times. Processes that end between listing and reading
    /// are skipped.
    pub fn take(server_pid: u32) -> std::io::Result<CpuSample> {
        let mut sample = CpuSample {
            server: process_ticks(&std::fs::read_to_string(format!(
                "/proc/{server_pid}/stat"
            ))?)
            .map(|(_, t)| t)
            .unwrap_or(0),
            load: process_ticks(&std::fs::read_to_string("/proc/self/stat")?)
                .map(|(_, t)| t)
                .unwrap_or(0),
            ..CpuSample::default()
        };
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
                && let Some(("postgres", ticks)) = process_ticks(&stat)
            {
                sample.postgres += ticks;
            }
        }
        if let Some((busy, total)) = machine_ticks(&std::fs::read_to_string("/proc/stat")?) {
            sample.machine_busy = busy;
            sample.machine_total = total;
        }
        Ok(sample)
    }

    /// What was used from `self` to `later`.
    pub fn until(&self, later: &CpuSample) -> CpuUse {
        let tick = Duration::from_secs(1) / ticks_per_second();
        let span = |a: u64, b: u64| tick * u32::try_from(b.saturating_sub(a)).unwrap_or(u32::MAX);
        let total = later.machine_total.saturating_sub(self.machine_total);
        CpuUse {
            server: span(self.server, later.server),
            postgres: span(self.postgres, later.postgres),
            load: span(self.load, later.load),
            machine_busy_pct: match total {
                0 => 0.0,
                t => 100.0 * later.machine_busy.saturating_sub(self.machine_busy) as f64 / t as f64,
            },
        }
    }
}

impl CpuUse {
    /// `<name>-cpu: server_us_per_req=… postgres_us_per_req=… load_us_per_req=… machine_busy_pct=…`
    pub fn line(&self, name: &str, requests: u64) -> String {
        let per = |d: Duration| match requests {
            0 => 0.0,
            n => d.as_secs_f64() * 1e6 / n as f64,
        };
        format!(
            "{name}-cpu: server_us_per_req={:.0} postgres_us_per_req={:.0} load_us_per_req={:.0} machine_busy_pct={:.0}",
            per(self.server),
            per(self.postgres),
            per(self.load),
            self.machine_busy_pct
        )
    }
}

fn ticks_per_second() -> u32 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u32::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100)
}

/// `(command name, utime + stime)` of a /proc/<pid>/stat line. The name is
/// in parentheses and may itself hold spaces and parentheses, so the fields
/// are counted from the last `)`.
fn process_ticks(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    // After ") ": state is field 3; utime and stime are fields 14 and 15.
    let mut fields = stat.get(close + 2..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// `(busy, total)` ticks of the `cpu` line of /proc/stat (idle and iowait
/// are not busy).
fn machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_line_gives_its_name_and_cpu_ticks() {
        let stat =
            "4242 (postgres) S 1 4242 4242 0 -1 4194560 1000 0 0 0 37 5 0 0 20 0 1 0 100 1000 100";
        assert_eq!(process_ticks(stat), Some(("postgres", 42)));
        // A name with spaces and a parenthesis does not shift the fields.
        let odd = "7 (tokio rt) x) R 1 7 7 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0 1 1 1";
        assert_eq!(process_ticks(odd), Some(("tokio rt) x", 30)));
        assert_eq!(process_ticks("garbage"), None);
    }

    #[test]
    fn the_machine_line_counts_idle_and_iowait_as_not_busy() {
        let stat = "cpu  100 5 50 800 40 0 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(machine_ticks(stat), Some((160, 1000)));
        assert_eq!(machine_ticks("intr 1 2 3"), None);
    }

    #[test]
    fn use_between_samples_is_the_difference_per_request() {
        let hz = u64::from(ticks_per_second());
        let a = CpuSample {
            server: 10,
            postgres: 20,
            load: 5,
            machine_busy: 100,
            machine_total: 400,
        };
        let b = CpuSample {
            server: 10 + hz,
            postgres: 20 + 2 * hz,
            load: 5,
            machine_busy: 400,
            machine_total: 800,
        };
        let used = a.until(&b);
        assert_eq!(used.server, Duration::from_secs(1));
        assert_eq!(used.postgres, Duration::from_secs(2));
        assert_eq!(used.load, Duration::ZERO);
        assert_eq!(used.machine_busy_pct, 75.0);
        assert_eq!(
            used.line("get", 1000),
            "get-cpu: server_us_per_req=1000 postgres_us_per_req=2000 load_us_per_req=0 machine_busy_pct=75"
        );
    }
}
