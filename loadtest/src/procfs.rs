//! Resource use of a local process (the relay, or the load tool itself) from `/proc`.
//!
//! Only Linux is supported; elsewhere sampling yields nothing and the report says so.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::time::Instant;

/// Kernel clock ticks per second of `/proc/PID/stat` times. `USER_HZ` is 100 on every
/// Linux architecture the tool targets (reading `sysconf` would need `unsafe`).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// One sample of a process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcSample {
    /// Resident memory, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident memory, KiB (`VmHWM`).
    pub rss_peak_kib: u64,
    pub threads: u64,
    /// User + system CPU time since the process started, seconds.
    pub cpu_seconds: f64,
    /// CPU use since the previous sample, percent of one core.
    pub cpu_percent: f64,
}

/// Samples one process, or a group of processes as one (nginx's master and workers), over
/// time.
///
/// The `/proc` files are opened once and re-read from the start at each sample: when the
/// load tool has used every descriptor it may open for its sessions, it can still sample.
pub struct ProcSampler {
    files: Vec<(File, File)>,
    last: Option<(Instant, f64)>,
}

fn reread(f: &mut File) -> Option<String> {
    f.seek(SeekFrom::Start(0)).ok()?;
    let mut s = String::new();
    f.read_to_string(&mut s).ok()?;
    Some(s)
}

impl ProcSampler {
    pub fn new(pid: u32) -> Self {
        Self::group(&[pid])
    }

    /// Several processes summed into one sample (a server with worker processes).
    pub fn group(pids: &[u32]) -> Self {
        Self { files: pids.iter().filter_map(|pid| Self::open(&format!("/proc/{pid}"))).collect(), last: None }
    }

    /// The load tool's own process.
    pub fn this_process() -> Self {
        Self { files: Self::open("/proc/self").into_iter().collect(), last: None }
    }

    fn open(path: &str) -> Option<(File, File)> {
        File::open(format!("{path}/stat")).ok().zip(File::open(format!("{path}/status")).ok())
    }

    /// A sample (the sum over the group), or `None` when every process is gone (or this
    /// is not Linux).
    pub fn sample(&mut self) -> Option<ProcSample> {
        let mut sum: Option<ProcSample> = None;
        for (stat_file, status_file) in &mut self.files {
            let (Some(stat), Some(status)) = (reread(stat_file), reread(status_file)) else { continue };
            let Some(cpu_seconds) = parse_cpu_seconds(&stat) else { continue };
            let kib = |key: &str| status_value(&status, key).unwrap_or(0);
            let s = sum.get_or_insert(ProcSample {
                rss_kib: 0,
                rss_peak_kib: 0,
                threads: 0,
                cpu_seconds: 0.0,
                cpu_percent: 0.0,
            });
            s.rss_kib += kib("VmRSS:");
            s.rss_peak_kib += kib("VmHWM:");
            s.threads += kib("Threads:");
            s.cpu_seconds += cpu_seconds;
        }
        let mut sample = sum?;
        let now = Instant::now();
        sample.cpu_percent = match self.last {
            Some((t, c)) if now > t => 100.0 * (sample.cpu_seconds - c) / now.duration_since(t).as_secs_f64(),
            _ => 0.0,
        };
        self.last = Some((now, sample.cpu_seconds));
        Some(sample)
    }
}

/// utime + stime of a `/proc/PID/stat` line, in seconds. The command name (field 2) may
/// contain spaces and parentheses, so fields are counted after its last `)`.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15) → indexes 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / CLOCK_TICKS_PER_SECOND)
}

/// The number of a `Key:   123 kB` line of `/proc/PID/status`.
fn status_value(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "1234 (noc (worker) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 1000 200";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert_eq!(parse_cpu_seconds("garbage"), None);
        let status = "Name:\tnoc\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t9\n";
        assert_eq!(status_value(status, "VmRSS:"), Some(1024));
        assert_eq!(status_value(status, "Threads:"), Some(9));
    }

    #[test]
    fn samples_this_process() {
        let mut s = ProcSampler::this_process();
        let a = s.sample().expect("linux /proc");
        assert!(a.rss_kib > 0 && a.threads >= 1);
        assert!(ProcSampler::new(u32::MAX).sample().is_none());
        let me = std::process::id();
        let pair = ProcSampler::group(&[me, me]).sample().expect("linux /proc");
        assert!(pair.rss_kib > a.rss_kib * 3 / 2, "the group's RSS is the sum of its members'");
        assert!(ProcSampler::group(&[me, u32::MAX]).sample().is_some(), "a vanished member is skipped");
    }
}
