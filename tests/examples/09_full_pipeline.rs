//! 09 — The full pipeline: three `percyd` processes, three `percyctl worker --repo` processes
//! whose "LLM" is a shell script, and a plan of six dependent tasks against a throwaway git
//! repository. Every task runs in its own worktree on `percy/<task-id>`, is committed by its
//! agent and merged into `main` under the cluster merge lock (fenced); tasks that append to
//! the same file at the same time are settled by a scripted resolver. At the end `main` has
//! one merge commit per task and its build passes.
//!
//! `cargo run -p percy-tests --example 09_full_pipeline`
//!
//! Needs `sh` (the scripted LLM, the resolver and the project's build are shell scripts).

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use common::{check, init_bare_repository, say, step};
use percy_client::{Client, Consistency, TaskStatus};
use percy_tests::binaries::percyctl_binary;
use percy_tests::cluster::{Cluster, ClusterConfig, LEADER_TIMEOUT};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The plan's id.
const PLAN_ID: &str = "pipeline";
/// The branch tasks start from and are merged into.
const TARGET: &str = "main";
/// Workers, each running one task at a time.
const WORKERS: [&str; 3] = ["llm-1", "llm-2", "llm-3"];
/// How long the whole plan may take (it takes seconds; a loaded 2-core CI box is slower).
const PLAN_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one attempt of a task may run before the worker gives up on it.
const TASK_TIMEOUT: &str = "60s";
/// How long a `percyctl` one-shot command (submit, status) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the project's build may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a worker may take to exit after SIGTERM (its grace period is shorter).
const WORKER_EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Grace period the workers give running commands at shutdown.
const WORKER_GRACE: &str = "5s";
/// Pause between two looks at a process that should exit.
const EXIT_POLL: Duration = Duration::from_millis(100);

/// The plan: (task id, what it needs). Each task adds module `src/<id>.sh` and appends its
/// name to `modules.txt`, the file every task touches. `core` and `logging` start at once,
/// `parser` and `render` both build on `core` (a diamond closed by `cli`), `release` is last.
const PLAN: [(&str, &[&str]); 6] = [
    ("core", &[]),
    ("logging", &[]),
    ("parser", &["core"]),
    ("render", &["core", "logging"]),
    ("cli", &["parser", "render"]),
    ("release", &["cli"]),
];

/// The scripted "LLM" each worker runs for a task (in the task's worktree): it reads the
/// module name from the title and what it needs from the description (stdin), checks that
/// its base already has those modules (dependents start from their dependencies' merged
/// code), writes the module and lists it in the shared `modules.txt`.
const LLM_SCRIPT: &str = r##"#!/bin/sh
set -eu
name=${PERCY_TASK_TITLE##* }
needs=$(sed -n 's/^needs: *//p')
echo "$PERCY_AGENT_NAME: writing module $name (needs: ${needs:-nothing})"
for dep in $needs; do
  if [ ! -f "src/$dep.sh" ]; then
    echo "src/$dep.sh is missing: my base does not contain $dep" >&2
    exit 1
  fi
done
sleep 0.3 # thinking
mkdir -p src
{
  echo "# module $name, written by $PERCY_AGENT_NAME for task $PERCY_TASK_ID"
  echo "# needs: $needs"
  echo "$name() {"
  for dep in $needs; do echo "  $dep >/dev/null"; done
  echo "  echo $name"
  echo "}"
} > "src/$name.sh"
echo "$name" >> modules.txt
"##;

/// The conflict "LLM": `modules.txt` is a list, so a conflict there is settled by keeping
/// every line of both sides (the target's first); anything else stays unresolved. Each
/// resolution is recorded in `$RESOLUTIONS` for the example to show.
const RESOLVER_SCRIPT: &str = r##"#!/bin/sh
set -eu
case "$PERCY_CONFLICT_PATH" in
  modules.txt)
    awk '!seen[$0]++' "$PERCY_OURS" "$PERCY_THEIRS" > "$PERCY_OUTPUT"
    echo "task $PERCY_TASK_ID: $PERCY_CONFLICT_KIND conflict in modules.txt settled as the union" >> "$RESOLUTIONS"
    ;;
  *)
    echo "cannot resolve $PERCY_CONFLICT_PATH" >&2
    exit 1
    ;;
esac
"##;

