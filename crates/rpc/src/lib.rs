//! The gRPC contracts between Tern's agents, generated from `proto/tern/v1`.
//!
//! Nothing here but generated code: protobuf types stop at each agent's gRPC layer, which maps
//! them to its own types.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("tern.v1");
}
