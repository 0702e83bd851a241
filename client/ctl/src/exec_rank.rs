//! How `percyctl exec --auto` (and `--parallel`) picks an executor: among those with the
//! required labels, the lowest *projected load per core* — the 1-minute load average the
//! executor reported with its heartbeats, plus one for each task or exec it holds (counting
//! those this run already sent it), divided by its cores — then the fewest running tasks and
//! execs, then the name. Running work is added at once because the load average sees a new
//! command only over the next minute (and two executors on one machine report the same load
//! average give or take noise: their own work must decide). Executors that report no load
//! average (their platform does not say, or an older worker) come after every one that does,
//! among themselves by running work per slot. Executors on one host (the same `host` label)
//! share one machine and so one load average, which each reports at a different instant: they
//! are ranked with the highest of their reports, so that noise between two samples of the
//! same figure does not outweigh the work each runs. Pure: the figures come from
//! `AgentService/List`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use percy_client::proto::AgentLoad;
use serde::Serialize;

use crate::views::bytes;

/// The label naming the machine an executor runs on (`percy_worker::HOST_LABEL`).
const HOST_LABEL: &str = percy_worker::HOST_LABEL;

/// An executor as `--auto` sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Candidate {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Tasks and execs it holds now (the replicated state's count).
    pub held: usize,
    pub max_concurrent: u32,
    /// What it reported with its heartbeats.
    pub load: Option<AgentLoadFigures>,
    /// Execs this run has sent it already (filled in by [`rank`]).
    pub routed: usize,
}

/// The reported figures `rank` uses (and `--explain` prints).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct AgentLoadFigures {
    pub load_avg_1m: Option<f64>,
    pub cores: Option<u32>,
    pub mem_used_bytes: Option<u64>,
    pub mem_total_bytes: Option<u64>,
    pub running_tasks: u32,
    pub running_execs: u32,
}

impl From<&AgentLoad> for AgentLoadFigures {
    fn from(l: &AgentLoad) -> Self {
        Self {
            load_avg_1m: l.load_avg_1m,
            cores: l.cores,
            mem_used_bytes: l.mem_used_bytes,
            mem_total_bytes: l.mem_total_bytes,
            running_tasks: l.running_tasks,
            running_execs: l.running_execs,
        }
    }
}

impl Candidate {
    /// (load average + running work, this run's included) ÷ cores; `None` when the executor
    /// reports no load average.
    pub fn load_per_core(&self) -> Option<f64> {
        let load = self.load?;
        let avg = load.load_avg_1m?;
        let cores = f64::from(load.cores.unwrap_or(1).max(1));
        Some((avg + self.running() as f64) / cores)
    }

    /// Running tasks and execs: those it holds in the replicated state (current, unlike the
    /// count in its last heartbeat, which may be seconds old), plus this run's.
    pub fn running(&self) -> usize {
        self.held + self.routed
    }

    /// Running work per slot: the order among executors without a load average.
    fn share(&self) -> f64 {
        self.running() as f64 / f64::from(self.max_concurrent.max(1))
    }

    /// One line of `--explain`.
    pub fn explain(&self) -> String {
        let mut line = self.name.clone();
        match (self.load_per_core(), self.load) {
            (Some(per_core), Some(load)) => {
                let _ = write!(
                    line,
                    ": (load {:.2} + {} running) on {} cores = {per_core:.2}/core",
                    load.load_avg_1m.unwrap_or_default(),
                    self.running(),
                    load.cores.map_or("?".to_owned(), |c| c.to_string()),
                );
                if self.routed > 0 {
                    let _ = write!(line, " (counting {} exec(s) of this run)", self.routed);
                }
            }
            _ => line.push_str(": load unknown"),
        }
        let _ = write!(
            line,
            ", {} slot(s) busy of {}",
            self.running(),
            self.max_concurrent.max(1)
        );
        if let Some(load) = self.load {
            if let (Some(used), Some(total)) = (load.mem_used_bytes, load.mem_total_bytes) {
                let _ = write!(line, ", memory {}/{}", bytes(used), bytes(total));
            }
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = write!(line, ", labels {}", labels.join(","));
        line
    }
}

/// Whether `c` has every label `selector` names.
pub fn matches(c: &Candidate, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| c.labels.get(k) == Some(v))
}

