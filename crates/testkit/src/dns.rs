//! An in-process authoritative DNS server for tests: [`TestDns`] listens on 127.0.0.1 (an
//! ephemeral port, UDP and TCP) and answers from an in-memory table that a test fills and
//! changes while the server runs, so MX routing, SPF and similar code can be exercised without
//! the network.
//!
//! It deliberately does not implement zones, delegation, CNAME chasing, wildcards, DNSSEC or
//! dynamic update: a name either has records (answered authoritatively), exists without records
//! of the asked type (NOERROR with an empty answer, RFC 2308 §2.2 "NODATA"), is marked to fail
//! (SERVFAIL), or is absent (NXDOMAIN, RFC 2308 §2.1). Every answer carries TTL 0 and every
//! negative answer an SOA whose minimum is 0, so resolvers never cache what a test later changes.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

/// A running test DNS server; it stops when dropped.
pub struct TestDns {
    /// The address (UDP and TCP on the same port) to point a resolver at.
    pub addr: SocketAddr,
    table: Arc<Mutex<Table>>,
    // Dropping the server drops its task set, which aborts the listeners.
    server: Server<Handler>,
}

/// The records, keyed by the lowercased, fully qualified owner name ("mx.example.test.").
#[derive(Default)]
struct Table {
    names: HashMap<String, Entry>,
}

#[derive(Default)]
struct Entry {
    rdata: Vec<RData>,
    servfail: bool,
}

impl TestDns {
    /// Binds 127.0.0.1 on one ephemeral port for both UDP and TCP and starts serving an empty
    /// table (every name answers NXDOMAIN until records are added).
    pub async fn start() -> TestDns {
        // The resolver uses one port for both transports (it falls back to TCP on truncation),
        // so UDP picks the port and TCP must get the same one; retry if it happens to be taken.
        for _ in 0..20 {
            let udp = UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind test dns udp socket");
            let addr = udp.local_addr().expect("test dns udp address");
            let Ok(tcp) = TcpListener::bind(addr).await else {
                continue;
            };
            let table = Arc::new(Mutex::new(Table::default()));
            let mut server = Server::new(Handler {
                table: table.clone(),
            });
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 32);
            return TestDns {
                addr,
                table,
                server,
            };
        }
        panic!("could not bind UDP and TCP on the same port for the test dns server");
    }

    /// Adds an MX record; `exchange` "." makes a null MX (RFC 7505).
    pub fn add_mx(&self, domain: &str, preference: u16, exchange: &str) {
        let exchange = if exchange.trim_end_matches('.').is_empty() {
            Name::root()
        } else {
            fqdn(exchange)
        };
        self.add(domain, RData::MX(MX::new(preference, exchange)));
    }

    /// Adds an A record.
    pub fn add_a(&self, name: &str, ip: Ipv4Addr) {
        self.add(name, RData::A(A(ip)));
    }

    /// Adds an AAAA record.
    pub fn add_aaaa(&self, name: &str, ip: Ipv6Addr) {
        self.add(name, RData::AAAA(AAAA(ip)));
    }

    /// Adds a TXT record holding one character-string. Text longer than 255 bytes is split
    /// into several character-strings, as RFC 7208 §3.3 expects publishers of long SPF records
    /// to do.
    pub fn add_txt(&self, name: &str, text: &str) {
        let mut parts = Vec::new();
        let mut rest = text;
        while rest.len() > 255 {
            let mut cut = 255;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            parts.push(rest[..cut].to_string());
            rest = &rest[cut..];
        }
        parts.push(rest.to_string());
        self.add(name, RData::TXT(TXT::new(parts)));
    }

    /// Makes every query for `name` answer SERVFAIL, whatever records it has.
    pub fn set_servfail(&self, name: &str) {
        self.lock().names.entry(key(name)).or_default().servfail = true;
    }

    fn add(&self, name: &str, rdata: RData) {
        self.lock()
            .names
            .entry(key(name))
            .or_default()
            .rdata
            .push(rdata);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A test that panicked while holding the lock cannot leave the table half-changed
        // (each change is one push), so keep serving.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        // The task set is aborted when `server` drops; cancelling first lets the tasks stop
        // accepting even if something else still polls them.
        self.server.shutdown_token().cancel();
    }
}

