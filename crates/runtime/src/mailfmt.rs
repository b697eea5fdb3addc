//! Small pieces of message formatting the agents share: RFC 5322 dates and the `Received:`
//! trace header (RFC 5321 §4.4).
//!
//! Message parsing lives in mail-parser and MIME building in mail-builder; this is only what
//! those crates do not offer in the shape the agents need.

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// RFC 5322 §3.3 date-time in UTC, e.g. `Mon, 23 Nov 2026 00:00:00 +0000`.
pub fn rfc5322_date(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    format!(
        "{weekday}, {d} {} {y:04} {:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What a `Received:` header records about one hop.
pub struct Received<'a> {
    /// The name the client gave in EHLO/HELO.
    pub helo: &'a str,
    /// The client's address, or None where the operator chose not to expose it.
    pub client_ip: Option<std::net::IpAddr>,
    pub by_host: &'a str,
    /// RFC 3848 protocol: ESMTP, ESMTPS, ESMTPA, ESMTPSA.
    pub with: &'a str,
    pub authenticated_as: Option<&'a str>,
    pub unix_secs: i64,
}

impl Received<'_> {
    /// The header line, CRLF-terminated and folded so no line exceeds 78 characters.
    pub fn header(&self) -> String {
        let helo = sanitize(self.helo);
        let from = match self.client_ip {
            Some(ip) => format!("from {helo} ([{ip}])"),
            None => format!("from {helo}"),
        };
        let auth = match self.authenticated_as {
            Some(a) => format!("\r\n\t(authenticated as {})", sanitize(a)),
            None => String::new(),
        };
        format!(
            "Received: {from}{auth}\r\n\tby {} (Tern) with {};\r\n\t{}\r\n",
            sanitize(self.by_host),
            self.with,
            rfc5322_date(self.unix_secs)
        )
    }
}

/// Keeps client-supplied words from breaking the header: no CR/LF, no parentheses, bounded.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && *c != '(' && *c != ')')
        .take(255)
        .collect::<String>()
        .replace(' ', "_")
}

/// The header block of a message (up to the first empty line), for presence checks.
pub fn header_block(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .or_else(|| message.windows(2).position(|w| w == b"\n\n").map(|i| i + 1))
        .unwrap_or(message.len());
    &message[..end]
}

/// True when the header block has a field named `name` (case-insensitive, at line start).
pub fn has_header(message: &[u8], name: &str) -> bool {
    let block = header_block(message);
    let name = name.as_bytes();
    block.split(|&b| b == b'\n').any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
    })
}

/// Counts header fields named `name` (for loop detection on Received).
pub fn count_header(message: &[u8], name: &str) -> usize {
    let block = header_block(message);
    let name = name.as_bytes();
    block
        .split(|&b| b == b'\n')
        .filter(|line| {
            line.len() > name.len()
                && line[..name.len()].eq_ignore_ascii_case(name)
                && line[name.len()] == b':'
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_392_000),
            "Mon, 23 Nov 2026 00:00:00 +0000"
        );
        assert_eq!(
            rfc5322_date(951_782_400 + 3661),
            "Tue, 29 Feb 2000 01:01:01 +0000"
        );
    }

    #[test]
    fn received_header_is_folded_and_sanitized() {
        let r = Received {
            helo: "evil\r\nBcc: x (y)",
            client_ip: Some("127.0.0.1".parse().unwrap()),
            by_host: "mx.example.test",
            with: "ESMTPSA",
            authenticated_as: Some("alice@example.test"),
            unix_secs: 0,
        };
        let h = r.header();
        assert_eq!(
            h,
            "Received: from evilBcc:_x_y ([127.0.0.1])\r\n\t(authenticated as alice@example.test)\r\n\tby mx.example.test (Tern) with ESMTPSA;\r\n\tThu, 1 Jan 1970 00:00:00 +0000\r\n"
        );
        assert!(h.lines().all(|l| l.len() <= 78));
    }

    #[test]
    fn header_presence_looks_only_at_the_header_block() {
        let m = b"Subject: hi\r\nmessage-id: <a@b>\r\n\r\nDate: not a header\r\n";
        assert!(has_header(m, "Message-ID"));
        assert!(!has_header(m, "Date"));
        assert_eq!(
            count_header(
                b"Received: a\r\nReceived: b\r\n\r\nReceived: c\r\n",
                "received"
            ),
            2
        );
    }
}
