//! Checks that need no state: sizes, names, lock paths, plan shape (duplicate ids, cycles),
//! JSON validity of definition specs.
//!
//! The API edge calls [`validate_command`] before proposing, so bad input is refused without a
//! Raft round trip; [`crate::StateMachine::apply`] calls it again first thing, because the log
//! is the last line of defence and a replayed log must refuse what it refused the first time.

use std::collections::{BTreeMap, BTreeSet};

use crate::canonical::canonical_definition_spec;
use crate::command::{Command, Op};
use crate::error::CommandError;
use crate::limits::*;
use crate::path::{lock_paths_conflict, normalize_lock_path};
use crate::task::{TaskResult, TaskSpec};

/// [`validate`] of the command's op.
pub fn validate_command(command: &Command) -> Result<(), CommandError> {
    validate(&command.op)
}

/// Everything about `op` that can be checked without the state.
pub fn validate(op: &Op) -> Result<(), CommandError> {
    match op {
        Op::RegisterAgent {
            name,
            node,
            capabilities,
            labels,
            max_concurrent,
            ttl_ms,
        } => {
            validate_name("agent name", name)?;
            validate_len("node", node, MAX_NAME_LEN)?;
            validate_capabilities("capabilities", capabilities)?;
            validate_labels("labels", labels)?;
            if *max_concurrent > MAX_CONCURRENT_TASKS {
                return Err(CommandError::invalid(format!(
                    "max_concurrent is {max_concurrent} (at most {MAX_CONCURRENT_TASKS})"
                )));
            }
            if *ttl_ms != 0 && !(MIN_AGENT_TTL_MS..=MAX_AGENT_TTL_MS).contains(ttl_ms) {
                return Err(CommandError::invalid(format!(
                    "agent ttl_ms is {ttl_ms} (between {MIN_AGENT_TTL_MS} and {MAX_AGENT_TTL_MS}, or 0 for the default)"
                )));
            }
            Ok(())
        }
        Op::DeregisterAgent { .. } | Op::ExpireAgents { .. } | Op::CheckpointAgents { .. } => {
            Ok(())
        }
        Op::CheckpointAgentLoads { loads } => {
            if loads.len() > MAX_LOADS_PER_CHECKPOINT {
                return Err(CommandError::invalid(format!(
                    "{} agent loads in one checkpoint (at most {MAX_LOADS_PER_CHECKPOINT})",
                    loads.len()
                )));
            }
            Ok(())
        }
        Op::SubmitTask(spec) => validate_task_spec(spec),
        Op::SubmitPlan { plan_id, tasks } => validate_plan(plan_id.as_deref(), tasks),
        Op::ClaimTask { task_id, .. } | Op::StartTask { task_id, .. } => {
            validate_name("task id", task_id)
        }
        Op::ClaimNext { .. } | Op::ClaimNextStarted { .. } => Ok(()),
        Op::CompleteTask {
            task_id, result, ..
        }
        | Op::CompleteAndClaimNext {
            task_id, result, ..
        } => {
            validate_name("task id", task_id)?;
            validate_task_result(result)
        }
        Op::FailTask { task_id, error, .. } => {
            validate_name("task id", task_id)?;
            validate_len("error", error, MAX_RESULT_LEN)
        }
        Op::CancelTask { task_id, reason } | Op::RequeueTask { task_id, reason } => {
            validate_name("task id", task_id)?;
            validate_len("reason", reason, MAX_RESULT_LEN)
        }
        Op::AcquireLocks {
            paths,
            task_id,
            ttl_ms,
            wait_ms,
            ..
        } => {
            normalize_acquire_paths(paths)?;
            if let Some(task_id) = task_id {
                validate_name("task id", task_id)?;
            }
            if let Some(ttl) = ttl_ms {
                if *ttl == 0 || *ttl > MAX_LOCK_TTL_MS {
                    return Err(CommandError::invalid(format!(
                        "lock ttl_ms is {ttl} (between 1 and {MAX_LOCK_TTL_MS}; omit it for no TTL)"
                    )));
                }
            }
            if let Some(wait) = wait_ms {
                if *wait > MAX_LOCK_WAIT_MS {
                    return Err(CommandError::invalid(format!(
                        "lock wait_ms is {wait} (at most {MAX_LOCK_WAIT_MS})"
                    )));
                }
            }
            Ok(())
        }
        Op::ReleaseLocks { paths, .. } => normalize_release_paths(paths).map(|_| ()),
        Op::ReleaseAllLocks { .. } => Ok(()),
        Op::PutConfig { key, value, .. } => {
            validate_name("config key", key)?;
            if value.len() > MAX_CONFIG_VALUE_LEN {
                return Err(CommandError::invalid(format!(
                    "config value is {} bytes long (at most {MAX_CONFIG_VALUE_LEN})",
                    value.len()
                )));
            }
            Ok(())
        }
        Op::DeleteConfig { key, .. } => validate_name("config key", key),
        Op::ApplyDefinitions { definitions } => {
            if definitions.len() > MAX_DEFINITIONS_PER_APPLY {
                return Err(CommandError::invalid(format!(
                    "{} definitions in one apply (at most {MAX_DEFINITIONS_PER_APPLY})",
                    definitions.len()
                )));
            }
            let mut names = BTreeSet::new();
            for definition in definitions {
                validate_name("definition name", &definition.name)?;
                if !names.insert(definition.name.as_str()) {
                    return Err(CommandError::invalid(format!(
                        "definition {:?} appears twice in one apply",
                        definition.name
                    )));
                }
                canonical_definition_spec(&definition.name, &definition.spec_json)?;
                // The documented loop keys (`command`, `interval`, …) must make sense; other
                // keys are data.
                crate::loop_spec::LoopSpec::parse(&definition.name, &definition.spec_json)?;
            }
            Ok(())
        }
        Op::SetDefinitionState { name, .. } => validate_name("definition name", name),
        Op::SendMessage { from, body, .. } => {
            validate_name("sender", from)?;
            validate_len("message body", body, MAX_MESSAGE_LEN)
        }
        Op::Tick => Ok(()),
        Op::CreateToken { spec, .. } => validate_token_spec(spec),
        Op::RevokeToken { .. } => Ok(()),
        Op::ClaimDefinitionRun { name, .. }
        | Op::StartIteration { name, .. }
        | Op::FinishIteration { name, .. }
        | Op::ReleaseDefinitionRun { name, .. } => validate_name("definition name", name),
        Op::SteerDefinition { name, from, body } => {
            validate_name("definition name", name)?;
            validate_len("sender", from, MAX_NAME_LEN)?;
            if body.trim().is_empty() {
                return Err(CommandError::invalid("a steering message needs a body"));
            }
            validate_len("steering message", body, MAX_MESSAGE_LEN)
        }
    }
}

