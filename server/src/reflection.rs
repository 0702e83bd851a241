//! Server reflection (v1 and v1alpha) over the public services (`percy_proto::PUBLIC_FILE_DESCRIPTOR_SET`; never the internal
//! one),
//! so `grpcurl -plaintext HOST:PORT list` works with no .proto files at hand.

use percy_proto::PUBLIC_FILE_DESCRIPTOR_SET;

/// `grpc.reflection.v1`; `None` (logged) if the descriptor set does not load.
pub fn v1() -> Option<
    tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer<
        impl tonic_reflection::pb::v1::server_reflection_server::ServerReflection,
    >,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(PUBLIC_FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| tracing::error!(error = %e, "reflection v1 disabled"))
        .ok()
}

/// `grpc.reflection.v1alpha` (what older grpcurl versions ask for).
pub fn v1alpha() -> Option<
    tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflectionServer<
        impl tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflection,
    >,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(PUBLIC_FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| tracing::error!(error = %e, "reflection v1alpha disabled"))
        .ok()
}
