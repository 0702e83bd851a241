//! Which roles may call which public method: one row per RPC. A method missing from the
//! table is refused to everyone (a new RPC must be given a rule before anyone can call it;
//! `every_public_method_has_a_rule` keeps the table complete).

use percy_statemachine::Role;

/// Who may call a method, before looking at what the request says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every role.
    Read,
    /// Operators and admins.
    Operate,
    /// Agents (as themselves: checked against the request by `ops` and the handlers) and
    /// admins.
    ActAsAgent,
    /// Operators, admins, and agents (a message's sender is the caller).
    Message,
    /// Admins only.
    Admin,
}

impl Access {
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Read => true,
            Access::Operate => matches!(role, Role::Admin | Role::Operator),
            Access::ActAsAgent => matches!(role, Role::Admin | Role::Agent),
            Access::Message => matches!(role, Role::Admin | Role::Operator | Role::Agent),
            Access::Admin => role == Role::Admin,
        }
    }
}

/// The rule of a gRPC path (`/percy.v1.TaskService/Claim`); `None` for an unknown method.
pub fn access_of(path: &str) -> Option<Access> {
    let (service, method) = path.strip_prefix("/percy.v1.")?.split_once('/')?;
    use Access::*;
    Some(match (service, method) {
        ("AgentService", "Register" | "Heartbeat" | "KeepAlive" | "Deregister") => ActAsAgent,
        ("AgentService", "Get" | "List") => Read,
        ("TaskService", "Submit") => Operate,
        ("TaskService", "Claim" | "Start" | "Complete" | "Fail") => ActAsAgent,
        ("TaskService", "Cancel" | "Requeue") => Admin,
        ("TaskService", "Get" | "List") => Read,
        ("PlanService", "Submit") => Operate,
        ("PlanService", "Get") => Read,
        ("LockService", "Acquire" | "Release") => ActAsAgent,
        ("LockService", "List") => Read,
        ("ConfigService", "Get" | "List") => Read,
        ("ConfigService", "Put" | "Delete") => Admin,
        ("DefinitionService", "Apply" | "SetState") => Admin,
        ("DefinitionService", "Get" | "List") => Read,
        ("DefinitionRunService", "Claim" | "StartIteration" | "FinishIteration" | "Release") => {
            ActAsAgent
        }
        // Steering is a message to a definition: operators, admins, agents (sent as themselves).
        ("DefinitionRunService", "Steer") => Message,
        ("DefinitionRunService", "Get" | "List") => Read,
        ("MessageService", "Send") => Message,
        // An agent reads only its own inbox and the broadcast one (checked by the handler).
        ("MessageService", "History") => Read,
        ("WatchService", "Watch") => Read,
        ("ClusterService", "Status") => Read,
        // A backup holds every token's hash and all state: admins only.
        ("ClusterService", "AddNode" | "RemoveNode" | "Snapshot") => Admin,
        ("TokenService", "Create" | "List" | "Revoke") => Admin,
        // Remote execution is what took over open Ray clusters (CVE-2023-48022): submitting
        // one is `TaskService/Submit` (Operate); watching and cancelling one is an operator's
        // too; only an executor (an agent) publishes output.
        ("ExecService", "Attach" | "Cancel") => Operate,
        ("ExecService", "Publish") => ActAsAgent,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Every method of every `percy.v1` service, read from the compiled descriptors.
    fn public_methods() -> Vec<String> {
        let set = prost_types::FileDescriptorSet::decode(percy_proto::PUBLIC_FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut paths = Vec::new();
        for file in set.file {
            let package = file.package().to_owned();
            for service in file.service {
                for method in &service.method {
                    paths.push(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
        paths
    }

    #[test]
    fn every_public_method_has_a_rule() {
        let methods = public_methods();
        assert!(methods.len() > 30, "{methods:?}");
        for path in methods {
            assert!(access_of(&path).is_some(), "{path} has no access rule");
        }
        assert_eq!(access_of("/percy.internal.v1.RaftService/Vote"), None);
        assert_eq!(access_of("/percy.v1.TaskService/Nope"), None);
    }

    #[test]
    fn roles_get_what_the_model_says() {
        assert!(Access::Read.allows(Role::Reader));
        assert!(!Access::Operate.allows(Role::Agent));
        assert!(!Access::ActAsAgent.allows(Role::Operator));
        assert!(!Access::Message.allows(Role::Reader));
        assert!(!Access::Admin.allows(Role::Operator));
        assert!(Access::Admin.allows(Role::Admin));
    }

    /// Remote execution only for operators and admins (CVE-2023-48022): submitting an exec
    /// is submitting a task, and watching or cancelling one is refused to agents and readers.
    #[test]
    fn only_operators_and_admins_submit_watch_or_cancel_execs() {
        for path in [
            "/percy.v1.TaskService/Submit",
            "/percy.v1.ExecService/Attach",
            "/percy.v1.ExecService/Cancel",
        ] {
            let rule = access_of(path).expect("a rule");
            for role in [Role::Reader, Role::Agent] {
                assert!(!rule.allows(role), "{role} may call {path}");
            }
            for role in [Role::Operator, Role::Admin] {
                assert!(rule.allows(role), "{role} may not call {path}");
            }
        }
        let publish = access_of("/percy.v1.ExecService/Publish").expect("a rule");
        assert!(publish.allows(Role::Agent) && !publish.allows(Role::Reader));
        assert_eq!(
            percy_proto::exec::EXEC_CAPABILITY,
            percy_statemachine::EXEC_CAPABILITY
        );
    }
}
