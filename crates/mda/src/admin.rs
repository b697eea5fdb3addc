//! The Admin gRPC service: domains, accounts, aliases, DKIM keys, API tokens and Sieve scripts,
//! behind the admin bearer token.

use tern_rpc::v1::admin_server::Admin;
use tern_rpc::v1::{
    Account, AccountRequest, AddAccountRequest, AddAliasRequest, Alias, AliasRequest, Domain,
    DomainRequest, Empty, ListAccountsRequest, ListAccountsResponse, ListAliasesRequest,
    ListAliasesResponse, ListDomainsResponse, QuotaInfo, RecountQuotaResponse, SetPasswordRequest,
    SetQuotaRequest,
};
use tern_rpc::v1::{
    ApiToken, CreateTokenRequest, CreatedToken, ListTokensRequest, ListTokensResponse,
    RevokeTokenRequest,
};
use tern_rpc::v1::{DkimKey, GenerateDkimKeyRequest, ListDkimKeysRequest, ListDkimKeysResponse};
use tern_rpc::v1::{
    ListSieveScriptsResponse, PutSieveScriptRequest, SieveScript, SieveScriptRequest,
};
use tern_runtime::grpc::check_bearer;
use tern_store::Store;
use tern_store::dkim::{DkimAlgorithm, NewDkimKey};
use tonic::{Request, Response, Status};

pub struct AdminService {
    store: Store,
    token: String,
}

impl AdminService {
    pub fn new(store: Store, token: String) -> Self {
        Self { store, token }
    }

    fn auth<T>(&self, req: &Request<T>) -> Result<(), Status> {
        check_bearer(req, &self.token)
    }
}

/// Maps store errors to gRPC statuses: the caller's mistakes keep their message, store trouble
/// becomes UNAVAILABLE without internal detail.
pub fn status(e: tern_store::Error) -> Status {
    use tern_store::Error as E;
    match e {
        E::NotFound(m) => Status::not_found(m),
        E::Conflict(m) => Status::already_exists(m),
        E::Invalid(m) => Status::invalid_argument(m),
        E::OverQuota(m) => Status::resource_exhausted(m),
        other => {
            tracing::error!(error = %other, "store error");
            Status::unavailable("store unavailable")
        }
    }
}

/// The reply for an account's quota; no limit is 0.
fn quota_reply(address: &str, q: tern_store::QuotaUsage) -> QuotaInfo {
    QuotaInfo {
        address: address.to_ascii_lowercase(),
        limit_bytes: q.limit.bytes.unwrap_or(0),
        limit_messages: q.limit.messages.unwrap_or(0),
        used_bytes: q.used.bytes,
        used_messages: q.used.messages,
    }
}

/// A limit as given over gRPC: absent keeps `current`, 0 removes the limit.
fn merge_limit(given: Option<u64>, current: Option<u64>) -> Option<u64> {
    match given {
        None => current,
        Some(0) => None,
        Some(n) => Some(n),
    }
}

fn opt(s: &str) -> Option<&str> {
    if s.is_empty() { None } else { Some(s) }
}

/// The reply for a stored DKIM key: everything but the private key, plus the TXT record.
fn dkim_reply(key: &tern_store::dkim::DkimKey) -> DkimKey {
    let (dns_name, dns_value) = tern_msa::dkim::dns_record(key);
    DkimKey {
        domain: key.domain.clone(),
        selector: key.selector.clone(),
        algorithm: key.algorithm.as_str().to_string(),
        active: key.active,
        created_at_ms: key.created_at_ms,
        dns_name,
        dns_value,
    }
}

/// The reply for a stored API token (never its secret); absent times are 0.
fn token_reply(t: tern_store::tokens::ApiToken) -> ApiToken {
    ApiToken {
        id: t.id,
        address: t.account,
        name: t.name,
        prefix: t.prefix,
        created_at_ms: t.created_at_ms,
        last_used_ms: t.last_used_ms.unwrap_or(0),
        expires_at_ms: t.expires_at_ms.unwrap_or(0),
    }
}

