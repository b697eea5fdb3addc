//! TCP_NODELAY on PostgreSQL connections.
//!
//! sqlx 0.9.0 opens its TCP connections without TCP_NODELAY (a regression: launchbadge/sqlx
//! issue 4335, fixed by pull request 4336, not yet released). It writes a request larger than
//! its 16 KiB write chunk in two `send` calls, and Nagle's algorithm then holds the tail until
//! the server acknowledges the head, which the server delays by 40 ms on Linux: every
//! statement carrying more than 16 KiB (a multi-row delivery insert, any large message) took
//! 40 ms longer than it should, while holding its row locks. libpq always sets TCP_NODELAY.
//!
//! sqlx gives no access to its socket, so after connecting we ask the server which client port
//! it sees (`inet_client_port()`), find our socket with that local port and the server's port
//! among this process's descriptors, and set the option on it. Behind a proxy or NAT the ports
//! differ and nothing is found: the connection then works as before, only slower for large
//! requests. Over a Unix socket there is nothing to do. Remove this module once sqlx sets the
//! option itself.

use sqlx::{PgConnection, Row};

/// Sets TCP_NODELAY on `conn`'s socket. Returns whether a TCP socket was found and set; a
/// connection over a Unix socket, or whose ports cannot be matched, is left as it is.
pub(crate) async fn set_nodelay(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let row =
        sqlx::query("SELECT inet_client_port() AS client_port, inet_server_port() AS server_port")
            .fetch_one(&mut *conn)
            .await?;
    let client: Option<i32> = row.try_get("client_port")?;
    let server: Option<i32> = row.try_get("server_port")?;
    let (Some(client), Some(server)) = (client, server) else {
        return Ok(false);
    };
    let (Ok(client), Ok(server)) = (u16::try_from(client), u16::try_from(server)) else {
        return Ok(false);
    };
    Ok(sys::set_on_matching(client, server))
}

/// The workspace denies `unsafe`; this module is the one exception: sqlx's socket is reachable
/// only as a raw descriptor, so the socket calls are made through libc, each with its SAFETY
/// argument.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod sys {
    use std::mem::{size_of, zeroed};

    /// Local and remote ports of descriptor `fd` if it is a TCP/IP socket.
    fn ports(fd: libc::c_int) -> Option<(u16, u16)> {
        fn port_of(addr: &libc::sockaddr_storage) -> Option<u16> {
            match i32::from(addr.ss_family) {
                libc::AF_INET => {
                    // SAFETY: the family says the storage holds a sockaddr_in, which it is
                    // large and aligned enough for.
                    let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_in) };
                    Some(u16::from_be(a.sin_port))
                }
                libc::AF_INET6 => {
                    // SAFETY: as above, for sockaddr_in6.
                    let a = unsafe { &*(addr as *const _ as *const libc::sockaddr_in6) };
                    Some(u16::from_be(a.sin6_port))
                }
                _ => None,
            }
        }
        // SAFETY: plain system calls on an integer descriptor with buffers of the size given;
        // a descriptor closed meanwhile only makes them fail with EBADF.
        unsafe {
            let mut local: libc::sockaddr_storage = zeroed();
            let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            if libc::getsockname(fd, &mut local as *mut _ as *mut libc::sockaddr, &mut len) != 0 {
                return None;
            }
            let mut peer: libc::sockaddr_storage = zeroed();
            let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            if libc::getpeername(fd, &mut peer as *mut _ as *mut libc::sockaddr, &mut len) != 0 {
                return None;
            }
            Some((port_of(&local)?, port_of(&peer)?))
        }
    }

    /// This process's TCP socket from local port `local` to remote port `remote`.
    pub(super) fn find(local: u16, remote: u16) -> Option<libc::c_int> {
        let entries = std::fs::read_dir("/proc/self/fd").ok()?;
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::c_int>().ok())
            .find(|&fd| ports(fd) == Some((local, remote)))
    }

    pub(super) fn set_on_matching(local: u16, remote: u16) -> bool {
        let Some(fd) = find(local, remote) else {
            return false;
        };
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with a pointer to a c_int and its size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &on as *const _ as *const libc::c_void,
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        rc == 0
    }

    /// Whether TCP_NODELAY is set on `fd`.
    #[cfg(test)]
    pub(super) fn nodelay(fd: libc::c_int) -> bool {
        let mut on: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt into a c_int of the given size.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &mut on as *mut _ as *mut libc::c_void,
                &mut len,
            )
        };
        rc == 0 && on != 0
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    /// Elsewhere the descriptors are not listed; connections keep sqlx's defaults.
    pub(super) fn set_on_matching(_local: u16, _remote: u16) -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use sqlx::Connection;
    use sqlx::postgres::PgConnectOptions;

    use super::*;

    /// A pooled PostgreSQL connection of the store is found among the descriptors and has
    /// TCP_NODELAY set, where sqlx alone leaves it off.
    #[tokio::test]
    async fn store_connections_have_nodelay() {
        let db = tern_testkit::TestDb::new("postgres").await;
        let options: PgConnectOptions = db.url.parse().unwrap();
        let mut bare = PgConnection::connect_with(&options).await.unwrap();
        let ports = |row: sqlx::postgres::PgRow| {
            let client: i32 = row.try_get("c").unwrap();
            let server: i32 = row.try_get("s").unwrap();
            (client as u16, server as u16)
        };
        let q = "SELECT inet_client_port() AS c, inet_server_port() AS s";
        let (client, server) = ports(sqlx::query(q).fetch_one(&mut bare).await.unwrap());
        let fd = sys::find(client, server).expect("sqlx's socket among our descriptors");
        assert!(
            !sys::nodelay(fd),
            "sqlx 0.9.0 leaves Nagle on (else drop this module)"
        );
        assert!(set_nodelay(&mut bare).await.unwrap());
        assert!(sys::nodelay(fd));
        bare.close().await.unwrap();

        let store = crate::Store::connect(&db.url).await.unwrap();
        let crate::Pool::Pg(pool) = store.pool() else {
            panic!("not PostgreSQL")
        };
        let mut conn = pool.acquire().await.unwrap();
        let (client, server) = ports(sqlx::query(q).fetch_one(&mut *conn).await.unwrap());
        let fd = sys::find(client, server).unwrap();
        assert!(sys::nodelay(fd), "the store's pool sets it on connect");
        drop(conn);
        store.close().await;
    }
}
