//! Crash records of running commands, and reaping what a dead worker left behind.
//!
//! While a task's command runs, the worker keeps one small file per command in
//! `<state dir>/running-<name>/`: the command's process group, the start time of its leader and the
//! boot it started in. The supervisor (`supervisor`) kills the group when the worker dies;
//! these records are the second line, for what it cannot cover (the supervisor itself killed,
//! a non-Linux system): a worker starting on the same state dir kills every group recorded
//! there that is still the group the record describes, and removes the records.
//!
//! Pids are reused, so a record is trusted only while it identifies the same processes: a
//! process whose pid is the recorded group id and whose start time (in clock ticks since
//! boot, from `/proc/<pid>/stat`) differs from the recorded one is an unrelated process and is
//! left alone. If the leader is gone, the group may still have members; Linux does not reuse a
//! number while it is in use as a process group id, so processes whose group is the recorded
//! one and that started no earlier than the recorded leader are that group's — unless the
//! whole group died and the number was reused by a new leader that died too, with members
//! left: possible in theory, and accepted. Records of another boot are dropped unread.
//! Without `/proc` (macOS) nothing is recorded or reaped.

use std::path::{Path, PathBuf};

/// Prefix of the subdirectory of the state dir holding one worker's records (several workers
/// may share a state dir, `--inbox-dir`; each reaps only its own name's records).
const RUNNING_DIR_PREFIX: &str = "running-";
/// File name suffix of a record.
const RECORD_SUFFIX: &str = ".pgid";
/// Where the kernel names the current boot.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// Index of the process group among the fields of `/proc/<pid>/stat` after the command name.
const STAT_PGRP_FIELD: usize = 2;
/// Index of the start time among the same fields (field 22 of proc(5), counting from 1).
const STAT_START_FIELD: usize = 19;

/// The records' directory of worker `name` inside its state dir.
pub fn records_dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(format!(
        "{RUNNING_DIR_PREFIX}{}",
        crate::inbox::file_safe(name)
    ))
}

/// What `/proc/<pid>/stat` says about a process that matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    pgrp: i32,
    start_ticks: u64,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses a stat line; the command name is in parentheses and may contain anything, so the
/// fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    Some(ProcStat {
        pgrp: fields.get(STAT_PGRP_FIELD)?.parse().ok()?,
        start_ticks: fields.get(STAT_START_FIELD)?.parse().ok()?,
    })
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string(BOOT_ID_PATH)
        .ok()
        .map(|id| id.trim().to_owned())
}

/// A running command's record; the file is removed when this is dropped.
#[derive(Debug)]
pub struct RunningRecord {
    path: PathBuf,
}

impl RunningRecord {
    /// Records the group `pgid`, led by the process `pgid` that was just started, for
    /// `task`. `None` (logged) when it cannot be written or this system has no `/proc`: the
    /// command runs anyway, only without the second line of defence.
    pub fn write(dir: &Path, pgid: i32, task: &str) -> Option<RunningRecord> {
        let stat = proc_stat(pgid)?;
        let boot = boot_id()?;
        let path = dir.join(format!("{pgid}{RECORD_SUFFIX}"));
        let text = format!(
            "pgid={pgid}\nstart_ticks={}\nboot_id={boot}\ntask={}\n",
            stat.start_ticks,
            task.escape_default()
        );
        // Written aside and renamed, so a crash never leaves half a record.
        let temporary = path.with_extension("tmp");
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&temporary, text))
            .and_then(|()| std::fs::rename(&temporary, &path));
        match written {
            Ok(()) => Some(RunningRecord { path }),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot record the running command");
                None
            }
        }
    }
}

impl Drop for RunningRecord {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recorded {
    pgid: i32,
    start_ticks: u64,
    boot_id: String,
}

fn parse_record(text: &str) -> Option<Recorded> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
    };
    Some(Recorded {
        pgid: field("pgid")?.parse().ok().filter(|&pgid| pgid > 1)?,
        start_ticks: field("start_ticks")?.parse().ok()?,
        boot_id: field("boot_id")?.to_owned(),
    })
}

