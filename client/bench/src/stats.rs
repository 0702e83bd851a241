//! Measurement: the measured window, per-client counters with an HDR latency histogram, and
//! CPU accounting from `/proc` (server processes, this process, the whole machine).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;

/// Histogram range: 1 µs .. 120 s, 3 significant digits.
const HIST_MIN_US: u64 = 1;
const HIST_MAX_US: u64 = 120_000_000;
const HIST_SIGFIG: u8 = 3;
/// `/proc/<pid>/stat` counts CPU time in clock ticks of USER_HZ (100 on Linux).
const USER_HZ: f64 = 100.0;
/// Error messages kept per client, to show what went wrong without flooding the report.
const MAX_ERROR_SAMPLES: usize = 3;

/// The measured part of a run: operations that complete in `[measure_start, end)` count.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub measure_start: Instant,
    pub end: Instant,
}

impl Window {
    /// A window that opens after `warmup` from now and lasts `duration`.
    pub fn new(warmup: Duration, duration: Duration) -> Self {
        let measure_start = Instant::now() + warmup;
        Self {
            measure_start,
            end: measure_start + duration,
        }
    }

    pub fn done(&self) -> bool {
        Instant::now() >= self.end
    }

    pub fn length(&self) -> Duration {
        self.end - self.measure_start
    }

    pub fn measured(&self, t: Instant) -> bool {
        t >= self.measure_start && t < self.end
    }
}

pub fn new_hist() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(HIST_MIN_US, HIST_MAX_US, HIST_SIGFIG)
        .context("create latency histogram")
}

/// Counters shared by all clients while the run is in progress, for the progress line.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub ok: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
}

/// One client's counters. `ok`/`failed`/`errors` count only the measured window; the `all_*`
/// counters count every phase (warmup, window, drain) for the verification.
#[derive(Debug, Clone)]
pub struct Stats {
    pub hist: Histogram<u64>,
    /// A secondary latency (lock and claim-next: the whole cycle).
    pub hist2: Histogram<u64>,
    pub ok: u64,
    pub failed: u64,
    pub errors: u64,
    pub all_ok: u64,
    pub all_failed: u64,
    pub error_samples: Vec<String>,
    live: Live,
}

impl Stats {
    pub fn new(live: Live) -> anyhow::Result<Self> {
        Ok(Self {
            hist: new_hist()?,
            hist2: new_hist()?,
            ok: 0,
            failed: 0,
            errors: 0,
            all_ok: 0,
            all_failed: 0,
            error_samples: Vec::new(),
            live,
        })
    }

    /// A successful operation that started at `t0` and completed at `t1`.
    pub fn ok(&mut self, w: &Window, t0: Instant, t1: Instant) {
        self.ok_at(w, t1, t1 - t0);
    }

    /// A successful operation that ended at `end` (counted if inside the window) with the
    /// given latency (which may cover only part of it, e.g. the claim of a claim+complete).
    pub fn ok_at(&mut self, w: &Window, end: Instant, latency: Duration) {
        self.all_ok += 1;
        self.live.ok.fetch_add(1, Ordering::Relaxed);
        if w.measured(end) {
            self.ok += 1;
            self.hist.saturating_record(micros(latency));
        }
    }

    /// A logical failure (a lost CAS race, an empty queue): the server answered.
    pub fn failed(&mut self, w: &Window, t0: Instant, t1: Instant) {
        self.all_failed += 1;
        self.live.failed.fetch_add(1, Ordering::Relaxed);
        if w.measured(t1) {
            self.failed += 1;
            self.hist.saturating_record(micros(t1 - t0));
        }
    }

    /// A secondary latency sample, counted when it ends inside the window.
    pub fn secondary(&mut self, w: &Window, t0: Instant, t1: Instant) {
        if w.measured(t1) {
            self.hist2.saturating_record(micros(t1 - t0));
        }
    }

    /// An error (transport, timeout, unexpected status).
    pub fn error(&mut self, w: &Window, t1: Instant, e: impl std::fmt::Display) {
        if w.measured(t1) {
            self.errors += 1;
        }
        if self.error_samples.len() < MAX_ERROR_SAMPLES {
            self.error_samples.push(e.to_string());
        }
    }
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// CPU seconds (user + system) of a set of processes, from `/proc/<pid>/stat`. Processes
/// that are gone count as 0.
pub fn proc_cpu_s(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the ")" that closes the command name: state(0) ppid(1) … utime(11) stime(12).
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .sum();
    ticks as f64 / USER_HZ
}

/// Jiffies of all CPUs since boot, from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
struct MachineJiffies {
    /// Everything but idle and iowait (steal included: the vCPU was wanted but not running).
    busy: u64,
    /// Time the hypervisor ran something else while this VM's vCPUs wanted to run.
    steal: u64,
    total: u64,
}

fn machine_jiffies() -> MachineJiffies {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    const FIELDS: usize = 8;
    const IDLE: usize = 3;
    const IOWAIT: usize = 4;
    const STEAL: usize = 7;
    if values.len() <= IOWAIT {
        return MachineJiffies {
            total: 1,
            ..MachineJiffies::default()
        };
    }
    let total: u64 = values.iter().take(FIELDS).sum();
    let idle = values[IDLE] + values[IOWAIT];
    MachineJiffies {
        busy: total.saturating_sub(idle),
        steal: values.get(STEAL).copied().unwrap_or(0),
        total,
    }
}

/// A CPU reading at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    pub server_s: f64,
    pub leader_s: f64,
    pub bench_s: f64,
    machine: MachineJiffies,
    at: Instant,
}

