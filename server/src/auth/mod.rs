//! Identity and access on the public API (`percyd --auth`).
//!
//! - [`layer`] wraps every public service: it takes the bearer token from the call's
//!   `authorization` metadata, finds its SHA-256 among the replicated tokens ([`secret`]) and
//!   refuses the call (UNAUTHENTICATED) when there is none; it refuses a method the token's role
//!   may never call (PERMISSION_DENIED, [`access`]); and it runs the handler with the caller
//!   known ([`caller`]).
//! - [`ops`] checks every write against the caller before it is proposed: an agent token acts
//!   only as its own agent, whatever ids or names the request carries.
//! - [`bootstrap`] makes the cluster's first admin token and writes it to
//!   `<data-dir>/admin.token`.
//!
//! Without `--auth` none of this runs: every caller may do everything, as before.

pub mod access;
pub mod bootstrap;
pub mod caller;
pub mod layer;
pub mod ops;
pub mod secret;

pub use caller::{current, Caller};
pub use layer::Authenticated;

use percy_statemachine::AgentId;
use tonic::Status;

use crate::context::NodeContext;

/// For calls that act as an agent outside the write path (heartbeats, inbox reads): `caller`
/// (from [`current`]; `None` without `--auth`) must be that agent, or an admin.
pub fn require_agent(
    ctx: &NodeContext,
    caller: Option<&Caller>,
    agent_id: AgentId,
) -> Result<(), Status> {
    match caller {
        None => Ok(()),
        Some(caller) => ctx.state.read(|sm| ops::acts_as(caller, agent_id, sm)),
    }
}
