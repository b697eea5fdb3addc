//! Syntax checks and canonical forms for what the store keeps: domain names, addresses and
//! IMAP flags.
//!
//! Canonical forms are what make plain SQL equality correct: domains and addresses are stored
//! lowercase, flags in one spelling and one order. This module deliberately accepts only the
//! common, unquoted forms (dot-atom local parts, ASCII A-label domains): quoted local parts and
//! raw UTF-8 addresses (RFC 6531) are refused rather than half supported.

use crate::{Error, Result};

/// Checks a domain name (RFC 1035 §2.3.1 "preferred name syntax", with the RFC 1123 §2.1
/// relaxation that labels may start with a digit) and returns it lowercase.
pub(crate) fn domain(name: &str) -> Result<String> {
    let invalid = |why: &str| Error::Invalid(format!("domain {name:?}: {why}"));
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    // RFC 1035 §2.3.4: at most 255 octets on the wire, which leaves 253 characters of text.
    if name.len() > 253 {
        return Err(invalid("longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(invalid("empty label"));
        }
        if label.len() > 63 {
            return Err(invalid("label longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid("only letters, digits, '-' and '.' are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label may not begin or end with '-'"));
        }
    }
    Ok(name.to_ascii_lowercase())
}

/// RFC 5322 §3.2.3 `atext`: the characters of an unquoted local part besides '.'.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Checks a dot-atom local part (RFC 5322 §3.2.3) of at most 64 octets (RFC 5321 §4.5.3.1.1)
/// and returns it lowercase.
pub(crate) fn local_part(local: &str) -> Result<String> {
    let invalid = |why: &str| Error::Invalid(format!("local part {local:?}: {why}"));
    if local.is_empty() {
        return Err(invalid("empty"));
    }
    if local.len() > 64 {
        return Err(invalid("longer than 64 characters"));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(invalid("misplaced '.'"));
    }
    if !local.bytes().all(|b| b == b'.' || is_atext(b)) {
        return Err(invalid("unsupported character"));
    }
    Ok(local.to_ascii_lowercase())
}

/// Splits `user@domain` at its last '@' and returns both parts, checked and lowercase.
pub(crate) fn address(address: &str) -> Result<(String, String)> {
    let Some((local, dom)) = address.rsplit_once('@') else {
        return Err(Error::Invalid(format!("address {address:?}: no '@'")));
    };
    Ok((local_part(local)?, domain(dom)?))
}

/// The canonical spelling of a full address.
pub(crate) fn normalize_address(addr: &str) -> Result<String> {
    let (local, dom) = address(addr)?;
    Ok(format!("{local}@{dom}"))
}

/// An alias source: `user@domain`, or `@domain` for the domain's catch-all. Returns the
/// canonical source and its domain.
pub(crate) fn alias_source(source: &str) -> Result<(String, String)> {
    match source.strip_prefix('@') {
        Some(dom) => {
            let dom = domain(dom)?;
            Ok((format!("@{dom}"), dom))
        }
        None => {
            let (local, dom) = address(source)?;
            Ok((format!("{local}@{dom}"), dom))
        }
    }
}

/// The IMAP system flags (RFC 9051 §2.3.2) in the order the store lists them. `\Recent`
/// is absent on purpose: it is per-session state (and gone from IMAP4rev2), never stored.
const SYSTEM_FLAGS: [&str; 5] = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];

pub(crate) const SEEN: &str = "\\Seen";
pub(crate) const DELETED: &str = "\\Deleted";

/// RFC 9051 §9 `atom-specials` besides CTL and SP (which the caller already excludes), minus
/// '\\' which only begins a system flag.
fn is_flag_char(b: u8) -> bool {
    b.is_ascii_graphic() && !b"(){%*\"]".contains(&b)
}

/// Checks a list of flags and returns it canonical: system flags in their standard spelling
/// and fixed order, then keywords in case-insensitive alphabetical order, each flag once.
/// RFC 9051 §2.3.2 treats flags case-insensitively, so `\SEEN` is `\Seen` and keyword `$junk`
/// is the same keyword as `$Junk` (the first spelling given wins).
pub(crate) fn canonical_flags<S: AsRef<str>>(flags: &[S]) -> Result<Vec<String>> {
    let mut system = [false; SYSTEM_FLAGS.len()];
    let mut keywords: Vec<String> = Vec::new();
    for flag in flags {
        let flag = flag.as_ref();
        if flag.is_empty() || flag.len() > 255 {
            return Err(Error::Invalid(format!("flag {flag:?}: bad length")));
        }
        if let Some(name) = flag.strip_prefix('\\') {
            if name.eq_ignore_ascii_case("Recent") {
                continue;
            }
            match SYSTEM_FLAGS
                .iter()
                .position(|s| s[1..].eq_ignore_ascii_case(name))
            {
                Some(i) => system[i] = true,
                None => return Err(Error::Invalid(format!("unknown system flag {flag:?}"))),
            }
        } else {
            if !flag.bytes().all(is_flag_char) {
                return Err(Error::Invalid(format!("flag {flag:?}: bad character")));
            }
            if !keywords.iter().any(|k| k.eq_ignore_ascii_case(flag)) {
                keywords.push(flag.to_string());
            }
        }
    }
    keywords.sort_by_key(|k| k.to_ascii_lowercase());
    let mut out: Vec<String> = SYSTEM_FLAGS
        .iter()
        .zip(system)
        .filter(|(_, on)| *on)
        .map(|(s, _)| (*s).to_string())
        .collect();
    out.extend(keywords);
    Ok(out)
}

/// Parses the stored, space-separated flag column (already canonical).
pub(crate) fn split_flags(stored: &str) -> Vec<String> {
    stored
        .split_ascii_whitespace()
        .map(str::to_string)
        .collect()
}

pub(crate) fn has_flag(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_checked_and_lowercased() {
        assert_eq!(domain("Example.ORG").unwrap(), "example.org");
        assert_eq!(domain("localhost").unwrap(), "localhost");
        assert_eq!(domain("3com.com").unwrap(), "3com.com");
        for bad in [
            "",
            ".",
            "a..b",
            "example.org.",
            "-a.org",
            "a-.org",
            "a b.org",
            "ex_ample.org",
            "exämple.org",
        ] {
            assert!(domain(bad).is_err(), "{bad:?} accepted");
        }
        assert!(domain(&"a".repeat(64)).is_err());
        assert!(domain(&["a"; 127].join(".")).is_ok());
        assert!(domain(&["a"; 128].join(".")).is_err());
    }

    #[test]
    fn addresses_split_at_the_last_at_sign() {
        assert_eq!(
            address("John.Doe+tag@Example.org").unwrap(),
            ("john.doe+tag".to_string(), "example.org".to_string())
        );
        for bad in [
            "nobody",
            "@example.org",
            "a@",
            ".a@example.org",
            "a.@example.org",
            "a..b@example.org",
            "a b@example.org",
            "a\"b@example.org",
            "a@b@example.org",
        ] {
            assert!(address(bad).is_err(), "{bad:?} accepted");
        }
        assert!(address(&format!("{}@example.org", "a".repeat(65))).is_err());
    }

    #[test]
    fn alias_sources_include_catch_alls() {
        assert_eq!(
            alias_source("@Example.org").unwrap(),
            ("@example.org".to_string(), "example.org".to_string())
        );
        assert_eq!(
            alias_source("Info@example.org").unwrap(),
            ("info@example.org".to_string(), "example.org".to_string())
        );
        assert!(alias_source("@").is_err());
    }

    #[test]
    fn flags_become_canonical() {
        let flags = canonical_flags(&[
            "$Junk", "\\draft", "\\SEEN", "\\Recent", "$junk", "Alpha", "\\Seen",
        ])
        .unwrap();
        assert_eq!(flags, ["\\Seen", "\\Draft", "$Junk", "Alpha"]);
        assert!(canonical_flags(&["\\Bogus"]).is_err());
        assert!(canonical_flags(&["two words"]).is_err());
        assert!(canonical_flags(&[""]).is_err());
        assert!(canonical_flags(&["a(b"]).is_err());
        assert!(canonical_flags::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn stored_flags_round_trip() {
        let flags = canonical_flags(&["\\Deleted", "x"]).unwrap();
        assert_eq!(split_flags(&flags.join(" ")), flags);
        assert!(has_flag(&flags, "\\deleted"));
        assert!(!has_flag(&flags, SEEN));
        assert!(split_flags("").is_empty());
    }
}
