//! The API edge shared by every service: request header → session, validation, the write path
//! (`propose`) and the read path (`read` barrier + state access), the response header, and
//! per-method request metrics.

use std::future::Future;
use std::time::Instant;

use percy_proto::routing;
use percy_proto::v1::{RequestHeader, ResponseHeader};
use percy_statemachine::{Command, Op, Outcome, SessionRef, StateMachine};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Response, Status};

use crate::auth;
use crate::context::NodeContext;
use crate::convert::command_error_to_status;
use crate::propose::propose;
use crate::read::barrier;

/// Exactly-once tracking, when the client asked for it (client_id and seq both non-zero).
pub fn session(header: Option<&RequestHeader>) -> Option<SessionRef> {
    let h = header?;
    (h.client_id != 0 && h.seq != 0).then_some(SessionRef {
        client_id: h.client_id,
        seq: h.seq,
        acked_below: h.acked_below,
    })
}

/// Validates `op`, proposes it (through the leader), and returns its outcome with the header
/// naming the command's revision. A state machine error becomes the matching gRPC status.
pub async fn write(
    ctx: &NodeContext,
    header: Option<&RequestHeader>,
    mut op: Op,
) -> Result<(Outcome, Option<ResponseHeader>), Status> {
    // Who may do this is decided here, on the node the caller reached, before anything is
    // proposed (see `auth`).
    if let Some(caller) = auth::current(ctx)? {
        ctx.state
            .read(|sm| auth::ops::authorize(&caller, &mut op, sm))?;
    }
    write_authorized(ctx, header, op).await
}

/// [`write`] without the per-op role check, for a handler whose method rule already is the
/// whole check and that has verified what the op touches itself (`ExecService/Cancel`: an
/// operator may cancel an exec, which is a task, but no other task).
pub async fn write_authorized(
    ctx: &NodeContext,
    header: Option<&RequestHeader>,
    op: Op,
) -> Result<(Outcome, Option<ResponseHeader>), Status> {
    percy_statemachine::validate(&op).map_err(command_error_to_status)?;
    let command = Command {
        session: session(header),
        op,
    };
    let proposed = propose(ctx, command).await?;
    let outcome = proposed.result.response.map_err(command_error_to_status)?;
    let header = Some(ResponseHeader {
        node_id: ctx.node_id,
        leader_id: proposed.leader_id,
        revision: proposed.result.revision,
        forwarded: proposed.forwarded,
    });
    Ok((outcome, header))
}

/// Passes the read barrier the request asks for, then runs `f` on the local state.
pub async fn read<R>(
    ctx: &NodeContext,
    header: Option<&RequestHeader>,
    f: impl FnOnce(&StateMachine) -> R,
) -> Result<(R, Option<ResponseHeader>), Status> {
    let fence = barrier(ctx, header).await?;
    let (value, revision) = ctx.state.read(|sm| (f(sm), sm.revision()));
    Ok((value, ctx.header(revision, fence.forwarded)))
}

/// An outcome the handler did not expect for the op it proposed: a bug, reported as INTERNAL.
pub fn unexpected(outcome: Outcome) -> Status {
    tracing::error!(?outcome, "unexpected outcome");
    Status::internal("the state machine answered with an unexpected outcome")
}

/// Runs one handler body, counting it in the request metrics under `method`.
pub async fn observe<T>(
    ctx: &NodeContext,
    method: &'static str,
    body: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = match ctx.removal.refusal(ctx.node_id) {
        Some(refusal) => Err(refusal),
        None => body.await,
    };
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    ctx.metrics
        .observe_request(method, code, started.elapsed().as_secs_f64());
    match result {
        Ok(message) => {
            let mut response = Response::new(message);
            stamp_routing(ctx, response.metadata_mut());
            Ok(response)
        }
        Err(mut status) => {
            stamp_routing(ctx, status.metadata_mut());
            Err(status)
        }
    }
}

/// Names this node and its leader in the answer's metadata ([`routing`]), so the client can
/// send its next write or linearizable read straight to the leader.
pub(crate) fn stamp_routing(ctx: &NodeContext, metadata: &mut MetadataMap) {
    let leader = ctx.leader().unwrap_or(0);
    metadata.insert(routing::NODE_ID, MetadataValue::from(ctx.node_id));
    metadata.insert(routing::LEADER_ID, MetadataValue::from(leader));
}

/// A required message field (proto3 makes every message field optional on the wire).
pub fn required<T>(value: Option<T>, what: &str) -> Result<T, Status> {
    value.ok_or_else(|| Status::invalid_argument(format!("{what} is required")))
}

/// A required non-zero id.
pub fn required_id(value: u64, what: &str) -> Result<u64, Status> {
    if value == 0 {
        Err(Status::invalid_argument(format!("{what} is required")))
    } else {
        Ok(value)
    }
}
