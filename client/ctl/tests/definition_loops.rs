//! Definitions that run, end to end: a three-node cluster, `percyctl worker --definitions`
//! processes, and a scripted stand-in for an LLM CLI that prints Claude Code `stream-json`
//! lines and records every prompt it receives. A steering message reaches the next
//! iteration's prompt; a runner killed with SIGKILL is replaced by another worker, which goes
//! on at the next iteration number (no number recorded twice); stop and start work; SIGTERM
//! hands the loop over.

mod ctl;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ctl::{percyctl, percyctl_command, ChildGuard};
use support::TestCluster;

/// Generous: a loaded 2-core CI box runs several clusters at once.
const LIMIT: Duration = Duration::from_secs(60);

/// The stand-in LLM CLI: records its prompt as `<dir>/prompt-<iteration>-<agent>`, then
/// prints what `claude -p --output-format stream-json --verbose` prints.
pub fn write_fake_llm(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("fake-llm.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
cat > "{dir}/prompt-$PERCY_ITERATION-$PERCY_AGENT_NAME"
echo '{{"type":"system","subtype":"init","session_id":"s1"}}'
echo '{{"type":"assistant","message":{{"content":[{{"type":"text","text":"working on it"}}]}}}}'
sleep 0.3
echo '{{"type":"result","subtype":"success","is_error":false,"result":"iteration '$PERCY_ITERATION' done","total_cost_usd":0.0125,"usage":{{"input_tokens":1200,"output_tokens":345}}}}'
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    script
}

pub fn write_manifest(dir: &Path, script: &Path) -> std::path::PathBuf {
    let manifest = dir.join("agents.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"[[definitions]]
name = "writer"
[definitions.spec]
command = "sh {}"
prompt = "Improve the README."
capabilities = ["llm"]
interval = "200ms"
timeout = "1m"
"#,
            script.display()
        ),
    )
    .unwrap();
    manifest
}

