//! The wire contract of the users service: the users.v1 API generated from
//! `users/v1/users.proto`, and every name and format outside the .proto that the
//! user-service and the gateway must agree on.
//!
//! Both services depend on this crate and neither on the other, so whatever one
//! side writes and the other reads is defined here once, with its writer and its
//! reader side by side and a test that one reads what the other writes:
//! [`metadata`] (gRPC response metadata), [`errors`] (the google.rpc.ErrorInfo
//! of refused calls) and [`stream`] (the Redis stream of events).

/// Package `users.v1`: messages, `user_service_client` and `user_service_server`,
/// generated so that neither service can hand-write a message the other misreads.
pub mod v1 {
    tonic::include_proto!("users.v1");
}

pub mod errors;
pub mod metadata;
pub mod stream;

/// The encoded `FileDescriptorSet` of the users API and its imports, for gRPC
/// reflection (so `grpcurl list` works with no .proto at hand).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/users_descriptor.bin"));
