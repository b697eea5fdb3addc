//! Where to send mail for a domain: RFC 5321 §5.1 routing by DNS (MX records, the implicit MX,
//! RFC 7505 null MX) with hickory-resolver, and address literals such as `[192.0.2.1]`.
//!
//! It returns the hosts to try, in order, each with its addresses, and classifies failures as
//! temporary (try again later) or permanent (bounce). It deliberately does not decide policy:
//! whether address literals may be used, loop detection against our own addresses, MTA-STS or
//! DANE, and the SMTP reply built from an error are the caller's. It keeps no cache of its own
//! beyond hickory's TTL-bounded one.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};
use rand::seq::SliceRandom;

/// How long one query waits for an answer, and how often it is sent, before the lookup counts
/// as a temporary failure.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
const QUERY_ATTEMPTS: usize = 2;

/// A DNS resolver for mail routing; cheap to clone (clones share one cache and connection pool).
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

/// Where mail for a domain goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Hosts to try in this order (lowest preference first). Never empty.
    Hosts(Vec<Host>),
    /// The domain publishes a null MX (RFC 7505): it accepts no mail at all, so the message
    /// must bounce with 556 5.1.10 (RFC 7505 §4.2) rather than be retried.
    NullMx,
}

/// One mail exchanger and the addresses to connect to, IPv4 first, then IPv6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The exchange name, lowercase without a trailing dot (or the address literal as given).
    pub name: String,
    pub preference: u16,
    /// Never empty: hosts without addresses are left out of a [`Route`].
    pub addrs: Vec<IpAddr>,
}

/// Why no route could be found.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// DNS did not answer usefully (SERVFAIL, timeout, unreachable hosts): try again later.
    #[error("{0}")]
    Temporary(String),
    /// DNS said authoritatively that there is nowhere to deliver (NXDOMAIN, no MX and no
    /// address, a malformed domain): bounce.
    #[error("{0}")]
    Permanent(String),
}