/// Kills the groups recorded in `dir` that are still the recorded groups and removes every
/// record; returns the group ids it killed processes of.
pub fn reap_leftovers(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let boot = boot_id();
    let mut reaped = Vec::new();
    for path in entries.flatten().map(|entry| entry.path()) {
        let record = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| parse_record(&text));
        if let Some(record) = record.filter(|r| boot.as_deref() == Some(r.boot_id.as_str())) {
            if kill_recorded_group(&record) {
                tracing::warn!(
                    pgid = record.pgid,
                    "killed a command a previous run of this worker left running"
                );
                reaped.push(record.pgid);
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    reaped
}

/// Kills what is left of the recorded group; whether anything was.
fn kill_recorded_group(record: &Recorded) -> bool {
    match proc_stat(record.pgid) {
        // The leader is alive and is ours: the whole group goes.
        Some(leader) if leader.start_ticks == record.start_ticks && leader.pgrp == record.pgid => {
            signal_group(record.pgid);
            true
        }
        // The number belongs to another process now, so our group is gone (see above).
        Some(_) => false,
        None => {
            let members = group_members_since(record.pgid, record.start_ticks);
            for &pid in &members {
                // SAFETY: kill(2) touches no memory of ours.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            !members.is_empty()
        }
    }
}

/// Processes in group `pgid` that started no earlier than `since`.
fn group_members_since(pgid: i32, since: u64) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            proc_stat(pid).is_some_and(|stat| stat.pgrp == pgid && stat.start_ticks >= since)
        })
        .collect()
}

fn signal_group(pgid: i32) {
    // SAFETY: killpg(2) touches no memory of ours.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    use super::*;

    /// `sh -c script` leading a group of its own.
    fn group(script: &str) -> Child {
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .process_group(0)
            .spawn()
            .unwrap()
    }

    fn pid(child: &Child) -> i32 {
        i32::try_from(child.id()).unwrap()
    }

    /// Whether `child` ended within a generous limit (reaping it).
    fn ends(child: &mut Child) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn stat_lines_are_parsed_after_the_last_parenthesis() {
        let line = "42 (a) b (c)) S 1 40 40 0 -1 4194304 100 0 0 0 1 2 0 0 20 0 1 0 98765 \
                    1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                pgrp: 40,
                start_ticks: 98765
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_recorded_group_is_killed_with_its_grandchildren_and_the_record_removed() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild");
        let mut leader = group(&format!("sleep 60 & echo $! > {}; wait", marker.display()));
        let record = RunningRecord::write(dir.path(), pid(&leader), "t1").unwrap();
        // A crash: the record stays behind.
        std::mem::forget(record);
        let started = Instant::now();
        while !marker.exists() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let grandchild: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::fs::remove_file(&marker).unwrap();

        assert_eq!(reap_leftovers(dir.path()), vec![pid(&leader)]);
        assert!(ends(&mut leader), "the recorded leader survived");
        let gone = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            proc_stat(grandchild).is_none_or(|_| is_zombie(grandchild))
        });
        assert!(gone, "the grandchild survived");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_record_whose_pid_now_names_another_process_kills_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut unrelated = group("sleep 60");
        let stat = proc_stat(pid(&unrelated)).unwrap();
        // The same pid, started at another time: the recorded process is long gone.
        let text = format!(
            "pgid={}\nstart_ticks={}\nboot_id={}\ntask=t1\n",
            pid(&unrelated),
            stat.start_ticks - 1,
            boot_id().unwrap()
        );
        std::fs::write(dir.path().join("x.pgid"), text).unwrap();

        assert_eq!(reap_leftovers(dir.path()), Vec::<i32>::new());
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            unrelated.try_wait().unwrap().is_none(),
            "an unrelated process was killed"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        unrelated.kill().unwrap();
        unrelated.wait().unwrap();
    }

    #[test]
    fn records_of_another_boot_or_unreadable_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut unrelated = group("sleep 60");
        let stat = proc_stat(pid(&unrelated)).unwrap();
        let text = format!(
            "pgid={}\nstart_ticks={}\nboot_id=another-boot\ntask=t1\n",
            pid(&unrelated),
            stat.start_ticks
        );
        std::fs::write(dir.path().join("a.pgid"), text).unwrap();
        std::fs::write(dir.path().join("b.pgid"), "nonsense").unwrap();

        assert_eq!(reap_leftovers(dir.path()), Vec::<i32>::new());
        assert!(unrelated.try_wait().unwrap().is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        unrelated.kill().unwrap();
        unrelated.wait().unwrap();
    }

    fn is_zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|text| {
                let after = &text[text.rfind(')')? + 1..];
                after.split_whitespace().next().map(|s| s == "Z")
            })
            .unwrap_or(true)
    }
}
