//! The standard process metrics, read from `/proc` at each scrape: what an operator's usual
//! dashboards and alerts expect of any service (`process_resident_memory_bytes`,
//! `process_cpu_seconds_total`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`). Outside Linux there is no `/proc`, and they are left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux reports CPU times in USER_HZ ticks, 100 a second on every architecture it runs on.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Default)]
pub struct Process;

/// One reading of this process.
#[derive(Debug, PartialEq)]
struct Reading {
    rss_bytes: i64,
    cpu_seconds: f64,
    start_time_seconds: f64,
    open_fds: i64,
    max_fds: i64,
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(r) = read() else {
            return Ok(());
        };
        let gauges: [(&str, &str, ConstGauge<f64>); 4] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                ConstGauge::new(r.rss_bytes as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                ConstGauge::new(r.start_time_seconds),
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                ConstGauge::new(r.open_fds as f64),
            ),
            (
                "process_max_fds",
                "The most file descriptors the process may open",
                ConstGauge::new(r.max_fds as f64),
            ),
        ];
        for (name, help, gauge) in gauges {
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        let cpu = ConstCounter::new(r.cpu_seconds);
        let help = "User and system CPU time spent, in seconds";
        let metric =
            encoder.encode_descriptor("process_cpu_seconds", help, None, cpu.metric_type())?;
        cpu.encode(metric)
    }
}

fn read() -> Option<Reading> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
    parse(&stat, &status, &boot, &limits, open_fds)
}

/// The reading from the text of `/proc/self/stat`, `/proc/self/status`, `/proc/stat` and
/// `/proc/self/limits`.
fn parse(stat: &str, status: &str, boot: &str, limits: &str, open_fds: i64) -> Option<Reading> {
    // After the command name (which may hold spaces and parentheses) comes the state, field
    // 3; utime and stime are fields 14 and 15, starttime (ticks after boot) field 22.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let cpu_ticks = field(14)? + field(15)?;
    let start_ticks = field(22)?;
    let boot_time: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let rss_kib: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .unwrap_or(-1);
    Some(Reading {
        rss_bytes: rss_kib * 1024,
        cpu_seconds: cpu_ticks as f64 / TICKS_PER_SECOND,
        start_time_seconds: boot_time as f64 + start_ticks as f64 / TICKS_PER_SECOND,
        open_fds,
        max_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_comes_from_the_proc_files_even_with_a_strange_command_name() {
        let stat = "4242 (otpd (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 9 0 12345 1000 300 18446744073709551615";
        let status = "Name:\totpd\nVmHWM:\t  80000 kB\nVmRSS:\t   75000 kB\n";
        let boot = "cpu  1 2 3 4\nbtime 1700000000\nprocesses 5\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            65536                524288               files     \n";
        assert_eq!(
            parse(stat, status, boot, limits, 17),
            Some(Reading {
                rss_bytes: 75000 * 1024,
                cpu_seconds: 3.0,
                start_time_seconds: 1_700_000_123.45,
                open_fds: 17,
                max_fds: 65536,
            })
        );
    }

    #[test]
    fn this_process_can_be_read() {
        let r = read().expect("/proc is there on Linux");
        assert!(r.rss_bytes > 0 && r.open_fds > 0 && r.max_fds > 0, "{r:?}");
    }
}
