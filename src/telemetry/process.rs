//! The standard `process_*` metrics of Prometheus client libraries (CPU, memory, file
//! descriptors, start time), read from Linux's `/proc` at each scrape.
//!
//! prometheus-client has no process collector, and the one crate offering one for it is built on
//! an older prometheus-client whose `Collector` trait does not fit. So this reads five small
//! files; the parsing is pure, the reading is not. Where a file cannot be read (another OS, a
//! restricted `/proc`) its metrics are left out rather than failing the scrape.

use std::fs;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of the times in `/proc/<pid>/stat`: the kernel's USER_HZ, 100 on every
/// architecture Linux runs on today (Prometheus' own procfs library fixes it too, rather than
/// asking sysconf).
const USER_HZ: f64 = 100.0;

/// What `/proc` says about this process; `None` where it said nothing readable.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sample {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors (`None` when unlimited).
    pub max_fds: Option<u64>,
    /// Start of the process, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// The contents of the files a [`Sample`] is read from, each `None` when it could not be read.
#[derive(Debug, Default, Clone, Copy)]
pub struct Files<'a> {
    /// `/proc/self/stat`.
    pub stat: Option<&'a str>,
    /// `/proc/self/status`.
    pub status: Option<&'a str>,
    /// `/proc/self/limits`.
    pub limits: Option<&'a str>,
    /// `/proc/stat` (the system's, for its boot time).
    pub system_stat: Option<&'a str>,
}

impl Sample {
    /// Read this process's sample from `/proc`.
    pub fn read() -> Sample {
        let read = |path| fs::read_to_string(path).ok();
        let (stat, status, limits, system_stat) = (
            read("/proc/self/stat"),
            read("/proc/self/status"),
            read("/proc/self/limits"),
            read("/proc/stat"),
        );
        let files = Files {
            stat: stat.as_deref(),
            status: status.as_deref(),
            limits: limits.as_deref(),
            system_stat: system_stat.as_deref(),
        };
        // The directory listing holds one descriptor of its own while it is read, as in every
        // other client library's count.
        let open_fds = fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        Sample {
            open_fds,
            ..Sample::parse(files)
        }
    }

    /// The sample the files describe (all but `open_fds`, which is a directory's length).
    pub fn parse(files: Files<'_>) -> Sample {
        let stat = files.stat.and_then(Stat::parse);
        let boot = files.system_stat.and_then(boot_time);
        Sample {
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / USER_HZ),
            resident_bytes: files.status.and_then(|s| status_kib(s, "VmRSS:")).map(kib),
            virtual_bytes: stat.map(|s| s.vsize),
            open_fds: None,
            max_fds: files.limits.and_then(max_open_files),
            start_time_seconds: stat
                .zip(boot)
                .map(|(s, boot)| boot as f64 + s.starttime as f64 / USER_HZ),
        }
    }
}

fn kib(n: u64) -> u64 {
    n.saturating_mul(1024)
}

/// The fields of `/proc/<pid>/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
}

impl Stat {
    /// Fields 14 (utime), 15 (stime), 22 (starttime, ticks after boot) and 23 (vsize, bytes).
    /// Field 2, the command name in parentheses, may hold spaces and parentheses itself, so the
    /// fields are counted from after its last `)`.
    fn parse(text: &str) -> Option<Stat> {
        let (_, rest) = text.rsplit_once(')')?;
        // `rest` starts at field 3 (the state).
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
            vsize: field(23)?,
        })
    }
}

/// The number on line `key` of `/proc/<pid>/status` (in kB for the `Vm*` lines).
fn status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft limit of the `Max open files` line of `/proc/<pid>/limits`.
fn max_open_files(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The `btime` line of `/proc/stat`: boot time, in seconds since the Unix epoch.
fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// A [`Collector`] of the `process_*` metrics, read anew at each scrape. Register it in a
/// registry without prefix: the names are the ones every Prometheus client exports.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = Sample::read();
        if let Some(seconds) = sample.cpu_seconds {
            let metric = ConstCounter::new(seconds);
            metric.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                MetricType::Counter,
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                sample.resident_bytes.map(|n| n as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                sample.virtual_bytes.map(|n| n as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                sample.open_fds.map(|n| n as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                sample.max_fds.map(|n| n as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                sample.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                ConstGauge::new(value).encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    MetricType::Gauge,
                )?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `/proc/<pid>/stat` line, its command name made awkward.
    const STAT: &str = "4242 (key smith) (x)) S 1 4242 4242 0 -1 4194560 5390 0 12 0 \
        250 130 0 0 20 0 9 0 4200 734003200 6123 18446744073709551615 1 1 0 0 0 0 0 4096 17663 \
        0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    const STATUS: &str = "Name:\tkeysmith\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t  720000 kB\nVmSize:\t  716800 kB\nVmHWM:\t   30000 kB\nVmRSS:\t   24492 kB\n\
        Threads:\t9\n";

    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
        Max cpu time              unlimited            unlimited            seconds   \n\
        Max open files            1048576              1048576              files     \n\
        Max locked memory         8388608              8388608              bytes     \n";

    const SYSTEM_STAT: &str = "cpu  1 2 3 4\nintr 0\nctxt 77\nbtime 1700000000\nprocesses 9\n";

    #[test]
    fn every_metric_is_read_from_its_file() {
        let sample = Sample::parse(Files {
            stat: Some(STAT),
            status: Some(STATUS),
            limits: Some(LIMITS),
            system_stat: Some(SYSTEM_STAT),
        });
        assert_eq!(
            sample,
            Sample {
                // (250 + 130) ticks at 100 a second.
                cpu_seconds: Some(3.8),
                resident_bytes: Some(24_492 * 1024),
                virtual_bytes: Some(734_003_200),
                open_fds: None,
                max_fds: Some(1_048_576),
                // 4200 ticks after boot.
                start_time_seconds: Some(1_700_000_042.0),
            }
        );
    }

    #[test]
    fn what_cannot_be_read_is_left_out() {
        assert_eq!(Sample::parse(Files::default()), Sample::default());
        // The start time needs the boot time too.
        let without_boot = Sample::parse(Files {
            stat: Some(STAT),
            ..Files::default()
        });
        assert_eq!(without_boot.cpu_seconds, Some(3.8));
        assert_eq!(without_boot.start_time_seconds, None);
        for broken in [
            "",
            "4242 (keysmith",
            "4242 (keysmith) S 1 2",
            "4242 (k) S x",
        ] {
            assert_eq!(Stat::parse(broken), None, "{broken}");
        }
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(max_open_files(unlimited), None);
        assert_eq!(status_kib("VmSize:\t1 kB\n", "VmRSS:"), None);
        assert_eq!(boot_time("btime x\n"), None);
    }

    #[test]
    fn this_process_is_sampled_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let sample = Sample::read();
        assert!(sample.cpu_seconds.is_some_and(|s| s >= 0.0), "{sample:?}");
        assert!(sample.resident_bytes.is_some_and(|n| n > 0), "{sample:?}");
        assert!(sample.virtual_bytes >= sample.resident_bytes, "{sample:?}");
        assert!(sample.open_fds.is_some_and(|n| n >= 3), "{sample:?}");
        assert!(sample.max_fds >= sample.open_fds, "{sample:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Started in the past, less than a day ago (the test binary started it).
        assert!(
            sample
                .start_time_seconds
                .is_some_and(|t| t <= now + 1.0 && t > now - 86_400.0),
            "{sample:?}"
        );
    }
}