impl CpuSample {
    pub fn take(server_pids: &[u32], leader_pid: Option<u32>) -> Self {
        Self {
            server_s: proc_cpu_s(server_pids),
            leader_s: leader_pid.map_or(0.0, |pid| proc_cpu_s(&[pid])),
            bench_s: proc_cpu_s(&[std::process::id()]),
            machine: machine_jiffies(),
            at: Instant::now(),
        }
    }
}

/// CPU use between two samples.
#[derive(Debug, Clone, Copy)]
pub struct CpuUsage {
    pub server_s: f64,
    pub leader_s: f64,
    pub bench_s: f64,
    pub machine_busy_pct: f64,
    /// Share of the machine's CPU time stolen by the hypervisor: on a VM, runs with a lot of
    /// it are slow for reasons outside the system under test.
    pub machine_steal_pct: f64,
    pub wall_s: f64,
}

impl CpuUsage {
    pub fn between(a: &CpuSample, b: &CpuSample) -> Self {
        let (a_m, b_m) = (a.machine, b.machine);
        let total = b_m.total.saturating_sub(a_m.total).max(1) as f64;
        let pct = |after: u64, before: u64| 100.0 * after.saturating_sub(before) as f64 / total;
        Self {
            server_s: b.server_s - a.server_s,
            leader_s: b.leader_s - a.leader_s,
            bench_s: b.bench_s - a.bench_s,
            machine_busy_pct: pct(b_m.busy, a_m.busy),
            machine_steal_pct: pct(b_m.steal, a_m.steal),
            wall_s: (b.at - a.at).as_secs_f64(),
        }
    }
}

impl CpuUsage {
    /// Two stretches of a run (a window with a gap in it) as one: times add up, machine
    /// shares are weighted by each stretch's length.
    pub fn plus(&self, other: &CpuUsage) -> CpuUsage {
        let wall_s = self.wall_s + other.wall_s;
        let weighted =
            |a: f64, b: f64| (a * self.wall_s + b * other.wall_s) / wall_s.max(f64::MIN_POSITIVE);
        CpuUsage {
            server_s: self.server_s + other.server_s,
            leader_s: self.leader_s + other.leader_s,
            bench_s: self.bench_s + other.bench_s,
            machine_busy_pct: weighted(self.machine_busy_pct, other.machine_busy_pct),
            machine_steal_pct: weighted(self.machine_steal_pct, other.machine_steal_pct),
            wall_s,
        }
    }
}

/// Sleeps through the window and returns the CPU used during its measured part.
pub async fn cpu_over_window(
    w: Window,
    server_pids: Vec<u32>,
    leader_pid: Option<u32>,
) -> CpuUsage {
    tokio::time::sleep_until(w.measure_start.into()).await;
    let a = CpuSample::take(&server_pids, leader_pid);
    tokio::time::sleep_until(w.end.into()).await;
    let b = CpuSample::take(&server_pids, leader_pid);
    CpuUsage::between(&a, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_operations_completing_inside_the_window_count() {
        let w = Window::new(Duration::from_secs(1), Duration::from_secs(1));
        let mut s = Stats::new(Live::default()).unwrap();
        let before = w.measure_start - Duration::from_millis(1);
        let inside = w.measure_start + Duration::from_millis(1);
        s.ok(&w, before, before);
        s.ok(&w, before, inside);
        s.failed(&w, inside, w.end);
        assert_eq!((s.ok, s.all_ok, s.failed, s.all_failed), (1, 2, 0, 1));
        assert_eq!(s.hist.len(), 1);
    }

    #[test]
    fn busy_and_steal_are_shares_of_the_machine_time_between_samples() {
        let at = Instant::now();
        let sample = |busy, steal, total| CpuSample {
            server_s: 0.0,
            leader_s: 0.0,
            bench_s: 0.0,
            machine: MachineJiffies { busy, steal, total },
            at,
        };
        let usage = CpuUsage::between(&sample(100, 10, 400), &sample(175, 35, 500));
        assert_eq!(usage.machine_busy_pct, 75.0);
        assert_eq!(usage.machine_steal_pct, 25.0);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let own = proc_cpu_s(&[std::process::id()]);
        assert!(own >= 0.0);
        assert_eq!(proc_cpu_s(&[u32::MAX]), 0.0);
        let machine = machine_jiffies();
        assert!(machine.steal <= machine.busy && machine.busy <= machine.total);
    }
}
