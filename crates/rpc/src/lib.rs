//! The gRPC contracts between Tern's agents, generated from `proto/tern/v1`.
//!
//! Nothing here but generated code: protobuf types stop at each agent's gRPC layer, which maps
//! them to its own types.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("tern.v1");
}

/// The largest gRPC message any Tern service sends or accepts: a whole mail message (up to the
/// configured SMTP limit, 25 MiB by default) travels in one call, so tonic's 4 MiB default
/// would refuse big mail. A DeliverBatch call is kept under this by its sender.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
