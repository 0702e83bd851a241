//! The watch checker: every watcher sees the same sequence of revisions, without gaps, for the
//! keys it watched, and that sequence contains every acknowledged write.
//!
//! History operations:
//! - `write` (`key` = config key): input `{"value": v}`; ok output `{"revision": r}`.
//! - `watch`, one per watcher at the end: input `{"start_revision": S, "prefix": p}`; output
//!   `{"events": [[revision, key, value|null], ...], "until": U, "caught_up": bool,
//!   "skipped": [[from, to], ...]}`. The watcher reconnects after stream errors from its last
//!   revision + 1; `skipped` are ranges the server explicitly reported as compacted (the
//!   watcher could not see them and said so), `until` the revision of a write made after the
//!   final heal that every watcher must reach.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::Verdict;
use crate::history::{History, Status};

/// One event: (key, value) at a revision; value `None` for a delete.
type Event = (String, Option<String>);

/// Checks the watch workload.
pub fn check(history: &History) -> Verdict {
    let mut anomalies = Vec::new();
    let mut truth: BTreeMap<u64, Event> = BTreeMap::new();
    let mut source: HashMap<u64, String> = HashMap::new();
    let mut learn =
        |revision: u64, event: Event, from: String, anomalies: &mut Vec<String>| match truth
            .get(&revision)
        {
            Some(known) if *known != event => anomalies.push(format!(
                "revision {revision}: {from} saw {event:?} but {} saw {known:?}",
                source[&revision]
            )),
            Some(_) => {}
            None => {
                truth.insert(revision, event);
                source.insert(revision, from);
            }
        };
    for write in history
        .ops_named("write")
        .filter(|op| op.status == Status::Ok)
    {
        if let Some(revision) = write.output_u64("revision") {
            let value = write.input_str("value").map(str::to_owned);
            learn(
                revision,
                (write.key.clone(), value),
                format!("write by process {}", write.process),
                &mut anomalies,
            );
        }
    }

    struct Watcher {
        process: u64,
        start: u64,
        until: u64,
        prefix: String,
        events: Vec<(u64, Event)>,
        skipped: Vec<(u64, u64)>,
    }
    let mut watchers = Vec::new();
    for op in history.ops_named("watch") {
        if op.status != Status::Ok {
            anomalies.push(format!(
                "watcher {} did not finish: {:?}",
                op.process, op.output
            ));
            continue;
        }
        if op.output.get("caught_up").and_then(Value::as_bool) != Some(true) {
            anomalies.push(format!(
                "watcher {} never reached the final revision {:?}",
                op.process,
                op.output.get("until")
            ));
        }
        let mut events = Vec::new();
        for raw in op
            .output
            .get("events")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let revision = raw.get(0).and_then(Value::as_u64);
            let key = raw.get(1).and_then(Value::as_str);
            match (revision, key) {
                (Some(revision), Some(key)) => {
                    let value = raw.get(2).and_then(Value::as_str).map(str::to_owned);
                    events.push((revision, (key.to_owned(), value)));
                }
                _ => anomalies.push(format!("watcher {}: bad event {raw}", op.process)),
            }
        }
        let skipped = op
            .output
            .get("skipped")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|range| Some((range.get(0)?.as_u64()?, range.get(1)?.as_u64()?)))
            .collect();
        watchers.push(Watcher {
            process: op.process,
            start: op.input_u64("start_revision").unwrap_or(0),
            until: op.output_u64("until").unwrap_or(0),
            prefix: op.input_str("prefix").unwrap_or_default().to_owned(),
            events,
            skipped,
        });
    }
    if watchers.is_empty() {
        anomalies.push("no watcher finished".to_owned());
    }

    for watcher in &watchers {
        for pair in watcher.events.windows(2) {
            if pair[1].0 <= pair[0].0 {
                anomalies.push(format!(
                    "watcher {}: revision {} delivered after {} (duplicate or out of order)",
                    watcher.process, pair[1].0, pair[0].0
                ));
            }
        }
        for (revision, event) in &watcher.events {
            if *revision < watcher.start {
                anomalies.push(format!(
                    "watcher {}: event at revision {revision} is before its start {}",
                    watcher.process, watcher.start
                ));
            }
            if !event.0.starts_with(&watcher.prefix) {
                anomalies.push(format!(
                    "watcher {}: event for {} outside its prefix {}",
                    watcher.process, event.0, watcher.prefix
                ));
            }
            learn(
                *revision,
                event.clone(),
                format!("watcher {}", watcher.process),
                &mut anomalies,
            );
        }
    }

    let mut checked = 0;
    for watcher in &watchers {
        let seen: HashMap<u64, &Event> = watcher.events.iter().map(|(r, e)| (*r, e)).collect();
        for (revision, event) in truth.range(watcher.start..=watcher.until) {
            if !event.0.starts_with(&watcher.prefix) {
                continue;
            }
            if watcher
                .skipped
                .iter()
                .any(|(from, to)| (*from..=*to).contains(revision))
            {
                continue;
            }
            checked += 1;
            if !seen.contains_key(revision) {
                anomalies.push(format!(
                    "watcher {}: gap, missed revision {revision} ({} = {:?}) from {}",
                    watcher.process, event.0, event.1, source[revision]
                ));
            }
        }
    }
    Verdict::from_anomalies("watch", checked, anomalies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testutil::op;
    use crate::checker::Validity;
    use crate::history::Op;
    use serde_json::json;

    fn write(key: &str, value: &str, revision: u64) -> Op {
        op(
            1,
            key,
            "write",
            json!({"value": value}),
            json!({"revision": revision}),
            Status::Ok,
            revision * 10,
            revision * 10 + 5,
        )
    }

    fn watch(process: u64, start: u64, until: u64, events: Value, skipped: Value) -> Op {
        op(
            process,
            "w/",
            "watch",
            json!({"start_revision": start, "prefix": "w/"}),
            json!({"events": events, "until": until, "caught_up": true, "skipped": skipped}),
            Status::Ok,
            0,
            1000,
        )
    }

    fn history(ops: Vec<Op>) -> History {
        History {
            ops,
            nemesis: Vec::new(),
        }
    }

    fn writes() -> Vec<Op> {
        vec![
            write("w/a", "1", 5),
            write("w/b", "2", 7),
            write("w/a", "3", 9),
        ]
    }

    #[test]
    fn identical_complete_watchers_pass() {
        let mut ops = writes();
        let events = json!([[5, "w/a", "1"], [7, "w/b", "2"], [9, "w/a", "3"]]);
        ops.push(watch(10, 1, 9, events.clone(), json!([])));
        ops.push(watch(
            11,
            6,
            9,
            json!([[7, "w/b", "2"], [9, "w/a", "3"]]),
            json!([]),
        ));
        // Another watcher was told revisions 5..6 were compacted.
        ops.push(watch(
            12,
            1,
            9,
            json!([[7, "w/b", "2"], [9, "w/a", "3"]]),
            json!([[1, 6]]),
        ));
        let verdict = check(&history(ops));
        assert!(verdict.is_valid(), "{verdict}");
    }

    #[test]
    fn gap_is_rejected() {
        let mut ops = writes();
        ops.push(watch(
            10,
            1,
            9,
            json!([[5, "w/a", "1"], [9, "w/a", "3"]]),
            json!([]),
        ));
        assert_eq!(check(&history(ops)).validity, Validity::Invalid);
    }

    #[test]
    fn event_seen_by_one_watcher_only_is_a_gap_for_the_other() {
        // An indeterminate write at 8 that one watcher saw: the other must see it too.
        let mut ops = writes();
        let all = json!([
            [5, "w/a", "1"],
            [7, "w/b", "2"],
            [8, "w/b", "x"],
            [9, "w/a", "3"]
        ]);
        ops.push(watch(10, 1, 9, all, json!([])));
        let without = json!([[5, "w/a", "1"], [7, "w/b", "2"], [9, "w/a", "3"]]);
        ops.push(watch(11, 1, 9, without, json!([])));
        assert_eq!(check(&history(ops)).validity, Validity::Invalid);
    }

    #[test]
    fn disagreeing_or_reordered_events_are_rejected() {
        let mut disagree = writes();
        disagree.push(watch(
            10,
            1,
            9,
            json!([[5, "w/a", "1"], [7, "w/b", "X"], [9, "w/a", "3"]]),
            json!([]),
        ));
        assert_eq!(check(&history(disagree)).validity, Validity::Invalid);
        let mut reordered = writes();
        reordered.push(watch(
            10,
            1,
            9,
            json!([[5, "w/a", "1"], [9, "w/a", "3"], [7, "w/b", "2"]]),
            json!([]),
        ));
        assert_eq!(check(&history(reordered)).validity, Validity::Invalid);
        let mut duplicated = writes();
        duplicated.push(watch(
            10,
            1,
            9,
            json!([
                [5, "w/a", "1"],
                [7, "w/b", "2"],
                [7, "w/b", "2"],
                [9, "w/a", "3"]
            ]),
            json!([]),
        ));
        assert_eq!(check(&history(duplicated)).validity, Validity::Invalid);
    }

    #[test]
    fn watcher_that_never_caught_up_is_rejected() {
        let mut ops = writes();
        ops.push(op(
            10,
            "w/",
            "watch",
            json!({"start_revision": 1, "prefix": "w/"}),
            json!({"events": [], "until": 9, "caught_up": false, "skipped": []}),
            Status::Ok,
            0,
            1000,
        ));
        assert_eq!(check(&history(ops)).validity, Validity::Invalid);
    }
}