/// The project's build: every module listed in `modules.txt` exists, parses, defines its
/// function and has the modules it needs; every module file is listed; then every module
/// is loaded and run.
const BUILD_SCRIPT: &str = r##"#!/bin/sh
set -eu
modules=$(grep -v '^#' modules.txt | grep -v '^$' || true)
for m in $modules; do
  f="src/$m.sh"
  [ -f "$f" ] || { echo "build: $m is listed but $f is missing" >&2; exit 1; }
  sh -n "$f" || { echo "build: $f does not parse" >&2; exit 1; }
  grep -q "^$m() {" "$f" || { echo "build: $f does not define $m()" >&2; exit 1; }
  for dep in $(sed -n 's/^# needs: *//p' "$f"); do
    grep -qx "$dep" modules.txt || { echo "build: $m needs $dep, which is not listed" >&2; exit 1; }
  done
done
for f in src/*.sh; do
  [ -e "$f" ] || continue
  m=$(basename "$f" .sh)
  grep -qx "$m" modules.txt || { echo "build: $f is not listed in modules.txt" >&2; exit 1; }
done
for m in $modules; do . "src/$m.sh"; done
count=0
for m in $modules; do
  [ "$("$m")" = "$m" ] || { echo "build: $m() does not run" >&2; exit 1; }
  count=$((count + 1))
done
echo "build ok: $count modules"
"##;

#[tokio::main]
async fn main() -> Result<()> {
    let scratch = tempfile::tempdir().context("creating a temp dir")?;
    let root = scratch.path();

    step("Start three percyd nodes (real processes on free loopback ports)");
    let percyctl = percyctl_binary()?;
    let mut cluster = Cluster::start(&ClusterConfig {
        nodes: 3,
        dir: root.join("cluster"),
        extra_args: Vec::new(),
        secure: false,
        power_loss: false,
    })?;
    let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await?;
    let endpoints = cluster.endpoints();
    say(format!(
        "nodes at {}; node {leader} leads",
        endpoints.join(", ")
    ));
    let client = Client::connect(&endpoints).await?;
    let ctl = Percyctl {
        binary: percyctl,
        endpoints: endpoints.join(","),
    };

    step("Create a throwaway git repository with a tiny project that builds");
    let repo_dir = root.join("app.git");
    create_repository(&repo_dir)?;
    let built = build(&export_tree(&repo_dir, root, "initial")?).await?;
    say(format!(
        "{} (bare): README, build.sh, modules.txt (no modules yet); `sh build.sh` says: {built}",
        repo_dir.display()
    ));

    step("Start three workers, each running the scripted LLM in a worktree per task");
    let llm = write_script(root, "llm.sh", LLM_SCRIPT)?;
    let resolver = write_script(root, "resolve.sh", RESOLVER_SCRIPT)?;
    let resolutions = root.join("resolutions.log");
    let mut workers = Vec::new();
    for name in WORKERS {
        workers.push(Process::spawn_worker(
            &ctl,
            root,
            name,
            &repo_dir,
            &format!("sh {}", llm.display()),
            &format!(
                "RESOLUTIONS={} sh {}",
                resolutions.display(),
                resolver.display()
            ),
        )?);
    }
    wait_for_workers(&client).await?;
    say(format!(
        "{} registered; each: percyctl worker --repo {} --exec 'sh llm.sh' --resolver 'sh resolve.sh'",
        WORKERS.join(", "),
        repo_dir.display()
    ));

    step("Submit the plan (`percyctl plan submit pipeline.toml`)");
    let plan_file = root.join("pipeline.toml");
    std::fs::write(&plan_file, plan_toml())?;
    for (id, needs) in PLAN {
        say(format!("{id:<8} depends on {}", list_or_none(needs)));
    }
    let submitted = ctl
        .output(&["plan", "submit", &plan_file.display().to_string()])
        .await?;
    print_indented(&submitted);

    step("Follow it with `percyctl plan watch` until every task has finished");
    let started = Instant::now();
    let watched = ctl.watch_plan().await;
    say(format!("(after {:.1?})", started.elapsed()));
    if let Err(err) = watched {
        let status = ctl
            .output(&["plan", "status", PLAN_ID])
            .await
            .unwrap_or_default();
        let logs: String = workers
            .iter()
            .map(|w| format!("--- {}\n{}", w.name, w.log()))
            .collect();
        bail!("{err:#}\nplan status:\n{status}\nworker logs:\n{logs}");
    }

    step("Each task's final state (`percyctl plan status`)");
    print_indented(&ctl.output(&["plan", "status", PLAN_ID]).await?);
    let plan = client.get_plan(PLAN_ID, Consistency::Linearizable).await?;
    ensure!(
        plan.tasks.len() == PLAN.len(),
        "the plan has {} tasks, expected {}",
        plan.tasks.len(),
        PLAN.len()
    );
    for task in &plan.tasks {
        let branch = task
            .result
            .as_ref()
            .map(|r| r.branch.as_str())
            .unwrap_or("");
        ensure!(
            task.status() == TaskStatus::Completed,
            "task {} ended {:?}: {}",
            task.id,
            task.status(),
            task.error
        );
        ensure!(
            branch == format!("percy/{}", task.id),
            "task {} recorded branch {branch:?}",
            task.id
        );
    }
    say("ok: every task completed, each recording its branch percy/<task-id>");

    step("What the workers logged about merging");
    let mut merge_lines = 0;
    for worker in &workers {
        for line in worker.log().lines().map(strip_ansi) {
            let merged = line.contains("repo: merged task_id=");
            if merged || line.contains("committed the task's work") {
                merge_lines += usize::from(merged);
                say(format!("{}: {}", worker.name, without_timestamp(&line)));
            }
        }
    }
    check(
        merge_lines == PLAN.len(),
        "one `merged` line per task in the worker logs",
    )?;
    let resolved = std::fs::read_to_string(&resolutions).unwrap_or_default();
    if resolved.is_empty() {
        say("no two tasks raced on modules.txt this time: every merge was clean");
    } else {
        for line in resolved.lines() {
            say(format!("resolver: {line}"));
        }
    }

    step("History of main (first parent), with each merge's trailers");
    let merges = show_history(&repo_dir)?;
    let mut expected: Vec<&str> = PLAN.iter().map(|(id, _)| *id).collect();
    expected.sort_unstable();
    let mut merged: Vec<&str> = merges.iter().map(|(task, _)| task.as_str()).collect();
    merged.sort_unstable();
    check(
        merged == expected,
        "exactly one merge commit per task on main",
    )?;
    let fences: Vec<u64> = merges.iter().rev().map(|(_, fence)| *fence).collect();
    check(
        fences.windows(2).all(|w| w[0] < w[1]),
        "the Percy-Fence tokens grow along main",
    )?;
    let worktrees = git2::Repository::open(&repo_dir)?.worktrees()?.len();
    check(worktrees == 0, "no task worktree is left behind")?;

    step("Build main");
    let checkout = export_tree(&repo_dir, root, "final")?;
    let built = build(&checkout).await?;
    let modules = std::fs::read_to_string(checkout.join("modules.txt"))?;
    say(format!(
        "modules.txt on main: {}",
        modules.lines().collect::<Vec<_>>().join(" | ")
    ));
    say(format!("`sh build.sh` on a checkout of main: {built}"));
    check(
        built == format!("build ok: {} modules", PLAN.len()),
        "main builds with every module",
    )?;

    step("Stop the workers (SIGTERM) and the nodes");
    for mut worker in workers {
        let status = worker.terminate().await?;
        say(format!("{} exited with {status}", worker.name));
        ensure!(
            status.success(),
            "{} exited with {status}:\n{}",
            worker.name,
            worker.log()
        );
    }
    drop(client);
    drop(cluster);
    say("nodes killed; the temp dir goes with them");
    println!("\ndone");
    Ok(())
}

/// The plan file, in TOML.
fn plan_toml() -> String {
    let mut toml = format!("id = \"{PLAN_ID}\"\n");
    for (id, needs) in PLAN {
        let deps: Vec<String> = needs.iter().map(|d| format!("\"{d}\"")).collect();
        toml.push_str(&format!(
            "\n[[tasks]]\nid = \"{id}\"\ntitle = \"Add module {id}\"\n\
             description = \"Write src/{id}.sh and list it in modules.txt.\\nneeds: {}\"\n\
             depends_on = [{}]\ntimeout = \"{TASK_TIMEOUT}\"\n",
            needs.join(" "),
            deps.join(", ")
        ));
    }
    toml
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "nothing".to_owned()
    } else {
        items.join(", ")
    }
}

/// `git init --bare -b main` with the project's files in one commit, done with git2. Bare,
/// like a shared repository: merges move `main` without anyone's checkout lagging behind.
fn create_repository(dir: &Path) -> Result<()> {
    let files: [(&str, &[u8]); 3] = [
        (
            "README",
            b"A tiny project: modules in src/, listed in modules.txt. Build: sh build.sh\n",
        ),
        ("build.sh", BUILD_SCRIPT.as_bytes()),
        ("modules.txt", b"# modules, one per line\n"),
    ];
    init_bare_repository(dir, TARGET, &files, "Initial project")?;
    Ok(())
}

/// Writes the files of `main`'s tip into a fresh directory under `root`.
fn export_tree(repo_dir: &Path, root: &Path, name: &str) -> Result<PathBuf> {
    let repo = git2::Repository::open(repo_dir)?;
    let tree = repo
        .find_branch(TARGET, git2::BranchType::Local)?
        .get()
        .peel_to_tree()?;
    let out = root.join(format!("checkout-{name}"));
    std::fs::create_dir_all(&out)?;
    let mut failure = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let path = out.join(dir).join(entry.name().unwrap_or("?"));
        let written = match entry.kind() {
            Some(git2::ObjectType::Tree) => std::fs::create_dir_all(&path).map_err(Into::into),
            Some(git2::ObjectType::Blob) => repo
                .find_blob(entry.id())
                .map_err(anyhow::Error::from)
                .and_then(|blob| std::fs::write(&path, blob.content()).map_err(Into::into)),
            _ => Ok(()),
        };
        match written {
            Ok(()) => git2::TreeWalkResult::Ok,
            Err(err) => {
                failure = Some(err.context(format!("writing {}", path.display())));
                git2::TreeWalkResult::Abort
            }
        }
    })?;
    match failure {
        Some(err) => Err(err),
        None => Ok(out),
    }
}

/// Runs `sh build.sh` in `dir`; its last line on success.
async fn build(dir: &Path) -> Result<String> {
    let output = tokio::process::Command::new("sh")
        .arg("build.sh")
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BUILD_TIMEOUT, output)
        .await
        .with_context(|| format!("the build still runs after {BUILD_TIMEOUT:?}"))??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "the build failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout.lines().last().unwrap_or("").to_owned())
}

/// Prints `main`'s first-parent history like `git log --graph --first-parent`, each merge
/// with its trailers and the task commit it brought in; returns (task, fence) per merge,
/// newest first.
fn show_history(repo_dir: &Path) -> Result<Vec<(String, u64)>> {
    let repo = git2::Repository::open(repo_dir)?;
    let mut commit = repo
        .find_branch(TARGET, git2::BranchType::Local)?
        .get()
        .peel_to_commit()?;
    let mut merges = Vec::new();
    loop {
        let message = commit.message().unwrap_or("");
        let short = short_id(commit.id());
        let summary = commit.summary().ok().flatten().unwrap_or("");
        if commit.parent_count() < 2 {
            say(format!("* {short} {summary}"));
        } else {
            let trailers = trailers(message);
            let task = trailers.get("Percy-Task").cloned().unwrap_or_default();
            let fence = trailers.get("Percy-Fence").cloned().unwrap_or_default();
            say(format!(
                "*   {short} {summary}  [Percy-Task: {task}, Percy-Fence: {fence}]"
            ));
            say("|\\");
            let mut walk = repo.revwalk()?;
            walk.push(commit.parent_id(1)?)?;
            walk.hide(commit.parent_id(0)?)?;
            for id in walk {
                let side = repo.find_commit(id?)?;
                say(format!(
                    "| * {} {} (by {})",
                    short_id(side.id()),
                    side.summary().ok().flatten().unwrap_or(""),
                    side.author().name().unwrap_or("?").to_owned()
                ));
            }
            say("|/");
            ensure!(!task.is_empty(), "merge {short} has no Percy-Task trailer");
            let fence: u64 = fence
                .parse()
                .with_context(|| format!("merge {short} has no numeric Percy-Fence trailer"))?;
            merges.push((task, fence));
        }
        if commit.parent_count() == 0 {
            break;
        }
        commit = commit.parent(0)?;
    }
    Ok(merges)
}

fn trailers(message: &str) -> BTreeMap<String, String> {
    git2::message_trailers_strs(message)
        .map(|t| {
            t.iter()
                .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn short_id(id: git2::Oid) -> String {
    id.to_string()[..7].to_owned()
}

fn write_script(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

async fn wait_for_workers(client: &Client) -> Result<()> {
    let deadline = tokio::time::Instant::now() + common::SETTLE_TIMEOUT;
    loop {
        let agents = client.list_agents(false, Consistency::Linearizable).await?;
        if WORKERS
            .iter()
            .all(|name| agents.agents.iter().any(|a| a.name == *name))
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the workers did not register within {:?}",
                common::SETTLE_TIMEOUT
            );
        }
        tokio::time::sleep(common::POLL_INTERVAL).await;
    }
}

fn print_indented(text: &str) {
    for line in text.lines() {
        say(line);
    }
}

/// Drops the terminal colour codes tracing may add.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A log line from its level on (the timestamp is noise here).
fn without_timestamp(line: &str) -> &str {
    line.find(" INFO ")
        .map_or(line, |at| line[at + 1..].trim_start())
}

/// Running `percyctl` against the cluster.
struct Percyctl {
    binary: PathBuf,
    endpoints: String,
}

impl Percyctl {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg("--endpoints")
            .arg(&self.endpoints)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs a one-shot command; its stdout, or an error with its stderr.
    async fn output(&self, args: &[&str]) -> Result<String> {
        let output = tokio::time::timeout(COMMAND_TIMEOUT, self.command(args).output())
            .await
            .with_context(|| format!("percyctl {} took over {COMMAND_TIMEOUT:?}", args.join(" ")))?
            .context("running percyctl")?;
        ensure!(
            output.status.success(),
            "percyctl {} exited with {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `percyctl plan watch`, its lines printed as they come, bounded by [`PLAN_TIMEOUT`];
    /// fine when it exits 0 (every task completed).
    async fn watch_plan(&self) -> Result<()> {
        let mut child = self
            .command(&["plan", "watch", PLAN_ID])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting percyctl plan watch")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let follow = async {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(line) = lines.next_line().await? {
                say(line);
            }
            let mut errors = String::new();
            let mut lines = BufReader::new(stderr).lines();
            while let Some(line) = lines.next_line().await? {
                errors.push_str(&line);
                errors.push('\n');
            }
            let status = child.wait().await?;
            anyhow::Ok((status, errors))
        };
        // On timeout the child is dropped, and killed (kill_on_drop).
        let (status, errors) = tokio::time::timeout(PLAN_TIMEOUT, follow)
            .await
            .map_err(|_| anyhow!("the plan did not finish within {PLAN_TIMEOUT:?}"))??;
        ensure!(
            status.success(),
            "percyctl plan watch exited with {status}: {errors}"
        );
        Ok(())
    }
}

/// A `percyctl worker` process, logging to a file; SIGKILLed when dropped.
struct Process {
    name: String,
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl Process {
    fn spawn_worker(
        ctl: &Percyctl,
        root: &Path,
        name: &str,
        repo: &Path,
        exec: &str,
        resolver: &str,
    ) -> Result<Process> {
        let log = root.join(format!("worker-{name}.log"));
        let out = OpenOptions::new().create(true).append(true).open(&log)?;
        let child = std::process::Command::new(&ctl.binary)
            .arg("--endpoints")
            .arg(&ctl.endpoints)
            .args(["worker", "--name", name, "--exec", exec])
            .arg("--repo")
            .arg(repo)
            .args(["--target", TARGET, "--resolver", resolver])
            .args(["--grace", WORKER_GRACE])
            .arg("--inbox-dir")
            .arg(root.join(format!("inbox-{name}")))
            .env("RUST_LOG", "warn,percy_worker=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawning worker {name}"))?;
        Ok(Process {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (bounded by [`WORKER_EXIT_TIMEOUT`]).
    async fn terminate(&mut self) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("already stopped")?;
        let pid = libc::pid_t::try_from(child.id())?;
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            bail!("kill({pid}, SIGTERM): {}", std::io::Error::last_os_error());
        }
        let deadline = tokio::time::Instant::now() + WORKER_EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "worker {} still runs {WORKER_EXIT_TIMEOUT:?} after SIGTERM",
                    self.name
                );
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
