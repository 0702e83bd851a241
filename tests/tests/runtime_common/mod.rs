//! Shared by the `runtime_*` end-to-end tests: real `percyctl worker` processes (killed when
//! dropped), the `percyctl` binary, a scratch dir, waiting with generous margins, and one
//! test at a time (each starts three `percyd` processes and several workers on a 2-core box).

#![allow(dead_code)] // each test binary uses a different part of this module

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use percy_client::proto::{Agent, Task};
use percy_client::{Client, Consistency};
pub use percy_tests::binaries::percyctl_binary;
use percy_tests::cluster::{Cluster, ClusterConfig, LEADER_TIMEOUT};

/// Agent TTL of the workers in these tests: short, so expiry scenarios are quick.
pub const WORKER_TTL: &str = "3s";
/// How long anything the cluster does on its own may take here (expiry, a plan).
pub const SETTLE: Duration = Duration::from_secs(60);
/// Pause between two looks while waiting.
pub const POLL: Duration = Duration::from_millis(200);
/// How long a worker may take to shut down after SIGTERM (its grace period is shorter).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Grace period given to the workers' running commands at shutdown.
pub const WORKER_GRACE: &str = "5s";

/// One runtime test at a time, across the tests of a binary.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A scratch dir, three `percyd` processes, and a client of all of them.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub cluster: Cluster,
    pub client: Client,
}

impl Setup {
    pub async fn start() -> Result<Setup> {
        let dir = tempfile::tempdir()?;
        let mut cluster = Cluster::start(&ClusterConfig {
            nodes: 3,
            dir: dir.path().join("cluster"),
            extra_args: Vec::new(),
            secure: false,
            power_loss: false,
        })?;
        cluster.wait_for_leader(LEADER_TIMEOUT).await?;
        let client = Client::connect(&cluster.endpoints()).await?;
        Ok(Setup {
            dir,
            cluster,
            client,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A worker process with `--ttl WORKER_TTL --grace WORKER_GRACE` and these extra args.
    pub fn worker(&self, name: &str, exec: &str, args: &[&str]) -> Result<WorkerProcess> {
        WorkerProcess::spawn(&self.cluster.endpoints(), self.dir.path(), name, exec, args)
    }

    pub async fn task(&self, id: &str) -> Result<Task> {
        self.client
            .get_task(id, Consistency::Linearizable)
            .await?
            .task
            .ok_or_else(|| anyhow!("task {id} missing from the answer"))
    }

    /// Every agent, active or not.
    pub async fn agents(&self) -> Result<Vec<Agent>> {
        Ok(self
            .client
            .list_agents(true, Consistency::Linearizable)
            .await?
            .agents)
    }

    /// The active agent named `name`, if any.
    pub async fn active_agent(&self, name: &str) -> Result<Option<Agent>> {
        Ok(self
            .client
            .list_agents(false, Consistency::Linearizable)
            .await?
            .agents
            .into_iter()
            .find(|a| a.name == name))
    }
}

/// A `percyctl worker` process; SIGKILLed (after SIGCONT) when dropped.
pub struct WorkerProcess {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl WorkerProcess {
    fn spawn(
        endpoints: &[String],
        dir: &Path,
        name: &str,
        exec: &str,
        args: &[&str],
    ) -> Result<WorkerProcess> {
        let log = dir.join(format!("worker-{name}.log"));
        let out = OpenOptions::new().create(true).append(true).open(&log)?;
        let child = Command::new(percyctl_binary()?)
            .arg("--endpoints")
            .arg(endpoints.join(","))
            .arg("worker")
            .args(["--name", name, "--exec", exec])
            .args(["--ttl", WORKER_TTL, "--grace", WORKER_GRACE])
            .arg("--inbox-dir")
            .arg(dir.join("inbox"))
            .args(args)
            .env("RUST_LOG", "warn,percy_worker=info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawning percyctl worker")?;
        Ok(WorkerProcess {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    fn pid(&self) -> Result<libc::pid_t> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("worker {} is gone", self.name))?;
        Ok(libc::pid_t::try_from(child.id())?)
    }

    pub fn signal(&self, signal: libc::c_int) -> Result<()> {
        let pid = self.pid()?;
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) -> Result<()> {
        self.signal(libc::SIGKILL)?;
        if let Some(mut child) = self.child.take() {
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, then wait for the exit status (bounded).
    pub async fn terminate(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        let deadline = tokio::time::Instant::now() + EXIT_TIMEOUT;
        loop {
            let child = self
                .child
                .as_mut()
                .ok_or_else(|| anyhow!("worker is gone"))?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "worker {} still running {EXIT_TIMEOUT:?} after SIGTERM",
                    self.name
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What the worker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: signals to a child we spawned and have not reaped.
                unsafe {
                    libc::kill(pid, libc::SIGCONT);
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            let _ = child.wait();
        }
    }
}

/// Kills a process group when dropped (commands orphaned by a SIGKILLed worker).
pub struct GroupGuard(pub Vec<libc::pid_t>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        for pgid in &self.0 {
            // SAFETY: killpg(2); ESRCH when the group is already gone is fine.
            unsafe {
                libc::killpg(*pgid, libc::SIGKILL);
            }
        }
    }
}

/// Polls `probe` until it returns `Some`, up to `timeout` (the test kit's `try_eventually`,
/// with these tests' error type).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    percy_testkit::try_eventually(what, timeout, probe).await
}

/// The lines of a file ("" when it does not exist yet).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}
