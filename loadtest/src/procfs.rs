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

/// The whole machine's CPU time from the first line of `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostSample {
    /// All CPUs' time of every kind (guest time is already counted in user time).
    pub total_ticks: u64,
    /// Time the CPUs of this (virtual) machine wanted to run and the hypervisor ran
    /// something else (`steal`).
    pub steal_ticks: u64,
}

impl HostSample {
    /// The share of all CPU time between this sample and `later` that was stolen, in
    /// percent; `None` when no time passed between them.
    pub fn steal_percent_until(&self, later: &HostSample) -> Option<f64> {
        let total = later.total_ticks.checked_sub(self.total_ticks).filter(|t| *t > 0)?;
        let steal = later.steal_ticks.saturating_sub(self.steal_ticks);
        Some(100.0 * steal as f64 / total as f64)
    }
}

/// Samples the machine's CPU time. A virtual machine on a busy host loses CPU time to other
/// guests; a run during which that happened measures the host, not the relay, so each
/// run reports how much was stolen. `/proc/stat` is opened once, like the process files.
pub struct HostSampler {
    file: Option<File>,
}

impl Default for HostSampler {
    fn default() -> Self {
        Self { file: File::open("/proc/stat").ok() }
    }
}

impl HostSampler {
    /// A sample, or `None` where there is no `/proc/stat` (not Linux).
    pub fn sample(&mut self) -> Option<HostSample> {
        parse_host_cpu(&reread(self.file.as_mut()?)?)
    }
}

/// The `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq steal guest
/// guest_nice. Kernels before 2.6.11 have no steal field, which reads as none stolen.
fn parse_host_cpu(stat: &str) -> Option<HostSample> {
    let mut fields = stat.lines().next()?.split_ascii_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let mut sample = HostSample::default();
    for (i, field) in fields.take(8).enumerate() {
        let ticks: u64 = field.parse().ok()?;
        sample.total_ticks = sample.total_ticks.checked_add(ticks)?;
        if i == 7 {
            sample.steal_ticks = ticks;
        }
    }
    Some(sample)
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
    fn the_hosts_cpu_line_gives_its_total_and_stolen_time() {
        let stat = "cpu  300 0 100 500 10 0 40 50 20 0\ncpu0 150 0 50 250 5 0 20 25 10 0\n";
        let a = parse_host_cpu(stat).expect("a cpu line");
        assert_eq!(a, HostSample { total_ticks: 1000, steal_ticks: 50 });
        let b = HostSample { total_ticks: 1400, steal_ticks: 70 };
        assert_eq!(a.steal_percent_until(&b), Some(5.0));
        assert_eq!(a.steal_percent_until(&a), None, "no time passed");
        assert_eq!(parse_host_cpu("cpu  1 2 3 4\n"), Some(HostSample { total_ticks: 10, steal_ticks: 0 }));
        assert_eq!(parse_host_cpu("intr 1 2 3\n"), None);
        assert_eq!(parse_host_cpu("cpu  1 x 3\n"), None);
        assert_eq!(parse_host_cpu(""), None);
        let now = HostSampler::default().sample().expect("linux /proc/stat");
        assert!(now.total_ticks > 0 && now.steal_ticks <= now.total_ticks);
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
