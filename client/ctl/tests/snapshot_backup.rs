//! Backup and restore end to end (issue 22 §2), with real `percyctl` and `percyd` processes
//! for the save and the restored cluster: a backup taken under a write load holds every write
//! acknowledged before the save began; `percyd restore` seeds a new three-node cluster from it
//! whose revisions continue past the backup's; damaged files and non-empty data dirs are
//! refused without writing anything; a restored node cannot join the old cluster; a
//! non-admin token cannot take a backup.

mod ctl;
// The in-process cluster of the client library's tests, shared rather than copied.
#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ctl::{percyctl, Ctl};
use percy_client::{Client, Consistency, RetryPolicy, Security};
use percy_testkit::launch::{LaunchError, PercydProcess, PercydSpec};
use support::TestCluster;

/// Generous bound for anything that waits on a cluster (2 loaded cores).
const SETTLE: Duration = Duration::from_secs(60);

fn with_token(endpoints: &str, token: &str, args: &[&str]) -> Ctl {
    let mut full = vec!["--token", token];
    full.extend_from_slice(args);
    percyctl(endpoints, &full)
}

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return text.trim().to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `percyd` from this workspace (`$PERCYD_BIN`, or built once per test process).
fn percyd_binary() -> PathBuf {
    percy_testkit::binaries::percyd_binary().expect("percyd")
}

fn percyd(args: &[&str]) -> Ctl {
    Command::new(percyd_binary())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("percyd runs")
        .into()
}

/// Free loopback addresses for processes that must know each other's before they start.
fn free_addrs(n: usize) -> Vec<String> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").to_string())
        .collect()
}

fn peers_arg(addrs: &[String]) -> String {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts node `id` of `peers` (`ID=HOST:PORT,…`, its own address among them) with `--auth`,
/// its output in `log`; killed when dropped.
fn start_percyd(id: u64, addr: &str, peers: &str, data_dir: &Path, log: &Path) -> PercydProcess {
    let others: BTreeMap<u64, String> = peers
        .split(',')
        .filter_map(|peer| peer.split_once('='))
        .map(|(peer, at)| (peer.parse().expect("a node id"), at.to_owned()))
        .filter(|(peer, _)| *peer != id)
        .collect();
    let spec = PercydSpec {
        listen: addr.to_owned(),
        peers: others,
        log: log.to_path_buf(),
        ..PercydSpec::on_any_port(&percyd_binary(), id, data_dir)
    }
    .arg(["--auth"]);
    let mut node = PercydProcess::new(spec);
    node.spawn().expect("percyd starts");
    node
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn client(runtime: &tokio::runtime::Runtime, endpoints: &[String], token: &str) -> Client {
    let security = Security {
        token: Some(token.to_owned()),
        tls: None,
    };
    runtime
        .block_on(Client::connect_secure(
            endpoints,
            RetryPolicy::default().with_deadline(SETTLE),
            &security,
        ))
        .expect("client")
}

/// Writes `load/NNNNNN` keys one after the other until `stop`, recording when each was
/// acknowledged.
fn write_load(
    endpoints: Vec<String>,
    token: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, Instant)>>>,
) {
    let runtime = runtime();
    let client = client(&runtime, &endpoints, &token);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("load/{i:06}");
        // An error leaves the write's outcome unknown: it is simply not counted as acked.
        if runtime
            .block_on(client.put_config(&key, i.to_string().into_bytes(), None))
            .is_ok()
        {
            acked.lock().unwrap().push((key, Instant::now()));
        }
        i += 1;
    }
}

fn acked_count(acked: &Mutex<Vec<(String, Instant)>>) -> usize {
    acked.lock().unwrap().len()
}

