//! Generated gRPC code for Percy: the public `percy.v1` API and the internal Raft service.

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

/// Encoded `FileDescriptorSet` of every service, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/percy_descriptor.bin"));