impl Resolver {
    /// The system's resolver (/etc/resolv.conf), with this module's timeout and attempts.
    pub fn system() -> anyhow::Result<Resolver> {
        let (config, opts) = hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| anyhow::anyhow!("read the system dns configuration: {e}"))?;
        Self::build(config, opts)
    }

    /// A resolver that asks exactly one name server, over UDP with TCP fallback, and ignores
    /// /etc/hosts (tests: an in-process DNS server on 127.0.0.1:port).
    pub fn with_nameserver(addr: SocketAddr) -> Resolver {
        let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
        for conn in &mut ns.connections {
            conn.port = addr.port();
        }
        let config = ResolverConfig::from_parts(None, vec![], vec![ns]);
        let mut opts = ResolverOpts::default();
        opts.use_hosts_file = ResolveHosts::Never;
        match Self::build(config, opts) {
            Ok(r) => r,
            // Building fails only when setting up DNS-over-TLS, which this crate does not
            // enable; reaching this is a bug in how the dependency is configured.
            Err(e) => panic!("building a plain udp/tcp resolver failed: {e}"),
        }
    }

    fn build(config: ResolverConfig, mut opts: ResolverOpts) -> anyhow::Result<Resolver> {
        opts.timeout = QUERY_TIMEOUT;
        opts.attempts = QUERY_ATTEMPTS;
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        *builder.options_mut() = opts;
        let inner = builder
            .build()
            .map_err(|e| anyhow::anyhow!("build the dns resolver: {e}"))?;
        Ok(Resolver { inner })
    }

    /// RFC 5321 §5.1 routing for `domain` (a domain name, with or without a trailing dot, in
    /// any case, ASCII or UTF-8; or an address literal `[192.0.2.1]` / `[IPv6:2001:db8::1]`).
    pub async fn route(&self, domain: &str) -> Result<Route, RouteError> {
        if let Some(ip) = address_literal(domain)? {
            return Ok(Route::Hosts(vec![Host {
                name: domain.to_string(),
                preference: 0,
                addrs: vec![ip],
            }]));
        }
        let name = domain_name(domain)?;
        let shown = display(&name);

        let mxs = match self.inner.mx_lookup(name.clone()).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.clone())),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            Err(e) if e.is_nx_domain() => {
                return Err(RouteError::Permanent(format!(
                    "domain {shown} does not exist (DNS NXDOMAIN)"
                )));
            }
            // NOERROR without MX records: the domain exists but publishes no MX.
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => {
                return Err(RouteError::Temporary(format!(
                    "MX lookup for {shown} failed: {}",
                    describe(&e)
                )));
            }
        };

        if mxs.is_empty() {
            return self.implicit_mx(&name, &shown).await;
        }
        // RFC 7505 §3: a null MX is a single MX RR with preference 0 and exchange ".".
        if mxs.len() == 1 && mxs[0].0 == 0 && mxs[0].1.is_root() {
            return Ok(Route::NullMx);
        }
        self.mx_hosts(mxs, &shown).await
    }

    /// RFC 5321 §5.1: with no MX records, the domain itself is the one host, preference 0.
    async fn implicit_mx(&self, name: &Name, shown: &str) -> Result<Route, RouteError> {
        match self.addresses(name.clone()).await {
            Addrs::Found(addrs) => Ok(Route::Hosts(vec![Host {
                name: shown.to_string(),
                preference: 0,
                addrs,
            }])),
            // The MX query already showed the name exists; with neither MX nor address
            // records there is authoritatively nowhere to deliver.
            Addrs::NoData | Addrs::NxDomain => Err(RouteError::Permanent(format!(
                "domain {shown} has no MX and no address records"
            ))),
            Addrs::Failed(why) => Err(RouteError::Temporary(format!(
                "address lookup for {shown} failed: {why}"
            ))),
        }
    }

    /// Orders the MX records (RFC 5321 §5.1: ascending preference, equal preferences in random
    /// order to spread load) and resolves each exchange, leaving out those without addresses.
    async fn mx_hosts(&self, mut mxs: Vec<(u16, Name)>, shown: &str) -> Result<Route, RouteError> {
        // A "." exchange next to real MX records is a broken null MX (RFC 7505 §3 forbids
        // mixing them); it names no host, so it is skipped and the real ones are used.
        mxs.retain(|(_, exchange)| !exchange.is_root());
        if mxs.is_empty() {
            return Err(RouteError::Permanent(format!(
                "domain {shown} publishes only null MX records"
            )));
        }
        mxs.sort_by_key(|(preference, _)| *preference);
        {
            let mut rng = rand::rng();
            for group in mxs.chunk_by_mut(|a, b| a.0 == b.0) {
                group.shuffle(&mut rng);
            }
        }
        // The same host listed twice is tried once, at its best preference.
        let mut seen = HashSet::new();
        mxs.retain(|(_, exchange)| seen.insert(exchange.to_lowercase()));

        // Resolve all exchanges concurrently so one slow name server costs one timeout, not
        // one per host.
        let mut lookups = tokio::task::JoinSet::new();
        for (index, (_, exchange)) in mxs.iter().enumerate() {
            let resolver = self.clone();
            let exchange = exchange.clone();
            lookups.spawn(async move { (index, resolver.addresses(exchange).await) });
        }
        let mut results: Vec<Option<Addrs>> = (0..mxs.len()).map(|_| None).collect();
        while let Some(joined) = lookups.join_next().await {
            match joined {
                Ok((index, addrs)) => {
                    if let Some(slot) = results.get_mut(index) {
                        *slot = Some(addrs);
                    }
                }
                Err(e) => {
                    return Err(RouteError::Temporary(format!(
                        "address lookup task for {shown} failed: {e}"
                    )));
                }
            }
        }

        let mut hosts = Vec::new();
        let mut failures = Vec::new();
        let mut all_nxdomain = true;
        for ((preference, exchange), addrs) in mxs.into_iter().zip(results) {
            let host = display(&exchange);
            match addrs {
                Some(Addrs::Found(addrs)) => hosts.push(Host {
                    name: host,
                    preference,
                    addrs,
                }),
                Some(Addrs::NxDomain) => failures.push(format!("{host}: does not exist")),
                Some(Addrs::NoData) => {
                    all_nxdomain = false;
                    failures.push(format!("{host}: no address records"));
                }
                Some(Addrs::Failed(why)) => {
                    all_nxdomain = false;
                    failures.push(format!("{host}: {why}"));
                }
                None => {
                    all_nxdomain = false;
                    failures.push(format!("{host}: lookup did not finish"));
                }
            }
        }
        if !hosts.is_empty() {
            return Ok(Route::Hosts(hosts));
        }
        let detail = failures.join("; ");
        if all_nxdomain {
            Err(RouteError::Permanent(format!(
                "no mail exchanger for {shown} exists ({detail})"
            )))
        } else {
            Err(RouteError::Temporary(format!(
                "no mail exchanger for {shown} has an address ({detail})"
            )))
        }
    }

    /// Looks up A and AAAA for `name` together; IPv4 addresses come first.
    async fn addresses(&self, name: Name) -> Addrs {
        let (v4, v6) = tokio::join!(
            self.inner.ipv4_lookup(name.clone()),
            self.inner.ipv6_lookup(name)
        );
        let mut addrs = Vec::new();
        let mut negatives = Vec::new();
        for result in [v4, v6] {
            match result {
                Ok(lookup) => addrs.extend(lookup.answers().iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                    _ => None,
                })),
                Err(e) => negatives.push(e),
            }
        }
        if !addrs.is_empty() {
            return Addrs::Found(addrs);
        }
        if let Some(e) = negatives.iter().find(|e| !e.is_no_records_found()) {
            return Addrs::Failed(describe(e));
        }
        if negatives.iter().any(|e| e.is_nx_domain()) {
            Addrs::NxDomain
        } else {
            // Both answered NOERROR without addresses (or only with CNAMEs leading nowhere).
            Addrs::NoData
        }
    }
}

