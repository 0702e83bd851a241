//! Starting one `percyd` process: the one way every harness does it (the tests' process
//! cluster, the fault suite's cluster behind proxies, `percyctl bench --local`).
//!
//! A node listens where [`PercydSpec::listen`] says; on port 0 the kernel picks the port and
//! the node reports it through `--address-file`, so nobody races anyone for a port. Once
//! bound, the node keeps that address: a restart passes it as `--listen` and as its own
//! `--peers` entry, because the other members know it by that address.
//!
//! Only `std` and `libc`, on purpose: `percyctl bench --local` is a product and builds this
//! module without the rest of the test kit (`default-features = false`). Errors are values,
//! not panics, for the same reason.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Pause between two looks at the address file or the process.
const POLL: Duration = Duration::from_millis(20);

/// What to run for one node.
#[derive(Debug, Clone)]
pub struct PercydSpec {
    pub binary: PathBuf,
    pub node_id: u64,
    /// `HOST:PORT` to listen on; port 0 lets the kernel pick (see [`PercydProcess::wait_bound`]).
    pub listen: String,
    /// The other members this node is told of (`--peers`, besides its own entry). The lowest
    /// id among them and this node bootstraps an empty cluster.
    pub peers: BTreeMap<u64, String>,
    pub data_dir: PathBuf,
    /// Where the node's stdout and stderr go: created on the first start, appended to on
    /// restarts.
    pub log: PathBuf,
    /// Further flags, passed on every start.
    pub args: Vec<OsString>,
    /// Environment for the process (e.g. `RUST_LOG`). No `NO_COLOR`: percyd must leave colours
    /// out of a log that is not a terminal by itself (tests check it does).
    pub env: Vec<(OsString, OsString)>,
}

impl PercydSpec {
    /// Node `node_id` of `binary` on a port the kernel picks on loopback, with its data in
    /// `data_dir` and its log next to it (`<data_dir>.log`).
    pub fn on_any_port(binary: &Path, node_id: u64, data_dir: &Path) -> Self {
        let mut log = data_dir.as_os_str().to_owned();
        log.push(".log");
        Self {
            binary: binary.to_path_buf(),
            node_id,
            listen: ANY_LOOPBACK_PORT.to_string(),
            peers: BTreeMap::new(),
            data_dir: data_dir.to_path_buf(),
            log: PathBuf::from(log),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Adds flags.
    pub fn arg<S: Into<OsString>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// `--listen` for a node whose port the kernel picks.
pub const ANY_LOOPBACK_PORT: &str = "127.0.0.1:0";

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} of percyd node {node_id}: {source}")]
    Io {
        what: &'static str,
        node_id: u64,
        source: std::io::Error,
    },
    #[error("percyd node {node_id} exited on its own ({status}) {ran:.1?} after its {start}; last lines of {}:\n{tail}", log.display())]
    Exited {
        node_id: u64,
        status: ExitStatus,
        ran: Duration,
        /// "first start" or "restart #n".
        start: String,
        log: PathBuf,
        tail: String,
    },
    #[error("percyd node {node_id} wrote no --address-file within {timeout:?}; last lines of {}:\n{tail}", log.display())]
    NoAddress {
        node_id: u64,
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },
    #[error("percyd node {node_id} is not running")]
    NotRunning { node_id: u64 },
}

/// Lines of a node's log an [`LaunchError::Exited`] quotes.
const TAIL_LINES: usize = 20;

/// One `percyd` node: its process (when running) and what starts it again. Killed (SIGKILL)
/// when dropped.
#[derive(Debug)]
pub struct PercydProcess {
    spec: PercydSpec,
    address_file: PathBuf,
    /// Where it serves, once known (at once for a fixed port).
    addr: Option<SocketAddr>,
    child: Option<Child>,
    paused: bool,
    /// When the running process was spawned, and how many processes this node has had.
    started: Instant,
    starts: u32,
}

impl PercydProcess {
    /// A node not started yet.
    pub fn new(spec: PercydSpec) -> Self {
        let mut address_file = spec.data_dir.as_os_str().to_owned();
        address_file.push(".address");
        let addr = spec
            .listen
            .parse()
            .ok()
            .filter(|a: &SocketAddr| a.port() != 0);
        Self {
            spec,
            address_file: PathBuf::from(address_file),
            addr,
            child: None,
            paused: false,
            started: Instant::now(),
            starts: 0,
        }
    }

    /// Spawns the node and waits (up to `timeout`) until it listens: [`Self::new`],
    /// [`Self::spawn`], [`Self::wait_bound`].
    pub fn start(spec: PercydSpec, timeout: Duration) -> Result<Self, LaunchError> {
        let mut node = Self::new(spec);
        node.spawn()?;
        node.wait_bound(timeout)?;
        Ok(node)
    }

