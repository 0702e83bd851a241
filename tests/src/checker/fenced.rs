//! The harness's fenced resources (one per lock path, named by `key`; see
//! [`crate::fenced`]): the final read's log holds every accepted write and nothing nobody
//! wrote, its tokens never go backwards, and a write was rejected only where the caller's
//! rule allows it — never for locks without a TTL (a rejection means two holders at once),
//! and only from a holder whose lease may have lapsed for locks with one.
//!
//! History operations: `fenced_write` (input `{"token": t, "value": s}`, output
//! `{"accepted": bool}`) and one `fenced_read` per resource at the end (output
//! `{"log": [[token, value], ...]}`, the accepted writes in order).

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use crate::history::{History, Op, Status};

/// Checks every fenced resource in the history; a rejected write is an anomaly unless
/// `rejection_allowed` says the writer may legitimately have been fenced off.
pub fn check(
    history: &History,
    rejection_allowed: impl Fn(&Op) -> bool,
    anomalies: &mut Vec<String>,
) {
    let mut resources: BTreeMap<&str, (Vec<&Op>, Vec<&Op>)> = BTreeMap::new();
    for op in &history.ops {
        match op.op.as_str() {
            "fenced_write" => resources.entry(&op.key).or_default().0.push(op),
            "fenced_read" if op.status == Status::Ok => {
                resources.entry(&op.key).or_default().1.push(op)
            }
            _ => {}
        }
    }
    for (resource, (writes, reads)) in resources {
        check_resource(resource, &writes, &reads, &rejection_allowed, anomalies);
    }
}

fn check_resource(
    resource: &str,
    writes: &[&Op],
    reads: &[&Op],
    rejection_allowed: &impl Fn(&Op) -> bool,
    anomalies: &mut Vec<String>,
) {
    let Some(final_read) = reads.last() else {
        anomalies.push(format!(
            "fenced resource {resource}: no final read recorded"
        ));
        return;
    };
    let mut log: Vec<(u64, String)> = Vec::new();
    for entry in final_read
        .output
        .get("log")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let token = entry.get(0).and_then(Value::as_u64);
        let value = entry.get(1).and_then(Value::as_str);
        match (token, value) {
            (Some(token), Some(value)) => log.push((token, value.to_owned())),
            _ => anomalies.push(format!("fenced resource {resource}: bad log entry {entry}")),
        }
    }
    for pair in log.windows(2) {
        if pair[1].0 < pair[0].0 {
            anomalies.push(format!(
                "fenced resource {resource}: token went backwards: {:?} after {:?}",
                pair[1], pair[0]
            ));
        }
    }
    let in_log: HashSet<(u64, &str)> = log.iter().map(|(t, v)| (*t, v.as_str())).collect();
    let mut written: HashSet<(u64, &str)> = HashSet::new();
    for write in writes {
        let (Some(token), Some(value)) = (write.input_u64("token"), write.input_str("value"))
        else {
            anomalies.push(format!(
                "fenced resource {resource}: malformed write {write:?}"
            ));
            continue;
        };
        written.insert((token, value));
        match write.output.get("accepted").and_then(Value::as_bool) {
            Some(true) if !in_log.contains(&(token, value)) => anomalies.push(format!(
                "fenced resource {resource}: accepted write ({token}, {value}) lost"
            )),
            Some(false) if !rejection_allowed(write) => anomalies.push(format!(
                "fenced resource {resource} rejected token {token} from process {}: another \
                 holder with a higher token wrote while this one held the lock",
                write.process
            )),
            _ => {}
        }
    }
    for (token, value) in &log {
        if !written.contains(&(*token, value.as_str())) {
            anomalies.push(format!(
                "fenced resource {resource} holds ({token}, {value}), which nobody wrote"
            ));
        }
    }
}