fn wait_for_acks(acked: &Mutex<Vec<(String, Instant)>>, at_least: usize) {
    let deadline = Instant::now() + SETTLE;
    while acked_count(acked) < at_least {
        assert!(Instant::now() < deadline, "the write load stalled");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_backup_taken_under_load_restores_into_a_new_three_node_cluster() {
    let old = TestCluster::start_with(3, |config| config.auth = true);
    let ep = old.endpoints_arg();
    let admin = wait_for_file(&old.data_dir(1).join("admin.token"));
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("backup.snap");
    let file_arg = file.to_str().unwrap();

    // A non-admin credential cannot take a backup (it holds every token's hash).
    let operator = with_token(&ep, &admin, &["token", "create", "--role", "operator"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let refused = with_token(&ep, &operator, &["snapshot", "save", file_arg]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("PERMISSION_DENIED"), "{refused:?}");
    assert!(!file.exists(), "a refused save wrote the file");

    // Save while a writer keeps writing.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (endpoints, token) = (old.endpoints(), admin.clone());
        let (stop, acked) = (stop.clone(), acked.clone());
        std::thread::spawn(move || write_load(endpoints, token, stop, acked))
    };
    wait_for_acks(&acked, 30);
    let save_started = Instant::now();
    let saved = with_token(&ep, &admin, &["-o", "json", "snapshot", "save", file_arg]).ok();
    let after_save = acked_count(&acked);
    wait_for_acks(&acked, after_save + 30);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let saved = saved.json();
    let revision = saved["revision"].as_u64().expect("revision");
    assert_eq!(
        saved["size"].as_u64(),
        Some(std::fs::metadata(&file).expect("saved file").len())
    );
    let acked_before: Vec<String> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at < save_started)
        .map(|(key, _)| key.clone())
        .collect();
    assert!(acked_before.len() >= 30);

    // Inspect needs no cluster and agrees with save.
    let inspected = percyctl(
        "127.0.0.1:1",
        &["-o", "json", "snapshot", "inspect", file_arg],
    )
    .ok()
    .json();
    assert_eq!(inspected["revision"].as_u64(), Some(revision));
    assert_eq!(inspected["checksum_ok"].as_bool(), Some(true));
    assert_eq!(inspected["tokens"].as_u64(), Some(2));
    let old_cluster_id = inspected["cluster_id"].as_str().unwrap().to_owned();

    // Damaged files and a non-empty data dir are refused, and nothing is written.
    let addrs = free_addrs(3);
    let peers = peers_arg(&addrs);
    let bytes = std::fs::read(&file).unwrap();
    let truncated = work.path().join("truncated.snap");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1]).unwrap();
    let flipped = work.path().join("flipped.snap");
    let mut flipped_bytes = bytes.clone();
    flipped_bytes[bytes.len() / 2] ^= 0x10;
    std::fs::write(&flipped, &flipped_bytes).unwrap();
    for (bad, why) in [(&truncated, "truncated"), (&flipped, "checksum mismatch")] {
        let dir = work.path().join("bad-restore");
        let out = percyd(&[
            "restore",
            "--from",
            bad.to_str().unwrap(),
            "--data-dir",
            dir.to_str().unwrap(),
            "--node-id",
            "1",
            "--peers",
            &peers,
        ]);
        assert_ne!(out.code, 0, "{out:?}");
        assert!(out.stderr.contains(why), "{out:?}");
        assert!(!dir.exists(), "a refused restore created {}", dir.display());
    }
    let occupied = work.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("keep"), b"mine").unwrap();
    let out = percyd(&[
        "restore",
        "--from",
        file_arg,
        "--data-dir",
        occupied.to_str().unwrap(),
        "--node-id",
        "1",
        "--peers",
        &peers,
    ]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("not empty"), "{out:?}");
    assert_eq!(std::fs::read_dir(&occupied).unwrap().count(), 1);

    // Restore each node of the new cluster from the same file: one new cluster id.
    let mut new_ids = Vec::new();
    let dirs: Vec<PathBuf> = (1..=3)
        .map(|i| work.path().join(format!("new-{i}")))
        .collect();
    for (i, dir) in dirs.iter().enumerate() {
        let out = percyd(&[
            "restore",
            "--from",
            file_arg,
            "--data-dir",
            dir.to_str().unwrap(),
            "--node-id",
            &(i + 1).to_string(),
            "--peers",
            &peers,
        ])
        .ok();
        assert!(
            out.stdout
                .contains(&format!("restored revision {revision} ")),
            "{out:?}"
        );
        new_ids.push(out.stdout.trim().rsplit(' ').next().unwrap().to_owned());
    }
    assert!(new_ids.iter().all(|id| id == &new_ids[0]), "{new_ids:?}");
    assert_ne!(new_ids[0], old_cluster_id);

    let _nodes: Vec<PercydProcess> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let log = work.path().join(format!("new-{}.log", i + 1));
            start_percyd(i as u64 + 1, &addrs[i], &peers, dir, &log)
        })
        .collect();
    let runtime = runtime();
    // The old admin token came along with the state.
    let new = client(&runtime, &addrs, &admin);
    let next = runtime
        .block_on(new.put_config("after/restore", b"1".to_vec(), None))
        .expect("the restored cluster takes writes");
    let next_revision = next.header.expect("header").revision;
    assert!(
        next_revision > revision,
        "revisions went back: {next_revision} after a backup at {revision}"
    );
    let listed = runtime
        .block_on(new.list_config("load/", Consistency::Linearizable))
        .expect("list");
    let present: std::collections::BTreeSet<&str> =
        listed.entries.iter().map(|e| e.key.as_str()).collect();
    for key in &acked_before {
        assert!(
            present.contains(key.as_str()),
            "{key} was acknowledged before the save but is missing"
        );
    }
    // Nothing written after the image's revision came along.
    assert!(listed.entries.iter().all(|e| e.revision <= revision));

    // A node restored from the file cannot join the old cluster: its --peers naming an old
    // node, it stops at start with one line.
    let stray_addr = free_addrs(1).remove(0);
    let stray_peers = format!("1={},2={stray_addr}", old.endpoints()[0]);
    let stray_dir = work.path().join("stray");
    percyd(&[
        "restore",
        "--from",
        file_arg,
        "--data-dir",
        stray_dir.to_str().unwrap(),
        "--node-id",
        "2",
        "--peers",
        &stray_peers,
    ])
    .ok();
    let stray_log = work.path().join("stray.log");
    let mut stray = start_percyd(2, &stray_addr, &stray_peers, &stray_dir, &stray_log);
    let deadline = Instant::now() + SETTLE;
    let status = loop {
        if let Err(LaunchError::Exited { status, .. }) = stray.check_running() {
            break status;
        }
        assert!(Instant::now() < deadline, "the stray node kept running");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(&stray_log).unwrap();
    assert!(log.contains("belongs to cluster"), "{log}");
}
