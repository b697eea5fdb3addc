//! Writing ManageSieve responses (RFC 5804 §1.2, §4): `OK`, `NO` and `BYE` with an optional
//! response code and human-readable text, and strings as quoted strings where they may be and
//! as literals otherwise.

/// RFC 5804 §4: a quoted string holds at most 1024 octets and no CR, LF or NUL.
const MAX_QUOTED: usize = 1024;

/// Appends `s` as a ManageSieve string: quoted when possible, else a literal `{n}`.
pub(crate) fn string(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() <= MAX_QUOTED && !s.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(s);
    }
}

/// The response codes this server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Code {
    EncryptNeeded,
    QuotaMaxScripts,
    QuotaMaxSize,
    TryLater,
    Active,
    NonExistent,
    AlreadyExists,
    Tag(Vec<u8>),
}

fn code(out: &mut Vec<u8>, c: &Code) {
    out.extend_from_slice(b" (");
    match c {
        Code::EncryptNeeded => out.extend_from_slice(b"ENCRYPT-NEEDED"),
        Code::QuotaMaxScripts => out.extend_from_slice(b"QUOTA/MAXSCRIPTS"),
        Code::QuotaMaxSize => out.extend_from_slice(b"QUOTA/MAXSIZE"),
        Code::TryLater => out.extend_from_slice(b"TRYLATER"),
        Code::Active => out.extend_from_slice(b"ACTIVE"),
        Code::NonExistent => out.extend_from_slice(b"NONEXISTENT"),
        Code::AlreadyExists => out.extend_from_slice(b"ALREADYEXISTS"),
        Code::Tag(tag) => {
            out.extend_from_slice(b"TAG ");
            string(out, tag);
        }
    }
    out.push(b')');
}

/// `OK`, `NO` or `BYE`, then the code and the text when given, then CRLF.
pub(crate) fn status(out: &mut Vec<u8>, word: &str, c: Option<Code>, text: &str) {
    out.extend_from_slice(word.as_bytes());
    if let Some(c) = c {
        code(out, &c);
    }
    if !text.is_empty() {
        out.push(b' ');
        string(out, text.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn ok(out: &mut Vec<u8>, text: &str) {
    status(out, "OK", None, text);
}

pub(crate) fn no(out: &mut Vec<u8>, c: Option<Code>, text: &str) {
    status(out, "NO", c, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, input);
        out
    }

    #[test]
    fn strings_are_quoted_or_literal() {
        assert_eq!(s(b"abc"), b"\"abc\"");
        assert_eq!(s(b"a\"b\\c"), b"\"a\\\"b\\\\c\"");
        assert_eq!(s(b"line 1\r\nline 2"), b"{14}\r\nline 1\r\nline 2");
        assert_eq!(s(&[b'x'; 1025])[..7], *b"{1025}\r");
    }

    #[test]
    fn status_lines() {
        let mut out = Vec::new();
        no(&mut out, Some(Code::NonExistent), "no such script");
        status(&mut out, "OK", Some(Code::Tag(b"t1".to_vec())), "Done");
        ok(&mut out, "");
        assert_eq!(
            out,
            b"NO (NONEXISTENT) \"no such script\"\r\nOK (TAG \"t1\") \"Done\"\r\nOK\r\n"
        );
    }
}