/// The reply for a stored Sieve script; listings leave the source out.
fn sieve_reply(address: &str, s: tern_store::sieve::SieveScript, with_source: bool) -> SieveScript {
    SieveScript {
        address: address.to_ascii_lowercase(),
        name: s.name,
        source: if with_source { s.source } else { String::new() },
        active: s.active,
        created_at_ms: s.created_at_ms,
        updated_at_ms: s.updated_at_ms,
    }
}

/// Longest token lifetime that can be asked for: ten years, far beyond any sane rotation, and
/// well inside the range of a millisecond timestamp.
const MAX_TOKEN_DAYS: u32 = 3650;

fn check_password(pw: &str) -> Result<(), Status> {
    if pw.chars().count() < 8 {
        return Err(Status::invalid_argument(
            "password must have at least 8 characters",
        ));
    }
    if pw.len() > 1024 {
        return Err(Status::invalid_argument(
            "password is longer than 1024 bytes",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn add_domain(&self, req: Request<DomainRequest>) -> Result<Response<Empty>, Status> {
        self.auth(&req)?;
        self.store
            .add_domain(&req.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn remove_domain(&self, req: Request<DomainRequest>) -> Result<Response<Empty>, Status> {
        self.auth(&req)?;
        self.store
            .remove_domain(&req.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn list_domains(
        &self,
        req: Request<Empty>,
    ) -> Result<Response<ListDomainsResponse>, Status> {
        self.auth(&req)?;
        let domains = self.store.list_domains().await.map_err(status)?;
        Ok(Response::new(ListDomainsResponse {
            domains: domains
                .into_iter()
                .map(|d| Domain {
                    name: d.name,
                    created_at_ms: d.created_at_ms,
                })
                .collect(),
        }))
    }

    async fn add_account(
        &self,
        req: Request<AddAccountRequest>,
    ) -> Result<Response<Account>, Status> {
        self.auth(&req)?;
        let r = req.get_ref();
        check_password(&r.password)?;
        let a = self
            .store
            .add_account(&r.address, &r.password)
            .await
            .map_err(status)?;
        Ok(Response::new(Account {
            address: a.address,
            created_at_ms: a.created_at_ms,
        }))
    }

    async fn remove_account(
        &self,
        req: Request<AccountRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.auth(&req)?;
        self.store
            .remove_account(&req.get_ref().address)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn set_password(
        &self,
        req: Request<SetPasswordRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.auth(&req)?;
        let r = req.get_ref();
        check_password(&r.password)?;
        self.store
            .set_password(&r.address, &r.password)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn list_accounts(
        &self,
        req: Request<ListAccountsRequest>,
    ) -> Result<Response<ListAccountsResponse>, Status> {
        self.auth(&req)?;
        let accounts = self
            .store
            .list_accounts(opt(&req.get_ref().domain))
            .await
            .map_err(status)?;
        Ok(Response::new(ListAccountsResponse {
            accounts: accounts
                .into_iter()
                .map(|a| Account {
                    address: a.address,
                    created_at_ms: a.created_at_ms,
                })
                .collect(),
        }))
    }

    async fn set_quota(
        &self,
        req: Request<SetQuotaRequest>,
    ) -> Result<Response<QuotaInfo>, Status> {
        self.auth(&req)?;
        let r = req.get_ref();
        let current = self.store.quota(&r.address).await.map_err(status)?;
        let quota = tern_store::Quota {
            bytes: merge_limit(r.bytes, current.limit.bytes),
            messages: merge_limit(r.messages, current.limit.messages),
        };
        self.store
            .set_quota(&r.address, quota)
            .await
            .map_err(status)?;
        let now = self.store.quota(&r.address).await.map_err(status)?;
        Ok(Response::new(quota_reply(&r.address, now)))
    }

    async fn get_quota(&self, req: Request<AccountRequest>) -> Result<Response<QuotaInfo>, Status> {
        self.auth(&req)?;
        let address = &req.get_ref().address;
        let q = self.store.quota(address).await.map_err(status)?;
        Ok(Response::new(quota_reply(address, q)))
    }

    async fn recount_quota(
        &self,
        req: Request<AccountRequest>,
    ) -> Result<Response<RecountQuotaResponse>, Status> {
        self.auth(&req)?;
        let address = &req.get_ref().address;
        let recount = self.store.recount_usage(address).await.map_err(status)?;
        if recount.drifted() {
            tracing::warn!(
                account = %address,
                recorded_bytes = recount.recorded.bytes,
                recorded_messages = recount.recorded.messages,
                actual_bytes = recount.actual.bytes,
                actual_messages = recount.actual.messages,
                "quota usage drift repaired"
            );
        }
        let q = self.store.quota(address).await.map_err(status)?;
        Ok(Response::new(RecountQuotaResponse {
            quota: Some(quota_reply(address, q)),
            recorded_bytes: recount.recorded.bytes,
            recorded_messages: recount.recorded.messages,
        }))
    }

    async fn add_alias(&self, req: Request<AddAliasRequest>) -> Result<Response<Alias>, Status> {
        self.auth(&req)?;
        let r = req.get_ref();
        if r.targets.is_empty() {
            return Err(Status::invalid_argument(
                "an alias needs at least one target",
            ));
        }
        let a = self
            .store
            .add_alias(&r.source, &r.targets)
            .await
            .map_err(status)?;
        Ok(Response::new(Alias {
            source: a.source,
            targets: a.targets,
        }))
    }

    async fn remove_alias(&self, req: Request<AliasRequest>) -> Result<Response<Empty>, Status> {
        self.auth(&req)?;
        self.store
            .remove_alias(&req.get_ref().source)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn list_aliases(
        &self,
        req: Request<ListAliasesRequest>,
    ) -> Result<Response<ListAliasesResponse>, Status> {
        self.auth(&req)?;
        let aliases = self
            .store
            .list_aliases(opt(&req.get_ref().domain))
            .await
            .map_err(status)?;
        Ok(Response::new(ListAliasesResponse {
            aliases: aliases
                .into_iter()
                .map(|a| Alias {
                    source: a.source,
                    targets: a.targets,
                })
                .collect(),
        }))
    }

    /// Generates a key on the blocking pool (RSA generation takes a while) and stores it as the
    /// domain's active key. The domain is checked first so that a typo costs no key generation.
    async fn generate_dkim_key(
        &self,
        req: Request<GenerateDkimKeyRequest>,
    ) -> Result<Response<DkimKey>, Status> {
        self.auth(&req)?;
        let r = req.into_inner();
        let algorithm = match opt(&r.algorithm) {
            None => DkimAlgorithm::RsaSha256,
            Some(name) => DkimAlgorithm::parse(name).map_err(status)?,
        };
        if !self
            .store
            .is_local_domain(&r.domain)
            .await
            .map_err(status)?
        {
            return Err(Status::not_found(format!(
                "domain {} is not a local domain",
                r.domain
            )));
        }
        let selector = match opt(&r.selector) {
            Some(s) => s.to_string(),
            None => tern_msa::dkim::default_selector(tern_runtime::mailfmt::now_unix()),
        };
        let generated =
            tokio::task::spawn_blocking(move || tern_msa::dkim::generate_key(algorithm))
                .await
                .map_err(|e| Status::internal(format!("key generation task: {e}")))?
                .map_err(|e| {
                    tracing::error!(error = %format!("{e:#}"), "DKIM key generation failed");
                    Status::internal("key generation failed")
                })?;
        let key = self
            .store
            .add_dkim_key(NewDkimKey {
                domain: &r.domain,
                selector: &selector,
                algorithm,
                private_key_pem: &generated.private_key_pem,
                public_key: &generated.public_key,
                active: true,
            })
            .await
            .map_err(status)?;
        tracing::info!(domain = %key.domain, selector = %key.selector, algorithm = key.algorithm.as_str(), "DKIM key generated");
        Ok(Response::new(dkim_reply(&key)))
    }

    async fn list_dkim_keys(
        &self,
        req: Request<ListDkimKeysRequest>,
    ) -> Result<Response<ListDkimKeysResponse>, Status> {
        self.auth(&req)?;
        let keys = self
            .store
            .list_dkim_keys(opt(&req.get_ref().domain))
            .await
            .map_err(status)?;
        Ok(Response::new(ListDkimKeysResponse {
            keys: keys.iter().map(dkim_reply).collect(),
        }))
    }

    async fn create_token(
        &self,
        req: Request<CreateTokenRequest>,
    ) -> Result<Response<CreatedToken>, Status> {
        self.auth(&req)?;
        let r = req.into_inner();
        if r.expires_in_days > MAX_TOKEN_DAYS {
            return Err(Status::invalid_argument(format!(
                "a token may live at most {MAX_TOKEN_DAYS} days"
            )));
        }
        let expires = (r.expires_in_days > 0)
            .then(|| tern_store::now_ms() + i64::from(r.expires_in_days) * 86_400_000);
        let created = self
            .store
            .create_token(&r.address, &r.name, expires)
            .await
            .map_err(status)?;
        // The id and prefix identify the token in logs; the secret is never logged.
        tracing::info!(token.id = created.token.id, user = %created.token.account, token.prefix = %created.token.prefix, "API token created");
        Ok(Response::new(CreatedToken {
            token: Some(token_reply(created.token)),
            secret: created.secret,
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        self.auth(&req)?;
        let tokens = self
            .store
            .list_tokens(&req.get_ref().address)
            .await
            .map_err(status)?;
        Ok(Response::new(ListTokensResponse {
            tokens: tokens.into_iter().map(token_reply).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<RevokeTokenRequest>,
    ) -> Result<Response<ApiToken>, Status> {
        self.auth(&req)?;
        let revoked = self
            .store
            .revoke_token(req.get_ref().id)
            .await
            .map_err(status)?;
        tracing::info!(token.id = revoked.id, user = %revoked.account, "API token revoked");
        Ok(Response::new(token_reply(revoked)))
    }

    async fn put_sieve_script(
        &self,
        req: Request<PutSieveScriptRequest>,
    ) -> Result<Response<SieveScript>, Status> {
        self.auth(&req)?;
        let r = req.get_ref();
        tern_store::sieve::check_script_name(&r.name).map_err(status)?;
        // RFC 5804 §2.6: a script is checked before it is stored; the error names the line.
        crate::sieve::check(&r.source)
            .map_err(|e| Status::invalid_argument(format!("script {:?}: {e}", r.name)))?;
        let stored = self
            .store
            .put_sieve_script(&r.address, &r.name, &r.source, r.activate)
            .await
            .map_err(status)?;
        tracing::info!(user = %r.address, script = %r.name, active = stored.active, "sieve script stored");
        Ok(Response::new(sieve_reply(&r.address, stored, false)))
    }

    async fn list_sieve_scripts(
        &self,
        req: Request<AccountRequest>,
    ) -> Result<Response<ListSieveScriptsResponse>, Status> {
        self.auth(&req)?;
        let address = &req.get_ref().address;
        let scripts = self
            .store
            .list_sieve_scripts(address)
            .await
            .map_err(status)?;
        Ok(Response::new(ListSieveScriptsResponse {
            scripts: scripts
                .into_iter()
                .map(|s| sieve_reply(address, s, false))
                .collect(),
        }))
    }

    async fn get_sieve_script(
        &self,
        req: Request<SieveScriptRequest>,
    ) -> Result<Response<SieveScript>, Status> {
        self.auth(&req)?;
        let r = req.get_ref();
        let script = self
            .store
            .sieve_script(&r.address, &r.name)
            .await
            .map_err(status)?;
        Ok(Response::new(sieve_reply(&r.address, script, true)))
    }

    async fn activate_sieve_script(
        &self,
        req: Request<SieveScriptRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.auth(&req)?;
        let r = req.get_ref();
        self.store
            .activate_sieve_script(&r.address, opt(&r.name))
            .await
            .map_err(status)?;
        tracing::info!(user = %r.address, script = %r.name, "sieve script activated");
        Ok(Response::new(Empty {}))
    }

    async fn delete_sieve_script(
        &self,
        req: Request<SieveScriptRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.auth(&req)?;
        let r = req.get_ref();
        self.store
            .delete_sieve_script(&r.address, &r.name)
            .await
            .map_err(|e| match e {
                tern_store::Error::Conflict(m) => Status::failed_precondition(m),
                other => status(other),
            })?;
        tracing::info!(user = %r.address, script = %r.name, "sieve script deleted");
        Ok(Response::new(Empty {}))
    }
}