    pub fn node_id(&self) -> u64 {
        self.spec.node_id
    }

    /// Where the node serves: known once it has bound (see [`Self::wait_bound`]).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    pub fn data_dir(&self) -> &Path {
        &self.spec.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }

    /// The flags a (re)start passes.
    fn command_args(&self) -> Vec<OsString> {
        let id = self.spec.node_id;
        let listen = self
            .addr
            .map_or_else(|| self.spec.listen.clone(), |a| a.to_string());
        let mut peers = self.spec.peers.clone();
        peers.insert(id, listen.clone());
        let peers: Vec<String> = peers.iter().map(|(i, a)| format!("{i}={a}")).collect();
        let mut args: Vec<OsString> = vec![
            "--node-id".into(),
            id.to_string().into(),
            "--listen".into(),
            listen.into(),
            "--peers".into(),
            peers.join(",").into(),
            "--data-dir".into(),
            self.spec.data_dir.clone().into(),
        ];
        if self.addr.is_none() {
            args.extend(["--address-file".into(), self.address_file.clone().into()]);
        }
        args.extend(self.spec.args.iter().cloned());
        args
    }

    /// Starts the process (again, on the same data dir and address); nothing if it runs.
    pub fn spawn(&mut self) -> Result<(), LaunchError> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = if self.starts == 0 {
            File::create(&self.spec.log)
        } else {
            File::options()
                .create(true)
                .append(true)
                .open(&self.spec.log)
        }
        .map_err(self.io("opening the log"))?;
        if self.addr.is_none() {
            match std::fs::remove_file(&self.address_file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(self.io("removing an old address file")(e))
                }
                _ => {}
            }
        }
        let child = Command::new(&self.spec.binary)
            .args(self.command_args())
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(self.io("opening the log"))?)
            .stderr(log)
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                binary: self.spec.binary.clone(),
                source,
            })?;
        self.child = Some(child);
        self.paused = false;
        self.started = Instant::now();
        self.starts += 1;
        Ok(())
    }

    /// Waits until the node has written its `--address-file` (a node on port 0) and returns
    /// where it serves; from then on restarts reuse that address. Fails at once if the process
    /// exits, naming why (its log's last lines).
    pub fn wait_bound(&mut self, timeout: Duration) -> Result<SocketAddr, LaunchError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(addr) = self.addr {
                return Ok(addr);
            }
            if let Ok(text) = std::fs::read_to_string(&self.address_file) {
                if let Ok(addr) = text.trim().parse() {
                    self.addr = Some(addr);
                    continue;
                }
            }
            self.check_running()?;
            if self.child.is_none() {
                return Err(LaunchError::NotRunning {
                    node_id: self.spec.node_id,
                });
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::NoAddress {
                    node_id: self.spec.node_id,
                    timeout,
                    log: self.spec.log.clone(),
                    tail: self.log_tail(TAIL_LINES),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Fails if the process exited without being killed here, with its exit status, how long
    /// it ran and the last lines of its log; the dead process is forgotten (a later
    /// [`Self::spawn`] starts the node again).
    pub fn check_running(&mut self) -> Result<(), LaunchError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        let status = child.try_wait();
        let status = status.map_err(self.io("waiting for the process"))?;
        let Some(status) = status else {
            return Ok(());
        };
        self.child = None;
        self.paused = false;
        let start = if self.starts > 1 {
            format!("restart #{}", self.starts - 1)
        } else {
            "first start".to_owned()
        };
        Err(LaunchError::Exited {
            node_id: self.spec.node_id,
            status,
            ran: self.started.elapsed(),
            start,
            log: self.spec.log.clone(),
            tail: self.log_tail(TAIL_LINES),
        })
    }

    /// True while a process was started and not killed (it may have exited on its own since:
    /// see [`Self::check_running`]), paused or not.
    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }

    /// True while the process runs (possibly paused).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL and reap; nothing if not running.
    pub fn kill(&mut self) -> Result<(), LaunchError> {
        self.paused = false;
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        child.kill().map_err(self.io("killing the process"))?;
        child.wait().map_err(self.io("reaping the process"))?;
        Ok(())
    }

    /// SIGTERM, and the exit status once it exits within `timeout`; SIGKILL after that
    /// (`None`). `None` too if it was not running.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.resume().ok()?;
        self.signal(libc::SIGTERM).ok()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.as_mut()?.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(POLL);
        }
        let _ = self.kill();
        None
    }

    /// SIGSTOP: the node stops answering, its sockets stay open.
    pub fn pause(&mut self) -> Result<(), LaunchError> {
        if self.child.is_some() {
            self.signal(libc::SIGSTOP)?;
            self.paused = true;
        }
        Ok(())
    }

    /// SIGCONT of a paused node.
    pub fn resume(&mut self) -> Result<(), LaunchError> {
        if self.child.is_some() && self.paused {
            self.signal(libc::SIGCONT)?;
        }
        self.paused = false;
        Ok(())
    }

    fn signal(&self, signal: libc::c_int) -> Result<(), LaunchError> {
        let node_id = self.spec.node_id;
        let child = self
            .child
            .as_ref()
            .ok_or(LaunchError::NotRunning { node_id })?;
        let pid =
            libc::pid_t::try_from(child.id()).map_err(|_| LaunchError::NotRunning { node_id })?;
        // SAFETY: kill(2) on a child we spawned and have not reaped (so the pid is still ours);
        // no memory is shared.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(self.io("signalling the process")(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// The whole log (every start's output).
    pub fn log(&self) -> String {
        std::fs::read(&self.spec.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log, or why it could not be read.
    pub fn log_tail(&self, lines: usize) -> String {
        match std::fs::read(&self.spec.log) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(error) => format!("(cannot read {}: {error})", self.spec.log.display()),
        }
    }

    /// An I/O failure while doing `what` to this node, for `map_err`.
    fn io(&self, what: &'static str) -> impl FnOnce(std::io::Error) -> LaunchError {
        let node_id = self.spec.node_id;
        move |source| LaunchError::Io {
            what,
            node_id,
            source,
        }
    }
}

impl Drop for PercydProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in for percyd: a shell script (its arguments are appended to `args`).
    fn fake_percyd(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("fake-percyd");
        let script = format!(
            "#!/bin/sh\necho \"$@\" >> {}\n{body}\n",
            dir.join("args").display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Writes the address a real node would have bound to its `--address-file`, then waits.
    const BINDS: &str = r#"while [ "$1" != "" ]; do
  if [ "$1" = "--address-file" ]; then echo 127.0.0.1:4567 > "$2"; fi
  shift
done
exec sleep 60"#;

    #[test]
    fn learns_the_bound_port_and_restarts_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let binary = fake_percyd(dir.path(), BINDS);
        let spec = PercydSpec {
            peers: BTreeMap::from([(1, "127.0.0.1:1111".to_string())]),
            ..PercydSpec::on_any_port(&binary, 2, &dir.path().join("node-2"))
        }
        .arg(["--snapshot-every", "5"]);
        let mut node = PercydProcess::start(spec, Duration::from_secs(20)).unwrap();
        assert_eq!(node.addr(), Some("127.0.0.1:4567".parse().unwrap()));
        node.kill().unwrap();
        assert!(!node.is_started());
        node.spawn().unwrap();
        assert!(node.is_running());
        // The script logs its arguments once it runs: wait for the second start's line.
        let deadline = Instant::now() + Duration::from_secs(20);
        let args = loop {
            let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
            if args.lines().count() >= 2 || Instant::now() >= deadline {
                break args;
            }
            std::thread::sleep(POLL);
        };
        node.kill().unwrap();
        let starts: Vec<&str> = args.lines().collect();
        assert_eq!(starts.len(), 2, "{args}");
        assert!(
            starts[0].contains("--listen 127.0.0.1:0 --peers 1=127.0.0.1:1111,2=127.0.0.1:0")
                && starts[0].contains("--address-file"),
            "{}",
            starts[0]
        );
        // The restart comes back where the node bound: its peers know it by that address.
        assert!(
            starts[1].contains("--listen 127.0.0.1:4567 --peers 1=127.0.0.1:1111,2=127.0.0.1:4567")
                && !starts[1].contains("--address-file")
                && starts[1].ends_with("--snapshot-every 5"),
            "{}",
            starts[1]
        );
    }

    #[test]
    fn a_node_that_dies_before_binding_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let binary = fake_percyd(dir.path(), "echo 'percyd: bad --peers' >&2; exit 3");
        let spec = PercydSpec::on_any_port(&binary, 1, &dir.path().join("node-1"));
        let error = PercydProcess::start(spec, Duration::from_secs(20)).unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(error, LaunchError::Exited { node_id: 1, .. }),
            "{text}"
        );
        assert!(
            text.contains("first start") && text.contains("percyd: bad --peers"),
            "{text}"
        );
    }

    #[test]
    fn a_node_that_never_reports_its_port_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let binary = fake_percyd(dir.path(), "exec sleep 60");
        let spec = PercydSpec::on_any_port(&binary, 1, &dir.path().join("node-1"));
        let error = PercydProcess::start(spec, Duration::from_millis(300)).unwrap_err();
        assert!(
            matches!(error, LaunchError::NoAddress { node_id: 1, .. }),
            "{error}"
        );
    }
}