/// The outcome of an A + AAAA lookup.
enum Addrs {
    Found(Vec<IpAddr>),
    NoData,
    NxDomain,
    Failed(String),
}

/// A short, stable description of a lookup failure for logs and DSN diagnostic text.
fn describe(e: &NetError) -> String {
    match e {
        NetError::Timeout => "DNS query timed out".to_string(),
        other => format!("DNS error: {other}"),
    }
}

/// Parses an RFC 5321 §4.1.3 address literal; `Ok(None)` when `domain` is not bracketed.
fn address_literal(domain: &str) -> Result<Option<IpAddr>, RouteError> {
    let Some(inner) = domain
        .trim()
        .strip_prefix('[')
        .and_then(|d| d.strip_suffix(']'))
    else {
        return Ok(None);
    };
    let parsed = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
            inner[5..].parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        }
        _ => inner.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    };
    parsed
        .map(Some)
        .ok_or_else(|| RouteError::Permanent(format!("invalid address literal {domain}")))
}

/// Turns the domain of an address into a fully qualified, lowercase DNS name, converting UTF-8
/// labels to A-labels (IDNA, RFC 5890). Fully qualified so that no resolv.conf search domain is
/// ever appended: RFC 5321 §5.1 routes only on the domain as given.
fn domain_name(domain: &str) -> Result<Name, RouteError> {
    let trimmed = domain.trim();
    let bare = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if bare.is_empty() || bare.starts_with('.') || bare.ends_with('.') {
        return Err(RouteError::Permanent(format!("invalid domain {domain:?}")));
    }
    let mut name = Name::from_utf8(bare)
        .map_err(|e| RouteError::Permanent(format!("invalid domain {domain:?}: {e}")))?
        .to_lowercase();
    name.set_fqdn(true);
    Ok(name)
}

