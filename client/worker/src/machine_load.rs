//! The load a worker reports with each heartbeat: the machine's 1-minute load average, its
//! cores, memory in use and in total, and what this worker runs now. Read from `/proc` on
//! Linux and with `getloadavg(3)` on macOS, without new dependencies; what a platform does
//! not say is reported as unknown (`None`), never as zero.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use percy_client::proto::AgentLoad;

/// What this worker runs now, counted by the attempts themselves.
#[derive(Debug, Default)]
pub struct Running {
    tasks: AtomicU32,
    execs: AtomicU32,
}

/// Counts one running task or exec for as long as it lives.
#[derive(Debug)]
pub struct RunningGuard {
    running: Arc<Running>,
    exec: bool,
}

impl Running {
    /// Counts an attempt (an exec or a task) until the guard is dropped.
    pub fn enter(self: &Arc<Self>, exec: bool) -> RunningGuard {
        self.counter(exec).fetch_add(1, Ordering::Relaxed);
        RunningGuard {
            running: self.clone(),
            exec,
        }
    }

    fn counter(&self, exec: bool) -> &AtomicU32 {
        if exec {
            &self.execs
        } else {
            &self.tasks
        }
    }

    /// (tasks, execs) running now.
    pub fn counts(&self) -> (u32, u32) {
        (
            self.tasks.load(Ordering::Relaxed),
            self.execs.load(Ordering::Relaxed),
        )
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.running
            .counter(self.exec)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The load to report now.
pub fn sample(running: &Running) -> AgentLoad {
    let (running_tasks, running_execs) = running.counts();
    let (mem_used_bytes, mem_total_bytes) = memory().unzip();
    AgentLoad {
        load_avg_1m: load_average(),
        cores: std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok()),
        mem_used_bytes,
        mem_total_bytes,
        running_tasks,
        running_execs,
        reported_at_ms: 0,
    }
}

#[cfg(target_os = "linux")]
fn load_average() -> Option<f64> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

#[cfg(target_os = "macos")]
fn load_average() -> Option<f64> {
    let mut loads = [0f64; 3];
    // SAFETY: getloadavg writes at most `nelem` (1) doubles into the array we pass.
    let n = unsafe { libc::getloadavg(loads.as_mut_ptr(), 1) };
    (n >= 1 && loads[0].is_finite() && loads[0] >= 0.0).then_some(loads[0])
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn load_average() -> Option<f64> {
    None
}

/// (used, total) bytes: total − available, as `free` counts "used".
#[cfg(target_os = "linux")]
fn memory() -> Option<(u64, u64)> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// Not on this platform (macOS would need the Mach host statistics): unknown.
#[cfg(not(target_os = "linux"))]
fn memory() -> Option<(u64, u64)> {
    None
}

/// The first field of `/proc/loadavg` ("0.52 0.58 0.59 1/467 12345").
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_loadavg(text: &str) -> Option<f64> {
    let load: f64 = text.split_whitespace().next()?.parse().ok()?;
    (load.is_finite() && load >= 0.0).then_some(load)
}

/// (MemTotal − MemAvailable, MemTotal) in bytes from `/proc/meminfo` (values in kB).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim_start_matches(':')
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        kb.checked_mul(1024)
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable")?;
    Some((total.saturating_sub(available), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        assert_eq!(parse_loadavg("0.52 0.58 0.59 1/467 12345\n"), Some(0.52));
        assert_eq!(parse_loadavg(""), None);
        assert_eq!(parse_loadavg("nan 1 1"), None);
        let meminfo =
            "MemTotal:       16000000 kB\nMemFree:         1000 kB\nMemAvailable:    4000000 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            Some((12_000_000 * 1024, 16_000_000 * 1024))
        );
        assert_eq!(parse_meminfo("MemTotal: 10 kB\n"), None);
    }

    #[test]
    fn running_attempts_are_counted_while_they_live() {
        let running = Arc::new(Running::default());
        let task = running.enter(false);
        let exec = running.enter(true);
        let exec2 = running.enter(true);
        assert_eq!(running.counts(), (1, 2));
        drop(exec);
        drop(task);
        assert_eq!(running.counts(), (0, 1));
        drop(exec2);
        let load = sample(&running);
        assert_eq!((load.running_tasks, load.running_execs), (0, 0));
        assert!(load.cores.is_some_and(|c| c >= 1));
        if cfg!(target_os = "linux") {
            assert!(load.load_avg_1m.is_some());
            assert!(load.mem_total_bytes.is_some_and(|t| t > 0));
        }
    }
}