/// An identifier (agent name, task id, plan id, config key, definition name): non-empty, at
/// most [`MAX_NAME_LEN`] bytes, no control characters (they make logs and keys ambiguous).
pub fn validate_name(what: &str, value: &str) -> Result<(), CommandError> {
    if value.is_empty() {
        return Err(CommandError::invalid(format!("{what} is empty")));
    }
    validate_len(what, value, MAX_NAME_LEN)?;
    if value.chars().any(char::is_control) {
        return Err(CommandError::invalid(format!(
            "{what} {value:?} contains a control character"
        )));
    }
    Ok(())
}

fn validate_len(what: &str, value: &str, max: usize) -> Result<(), CommandError> {
    if value.len() > max {
        return Err(CommandError::invalid(format!(
            "{what} is {} bytes long (at most {max})",
            value.len()
        )));
    }
    Ok(())
}

fn validate_capabilities(what: &str, set: &BTreeSet<String>) -> Result<(), CommandError> {
    if set.len() > MAX_CAPABILITIES {
        return Err(CommandError::invalid(format!(
            "{} {what} (at most {MAX_CAPABILITIES})",
            set.len()
        )));
    }
    for item in set {
        if item.is_empty() {
            return Err(CommandError::invalid(format!("empty entry in {what}")));
        }
        validate_len(what, item, MAX_LABEL_LEN)?;
    }
    Ok(())
}

fn validate_labels(what: &str, labels: &BTreeMap<String, String>) -> Result<(), CommandError> {
    if labels.len() > MAX_LABELS {
        return Err(CommandError::invalid(format!(
            "{} {what} (at most {MAX_LABELS})",
            labels.len()
        )));
    }
    for (key, value) in labels {
        if key.is_empty() {
            return Err(CommandError::invalid(format!("empty key in {what}")));
        }
        validate_len(what, key, MAX_LABEL_LEN)?;
        validate_len(what, value, MAX_LABEL_LEN)?;
    }
    Ok(())
}

