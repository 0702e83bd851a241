//! The CLI's contract at its edges: exit codes, refused nonsense, where options go.

mod ctl;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use ctl::{percyctl, Ctl};
use support::TestCluster;

#[track_caller]
fn assert_fails(ctl: &Ctl, code: i32, needle: &str) {
    assert_eq!(ctl.code, code, "{ctl:?}");
    assert!(ctl.stderr.contains(needle), "{needle:?} not in {ctl:?}");
    assert_eq!(ctl.stderr.lines().count(), 1, "one line: {ctl:?}");
}

#[test]
fn negative_answers_exit_1() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();

    let heartbeat = percyctl(&ep, &["agent", "heartbeat", "999999"]);
    assert_fails(&heartbeat, 1, "no live agent 999999");

    for name in ["holder", "other"] {
        percyctl(&ep, &["agent", "register", "--name", name, "--ttl", "10m"]).ok();
    }
    percyctl(&ep, &["lock", "acquire", "src/api", "--agent", "holder"]).ok();
    let release = percyctl(&ep, &["lock", "release", "src/api", "--agent", "other"]);
    assert_fails(&release, 1, "does not hold src/api");
    // Still held by its holder.
    let list = percyctl(&ep, &["-o", "json", "lock", "list"]).ok();
    assert!(list.stdout.contains("src/api"), "{list:?}");

    let tab = percyctl(&ep, &["lock", "acquire", "src/\tapi", "--agent", "holder"]);
    assert_fails(&tab, 1, "control character");
}

#[test]
fn a_self_dependency_and_a_cycle_exit_alike() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let own = write(
        "self.toml",
        "[[tasks]]\nid = \"a\"\ntitle = \"a\"\ndepends_on = [\"a\"]\n",
    );
    let cycle = write(
        "cycle.toml",
        "[[tasks]]\nid = \"a\"\ntitle = \"a\"\ndepends_on = [\"b\"]\n\
         [[tasks]]\nid = \"b\"\ntitle = \"b\"\ndepends_on = [\"a\"]\n",
    );
    let own = percyctl(&ep, &["plan", "submit", &own]);
    let cycle = percyctl(&ep, &["plan", "submit", &cycle]);
    assert_fails(&own, 1, "depends on itself");
    assert_eq!(cycle.code, own.code, "{cycle:?}");
}

#[test]
fn zero_where_zero_would_mean_the_default_is_refused() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    for args in [
        &["task", "submit", "--title", "t", "--max-attempts", "0"][..],
        &["agent", "register", "--name", "z", "--ttl", "0s"][..],
        &["agent", "register", "--name", "z", "--max-concurrent", "0"][..],
        &["lock", "acquire", "p", "--agent", "z", "--ttl", "0s"][..],
    ] {
        let refused = percyctl(&ep, args);
        assert_eq!(refused.code, 2, "{args:?}: {refused:?}");
        assert!(
            refused.stderr.contains("more than zero") || refused.stderr.contains("at least 1"),
            "{args:?}: {refused:?}"
        );
    }
    // Nothing reached the cluster.
    let agents = percyctl(&ep, &["-o", "json", "agent", "list", "--all"]).ok();
    assert!(!agents.stdout.contains("\"z\""), "{agents:?}");
    let tasks = percyctl(&ep, &["-o", "json", "task", "list"]).ok();
    assert_eq!(tasks.json()["tasks"].as_array().map(Vec::len), Some(0));
}

#[test]
fn options_go_where_they_mean_something() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    // --timeout after the subcommand.
    percyctl(&ep, &["config", "set", "k", "v", "--timeout", "20s"]).ok();
    // --serializable on reads only.
    let read = percyctl(&ep, &["config", "get", "k", "--serializable"]).ok();
    assert_eq!(read.stdout.trim(), "v");
    let write = percyctl(&ep, &["config", "set", "k", "w", "--serializable"]);
    assert_eq!(write.code, 2, "{write:?}");
    assert!(write.stderr.contains("--serializable"), "{write:?}");
}

#[test]
fn nonsense_endpoints_fail_at_once() {
    let started = Instant::now();
    let ctl = percyctl("nonsense", &["config", "get", "k"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_fails(&ctl, 2, "expected host:port");
}

#[test]
fn cluster_status_lists_every_member_not_only_the_endpoints() {
    let cluster = TestCluster::start(3);
    let one = cluster.endpoints()[0].clone();
    let status = percyctl(&one, &["-o", "json", "cluster", "status"])
        .ok()
        .json();
    let mut ids: Vec<u64> = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["node_id"].as_u64().expect("node id"))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids.len(), 3, "{status}");
    ids.dedup();
    assert_eq!(ids.len(), 3, "each member once: {status}");
}

#[test]
fn plan_cancel_cancels_every_unfinished_task_and_nothing_else() {
    let cluster = TestCluster::start(1);
    let ep = cluster.endpoints_arg();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.toml");
    std::fs::write(
        &file,
        "id = \"p\"\n\
         [[tasks]]\nid = \"a\"\ntitle = \"a\"\n\
         [[tasks]]\nid = \"b\"\ntitle = \"b\"\ndepends_on = [\"a\"]\n\
         [[tasks]]\nid = \"c\"\ntitle = \"c\"\ndepends_on = [\"b\"]\n\
         [[tasks]]\nid = \"d\"\ntitle = \"d\"\n\
         [[tasks]]\nid = \"e\"\ntitle = \"e\"\n",
    )
    .unwrap();
    percyctl(&ep, &["plan", "submit", file.to_str().unwrap()]).ok();
    percyctl(&ep, &["agent", "register", "--name", "w", "--ttl", "10m"]).ok();
    // e finishes before the cancel; a is held by an agent when it comes.
    let token = |task: &str| {
        let claimed = percyctl(
            &ep,
            &[
                "-o", "json", "task", "claim", "--agent", "w", "--task", task,
            ],
        )
        .ok()
        .json();
        claimed["task"]["claim_token"].as_u64().unwrap().to_string()
    };
    let e = token("e");
    percyctl(
        &ep,
        &["task", "complete", "e", "--agent", "w", "--token", &e],
    )
    .ok();
    token("a");
    // Another plan's task is left alone.
    percyctl(
        &ep,
        &["task", "submit", "--id", "other", "--title", "other"],
    )
    .ok();

    let cancel = percyctl(&ep, &["-o", "json", "plan", "cancel", "p"])
        .ok()
        .json();
    let mut cancelled: Vec<String> = cancel["cancelled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    cancelled.sort();
    assert_eq!(cancelled, ["a", "b", "c", "d"], "{cancel}");

    let status = |id: &str| {
        percyctl(&ep, &["-o", "json", "task", "get", id])
            .ok()
            .json()["task"]["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for id in ["a", "b", "c", "d"] {
        assert_eq!(status(id), "cancelled", "{id}");
    }
    assert_eq!(status("e"), "completed");
    assert_eq!(status("other"), "ready");

    let unknown = percyctl(&ep, &["plan", "cancel", "nope"]);
    assert_fails(&unknown, 1, "NOT_FOUND");
}
