//! 08 — The git merge machinery on its own (no cluster): each task works in its own worktree
//! on `percy/<task-id>`, a clean merge makes a fenced merge commit on `main`, and a content
//! conflict is refused (leaving `main` untouched) until a resolver settles it — a resolver
//! that leaves conflict markers is not believed; a scripted "LLM" resolver is.
//!
//! `cargo run -p percy-tests --example 08_merge`
//!
//! Needs `sh` (the resolvers are shell commands).

mod common;

use std::path::Path;

use anyhow::{bail, Context, Result};
use common::{check, init_bare_repository, say, step};
use percy_git::{
    merge_branch, CommitOutcome, MergeOutcome, MergeRequest, ResolverCommand, StaticFence,
    TaskWorktree,
};

/// The target branch.
const TARGET: &str = "main";

/// A careless resolver: hands back git's conflict markers as if they were a resolution.
const MARKER_RESOLVER: &str = r##"{
  echo "<<<<<<< ours"; cat "$PERCY_OURS"; echo "======="; cat "$PERCY_THEIRS"; echo ">>>>>>> theirs"
} > "$PERCY_OUTPUT""##;

/// The scripted "LLM" resolver: keeps both greetings, the target's first.
const LLM_RESOLVER: &str = r##"echo "resolving $PERCY_CONFLICT_PATH ($PERCY_CONFLICT_KIND) for task $PERCY_TASK_ID" >&2
cat "$PERCY_OURS" "$PERCY_THEIRS" > "$PERCY_OUTPUT""##;

fn main() -> Result<()> {
    let scratch = tempfile::tempdir().context("creating a temp dir")?;
    let repo_dir = scratch.path().join("app.git");

    step("A bare repository whose main has greeting.txt = \"hello\"");
    let repo = create_repository(&repo_dir)?;
    say(repo_dir.display());

    step("Task `notes` adds a file in its worktree; merging it is clean");
    let notes = task_work(&repo_dir, "notes", "notes.txt", "merges are fenced\n")?;
    let outcome = merge(&repo_dir, &notes, 1, None)?;
    say(describe(&outcome));
    check(
        matches!(outcome, MergeOutcome::Merged { ref resolved, .. } if resolved.is_empty()),
        "a merge commit, nothing to resolve",
    )?;

    step("Tasks `en` and `fr` both rewrite greeting.txt, from the same base");
    let en = TaskWorktree::create(&repo_dir, "en", TARGET)?;
    let fr = TaskWorktree::create(&repo_dir, "fr", TARGET)?;
    let en = finish(en, "greeting.txt", "hello, world\n")?;
    let fr = finish(fr, "greeting.txt", "bonjour, le monde\n")?;
    let outcome = merge(&repo_dir, &en, 2, None)?;
    say(format!("en: {}", describe(&outcome)));
    check(
        matches!(outcome, MergeOutcome::Merged { .. }),
        "en merges cleanly",
    )?;

    step("fr conflicts with what en merged: without a resolver the merge is refused");
    let before = tip(&repo)?;
    let outcome = merge(&repo_dir, &fr, 3, None)?;
    say(format!("fr: {}", describe(&outcome)));
    check(
        matches!(&outcome, MergeOutcome::Conflicted { paths } if paths.iter().any(|p| p.path == "greeting.txt")),
        "the conflict names greeting.txt",
    )?;
    check(tip(&repo)? == before, "main is untouched")?;

    step("A resolver that leaves conflict markers is not believed");
    let outcome = merge(&repo_dir, &fr, 3, Some(MARKER_RESOLVER))?;
    say(format!("fr: {}", describe(&outcome)));
    check(
        matches!(outcome, MergeOutcome::Conflicted { .. }),
        "still conflicted",
    )?;
    check(tip(&repo)? == before, "main is still untouched")?;

    step("The scripted LLM resolver settles it");
    let outcome = merge(&repo_dir, &fr, 3, Some(LLM_RESOLVER))?;
    say(format!("fr: {}", describe(&outcome)));
    check(
        matches!(&outcome, MergeOutcome::Merged { resolved, .. } if resolved.len() == 1),
        "merged, one path resolved",
    )?;
    let greeting = file_on_main(&repo, "greeting.txt")?;
    say(format!("greeting.txt on main: {:?}", greeting));
    check(
        greeting == "hello, world\nbonjour, le monde\n",
        "both greetings kept",
    )?;

    step("main's history: one fenced merge commit per task");
    let mut commit = repo
        .find_branch(TARGET, git2::BranchType::Local)?
        .get()
        .peel_to_commit()?;
    let mut merges = 0;
    loop {
        let message = commit.message().unwrap_or("");
        let trailers: Vec<String> = git2::message_trailers_strs(message)
            .map(|t| t.iter().map(|(k, v)| format!("{k}: {v}")).collect())
            .unwrap_or_default();
        say(format!(
            "{} {}  {}",
            &commit.id().to_string()[..7],
            commit.summary().ok().flatten().unwrap_or(""),
            trailers.join(", ")
        ));
        merges += usize::from(commit.parent_count() == 2);
        if commit.parent_count() == 0 {
            break;
        }
        commit = commit.parent(0)?;
    }
    check(merges == 3, "three merge commits (notes, en, fr)")?;
    println!("\ndone");
    Ok(())
}

