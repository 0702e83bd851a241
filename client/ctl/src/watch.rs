//! `percyctl watch`: print events as they happen, one line each (or JSON lines).

use anyhow::Context;
use clap::Args as ClapArgs;
use futures::StreamExt;
use percy_client::proto::{event, Event};
use percy_client::{EntityKind, WatchOptions};

use crate::views::{
    agent_status_name, entity_kind_name, lock_mode_name, task_status_name, EventView,
};
use crate::Ctx;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Entity kinds, comma-separated: agent, task, lock, config, definition, message,
    /// definition_run.
    #[arg(long = "kind", value_delimiter = ',', value_parser = kind)]
    kinds: Vec<EntityKind>,
    /// Only entities whose key starts with this.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Start at this revision (default: from now on).
    #[arg(long)]
    from_revision: Option<u64>,
    /// First print the current state of every matching entity.
    #[arg(long)]
    initial_state: bool,
}

pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<()> {
    let options = WatchOptions {
        start_revision: args.from_revision.unwrap_or(0),
        kinds: args.kinds,
        key_prefix: args.prefix,
        task_statuses: Vec::new(),
        initial_state: args.initial_state,
    };
    let mut events = ctx.client.watch(options);
    while let Some(item) = events.next().await {
        let event = item.context("watch")?;
        ctx.out
            .emit_line(&EventView::from(&event), || event_line(&event))?;
    }
    Ok(())
}

fn kind(text: &str) -> Result<EntityKind, String> {
    let wanted = text.trim().to_ascii_lowercase();
    KINDS
        .into_iter()
        .find(|k| entity_kind_name(*k as i32) == wanted)
        .ok_or_else(|| {
            format!("unknown kind {text:?}; one of agent, task, lock, config, definition, message, definition_run")
        })
}

const KINDS: [EntityKind; 7] = [
    EntityKind::Agent,
    EntityKind::Task,
    EntityKind::Lock,
    EntityKind::Config,
    EntityKind::Definition,
    EntityKind::Message,
    EntityKind::DefinitionRun,
];

/// `REV KIND KEY what`, e.g. `42 task build claimed by agent 3 (token 42)`.
fn event_line(event: &Event) -> String {
    let what = if event.deleted {
        "deleted".to_owned()
    } else {
        match &event.value {
            None => String::new(),
            Some(event::Value::Agent(a)) => format!("{} ({})", agent_status_name(a.status), a.name),
            Some(event::Value::Task(t)) => {
                let mut line = task_status_name(t.status);
                if t.assignee != 0 {
                    line.push_str(&format!(
                        " by agent {} (token {})",
                        t.assignee, t.claim_token
                    ));
                }
                line
            }
            Some(event::Value::Lock(l)) => {
                let holders: Vec<String> = l
                    .holders
                    .iter()
                    .map(|h| format!("agent {} (fencing {})", h.agent_id, h.fencing_token))
                    .collect();
                if holders.is_empty() {
                    "released".to_owned()
                } else {
                    format!("{} by {}", lock_mode_name(l.mode), holders.join(", "))
                }
            }
            Some(event::Value::Config(c)) => {
                format!("= {}", String::from_utf8_lossy(&c.value))
            }
            Some(event::Value::Definition(d)) => crate::views::desired_state_name(d.desired),
            Some(event::Value::Message(m)) => format!("from {}: {}", m.from, m.body),
            Some(event::Value::DefinitionRun(r)) => {
                let runner = r.runner.as_ref().map_or_else(
                    || "no runner".to_owned(),
                    |x| format!("run by {}", x.agent_name),
                );
                match r.iterations.last() {
                    Some(i) => format!(
                        "{runner}, iteration {} {}, {} waiting",
                        i.number,
                        crate::iterations::status_name(i.status),
                        r.pending.len()
                    ),
                    None => format!("{runner}, {} waiting", r.pending.len()),
                }
            }
        }
    };
    format!(
        "{} {} {} {}",
        event.revision,
        entity_kind_name(event.kind),
        event.key,
        what
    )
    .trim_end()
    .to_owned()
}

#[cfg(test)]
mod tests {
    use percy_client::proto::{Lock, LockHolder, Task};
    use percy_client::TaskStatus;

    use super::*;

    #[test]
    fn kinds_parse_by_short_name() {
        assert_eq!(kind("Task"), Ok(EntityKind::Task));
        assert!(kind("tasks").is_err());
    }

    #[test]
    fn event_lines_summarise_the_change() {
        let claimed = Event {
            revision: 42,
            kind: EntityKind::Task as i32,
            key: "build".into(),
            deleted: false,
            value: Some(event::Value::Task(Task {
                status: TaskStatus::Claimed as i32,
                assignee: 3,
                claim_token: 42,
                ..Task::default()
            })),
        };
        assert_eq!(
            event_line(&claimed),
            "42 task build claimed by agent 3 (token 42)"
        );
        let locked = Event {
            revision: 43,
            kind: EntityKind::Lock as i32,
            key: "src".into(),
            deleted: false,
            value: Some(event::Value::Lock(Lock {
                holders: vec![LockHolder {
                    agent_id: 1,
                    fencing_token: 43,
                    ..LockHolder::default()
                }],
                ..Lock::default()
            })),
        };
        assert_eq!(
            event_line(&locked),
            "43 lock src exclusive by agent 1 (fencing 43)"
        );
        let deleted = Event {
            revision: 44,
            kind: EntityKind::Config as i32,
            key: "k".into(),
            deleted: true,
            value: None,
        };
        assert_eq!(event_line(&deleted), "44 config k deleted");
    }
}