/// Sizes and shapes of one task spec.
pub fn validate_task_spec(spec: &TaskSpec) -> Result<(), CommandError> {
    if let Some(id) = &spec.id {
        validate_name("task id", id)?;
    }
    validate_len("task title", &spec.title, MAX_NAME_LEN)?;
    validate_len("task description", &spec.description, MAX_DESCRIPTION_LEN)?;
    if spec.payload.len() > MAX_PAYLOAD_LEN {
        return Err(CommandError::invalid(format!(
            "task payload is {} bytes long (at most {MAX_PAYLOAD_LEN})",
            spec.payload.len()
        )));
    }
    validate_capabilities("required capabilities", &spec.requires)?;
    validate_labels("selector labels", &spec.selector)?;
    if spec.depends_on.len() > MAX_DEPENDENCIES {
        return Err(CommandError::invalid(format!(
            "task has {} dependencies (at most {MAX_DEPENDENCIES})",
            spec.depends_on.len()
        )));
    }
    for dependency in &spec.depends_on {
        validate_name("dependency id", dependency)?;
        if spec.id.as_deref() == Some(dependency.as_str()) {
            return Err(CommandError::invalid(format!(
                "dependency cycle: {dependency} -> {dependency}"
            )));
        }
    }
    if spec.max_attempts > MAX_ATTEMPTS {
        return Err(CommandError::invalid(format!(
            "max_attempts is {} (at most {MAX_ATTEMPTS})",
            spec.max_attempts
        )));
    }
    Ok(())
}

fn validate_task_result(result: &TaskResult) -> Result<(), CommandError> {
    validate_len("result summary", &result.summary, MAX_RESULT_LEN)?;
    validate_len("result output tail", &result.output_tail, MAX_RESULT_LEN)?;
    if let Some(branch) = &result.branch {
        validate_len("result branch", branch, MAX_NAME_LEN)?;
    }
    Ok(())
}

fn validate_plan(plan_id: Option<&str>, tasks: &[TaskSpec]) -> Result<(), CommandError> {
    if let Some(plan_id) = plan_id {
        validate_name("plan id", plan_id)?;
    }
    if tasks.is_empty() {
        return Err(CommandError::invalid("plan has no tasks"));
    }
    if tasks.len() > MAX_PLAN_TASKS {
        return Err(CommandError::invalid(format!(
            "plan has {} tasks (at most {MAX_PLAN_TASKS})",
            tasks.len()
        )));
    }
    for spec in tasks {
        validate_task_spec(spec)?;
    }
    // Only explicit ids can be checked here (generated ones need the revision); apply checks
    // the plan again with every id resolved.
    let explicit: Vec<(&str, &[String])> = tasks
        .iter()
        .filter_map(|spec| {
            spec.id
                .as_deref()
                .map(|id| (id, spec.depends_on.as_slice()))
        })
        .collect();
    check_plan_graph(&explicit)
}

/// Duplicate ids inside a plan, and dependency cycles among its tasks (a cycle can only run
/// through tasks of the same plan: existing tasks never depend on new ones). The cycle is
/// named as `a -> b -> a`, where `x -> y` means "x depends on y".
pub(crate) fn check_plan_graph(tasks: &[(&str, &[String])]) -> Result<(), CommandError> {
    let mut position: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, (id, _)) in tasks.iter().enumerate() {
        if position.insert(id, i).is_some() {
            return Err(CommandError::invalid(format!(
                "task id {id} appears twice in the plan"
            )));
        }
    }
    // Edges to tasks outside the plan cannot be part of a cycle, so they are dropped here.
    let edges: Vec<Vec<usize>> = tasks
        .iter()
        .map(|(_, deps)| {
            deps.iter()
                .filter_map(|dep| position.get(dep.as_str()).copied())
                .collect()
        })
        .collect();
    if let Some(cycle) = find_cycle(&edges) {
        let names: Vec<&str> = cycle.iter().map(|&i| tasks[i].0).collect();
        return Err(CommandError::invalid(format!(
            "dependency cycle: {}",
            describe_cycle(&names)
        )));
    }
    Ok(())
}

/// `a -> b -> a`; a very long cycle keeps its two ends and says how much was left out, so the
/// message stays readable (a plan may hold 10,000 tasks).
fn describe_cycle(names: &[&str]) -> String {
    const KEEP: usize = 12;
    if names.len() <= 2 * KEEP {
        return names.join(" -> ");
    }
    format!(
        "{} -> ... ({} more) ... -> {}",
        names[..KEEP].join(" -> "),
        names.len() - 2 * KEEP,
        names[names.len() - KEEP..].join(" -> ")
    )
}

/// Iterative depth-first search (a plan may be 10,000 tasks deep: no recursion). Returns the
/// first cycle found as a closed walk `[a, b, …, a]`, in a deterministic order.
fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        Unvisited,
        OnStack,
        Done,
    }
    let mut colour = vec![Colour::Unvisited; edges.len()];
    for root in 0..edges.len() {
        if colour[root] != Colour::Unvisited {
            continue;
        }
        // (node, index of the next edge to follow)
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        colour[root] = Colour::OnStack;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&target) = edges[node].get(*next) {
                *next += 1;
                match colour[target] {
                    Colour::Unvisited => {
                        colour[target] = Colour::OnStack;
                        stack.push((target, 0));
                    }
                    Colour::OnStack => {
                        let start = stack.iter().position(|&(n, _)| n == target)?;
                        let mut cycle: Vec<usize> =
                            stack[start..].iter().map(|&(n, _)| n).collect();
                        cycle.push(target);
                        return Some(cycle);
                    }
                    Colour::Done => {}
                }
            } else {
                colour[node] = Colour::Done;
                stack.pop();
            }
        }
    }
    None
}

