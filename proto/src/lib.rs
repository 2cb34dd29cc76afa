//! The wire contract of the users service, generated from `users/v1/users.proto`.
//!
//! Both the user-service (server) and the gateway (client) depend on this crate, so
//! the contract is written once.

/// Package `users.v1`: messages, `user_service_client` and `user_service_server`.
pub mod v1 {
    tonic::include_proto!("users.v1");
}

/// The encoded `FileDescriptorSet` of the users API and its imports, for gRPC
/// reflection (so `grpcurl list` works with no .proto at hand).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/users_descriptor.bin"));