/// Parses a name given by a test; a malformed name is a bug in the test.
fn fqdn(name: &str) -> Name {
    let mut n = Name::from_ascii(name)
        .unwrap_or_else(|e| panic!("test dns: bad name {name:?}: {e}"))
        .to_lowercase();
    n.set_fqdn(true);
    n
}

fn key(name: &str) -> String {
    fqdn(name).to_ascii()
}

struct Handler {
    table: Arc<Mutex<Table>>,
}

/// What the table says about one question.
struct Answer {
    code: ResponseCode,
    rdata: Vec<RData>,
}

impl Handler {
    fn answer(&self, qname: &Name, qtype: RecordType) -> Answer {
        let mut lower = qname.to_lowercase();
        lower.set_fqdn(true);
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        match table.names.get(&lower.to_ascii()) {
            None => Answer {
                code: ResponseCode::NXDomain,
                rdata: Vec::new(),
            },
            Some(entry) if entry.servfail => Answer {
                code: ResponseCode::ServFail,
                rdata: Vec::new(),
            },
            Some(entry) => Answer {
                code: ResponseCode::NoError,
                rdata: entry
                    .rdata
                    .iter()
                    .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
                    .cloned()
                    .collect(),
            },
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = false;

        // Echo EDNS (RFC 6891 §6.1.1) so the resolver keeps its larger UDP payload size.
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = edns.as_ref() {
            builder.edns(e);
        }

        let Ok(info) = request.request_info() else {
            // Not exactly one question: RFC 1035 §4.1.1 FORMERR.
            let response = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return send(&mut response_handle, response, &metadata).await;
        };
        let qname: Name = info.query.name().clone().into();
        let answer = self.answer(&qname, info.query.query_type());
        metadata.response_code = answer.code;

        let answers: Vec<Record> = answer
            .rdata
            .into_iter()
            .map(|rdata| Record::from_rdata(qname.clone(), 0, rdata))
            .collect();
        // Negative answers carry an SOA whose minimum (the negative TTL, RFC 2308 §5) is 0.
        let soa: Vec<Record> = if answers.is_empty() && answer.code != ResponseCode::ServFail {
            let zone = qname.base_name();
            vec![Record::from_rdata(
                zone.clone(),
                0,
                RData::SOA(SOA::new(
                    Name::from_ascii("ns.test.").unwrap_or_else(|_| Name::root()),
                    Name::from_ascii("hostmaster.test.").unwrap_or_else(|_| Name::root()),
                    1,
                    3600,
                    600,
                    86400,
                    0,
                )),
            )]
        } else {
            Vec::new()
        };
        let response = builder.build(metadata, answers.iter(), [], soa.iter(), []);
        send(&mut response_handle, response, &metadata).await
    }
}

/// Sends `response`; if that fails the client has gone, and the server only needs to know what
/// was meant to be sent.
async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    metadata: &Metadata,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "test dns could not send a response");
            ResponseInfo::from(Header {
                metadata: *metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::TokioResolver;
    use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;

    fn resolver(addr: SocketAddr) -> TokioResolver {
        resolver_with(NameServerConfig::udp_and_tcp(addr.ip()), addr)
    }

    fn resolver_with(mut ns: NameServerConfig, addr: SocketAddr) -> TokioResolver {
        for c in &mut ns.connections {
            c.port = addr.port();
        }
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], vec![ns]),
            TokioRuntimeProvider::default(),
        );
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        builder.options_mut().cache_size = 0;
        builder.build().expect("resolver")
    }

    #[tokio::test]
    async fn answers_records_nodata_nxdomain_and_servfail() {
        let dns = TestDns::start().await;
        dns.add_mx("Example.Test", 10, "mx1.example.test");
        dns.add_mx("example.test", 0, ".");
        dns.add_a("mx1.example.test", Ipv4Addr::new(127, 0, 0, 2));
        dns.add_aaaa("mx1.example.test", Ipv6Addr::LOCALHOST);
        dns.add_txt("example.test", "v=spf1 -all");
        dns.set_servfail("broken.test");
        let r = resolver(dns.addr);

        let mx = r.mx_lookup("example.test.").await.expect("mx");
        let mut got: Vec<(u16, String)> = mx
            .answers()
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::MX(m) => Some((m.preference, m.exchange.to_ascii())),
                _ => None,
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![(0, ".".to_string()), (10, "mx1.example.test.".to_string())]
        );

        let a = r.ipv4_lookup("MX1.example.test.").await.expect("a");
        assert!(
            matches!(a.answers()[0].data, RData::A(A(ip)) if ip == Ipv4Addr::new(127, 0, 0, 2))
        );
        let aaaa = r.ipv6_lookup("mx1.example.test.").await.expect("aaaa");
        assert!(
            matches!(aaaa.answers()[0].data, RData::AAAA(AAAA(ip)) if ip == Ipv6Addr::LOCALHOST)
        );
        let txt = r.txt_lookup("example.test.").await.expect("txt");
        assert_eq!(txt.answers().len(), 1);

        // The name exists but has no A record: NOERROR/NODATA, not NXDOMAIN.
        let nodata = r.ipv4_lookup("example.test.").await.expect_err("nodata");
        assert!(
            nodata.is_no_records_found() && !nodata.is_nx_domain(),
            "{nodata:?}"
        );

        let nx = r.mx_lookup("nowhere.test.").await.expect_err("nxdomain");
        assert!(nx.is_nx_domain(), "{nx:?}");

        let fail = r.mx_lookup("broken.test.").await.expect_err("servfail");
        assert!(!fail.is_no_records_found(), "{fail:?}");

        // The same answers over TCP alone.
        let tcp = resolver_with(NameServerConfig::tcp(dns.addr.ip()), dns.addr);
        let mx = tcp.mx_lookup("example.test.").await.expect("mx over tcp");
        assert_eq!(mx.answers().len(), 2);
        assert!(
            tcp.mx_lookup("nowhere.test.")
                .await
                .unwrap_err()
                .is_nx_domain()
        );
    }

    #[tokio::test]
    async fn changes_are_seen_while_running() {
        let dns = TestDns::start().await;
        let r = resolver(dns.addr);
        assert!(
            r.ipv4_lookup("late.test.")
                .await
                .unwrap_err()
                .is_nx_domain()
        );
        dns.add_a("late.test", Ipv4Addr::new(127, 0, 0, 9));
        let a = r.ipv4_lookup("late.test.").await.expect("added record");
        assert_eq!(a.answers().len(), 1);
    }

    #[tokio::test]
    async fn long_txt_is_split_into_character_strings() {
        let dns = TestDns::start().await;
        // Enough text to exceed a 1232-byte EDNS UDP payload, so the resolver may need TCP.
        for i in 0..8 {
            dns.add_txt("big.test", &format!("{i}{}", "x".repeat(299)));
        }
        let r = resolver(dns.addr);
        let txt = r.txt_lookup("big.test.").await.expect("txt over tcp");
        assert_eq!(txt.answers().len(), 8);
        for rec in txt.answers() {
            let RData::TXT(t) = &rec.data else {
                panic!("not txt: {rec:?}")
            };
            let joined: Vec<u8> = t.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
            assert_eq!(joined.len(), 300);
            assert_eq!(t.txt_data.len(), 2);
        }
    }
}
