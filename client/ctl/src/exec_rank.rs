//! How `percyctl exec --auto` (and `--parallel`) picks an executor: among those with the
//! required labels, the lowest *projected load per core* — the load average the executor
//! reported with its heartbeats, plus one for each exec this run already sent it (a busy
//! command adds about one to a load average), divided by its cores — then the fewest running
//! tasks and execs, then the name. Executors that report no load average (their platform does
//! not say, or an older worker) come after every one that does, among themselves by running
//! work per slot. Pure: the figures come from `AgentService/List`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use percy_client::proto::AgentLoad;
use serde::Serialize;

use crate::views::bytes;

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
    /// (load average + execs routed here by this run) ÷ cores; `None` when the executor
    /// reports no load average.
    pub fn load_per_core(&self) -> Option<f64> {
        let load = self.load?;
        let avg = load.load_avg_1m?;
        let cores = f64::from(load.cores.unwrap_or(1).max(1));
        Some((avg + self.routed as f64) / cores)
    }

    /// Running tasks and execs: the reported count or the held count, whichever is higher
    /// (a claim this instant is held before the executor reports it), plus this run's.
    pub fn running(&self) -> usize {
        let reported = self
            .load
            .map_or(0, |l| l.running_tasks as usize + l.running_execs as usize);
        reported.max(self.held) + self.routed
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
                    ": load {:.2} on {} cores = {per_core:.2}/core",
                    load.load_avg_1m.unwrap_or_default(),
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
            ", running {} of {} slot(s)",
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
    let mut ranked: Vec<Candidate> = executors
        .iter()
        .filter(|c| matches(c, required))
        .map(|c| Candidate {
            routed: c.routed + routed.get(&c.name).copied().unwrap_or(0),
            ..c.clone()
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
        // 0.05/core, then 0.25/core (more running, but a bigger machine), then 0.75/core.
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
        // 0/2 < 0.5/8; then 1/2 > 0.5/8: the eight-core machine takes the next three.
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