fn create_repository(dir: &Path) -> Result<git2::Repository> {
    init_bare_repository(dir, TARGET, &[("greeting.txt", b"hello\n")], "Initial")
}

/// A worktree for `task` writing `content` to `file`, committed; returns the branch.
fn task_work(repo_dir: &Path, task: &str, file: &str, content: &str) -> Result<String> {
    finish(TaskWorktree::create(repo_dir, task, TARGET)?, file, content)
}

/// Writes the file in the worktree (what an agent would do), commits it as the agent and
/// removes the worktree; returns the branch.
fn finish(worktree: TaskWorktree, file: &str, content: &str) -> Result<String> {
    std::fs::write(worktree.path().join(file), content)?;
    let outcome = worktree.commit_all(
        "agent",
        "agent@percy.local",
        &format!("{}: write {file}", worktree.task_id()),
    )?;
    let CommitOutcome::Committed(id) = outcome else {
        bail!("{}: nothing committed", worktree.task_id());
    };
    let branch = worktree.branch().to_owned();
    say(format!("{branch}: committed {}", &id.to_string()[..7]));
    worktree.remove()?;
    Ok(branch)
}

fn merge(
    repo_dir: &Path,
    branch: &str,
    fence: u64,
    resolver: Option<&str>,
) -> Result<MergeOutcome> {
    let resolver = resolver.map(ResolverCommand::new);
    let task = branch.trim_start_matches("percy/");
    Ok(merge_branch(&MergeRequest {
        repo_dir,
        branch,
        into: TARGET,
        resolver: resolver.as_ref(),
        fence: &StaticFence::new(fence),
        allow_fast_forward: false,
        task_id: Some(task),
    })?)
}

fn describe(outcome: &MergeOutcome) -> String {
    match outcome {
        MergeOutcome::Merged { commit, resolved } => {
            let mut text = format!("merged as {}", &commit.to_string()[..7]);
            for path in resolved {
                text.push_str(&format!("; resolved {} ({})", path.path, path.detail));
            }
            text
        }
        MergeOutcome::FastForwarded { commit } => format!("fast-forwarded to {commit}"),
        MergeOutcome::UpToDate { tip } => format!("already contained in {tip}"),
        MergeOutcome::Conflicted { paths } => {
            let list: Vec<String> = paths
                .iter()
                .map(|p| format!("{} ({}: {})", p.path, p.kind, p.detail))
                .collect();
            format!("refused, conflicts in {}", list.join(", "))
        }
    }
}

fn tip(repo: &git2::Repository) -> Result<git2::Oid> {
    Ok(repo.refname_to_id(&format!("refs/heads/{TARGET}"))?)
}

fn file_on_main(repo: &git2::Repository, path: &str) -> Result<String> {
    let tree = repo
        .find_branch(TARGET, git2::BranchType::Local)?
        .get()
        .peel_to_tree()?;
    let blob = tree
        .get_path(Path::new(path))?
        .to_object(repo)?
        .peel_to_blob()?;
    Ok(String::from_utf8_lossy(blob.content()).into_owned())
}