/// A name as shown to people: lowercase, without the trailing dot.
fn display(name: &Name) -> String {
    let ascii = name.to_lowercase().to_ascii();
    ascii.strip_suffix('.').unwrap_or(&ascii).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tern_testkit::dns::TestDns;

    fn ip4(d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, d))
    }

    fn hosts(route: Route) -> Vec<Host> {
        match route {
            Route::Hosts(h) => h,
            Route::NullMx => panic!("expected hosts, got a null MX"),
        }
    }

    fn names(hosts: &[Host]) -> Vec<&str> {
        hosts.iter().map(|h| h.name.as_str()).collect()
    }

    #[tokio::test]
    async fn mx_records_are_ordered_by_preference_with_their_addresses() {
        let dns = TestDns::start().await;
        dns.add_mx("example.test", 20, "backup.example.test");
        dns.add_mx("example.test", 5, "primary.example.test");
        dns.add_a("primary.example.test", Ipv4Addr::new(127, 0, 0, 2));
        dns.add_aaaa("primary.example.test", Ipv6Addr::LOCALHOST);
        dns.add_a("backup.example.test", Ipv4Addr::new(127, 0, 0, 3));
        let r = Resolver::with_nameserver(dns.addr);

        // Case and a trailing dot do not matter.
        let got = hosts(r.route("Example.TEST.").await.expect("route"));
        assert_eq!(
            got,
            vec![
                Host {
                    name: "primary.example.test".into(),
                    preference: 5,
                    addrs: vec![ip4(2), IpAddr::V6(Ipv6Addr::LOCALHOST)],
                },
                Host {
                    name: "backup.example.test".into(),
                    preference: 20,
                    addrs: vec![ip4(3)],
                },
            ]
        );
    }

    #[tokio::test]
    async fn equal_preferences_are_shuffled() {
        let dns = TestDns::start().await;
        dns.add_mx("example.test", 10, "a.example.test");
        dns.add_mx("example.test", 10, "b.example.test");
        dns.add_mx("example.test", 30, "last.example.test");
        dns.add_a("a.example.test", Ipv4Addr::new(127, 0, 0, 2));
        dns.add_a("b.example.test", Ipv4Addr::new(127, 0, 0, 3));
        dns.add_a("last.example.test", Ipv4Addr::new(127, 0, 0, 4));
        let r = Resolver::with_nameserver(dns.addr);

        let mut a_first = 0;
        let mut b_first = 0;
        // The chance that 40 fair shuffles all agree is 2^-39.
        for _ in 0..40 {
            let got = hosts(r.route("example.test").await.expect("route"));
            match names(&got).as_slice() {
                ["a.example.test", "b.example.test", "last.example.test"] => a_first += 1,
                ["b.example.test", "a.example.test", "last.example.test"] => b_first += 1,
                other => panic!("bad order {other:?}"),
            }
        }
        assert!(
            a_first > 0 && b_first > 0,
            "a first {a_first}, b first {b_first}"
        );
    }

    #[tokio::test]
    async fn no_mx_falls_back_to_the_domains_own_addresses() {
        let dns = TestDns::start().await;
        dns.add_a("plain.test", Ipv4Addr::new(127, 0, 0, 7));
        dns.add_aaaa("v6only.test", Ipv6Addr::LOCALHOST);
        dns.add_txt("noaddr.test", "v=spf1 -all");
        let r = Resolver::with_nameserver(dns.addr);

        assert_eq!(
            hosts(r.route("plain.test").await.expect("implicit mx")),
            vec![Host {
                name: "plain.test".into(),
                preference: 0,
                addrs: vec![ip4(7)],
            }]
        );
        assert_eq!(
            hosts(r.route("v6only.test").await.expect("implicit mx v6")),
            vec![Host {
                name: "v6only.test".into(),
                preference: 0,
                addrs: vec![IpAddr::V6(Ipv6Addr::LOCALHOST)],
            }]
        );
        // Exists, but neither MX nor address: nowhere to deliver, authoritatively.
        let err = r.route("noaddr.test").await.expect_err("no address");
        assert!(matches!(err, RouteError::Permanent(_)), "{err:?}");
    }

    #[tokio::test]
    async fn null_mx_is_reported() {
        let dns = TestDns::start().await;
        dns.add_mx("nomail.test", 0, ".");
        // RFC 7505 §3: domains with a null MX often still have addresses (a web site); they
        // must not be used as an implicit MX.
        dns.add_a("nomail.test", Ipv4Addr::new(127, 0, 0, 5));
        let r = Resolver::with_nameserver(dns.addr);
        assert_eq!(r.route("nomail.test").await.expect("route"), Route::NullMx);
    }

    #[tokio::test]
    async fn nxdomain_is_permanent_and_servfail_temporary() {
        let dns = TestDns::start().await;
        dns.set_servfail("broken.test");
        let r = Resolver::with_nameserver(dns.addr);

        let err = r.route("nowhere.test").await.expect_err("nxdomain");
        let RouteError::Permanent(msg) = &err else {
            panic!("expected permanent, got {err:?}")
        };
        assert!(msg.contains("nowhere.test does not exist"), "{msg}");

        let err = r.route("broken.test").await.expect_err("servfail");
        assert!(matches!(err, RouteError::Temporary(_)), "{err:?}");
    }

    #[tokio::test]
    async fn hosts_without_addresses_are_skipped() {
        let dns = TestDns::start().await;
        dns.add_mx("example.test", 10, "gone.example.test");
        dns.add_mx("example.test", 20, "empty.example.test");
        dns.add_mx("example.test", 30, "good.example.test");
        dns.add_txt("empty.example.test", "no addresses here");
        dns.add_a("good.example.test", Ipv4Addr::new(127, 0, 0, 8));
        let r = Resolver::with_nameserver(dns.addr);
        let got = hosts(r.route("example.test").await.expect("route"));
        assert_eq!(names(&got), ["good.example.test"]);
    }

    #[tokio::test]
    async fn when_no_exchange_has_an_address_the_error_depends_on_why() {
        let dns = TestDns::start().await;
        // Every exchange is NXDOMAIN: the domain's MX records point nowhere, permanently.
        dns.add_mx("dead.test", 10, "gone1.dead.test");
        dns.add_mx("dead.test", 20, "gone2.dead.test");
        // One exchange's name server fails: that may heal, so try again later.
        dns.add_mx("flaky.test", 10, "gone.flaky.test");
        dns.add_mx("flaky.test", 20, "fail.flaky.test");
        dns.set_servfail("fail.flaky.test");
        let r = Resolver::with_nameserver(dns.addr);

        let err = r.route("dead.test").await.expect_err("dead");
        assert!(matches!(err, RouteError::Permanent(_)), "{err:?}");
        let err = r.route("flaky.test").await.expect_err("flaky");
        assert!(matches!(err, RouteError::Temporary(_)), "{err:?}");
    }

    #[tokio::test]
    async fn address_literals_need_no_dns() {
        // Nothing listens here; a literal must not cause a query.
        let r = Resolver::with_nameserver("127.0.0.1:9".parse().expect("addr"));
        assert_eq!(
            hosts(r.route("[127.0.0.1]").await.expect("v4 literal")),
            vec![Host {
                name: "[127.0.0.1]".into(),
                preference: 0,
                addrs: vec![ip4(1)],
            }]
        );
        let got = hosts(r.route("[IPv6:::1]").await.expect("v6 literal"));
        assert_eq!(got[0].addrs, vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        for bad in ["[not-an-ip]", "[::1]", "[IPv6:127.0.0.1]"] {
            let err = r.route(bad).await.expect_err(bad);
            assert!(matches!(err, RouteError::Permanent(_)), "{bad}: {err:?}");
        }
    }

    #[tokio::test]
    async fn utf8_domains_are_looked_up_as_a_labels() {
        let dns = TestDns::start().await;
        // "bücher.test" in IDNA form (RFC 3492).
        dns.add_a("xn--bcher-kva.test", Ipv4Addr::new(127, 0, 0, 6));
        let r = Resolver::with_nameserver(dns.addr);
        let got = hosts(r.route("Bücher.test").await.expect("idna"));
        assert_eq!(names(&got), ["xn--bcher-kva.test"]);
        assert_eq!(got[0].addrs, vec![ip4(6)]);
    }

    #[tokio::test]
    async fn malformed_domains_are_permanent() {
        let r = Resolver::with_nameserver("127.0.0.1:9".parse().expect("addr"));
        for bad in ["", ".", "a..b", ".leading.test"] {
            let err = r.route(bad).await.expect_err(bad);
            assert!(matches!(err, RouteError::Permanent(_)), "{bad:?}: {err:?}");
        }
    }
}