/// Normalised, de-duplicated paths of an acquire, in request order. Refuses an empty list,
/// too many paths, and two distinct paths of which one lies under the other (the request
/// would conflict with itself).
pub fn normalize_acquire_paths(paths: &[String]) -> Result<Vec<String>, CommandError> {
    if paths.is_empty() {
        return Err(CommandError::invalid("acquire names no lock path"));
    }
    let normalized = normalize_release_paths(paths)?;
    for (i, a) in normalized.iter().enumerate() {
        for b in &normalized[i + 1..] {
            if lock_paths_conflict(a, b) {
                return Err(CommandError::invalid(format!(
                    "lock paths {a} and {b} overlap in one request"
                )));
            }
        }
    }
    Ok(normalized)
}

/// Normalised, de-duplicated paths, in request order, at most
/// [`MAX_LOCK_PATHS_PER_ACQUIRE`] of them.
pub fn normalize_release_paths(paths: &[String]) -> Result<Vec<String>, CommandError> {
    if paths.len() > MAX_LOCK_PATHS_PER_ACQUIRE {
        return Err(CommandError::invalid(format!(
            "{} lock paths in one request (at most {MAX_LOCK_PATHS_PER_ACQUIRE})",
            paths.len()
        )));
    }
    let mut seen = BTreeSet::new();
    let mut normalized = Vec::with_capacity(paths.len());
    for raw in paths {
        let path = normalize_lock_path(raw)?;
        if seen.insert(path.clone()) {
            normalized.push(path);
        }
    }
    Ok(normalized)
}

/// An agent token names the agent it acts as (a valid agent name); no other role names one.
fn validate_token_spec(spec: &crate::token::TokenSpec) -> Result<(), CommandError> {
    use crate::token::Role;
    validate_len("token name", &spec.name, MAX_NAME_LEN)?;
    match (spec.role, &spec.agent) {
        (Role::Agent, Some(agent)) => validate_name("agent name", agent),
        (Role::Agent, None) => Err(CommandError::invalid(
            "an agent token needs the agent name it acts as",
        )),
        (role, Some(_)) => Err(CommandError::invalid(format!(
            "only agent tokens name an agent, not {role} tokens"
        ))),
        (_, None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn spec(id: &str, deps: &[&str]) -> TaskSpec {
        TaskSpec {
            id: Some(id.to_string()),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..TaskSpec::default()
        }
    }

    #[test]
    fn plan_cycle_is_named() {
        let err = validate(&Op::SubmitPlan {
            plan_id: None,
            tasks: vec![
                spec("a", &["b"]),
                spec("b", &["c"]),
                spec("c", &["a"]),
                spec("d", &[]),
            ],
        })
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert_eq!(err.message, "dependency cycle: a -> b -> c -> a");
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let err = validate(&Op::SubmitTask(spec("a", &["a"]))).unwrap_err();
        assert_eq!(err.message, "dependency cycle: a -> a");
    }

    #[test]
    fn plan_duplicate_ids_are_refused() {
        let err = validate(&Op::SubmitPlan {
            plan_id: None,
            tasks: vec![spec("a", &[]), spec("a", &[])],
        })
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("task id a appears twice"));
    }

    #[test]
    fn acyclic_diamond_passes() {
        validate(&Op::SubmitPlan {
            plan_id: Some("p".into()),
            tasks: vec![
                spec("d", &["b", "c"]),
                spec("b", &["a"]),
                spec("c", &["a"]),
                spec("a", &["outside"]),
            ],
        })
        .unwrap();
    }

    #[test]
    fn sizes_are_checked() {
        let big = TaskSpec {
            payload: vec![0; MAX_PAYLOAD_LEN + 1],
            ..TaskSpec::default()
        };
        let err = validate(&Op::SubmitTask(big)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("payload"));
        assert!(validate_name("agent name", "").is_err());
        assert!(validate_name("agent name", "a\nb").is_err());
        assert!(validate_name("agent name", &"n".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(validate_name("agent name", "worker-1").is_ok());
    }

    #[test]
    fn acquire_paths_are_normalised_and_overlap_refused() {
        let paths = normalize_acquire_paths(&["a//b".into(), "/a/b/".into(), "c".into()]).unwrap();
        assert_eq!(paths, ["a/b", "c"]);
        let err = normalize_acquire_paths(&["src".into(), "src/api".into()]).unwrap_err();
        assert!(err.message.contains("overlap"));
        assert!(normalize_acquire_paths(&[]).is_err());
    }
}
