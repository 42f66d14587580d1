//! The machine a run happened on, and process figures read from /proc.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Machine {
    pub date: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub memory: String,
    pub kernel: String,
    pub samba: String,
    pub load: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn command(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The load average now (1, 5, 15 minutes).
pub fn load() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Machine {
    pub fn now() -> Self {
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let mem_kib: u64 = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let date = command("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]);
        let samba = command("samba", &["--version"]);
        Self {
            date,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory: format!("{:.1} GiB", mem_kib as f64 / 1024.0 / 1024.0),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            samba: if samba.is_empty() {
                "unknown".into()
            } else {
                samba
            },
            load: load(),
        }
    }
}

/// A `kB` field of /proc/<pid>/status (`VmHWM`, `VmRSS`).
pub fn status_kib(pid: &str, field: &str) -> u64 {
    read(&format!("/proc/{pid}/status"))
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| command("getconf", &["CLK_TCK"]).parse().unwrap_or(100.0))
}

/// User + system CPU time a process has used so far.
pub fn cpu_time(pid: &str) -> Duration {
    let stat = read(&format!("/proc/{pid}/stat"));
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    Duration::from_secs_f64(ticks / clock_ticks())
}

/// The process id of the shared Samba DC, from its pid file.
pub fn samba_pid() -> Option<String> {
    let dir = std::env::var_os("SHADOWSYNC_SAMBA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shadowsync_e2e::repo_root().join("target/samba-dc"));
    let text = std::fs::read_to_string(dir.join("samba-dc.pid")).ok()?;
    let pid = text.split_whitespace().next()?.to_string();
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then_some(pid)
}

/// Time on a CPU and time waiting for one (runnable but not running), of one task, from
/// /proc/<pid>/schedstat (nanoseconds).
fn schedstat(pid: &str) -> Option<(Duration, Duration)> {
    let text = read(&format!("/proc/{pid}/schedstat"));
    let mut fields = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    let on_cpu = fields.next()??;
    let waiting = fields.next()??;
    Some((Duration::from_nanos(on_cpu), Duration::from_nanos(waiting)))
}

/// What the DC did between two calls. The DC is one single-threaded process (`samba -M
/// single`), so its schedstat says how long it ran and how long it waited for a CPU; the rest
/// of the wall time it was blocked (on fsync, mostly) or idle, waiting for requests.
pub struct DcCpu {
    pid: Option<String>,
    start: (Duration, Duration),
}

#[derive(Debug, Clone, Copy)]
pub struct DcUse {
    pub on_cpu: Duration,
    pub waiting_for_cpu: Duration,
}

impl DcCpu {
    pub fn start() -> Self {
        let pid = samba_pid();
        let start = pid.as_deref().and_then(schedstat).unwrap_or_default();
        Self { pid, start }
    }

    pub fn used(&self) -> Option<DcUse> {
        let (on_cpu, waiting) = schedstat(self.pid.as_deref()?)?;
        Some(DcUse {
            on_cpu: on_cpu.saturating_sub(self.start.0),
            waiting_for_cpu: waiting.saturating_sub(self.start.1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        assert!(status_kib("self", "VmRSS") > 0);
        assert!(status_kib("self", "VmHWM") >= status_kib("self", "VmRSS") / 2);
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_time("self") > Duration::ZERO);
        assert!(schedstat("self").is_some_and(|(on, _)| on > Duration::ZERO));
    }
}
