//! Generated gRPC code for Percy: the public `percy.v1` API and the internal Raft service.

pub mod backup;
pub mod codec;

/// The public API.
// Generated code: lints about its shape (e.g. the size of `oneof` variants) are not ours to fix.
#[allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
pub mod v1 {
    tonic::include_proto!("percy.v1");
}

/// Node-to-node Raft RPCs and request forwarding. Not a public API.
#[allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
pub mod internal {
    tonic::include_proto!("percy.internal.v1");
}

/// Page sizes of paginated listings (tasks, agents, locks, config): what a request with `limit`
/// 0 gets, and the most it may ask for.
pub mod paging {
    pub const DEFAULT_PAGE_SIZE: u32 = 1_000;
    pub const MAX_PAGE_SIZE: u32 = 10_000;
    /// A config page ends once its values pass this many bytes (a value may be 256 KiB, so
    /// 1,000 of them would not fit one message).
    pub const MAX_CONFIG_PAGE_BYTES: usize = 1 << 20;
}

/// Encoded `FileDescriptorSet` of every service, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/percy_descriptor.bin"));

/// Encoded `FileDescriptorSet` of the public `percy.v1` API only: what server reflection
/// serves (the internal node-to-node service is not for clients).
pub const PUBLIC_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/percy_public_descriptor.bin"));

/// The `authorization` metadata of a call with a bearer token (`Bearer <token>`), as etcd,
/// Consul and NATS clients send theirs.
pub mod auth {
    pub const AUTHORIZATION: &str = "authorization";
    pub const BEARER_PREFIX: &str = "Bearer ";
}

/// gRPC response metadata every node adds to its unary answers (successes and errors alike):
/// the answering node's id and the leader as that node knows it ("0" = unknown). The client
/// library learns from them which of its endpoints leads, and sends writes and linearizable
/// reads there directly instead of through a follower.
pub mod routing {
    /// The answering node's id, in decimal.
    pub const NODE_ID: &str = "percy-node-id";
    /// The leader's id as the answering node knows it, in decimal; "0" while unknown.
    pub const LEADER_ID: &str = "percy-leader-id";
}

/// `percyctl exec`: an exec is a task that requires this reserved capability, which only
/// workers started with `--accept-exec` advertise. Its payload is the request (JSON).
pub mod exec {
    pub const EXEC_CAPABILITY: &str = "percy.exec";
    /// `ExecChunk.fd` of standard output and standard error.
    pub const STDOUT: u32 = 1;
    pub const STDERR: u32 = 2;
}

/// The canonical gRPC name of a code (`FAILED_PRECONDITION`), as grpcurl and etcdctl print it.
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
