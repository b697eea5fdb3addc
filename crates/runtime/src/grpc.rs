//! gRPC plumbing shared by the agents: bearer-token checks for the admin services, and the
//! standard health service (`grpc.health.v1.Health`) every agent's server carries.

use base64::Engine;
use tonic::{Request, Status};

/// Checks `authorization: Bearer <token>` against the configured admin token in constant time.
pub fn check_bearer<T>(req: &Request<T>, token: &str) -> Result<(), Status> {
    let header = req.metadata().get("authorization").ok_or_else(|| {
        Status::unauthenticated("missing authorization metadata (Bearer admin token)")
    })?;
    let value = header
        .to_str()
        .map_err(|_| Status::unauthenticated("malformed authorization metadata"))?;
    let presented = value.strip_prefix("Bearer ").unwrap_or("");
    if token.is_empty() || !constant_time_eq(presented.as_bytes(), token.as_bytes()) {
        return Err(Status::unauthenticated("invalid admin token"));
    }
    Ok(())
}

/// Reads `authorization: Basic base64(user:password)` (account-authenticated services).
pub fn basic_credentials<T>(req: &Request<T>) -> Result<(String, String), Status> {
    let raw = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or_else(|| Status::unauthenticated("missing authorization: Basic credentials"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .map_err(|_| Status::unauthenticated("malformed Basic credentials"))?;
    let text = String::from_utf8(decoded)
        .map_err(|_| Status::unauthenticated("malformed Basic credentials"))?;
    let (user, pass) = text
        .split_once(':')
        .ok_or_else(|| Status::unauthenticated("malformed Basic credentials"))?;
    Ok((user.to_string(), pass.to_string()))
}

/// The standard gRPC health service for an agent's server. The whole server ("") and each of
/// `services` (their full names, e.g. `tern.v1.Delivery`) answer SERVING until shutdown
/// begins, then NOT_SERVING, so balancers and probes stop sending new calls while the agent
/// drains. Store reachability is `/readyz`'s business, not this: a gRPC client that gets
/// UNAVAILABLE from a store outage retries like any other transient failure.
pub async fn health_service(
    shutdown: &crate::Shutdown,
    services: &[&str],
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    use tonic_health::ServingStatus;
    let (reporter, server) = tonic_health::server::health_reporter();
    let mut names: Vec<String> = vec![String::new()];
    for name in services {
        reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
        names.push((*name).to_string());
    }
    let token = shutdown.token.clone();
    tokio::spawn(async move {
        token.cancelled().await;
        for name in names {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    });
    server
}

/// Compares without an early exit so the time taken does not reveal the matching prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = auth {
            r.metadata_mut().insert("authorization", a.parse().unwrap());
        }
        r
    }

    #[test]
    fn bearer_token_is_required_and_checked() {
        assert!(check_bearer(&req(Some("Bearer s3cret")), "s3cret").is_ok());
        assert_eq!(
            check_bearer(&req(Some("Bearer wrong")), "s3cret")
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            check_bearer(&req(None), "s3cret").unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(
            check_bearer(&req(Some("Bearer ")), "").is_err(),
            "an empty configured token never matches"
        );
    }

    #[test]
    fn basic_credentials_are_parsed() {
        let r = req(Some("Basic YWxpY2VAZXhhbXBsZS50ZXN0OnNlY3JldDpwdw=="));
        assert_eq!(
            basic_credentials(&r).unwrap(),
            ("alice@example.test".into(), "secret:pw".into())
        );
        assert_eq!(
            basic_credentials(&req(None)).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            basic_credentials(&req(Some("Basic !!")))
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
    }
}