/// The executors `required` selects, best first (see the module documentation), counting
/// `routed` execs this run already sent to each (by name).
pub fn rank(
    executors: &[Candidate],
    required: &HashMap<String, String>,
    routed: &HashMap<String, usize>,
) -> Vec<Candidate> {
    let mut host_load = HashMap::<&str, f64>::new();
    for c in executors {
        if let (Some(host), Some(avg)) =
            (c.labels.get(HOST_LABEL), c.load.and_then(|l| l.load_avg_1m))
        {
            let highest = host_load.entry(host.as_str()).or_insert(avg);
            *highest = highest.max(avg);
        }
    }
    let mut ranked: Vec<Candidate> = executors
        .iter()
        .filter(|c| matches(c, required))
        .map(|c| {
            let mut c = Candidate {
                routed: c.routed + routed.get(&c.name).copied().unwrap_or(0),
                ..c.clone()
            };
            let shared = c
                .labels
                .get(HOST_LABEL)
                .and_then(|h| host_load.get(h.as_str()));
            if let (Some(load), Some(avg)) = (c.load.as_mut(), shared) {
                if load.load_avg_1m.is_some() {
                    load.load_avg_1m = Some(*avg);
                }
            }
            c
        })
        .collect();
    ranked.sort_by(|a, b| {
        let by_load = match (a.load_per_core(), b.load_per_core()) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.share().total_cmp(&b.share()),
        };
        by_load
            .then(a.running().cmp(&b.running()))
            .then(a.name.cmp(&b.name))
    });
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executor(name: &str, load: Option<(f64, u32)>, held: usize) -> Candidate {
        Candidate {
            name: name.to_owned(),
            labels: BTreeMap::from([("os".to_owned(), "linux".to_owned())]),
            held,
            max_concurrent: 4,
            load: load.map(|(avg, cores)| AgentLoadFigures {
                load_avg_1m: Some(avg),
                cores: Some(cores),
                ..AgentLoadFigures::default()
            }),
            routed: 0,
        }
    }

    fn names(ranked: &[Candidate]) -> Vec<&str> {
        ranked.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn the_lowest_load_per_core_comes_first() {
        let all = [
            executor("busy", Some((3.0, 4)), 0),
            executor("big", Some((4.0, 16)), 2),
            executor("idle", Some((0.1, 2)), 0),
        ];
        let ranked = rank(&all, &HashMap::new(), &HashMap::new());
        // 0.05/core, then (4 + 2)/16 (more running, but a bigger machine), then 0.75/core.
        assert_eq!(names(&ranked), ["idle", "big", "busy"]);
    }

    #[test]
    fn equal_loads_go_by_running_work_then_name() {
        let all = [
            executor("b", Some((1.0, 4)), 1),
            executor("c", Some((1.0, 4)), 0),
            executor("a", Some((1.0, 4)), 1),
        ];
        assert_eq!(
            names(&rank(&all, &HashMap::new(), &HashMap::new())),
            ["c", "a", "b"]
        );
    }

    #[test]
    fn running_work_counts_before_the_load_average_sees_it() {
        let all = [
            executor("a", Some((2.0, 4)), 1),
            executor("b", Some((2.5, 4)), 0),
        ];
        assert_eq!(
            names(&rank(&all, &HashMap::new(), &HashMap::new())),
            ["b", "a"]
        );
    }

    #[test]
    fn executors_on_one_host_share_its_highest_reported_load() {
        // Two executors on one machine report its load average at different instants.
        let mut all = [
            executor("mac-1", Some((10.0, 4)), 1),
            executor("mac-2", Some((14.0, 4)), 0),
            executor("elsewhere", Some((1.0, 4)), 3),
        ];
        for c in &mut all[..2] {
            c.labels.insert(HOST_LABEL.into(), "one-box".into());
        }
        assert_eq!(
            names(&rank(&all, &HashMap::new(), &HashMap::new())),
            ["elsewhere", "mac-2", "mac-1"]
        );
    }

    #[test]
    fn unknown_loads_come_last_and_labels_filter() {
        let mut mac = executor("mac", None, 0);
        mac.labels.insert("os".into(), "macos".into());
        let all = [
            executor("unknown", None, 0),
            executor("loaded", Some((8.0, 2)), 0),
            mac,
        ];
        assert_eq!(
            names(&rank(&all, &HashMap::new(), &HashMap::new())),
            ["loaded", "mac", "unknown"]
        );
        let macos = HashMap::from([("os".to_owned(), "macos".to_owned())]);
        assert_eq!(names(&rank(&all, &macos, &HashMap::new())), ["mac"]);
    }

    #[test]
    fn execs_routed_by_this_run_spread_the_next_ones() {
        let all = [
            executor("two-cores", Some((0.0, 2)), 0),
            executor("eight-cores", Some((0.5, 8)), 0),
        ];
        let mut routed = HashMap::new();
        let mut order = Vec::new();
        for _ in 0..4 {
            let best = rank(&all, &HashMap::new(), &routed)[0].name.clone();
            *routed.entry(best.clone()).or_default() += 1;
            order.push(best);
        }
        // 0/2 < 0.5/8; then 1/2 > (0.5 + n)/8 up to n = 3: the eight-core machine takes the
        // next three.
        assert_eq!(
            order,
            ["two-cores", "eight-cores", "eight-cores", "eight-cores"]
        );
        let ranked = rank(&all, &HashMap::new(), &routed);
        assert!(
            ranked[0].explain().contains("counting"),
            "{}",
            ranked[0].explain()
        );
    }
}
