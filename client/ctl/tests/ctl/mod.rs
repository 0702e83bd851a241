//! Running the `percyctl` binary in tests: one run to completion ([`percyctl`]), a command
//! to spawn ([`percyctl_command`]) and a guard that kills a spawned child the test leaves
//! behind ([`ChildGuard`]).

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::process::{Command, Output};
use std::time::Duration;

/// percyctl's retry deadline in tests: generous, so a slow CI box does not flake.
pub const CTL_TIMEOUT: &str = "30s";

/// The result of one percyctl run.
#[derive(Debug)]
pub struct Ctl {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ctl {
    /// Parses stdout as JSON (for `-o json` runs), failing the test with the output if not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "percyctl failed: {self:?}");
        self
    }
}

impl From<Output> for Ctl {
    fn from(output: Output) -> Self {
        Ctl {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A percyctl command against `endpoints`, ready to run or spawn.
pub fn percyctl_command(endpoints: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_percyctl"));
    command
        .arg("--timeout")
        .arg(CTL_TIMEOUT)
        .args(args)
        .env("PERCY_ENDPOINTS", endpoints)
        .env_remove("RUST_LOG");
    command
}

/// Runs percyctl to completion.
pub fn percyctl(endpoints: &str, args: &[&str]) -> Ctl {
    percyctl_command(endpoints, args)
        .output()
        .expect("percyctl runs")
        .into()
}

/// Runs percyctl with a specific `--timeout` (for tests of failure paths).
pub fn percyctl_with_timeout(endpoints: &str, timeout: &str, args: &[&str]) -> Ctl {
    Command::new(env!("CARGO_BIN_EXE_percyctl"))
        .arg("--timeout")
        .arg(timeout)
        .args(args)
        .env("PERCY_ENDPOINTS", endpoints)
        .env_remove("RUST_LOG")
        .output()
        .expect("percyctl runs")
        .into()
}

/// A child process that is killed if the test ends before it does.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// Waits for the child to exit on its own, giving up (and killing it) after a generous
    /// limit so a hung child fails the test instead of hanging it.
    pub fn wait_output(&mut self) -> Ctl {
        const LIMIT: Duration = Duration::from_secs(60);
        // Drain the pipes while waiting, so a chatty child never blocks on a full pipe.
        let stdout = drain(self.0.stdout.take());
        let stderr = drain(self.0.stderr.take());
        let started = std::time::Instant::now();
        let status = loop {
            match self.0.try_wait().expect("wait for child") {
                Some(status) => break status,
                None if started.elapsed() > LIMIT => {
                    let _ = self.0.kill();
                    panic!("child still running after {LIMIT:?}");
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        Ctl {
            code: status.code().unwrap_or(-1),
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        }
    }
}

fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
