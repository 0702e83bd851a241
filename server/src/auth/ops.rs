//! The write check: before a command is proposed, the caller's role and the agent it is bound
//! to are checked against what the command does. Identity comes from the token, never from a
//! request field: an agent token names its agent, so a command that names another agent — by
//! id, by registration name, or as a message's sender — is refused, and so is anything outside
//! what its role may do.

use percy_statemachine::{AgentId, Op, Role, StateMachine};
use tonic::Status;

use super::Caller;

/// Checks `op` for `caller` against the local state (an agent id is resolved to its name
/// there; ids are never reused, so a lagging replica resolves them the same way). A message
/// without a sender gets the caller's name.
pub fn authorize(caller: &Caller, op: &mut Op, sm: &StateMachine) -> Result<(), Status> {
    if let Op::SendMessage { from, .. } | Op::SteerDefinition { from, .. } = op {
        if from.is_empty() {
            *from = caller.sender().to_owned();
        } else if from != caller.sender() {
            return Err(Status::permission_denied(format!(
                "this token sends as {:?}, not {from:?}",
                caller.sender()
            )));
        }
    }
    match caller.role {
        Role::Admin => Ok(()),
        Role::Operator => match op {
            Op::SubmitTask(_)
            | Op::SubmitPlan { .. }
            | Op::SendMessage { .. }
            | Op::SteerDefinition { .. } => Ok(()),
            _ => Err(denied(caller, op)),
        },
        Role::Agent => {
            let bound = caller.agent.as_deref().unwrap_or_default();
            match op {
                Op::RegisterAgent { name, .. } if name == bound => Ok(()),
                Op::RegisterAgent { name, .. } => Err(Status::permission_denied(format!(
                    "this token acts as agent {bound:?}, not {name:?}"
                ))),
                Op::SendMessage { .. } | Op::SteerDefinition { .. } => Ok(()),
                _ => match agent_of(op) {
                    Some(agent_id) => acts_as(caller, agent_id, sm),
                    None => Err(denied(caller, op)),
                },
            }
        }
        Role::Reader => Err(denied(caller, op)),
    }
}

/// An agent token may act for `agent_id` only if that is its own agent; an admin for anyone.
pub fn acts_as(caller: &Caller, agent_id: AgentId, sm: &StateMachine) -> Result<(), Status> {
    if caller.role == Role::Admin {
        return Ok(());
    }
    let bound = match (caller.role, caller.agent.as_deref()) {
        (Role::Agent, Some(bound)) => bound,
        _ => {
            return Err(Status::permission_denied(format!(
                "a {} token does not act as an agent",
                caller.role
            )))
        }
    };
    match sm.agent(agent_id) {
        Some(agent) if agent.name == bound => Ok(()),
        Some(agent) => Err(Status::permission_denied(format!(
            "this token acts as agent {bound:?}, not {:?} (id {agent_id})",
            agent.name
        ))),
        None => Err(Status::permission_denied(format!(
            "this token acts as agent {bound:?}; agent {agent_id} is not it"
        ))),
    }
}

/// The agent a command acts as, for the commands an agent may send.
fn agent_of(op: &Op) -> Option<AgentId> {
    match op {
        Op::DeregisterAgent { agent_id }
        | Op::ClaimTask { agent_id, .. }
        | Op::ClaimNext { agent_id }
        | Op::ClaimNextStarted { agent_id }
        | Op::CompleteAndClaimNext { agent_id, .. }
        | Op::StartTask { agent_id, .. }
        | Op::CompleteTask { agent_id, .. }
        | Op::FailTask { agent_id, .. }
        | Op::AcquireLocks { agent_id, .. }
        | Op::ReleaseLocks { agent_id, .. }
        | Op::ReleaseAllLocks { agent_id }
        | Op::ClaimDefinitionRun { agent_id, .. }
        | Op::StartIteration { agent_id, .. }
        | Op::FinishIteration { agent_id, .. }
        | Op::ReleaseDefinitionRun { agent_id, .. } => Some(*agent_id),
        _ => None,
    }
}

fn denied(caller: &Caller, op: &Op) -> Status {
    let what = format!("{op:?}");
    let name = what.split([' ', '(', '{']).next().unwrap_or("this");
    Status::permission_denied(format!("a {} token may not do {name}", caller.role))
}

#[cfg(test)]
mod tests {
    use percy_statemachine::{Command, Outcome};

    use super::*;

    fn caller(role: Role, agent: Option<&str>) -> Caller {
        Caller {
            token_id: 1,
            role,
            agent: agent.map(str::to_owned),
            name: "t".into(),
        }
    }

    fn register(sm: &mut StateMachine, name: &str) -> AgentId {
        let revision = sm.revision() + 1;
        let op = Op::RegisterAgent {
            name: name.into(),
            node: String::new(),
            capabilities: Default::default(),
            labels: Default::default(),
            max_concurrent: 1,
            ttl_ms: 0,
        };
        match sm.apply(revision, 1, Command::new(op)).response {
            Ok(Outcome::AgentRegistered { agent, .. }) => agent.id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_agent_token_acts_only_as_its_agent() {
        let mut sm = StateMachine::new();
        let builder = register(&mut sm, "builder");
        let other = register(&mut sm, "other");
        let agent = caller(Role::Agent, Some("builder"));
        let release = |agent_id| Op::ReleaseAllLocks { agent_id };
        assert!(authorize(&agent, &mut release(builder), &sm).is_ok());
        let refused = authorize(&agent, &mut release(other), &sm).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(authorize(&agent, &mut release(999), &sm).is_err());
        assert!(authorize(&caller(Role::Admin, None), &mut release(other), &sm).is_ok());
        assert!(authorize(&caller(Role::Operator, None), &mut release(builder), &sm).is_err());
        let mut submit = Op::SubmitPlan {
            plan_id: None,
            tasks: vec![],
        };
        assert!(authorize(&agent, &mut submit, &sm).is_err());
        assert!(authorize(&caller(Role::Operator, None), &mut submit, &sm).is_ok());
        assert!(authorize(&caller(Role::Reader, None), &mut submit, &sm).is_err());
    }

    #[test]
    fn a_message_is_from_the_caller() {
        let sm = StateMachine::new();
        let agent = caller(Role::Agent, Some("builder"));
        let send = |from: &str| Op::SendMessage {
            from: from.into(),
            to: percy_statemachine::Recipient::Broadcast,
            body: "hi".into(),
        };
        let mut unnamed = send("");
        authorize(&agent, &mut unnamed, &sm).unwrap();
        assert_eq!(unnamed, send("builder"));
        assert!(authorize(&agent, &mut send("alice"), &sm).is_err());
        assert!(authorize(&caller(Role::Admin, None), &mut send("alice"), &sm).is_err());
        assert!(authorize(&caller(Role::Admin, None), &mut send("t"), &sm).is_ok());
    }
}