pub fn spawn_loop_worker(endpoints: &str, name: &str, state_dir: &Path) -> ChildGuard {
    let child = percyctl_command(
        endpoints,
        &[
            "worker",
            "--name",
            name,
            "--definitions",
            "--capabilities",
            "llm",
            "--ttl",
            "2s",
            "--inbox-dir",
            state_dir.to_str().expect("utf-8 temp dir"),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn percyctl worker");
    ChildGuard(child)
}

pub fn iterations(endpoints: &str) -> serde_json::Value {
    percyctl(
        endpoints,
        &["-o", "json", "definition", "iterations", "writer"],
    )
    .ok()
    .json()["run"]
        .clone()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn finished_by(run: &serde_json::Value, agent: &str) -> Vec<serde_json::Value> {
    run["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["agent"] == agent && i["status"] == "succeeded")
        .cloned()
        .collect()
}

fn sigterm(child: &ChildGuard) {
    let pid = i32::try_from(child.0.id()).expect("pid fits");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

#[test]
fn definitions_loop_take_steering_messages_and_survive_their_runner() {
    let cluster = TestCluster::start(3);
    let ep = cluster.endpoints_arg();
    let dir = tempfile::tempdir().unwrap();
    let script = write_fake_llm(dir.path());
    let manifest = write_manifest(dir.path(), &script);

    // Bad loop keys are refused at apply time, naming the key, and change nothing.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[definitions]]\nname = \"bad\"\n[definitions.spec]\ncommand = \"x\"\ninterval = \"soon\"\n",
    )
    .unwrap();
    let refused = percyctl(&ep, &["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("`interval`"), "{refused:?}");

    percyctl(&ep, &["apply", "-f", manifest.to_str().unwrap()]).ok();
    let mut first = spawn_loop_worker(&ep, "loop-a", &dir.path().join("state-a"));
    wait_until("two iterations by loop-a", || {
        finished_by(&iterations(&ep), "loop-a").len() >= 2
    });
    let run = iterations(&ep);
    assert_eq!(run["runner"], "loop-a");
    let done = &finished_by(&run, "loop-a")[0];
    assert!(done["result"].as_str().unwrap().ends_with("done"), "{done}");
    assert_eq!(done["input_tokens"], 1200);
    assert_eq!(done["output_tokens"], 345);
    assert_eq!(done["cost_usd"], 0.0125);
    assert_eq!(done["prompt"], "Improve the README.");

    // Two operators steer; both messages reach the next iteration's prompt, in order.
    percyctl(
        &ep,
        &["steer", "inject", "writer", "use tabs", "--from", "alice"],
    )
    .ok();
    percyctl(
        &ep,
        &["steer", "inject", "writer", "and tests", "--from", "bob"],
    )
    .ok();
    let unknown = percyctl(&ep, &["steer", "inject", "nope", "hi"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    // An iteration may start between the two: then each goes to the next iteration that
    // starts after it. Either way, in arrival order, each in its iteration's prompt.
    wait_until("an iteration with bob's message", || {
        iterations(&ep)["iterations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["prompt"].as_str().unwrap().contains("and tests"))
    });
    let run = iterations(&ep);
    let mut delivered = Vec::new();
    for iteration in run["iterations"].as_array().unwrap() {
        let prompt = iteration["prompt"].as_str().unwrap();
        for message in iteration["messages"].as_array().unwrap() {
            let body = message["body"].as_str().unwrap();
            assert!(
                prompt.starts_with("Improve the README.") && prompt.contains(body),
                "{prompt}"
            );
            delivered.push((
                message["from"].as_str().unwrap().to_owned(),
                body.to_owned(),
            ));
        }
        if let (Some(tabs), Some(tests)) = (prompt.find("use tabs"), prompt.find("and tests")) {
            assert!(tabs < tests, "{prompt}");
        }
    }
    assert_eq!(
        delivered,
        [
            ("alice".to_owned(), "use tabs".to_owned()),
            ("bob".to_owned(), "and tests".to_owned())
        ]
    );
    let steered = run["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["prompt"].as_str().unwrap().contains("and tests"))
        .unwrap()
        .clone();
    let recorded = dir
        .path()
        .join(format!("prompt-{}-loop-a", steered["number"]));
    wait_until("the stand-in to record the steered prompt", || {
        std::fs::read_to_string(&recorded).is_ok_and(|p| p.contains("and tests"))
    });

    // The runner dies: another worker continues at the next number.
    let mut second = spawn_loop_worker(&ep, "loop-b", &dir.path().join("state-b"));
    let pid = i32::try_from(first.0.id()).unwrap();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    first.0.wait().unwrap();
    wait_until("loop-b to take over", || {
        !finished_by(&iterations(&ep), "loop-b").is_empty()
    });
    let run = iterations(&ep);
    let numbers: Vec<u64> = run["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["number"].as_u64().unwrap())
        .collect();
    let unique: BTreeSet<u64> = numbers.iter().copied().collect();
    assert_eq!(
        unique.len(),
        numbers.len(),
        "an iteration number twice: {numbers:?}"
    );
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    let last_of_a = run["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["agent"] == "loop-a")
        .map(|i| i["number"].as_u64().unwrap())
        .max()
        .unwrap();
    let first_of_b = finished_by(&run, "loop-b")[0]["number"].as_u64().unwrap();
    assert!(first_of_b > last_of_a, "{run}");

    // Stop: the loop ends and the run is released; start: it runs again.
    percyctl(&ep, &["definition", "stop", "writer"]).ok();
    wait_until("the loop to stop", || {
        let run = iterations(&ep);
        run["runner"].is_null()
            && run["iterations"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["status"] != "running")
    });
    let stopped_at = iterations(&ep)["next_number"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(iterations(&ep)["next_number"].as_u64().unwrap(), stopped_at);
    percyctl(&ep, &["definition", "start", "writer"]).ok();
    wait_until("the loop to run again", || {
        iterations(&ep)["iterations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["number"].as_u64().unwrap() >= stopped_at && i["status"] == "succeeded")
    });

    // SIGTERM: the worker stops its loop cleanly and hands the run back.
    sigterm(&second);
    let exited = second.wait_output();
    assert_eq!(exited.code, 0, "{exited:?}");
    let run = iterations(&ep);
    assert!(run["runner"].is_null(), "{run}");
    let table = percyctl(&ep, &["definition", "iterations", "writer"]).ok();
    assert!(table.stdout.contains("succeeded"), "{table:?}");
}

/// A tmux session running `percyctl steer`, killed when the test ends.
struct Tmux {
    socket: std::path::PathBuf,
    session: String,
}

impl Tmux {
    fn tmux(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs (installed by .ci/run)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(
            &self
                .tmux(&["capture-pane", "-p", "-t", &self.session])
                .stdout,
        )
        .into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", self.session.as_str()];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success());
    }

    fn wait_for_screen(&self, what: &str, mut done: impl FnMut(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                started.elapsed() < LIMIT,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

#[test]
fn percyctl_steer_in_a_real_terminal_shows_iterations_live_and_injects_messages() {
    let cluster = TestCluster::start(3);
    let ep = cluster.endpoints_arg();
    let dir = tempfile::tempdir().unwrap();
    let script = write_fake_llm(dir.path());
    let manifest = write_manifest(dir.path(), &script);
    percyctl(&ep, &["apply", "-f", manifest.to_str().unwrap()]).ok();
    let _worker = spawn_loop_worker(&ep, "loop-a", &dir.path().join("state-a"));

    let exit_file = dir.path().join("steer.exit");
    let command = format!(
        "{} --endpoints {ep} steer; echo $? > {}; sleep 30",
        env!("CARGO_BIN_EXE_percyctl"),
        exit_file.display()
    );
    let tmux = Tmux {
        socket: dir.path().join("tmux.sock"),
        session: "steer".into(),
    };
    let started = tmux.tmux(&[
        "new-session",
        "-d",
        "-s",
        "steer",
        "-x",
        "150",
        "-y",
        "40",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");

    // The tree shows the definition, then iterations as they happen (no key pressed).
    tmux.wait_for_screen("the definition in the tree", |s| {
        s.contains("writer running")
    });
    tmux.wait_for_screen("a finished iteration", |s| s.contains("#2 succeeded"));

    // Down to the loop, then to the newest iteration; `i` opens the input box.
    tmux.keys(&["Down", "Down"]);
    tmux.wait_for_screen("the iteration detail", |s| s.contains("── prompt"));
    tmux.keys(&["i"]);
    tmux.wait_for_screen("the input box", |s| s.contains("steer writer"));
    tmux.keys(&["-l", "please use tabs"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for_screen("the message to be queued", |s| {
        s.contains("queued for writer")
    });

    // The message reaches the next iteration's prompt (as the stand-in LLM received it) and
    // shows in that iteration's history in the TUI.
    wait_until("a prompt with the steering message", || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .any(|entry| {
                entry.file_name().to_string_lossy().starts_with("prompt-")
                    && std::fs::read_to_string(entry.path())
                        .is_ok_and(|p| p.contains("please use tabs"))
            })
    });
    let run = iterations(&ep);
    let steered = run["iterations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["prompt"].as_str().unwrap().contains("please use tabs"))
        .cloned()
        .expect("an iteration carries the message");
    let steered_row = format!("#{} ", steered["number"]);
    let screen = tmux.wait_for_screen("the steered iteration in the tree", |s| {
        s.contains(&steered_row)
    });
    assert!(screen.contains("writer"), "{screen}");

    // The cluster view, and back.
    tmux.keys(&["Tab"]);
    tmux.wait_for_screen("the cluster view", |s| {
        s.contains("── agents") && s.contains("loop-a")
    });
    tmux.keys(&["Tab"]);
    tmux.wait_for_screen("the tree again", |s| s.contains("definitions"));

    // `q` quits with exit code 0 and gives the terminal back.
    tmux.keys(&["q"]);
    wait_until("percyctl steer to exit", || exit_file.exists());
    let code = std::fs::read_to_string(&exit_file).unwrap();
    assert_eq!(code.trim(), "0", "exit code {code}");
}

#[test]
fn percyctl_steer_without_a_cluster_is_a_clear_error() {
    let out = ctl::percyctl_with_timeout("127.0.0.1:9", "1s", &["steer"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("error:"), "{out:?}");
}
