#!/usr/bin/env python3
"""Real mail clients for Tern's end-to-end tests: Python's smtplib, imaplib and poplib.

Each subcommand prints one JSON object on stdout. The Rust tests start the servers, call this
script, and assert on the JSON. Nothing here knows Tern's internals: it is what any user's
client would do over real sockets with real TLS (trusting the test's self-signed certificate).
"""
import argparse
import base64
import hashlib
import hmac
import imaplib
import json
import os
import poplib
import smtplib
import socket
import ssl
import sys
import time


def tls_context(ca):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = True
    return ctx


def smtp_connect(a):
    if a.implicit_tls:
        s = smtplib.SMTP_SSL(a.host, a.port, context=tls_context(a.ca), timeout=30)
        s.ehlo("client.test")
    else:
        s = smtplib.SMTP(a.host, a.port, timeout=30)
        s.ehlo("client.test")
        s.starttls(context=tls_context(a.ca))
        s.ehlo("client.test")
    return s


def cmd_send(a):
    """Submits the message in --message-b64 with AUTH (PLAIN or LOGIN)."""
    msg = base64.b64decode(a.message_b64)
    s = smtp_connect(a)
    if a.mech:
        s.user, s.password = a.user, a.password
        code, resp = s.auth(a.mech, getattr(s, "auth_" + a.mech.lower().replace("-", "_")))
    else:
        code, resp = s.login(a.user, a.password)
    refused = s.sendmail(a.mail_from, a.rcpt, msg, a.mail_option, a.rcpt_option)
    # smtplib does not return the final reply text; NOOP keeps the session honest afterwards.
    noop = s.noop()
    s.quit()
    return {"auth": [code, resp.decode()], "refused": {k: [v[0], v[1].decode()] for k, v in refused.items()},
            "noop": noop[0]}


def cmd_send_errors(a):
    """Drives the bad-input cases on one server; reports every reply."""
    out = {}
    # Wrong password.
    s = smtp_connect(a)
    try:
        s.login(a.user, a.password + "-wrong")
        out["wrong_password"] = "accepted"
    except smtplib.SMTPAuthenticationError as e:
        out["wrong_password"] = [e.smtp_code, e.smtp_error.decode()]
    s.close()
    # AUTH before STARTTLS on the plain port.
    if not a.implicit_tls:
        p = smtplib.SMTP(a.host, a.port, timeout=30)
        p.ehlo("client.test")
        out["auth_advertised_before_tls"] = p.has_extn("auth")
        code, resp = p.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{a.user}\0{a.password}".encode()).decode())
        out["auth_before_tls"] = [code, resp.decode()]
        p.close()
    # Unknown local recipient, overlong line, oversize message, then a good message.
    s = smtp_connect(a)
    s.login(a.user, a.password)
    code, resp = s.mail(a.mail_from)
    code, resp = s.rcpt(a.unknown_rcpt)
    out["unknown_rcpt"] = [code, resp.decode()]
    s.rset()
    code, resp = s.docmd("NOOP " + "x" * 600)
    out["long_line"] = [code, resp.decode()]
    big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * (a.big_kb + 1)
    # Declared size: refused at MAIL FROM (RFC 1870).
    code, resp = s.mail(a.mail_from, [f"SIZE={len(big)}"])
    out["oversize_declared"] = [code, resp.decode()]
    s.rset()
    # Undeclared size: the server reads to the end of DATA, then refuses.
    s.mail(a.mail_from)
    s.rcpt(a.rcpt[0])
    try:
        code, resp = s.data(big)
        out["oversize_data"] = [code, resp.decode()]
    except smtplib.SMTPDataError as e:
        out["oversize_data"] = [e.smtp_code, e.smtp_error.decode()]
    # The same connection still works.
    ok = b"Subject: after errors\r\n\r\nstill serving\r\n"
    refused = s.sendmail(a.mail_from, a.rcpt, ok)
    out["after_errors_refused"] = len(refused)
    s.quit()
    return out


def cmd_session(a):
    """AUTH PLAIN, then each --step in order: "DATA <base64 message>" or a raw command line.
    Reports every reply, so a test can read the whole transcript."""
    s = smtp_connect(a)
    s.user, s.password = a.user, a.password
    out = {"auth": list(s.auth("PLAIN", s.auth_plain)), "steps": []}
    out["auth"][1] = out["auth"][1].decode()
    for step in a.step:
        if step.startswith("DATA "):
            try:
                code, text = s.data(base64.b64decode(step[5:]))
            except smtplib.SMTPDataError as e:
                code, text = e.smtp_code, e.smtp_error
        else:
            code, text = s.docmd(step)
        out["steps"].append([code, text.decode()])
    s.quit()
    return out


def cmd_auth_attempts(a):
    """One connection per --attempt password, AUTH PLAIN only (smtplib's login() would try
    every mechanism and so fail twice): each reply with the seconds it took."""
    out = []
    for password in a.attempt:
        s = smtp_connect(a)
        s.user, s.password = a.user, password
        start = time.monotonic()
        try:
            code, text = s.auth("PLAIN", s.auth_plain)
        except smtplib.SMTPAuthenticationError as e:
            code, text = e.smtp_code, e.smtp_error
        out.append([code, text.decode(), time.monotonic() - start])
        s.close()
    return {"attempts": out}


def b64(data):
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def saslname(name):
    """RFC 5802 section 7: "," and "=" are escaped in user names."""
    return name.replace("=", "=3D").replace(",", "=2C")


def scram_sha256(s, user, password):
    """SMTP AUTH SCRAM-SHA-256 (RFC 5802, RFC 7677, carried as RFC 4954 says), written out by
    hand because smtplib has no SCRAM. Returns the final [code, text], and whether the server
    proved it knows the password's keys (its v= signature), as a real client must check."""
    gs2 = "n,,"
    bare = f"n={saslname(user)},r={b64(os.urandom(18))}"
    code, resp = s.docmd("AUTH", "SCRAM-SHA-256 " + b64(gs2 + bare))
    if code != 334:
        return [code, resp.decode()], False
    server_first = base64.b64decode(resp).decode()
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
    if not nonce.startswith(bare.split(",r=", 1)[1]) or iterations < 4096:
        raise SystemExit(f"bad server-first-message: {server_first}")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c={b64(gs2)},r={nonce}"
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, "sha256").digest()
    proof = bytes(k ^ x for k, x in zip(client_key, signature))
    code, resp = s.docmd(b64(f"{without_proof},p={b64(proof)}"))
    if code != 334:
        return [code, resp.decode()], False
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    expected = "v=" + b64(hmac.new(server_key, auth_message, "sha256").digest())
    verified = base64.b64decode(resp).decode() == expected
    # RFC 4954 section 4: an empty response acknowledges the server's last data.
    code, resp = s.docmd("")
    return [code, resp.decode()], verified


def cmd_scram(a):
    """SCRAM-SHA-256: the mechanisms offered, a login and (with --message-b64) a submission,
    then a wrong password, an unknown user and the right password again, each on its own
    connection (the last shows whether the failures before it got the client throttled)."""
    s = smtp_connect(a)
    out = {"mechanisms": s.esmtp_features.get("auth", "").split()}
    out["auth"], out["server_verified"] = scram_sha256(s, a.user, a.password)
    if a.message_b64:
        refused = s.sendmail(a.mail_from, a.rcpt, base64.b64decode(a.message_b64))
        out["refused"] = {k: [v[0], v[1].decode()] for k, v in refused.items()}
    s.quit()
    for key, user, password in [("wrong_password", a.user, a.password + "-wrong"),
                                ("unknown_user", "nobody." + a.user, a.password),
                                ("after_failures", a.user, a.password)]:
        s = smtp_connect(a)
        out[key], _ = scram_sha256(s, user, password)
        s.close()
    return out


def cmd_mx(a):
    """Plain SMTP as another server would send it to port 25: every reply, one by one."""
    msg = base64.b64decode(a.message_b64)
    s = smtplib.SMTP(a.host, a.port, timeout=30)
    s.ehlo("peer.test")
    out = {"mail": list(s.mail(a.mail_from, a.mail_option)), "rcpt": []}
    out["mail"][1] = out["mail"][1].decode()
    accepted = 0
    for r in a.rcpt:
        code, text = s.rcpt(r, a.rcpt_option)
        out["rcpt"].append([code, text.decode()])
        accepted += code < 300
    if accepted:
        try:
            code, text = s.data(msg)
        except smtplib.SMTPDataError as e:
            code, text = e.smtp_code, e.smtp_error
        out["data"] = [code, text.decode()]
    try:
        s.quit()
    except smtplib.SMTPServerDisconnected:
        pass
    return out


def cmd_lmtp(a):
    """LMTP (RFC 2033) as Postfix's lmtp client speaks it: LHLO, MAIL, RCPTs, DATA, then one
    reply per accepted recipient. smtplib.LMTP sends LHLO; its data() reads only the first
    reply, so the others are read with getreply()."""
    msg = base64.b64decode(a.message_b64)
    s = smtplib.LMTP(a.host, a.port, timeout=30)
    code, _ = s.ehlo("peer.test")
    out = {"lhlo": code, "mail": list(s.mail(a.mail_from)), "rcpt": [], "data": []}
    out["mail"][1] = out["mail"][1].decode()
    accepted = []
    for r in a.rcpt:
        code, text = s.rcpt(r)
        out["rcpt"].append([code, text.decode()])
        if code < 300:
            accepted.append(r)
    if accepted:
        try:
            code, text = s.data(msg)
        except smtplib.SMTPDataError as e:
            code, text = e.smtp_code, e.smtp_error
        out["data"].append([accepted[0], code, text.decode()])
        for r in accepted[1:]:
            code, text = s.getreply()
            out["data"].append([r, code, text.decode()])
    s.quit()
    return out


def imap_connect(a):
    """Returns the connection and the capabilities seen before TLS (None for implicit TLS)."""
    if a.implicit_tls:
        return imaplib.IMAP4_SSL(a.host, a.port, ssl_context=tls_context(a.ca), timeout=30), None
    m = imaplib.IMAP4(a.host, a.port, timeout=30)
    before = list(m.capabilities)
    m.starttls(ssl_context=tls_context(a.ca))
    return m, before


def cmd_fetch(a):
    """Waits for --count messages in --folder (INBOX) and returns them raw, plus flags and header fields."""
    m, caps_before_tls = imap_connect(a)
    caps = list(m.capabilities)
    if a.authenticate:
        typ, _ = m.authenticate("PLAIN", lambda _: f"\0{a.user}\0{a.password}".encode())
    else:
        typ, _ = m.login(a.user, a.password)
    typ, boxes = m.list()
    deadline = time.time() + a.wait
    while True:
        typ, data = m.select(a.folder)
        exists = int(data[0]) if typ == "OK" else 0
        if exists >= a.count or time.time() > deadline:
            break
        time.sleep(0.1)
    messages = []
    if exists:
        typ, data = m.fetch(f"1:{exists}", "(UID FLAGS RFC822.SIZE BODY.PEEK[])")
        for part in data:
            if isinstance(part, tuple):
                messages.append({"meta": part[0].decode(), "raw_b64": base64.b64encode(part[1]).decode()})
        typ, hdr = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
        header_fields = hdr[0][1].decode() if hdr and isinstance(hdr[0], tuple) else ""
        typ, flags_before = m.fetch("1", "(FLAGS)")
        typ, st = m.store("1", "+FLAGS", "(\\Flagged)")
        typ, flags_after = m.fetch("1", "(FLAGS)")
    else:
        header_fields, flags_before, flags_after = "", [b""], [b""]
    typ, ex = m.select(a.folder, readonly=True)
    m.close()
    m.logout()
    return {"capabilities_before_tls": caps_before_tls, "capabilities": caps, "exists": exists, "mailboxes": [b.decode() for b in boxes],
            "messages": messages, "header_fields": header_fields,
            "flags_before": flags_before[0].decode(), "flags_after": flags_after[0].decode()}


def cmd_folders(a):
    """Mailbox management with imaplib: CREATE, APPEND, COPY, MOVE, RENAME, DELETE, and what
    each answered, then the mailbox counts as STATUS reports them."""
    m, _ = imap_connect(a)
    m.login(a.user, a.password)
    out = {"capabilities": list(m.capabilities)}

    def answer(r):
        typ, data = r
        return [typ, [d.decode(errors="replace") if isinstance(d, bytes) else str(d) for d in data]]

    out["create"] = answer(m.create("Projects/2026"))
    out["create_again"] = answer(m.create("Projects/2026"))
    msg = b"From: a@example.test\r\nSubject: appended\r\n\r\nbody\r\n"
    out["append"] = answer(m.append("Projects/2026", "(\\Flagged)", None, msg))
    out["append_missing"] = answer(m.append("Nope", None, None, msg))
    typ, data = m.select("INBOX")
    out["inbox_exists"] = int(data[0])
    out["copy"] = answer(m.copy("1:*", "Projects/2026"))
    out["move"] = answer(m.uid("MOVE", "1", "Projects/2026"))
    out["move_untagged"] = [x.decode() for x in m.untagged_responses.get("OK", []) if isinstance(x, bytes)]
    out["copy_missing"] = answer(m.copy("1:*", "Nope"))
    typ, data = m.select("INBOX")
    out["inbox_after_move"] = int(data[0])
    m.close()
    out["rename"] = answer(m.rename("Projects", "Work"))
    typ, st = m.status("Work/2026", "(MESSAGES)")
    out["status_renamed"] = st[0].decode()
    typ, data = m.select("Work/2026")
    typ, fetched = m.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    out["renamed_subjects"] = [p[1].decode().strip() for p in fetched if isinstance(p, tuple)]
    m.close()
    out["delete"] = answer(m.delete("Work/2026"))
    typ, boxes = m.list()
    out["mailboxes"] = [b.decode() for b in boxes]
    m.logout()
    return out


def cmd_mime(a):
    """Waits for a message in INBOX, then FETCH 1 (BODYSTRUCTURE), BODY.PEEK[2] and
    BODY.PEEK[2.MIME]; then an LSUB / SUBSCRIBE / UNSUBSCRIBE / RENAME round trip."""
    m, _ = imap_connect(a)
    m.login(a.user, a.password)
    deadline = time.time() + a.wait
    while True:
        typ, data = m.select("INBOX")
        exists = int(data[0]) if typ == "OK" else 0
        if exists >= a.count or time.time() > deadline:
            break
        time.sleep(0.1)
    typ, bs = m.fetch("1", "(BODYSTRUCTURE)")
    bodystructure = b"".join(p if isinstance(p, bytes) else b"".join(p) for p in bs).decode()
    typ, part = m.fetch("1", "(BODY.PEEK[2])")
    part2 = part[0][1] if part and isinstance(part[0], tuple) else b""
    typ, mime = m.fetch("1", "(BODY.PEEK[2.MIME])")
    mime2 = mime[0][1] if mime and isinstance(mime[0], tuple) else b""
    typ, flags = m.fetch("1", "(FLAGS)")

    def lsub():
        typ, data = m.lsub()
        return [d.decode() for d in data if d]

    out = {"bodystructure": bodystructure, "part2_b64": base64.b64encode(part2).decode(),
           "mime2": mime2.decode(), "flags": flags[0].decode()}
    out["lsub_before"] = lsub()
    out["subscribe"] = m.subscribe("Projects")[0]
    out["unsubscribe"] = m.unsubscribe("Junk")[0]
    out["lsub_after"] = lsub()
    out["rename"] = m.rename("Archive", "Old")[0]
    out["lsub_renamed"] = lsub()
    m.logout()
    return out
def cmd_idle(a):
    """IMAP IDLE (RFC 2177) by hand (imaplib has no IDLE before Python 3.14): SELECT --folder,
    IDLE, write --ready-file once the server said "+", then wait up to --wait seconds for an
    untagged EXISTS above the count SELECT reported, and end with DONE."""
    m, _ = imap_connect(a)
    m.login(a.user, a.password)
    typ, data = m.select(a.folder)
    exists = int(data[0])
    caps = list(m.capabilities)
    m.send(b"i1 IDLE\r\n")
    cont = m.readline().decode(errors="replace")
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("idling")
    untagged = []
    seen_exists = None
    at = None
    m.sock.settimeout(a.wait)
    deadline = time.time() + a.wait
    while time.time() < deadline:
        try:
            line = m.readline().decode(errors="replace")
        except (socket.timeout, TimeoutError):
            break
        if not line:
            break
        untagged.append(line.strip())
        parts = line.split()
        if len(parts) == 3 and parts[0] == "*" and parts[2].upper() == "EXISTS" and int(parts[1]) > exists:
            seen_exists, at = int(parts[1]), time.time()
            break
    m.sock.settimeout(30)
    m.send(b"DONE\r\n")
    done = ""
    while True:
        line = m.readline().decode(errors="replace")
        if not line or line.startswith("i1 "):
            done = line.strip()
            break
        untagged.append(line.strip())
    m.logout()
    return {"capabilities": caps, "continuation": cont.strip(), "exists_before": exists,
            "exists": seen_exists, "exists_at": at, "untagged": untagged, "done": done}


def cmd_resync(a):
    """CONDSTORE and QRESYNC (RFC 7162) with three imaplib sessions in turn: the first caches
    INBOX (UIDVALIDITY, HIGHESTMODSEQ, UIDs) and goes away; the second adds a keyword to the
    first message, expunges the second and sets \\Seen on the third; the last resynchronises
    with SELECT (QRESYNC ...) and UID FETCH (CHANGEDSINCE ... VANISHED), then a CONDSTORE-only
    FETCH (CHANGEDSINCE ...) and an ESEARCH with MODSEQ. Commands imaplib has no method for
    are written by hand; their raw response lines are returned."""
    import re

    def raw(m, tag, command):
        m.send(f"{tag} {command}\r\n".encode())
        lines = []
        while True:
            line = m.readline().decode(errors="replace").rstrip("\r\n")
            if not line:
                break
            lines.append(line)
            if line.startswith(tag + " "):
                break
        return lines

    def session():
        m, _ = imap_connect(a)
        m.login(a.user, a.password)
        return m

    first = session()
    out = {"capabilities": list(first.capabilities)}
    out["enable"] = raw(first, "e1", "ENABLE QRESYNC")
    selected = raw(first, "s1", "SELECT INBOX")
    text = "\n".join(selected)
    validity = int(re.search(r"\[UIDVALIDITY (\d+)\]", text).group(1))
    modseq = int(re.search(r"\[HIGHESTMODSEQ (\d+)\]", text).group(1))
    cached = raw(first, "f1", "UID FETCH 1:* (FLAGS MODSEQ)")
    uids = sorted(int(u) for u in re.findall(r"UID (\d+)", "\n".join(cached)))
    first.logout()
    out.update({"uidvalidity": validity, "modseq": modseq, "uids": uids, "cached": cached})

    other = session()
    other.select("INBOX")
    out["store_keyword"] = other.uid("STORE", str(uids[0]), "+FLAGS", "($Resync)")[0]
    other.uid("STORE", str(uids[1]), "+FLAGS.SILENT", "(\\Deleted)")
    typ, expunged = other.expunge()
    out["expunge"] = [typ, [e.decode() if isinstance(e, bytes) else str(e) for e in expunged if e]]
    out["store_seen"] = other.uid("STORE", str(uids[2]), "+FLAGS", "(\\Seen)")[0]
    other.logout()

    again = session()
    raw(again, "e2", "ENABLE QRESYNC")
    out["qresync_select"] = raw(again, "s2", f"SELECT INBOX (QRESYNC ({validity} {modseq} {uids[0]}:{uids[-1]}))")
    out["vanished_fetch"] = raw(again, "f2", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    again.logout()

    plain = session()
    plain.select("INBOX")
    out["changedsince_fetch"] = raw(plain, "f3", f"FETCH 1:* (UID FLAGS) (CHANGEDSINCE {modseq})")
    out["esearch"] = raw(plain, "s3", f"UID SEARCH RETURN (ALL COUNT) MODSEQ {modseq + 1}")
    # SEARCHRES: the same messages saved, then named by `$`.
    out["save"] = raw(plain, "s4", f"UID SEARCH RETURN (SAVE) MODSEQ {modseq + 1}")
    out["fetch_saved"] = raw(plain, "f4", "UID FETCH $ (FLAGS)")
    plain.logout()
    return out


def imap_raw(m, command):
    """Sends one command on imaplib's connection and returns (untagged lines, tagged line) as
    the server wrote them, in order (imaplib files untagged data by name and loses the order
    LIST-STATUS depends on). Literals are returned inline."""
    tag = m._new_tag().decode()
    m.send(f"{tag} {command}\r\n".encode())
    lines = []
    while True:
        line = m.readline().decode(errors="replace")
        if not line:
            return lines, ""
        if line.startswith(tag + " "):
            return lines, line.strip()
        lines.append(line.rstrip("\r\n"))


def cmd_imap_ext(a):
    """LIST-EXTENDED (RFC 5258) with LIST-STATUS (RFC 5819) and SPECIAL-USE (RFC 6154),
    GETQUOTAROOT / GETQUOTA / SETQUOTA (RFC 9208), an APPEND one byte over APPENDLIMIT
    (RFC 7889), an APPEND refused as over quota, SORT and THREAD (RFC 5256) on INBOX, and
    UTF8=ACCEPT (RFC 6855) names."""
    m, _ = imap_connect(a)
    m.login(a.user, a.password)
    out = {"capabilities": list(m.capabilities)}
    out["list_subscribed"] = imap_raw(m, 'LIST (SUBSCRIBED) "" "*"')
    out["list_special"] = imap_raw(m, 'LIST (SPECIAL-USE) "" "*" RETURN (SPECIAL-USE)')
    out["list_status"] = imap_raw(m, 'LIST "" ("INBOX" "Sent") RETURN (CHILDREN STATUS (MESSAGES UNSEEN))')
    out["list_bad"] = imap_raw(m, 'LIST (RECURSIVEMATCH) "" "*"')
    typ, data = m.getquotaroot("INBOX")
    out["getquotaroot"] = [typ, [[x.decode() if x else None for x in d] for d in data]]
    typ, data = m.getquota('""')
    out["getquota"] = [typ, [d.decode() if d else None for d in data]]
    typ, data = m.setquota('""', "(STORAGE 1)")
    out["setquota"] = [typ, [d.decode() if d else None for d in data]]
    limit = next(int(c.split("=", 1)[1]) for c in m.capabilities if c.startswith("APPENDLIMIT="))
    out["appendlimit"] = limit
    typ, data = m.append("INBOX", None, None, b"x" * (limit + 1))
    out["append_toobig"] = [typ, [d.decode() for d in data]]
    out["noop_after_toobig"] = m.noop()[0]
    msg = b"From: a@example.test\r\nSubject: over quota\r\n\r\nbody\r\n"
    typ, data = m.append("Sent", None, None, msg)
    out["append_over_quota"] = [typ, [d.decode() for d in data]]
    m.select("INBOX")
    out["sort"] = imap_raw(m, "SORT (REVERSE DATE SUBJECT) UTF-8 ALL")
    out["thread"] = imap_raw(m, "UID THREAD ORDEREDSUBJECT UTF-8 ALL")
    out["thread_refs"] = imap_raw(m, "THREAD REFERENCES UTF-8 ALL")
    out["enable_utf8"] = imap_raw(m, "ENABLE UTF8=ACCEPT")
    out["create_utf8"] = imap_raw(m, 'CREATE "Entw\u00fcrfe alt"')
    out["list_utf8"] = imap_raw(m, 'LIST "" "Entw*"')
    m.logout()
    return out


class Deflated:
    """Both directions of an established IMAP connection as raw DEFLATE (RFC 4978), over the
    socket imaplib opened: imaplib itself has no COMPRESS."""

    def __init__(self, sock):
        import zlib
        self.sock = sock
        self.out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)
        self.buf = b""

    def send(self, data):
        import zlib
        self.sock.sendall(self.out.compress(data) + self.out.flush(zlib.Z_SYNC_FLUSH))

    def readline(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                line, self.buf = self.buf, b""
                return line
            self.buf += self.inflate.decompress(chunk)
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def command(self, tag, text):
        self.send(f"{tag} {text}\r\n".encode())
        lines = []
        while True:
            line = self.readline().decode(errors="replace")
            if not line or line.startswith(tag + " "):
                return lines, line.strip()
            lines.append(line.rstrip("\r\n"))


def cmd_compress(a):
    """COMPRESS=DEFLATE: after the tagged OK everything goes through zlib both ways. ENABLE
    QRESYNC, SELECT and FETCH a message, IDLE (writing --ready-file once the server said "+")
    until an EXISTS above SELECT's count arrives or --wait passes, DONE; then the CONDSTORE /
    QRESYNC answers through the compressed stream (STORE with MODSEQ, EXPUNGE as VANISHED,
    ESEARCH, LIST-STATUS HIGHESTMODSEQ, SORT by MODSEQ), then a second COMPRESS."""
    m, _ = imap_connect(a)
    m.login(a.user, a.password)
    caps = list(m.capabilities)
    answer = imap_raw(m, "COMPRESS DEFLATE")
    z = Deflated(m.sock)
    out = {"capabilities": caps, "compress": answer}
    out["enable"] = z.command("c0", "ENABLE QRESYNC")
    out["select"] = z.command("c1", "SELECT INBOX")
    exists = next(int(l.split()[1]) for l in out["select"][0] if l.endswith(" EXISTS"))
    out["fetch"] = z.command("c2", "FETCH 1 (BODY.PEEK[])")
    z.send(b"c3 IDLE\r\n")
    out["continuation"] = z.readline().decode().strip()
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("idling")
    m.sock.settimeout(a.wait)
    untagged = []
    try:
        while True:
            line = z.readline().decode(errors="replace").strip()
            if not line:
                break
            untagged.append(line)
            parts = line.split()
            if len(parts) == 3 and parts[2] == "EXISTS" and int(parts[1]) > exists:
                break
    except (socket.timeout, TimeoutError):
        pass
    m.sock.settimeout(30)
    out["idle_untagged"] = untagged
    z.send(b"DONE\r\n")
    done = []
    while True:
        line = z.readline().decode(errors="replace").strip()
        done.append(line)
        if not line or line.startswith("c3 "):
            break
    out["done"] = done
    out["store"] = z.command("c6", "STORE 1 +FLAGS (\\Deleted)")
    out["expunge"] = z.command("c7", "EXPUNGE")
    out["esearch"] = z.command("c8", "UID SEARCH RETURN (COUNT) MODSEQ 1")
    out["list_status"] = z.command("c9", 'LIST "" INBOX RETURN (STATUS (HIGHESTMODSEQ MESSAGES))')
    out["sort_modseq"] = z.command("ca", "SORT (ARRIVAL) UTF-8 MODSEQ 1")
    out["compress_again"] = z.command("c4", "COMPRESS DEFLATE")
    out["logout"] = z.command("c5", "LOGOUT")
    return out


def cmd_imap_wrong_password(a):
    m, _ = imap_connect(a)
    try:
        m.login(a.user, a.password + "-wrong")
        return {"result": "accepted"}
    except imaplib.IMAP4.error as e:
        return {"result": str(e)}


def cmd_pop3(a):
    if a.implicit_tls:
        p = poplib.POP3_SSL(a.host, a.port, context=tls_context(a.ca), timeout=30)
    else:
        p = poplib.POP3(a.host, a.port, timeout=30)
        p.stls(context=tls_context(a.ca))
    p.user(a.user)
    p.pass_(a.password)
    count, size = p.stat()
    uidl = [u.decode() for u in p.uidl()[1]]
    raw = b"\r\n".join(p.retr(1)[1]) + b"\r\n" if count else b""
    p.quit()
    return {"count": count, "size": size, "uidl": uidl, "raw_b64": base64.b64encode(raw).decode()}


def cmd_managesieve(a):
    """A ManageSieve (RFC 5804) session over a plain socket upgraded with STARTTLS (ssl module).
    Each --step is one of: `starttls`; `auth` (AUTHENTICATE PLAIN, the response sent after the
    server's empty challenge, as a literal); `put:NAME:B64` (PUTSCRIPT with a {n+} literal);
    `raw:LINE` (a command line as given). Reports the greeting and each step's response lines."""
    sock = socket.create_connection((a.host, a.port), timeout=30)
    state = {"f": sock.makefile("rb")}

    def read_response():
        lines = []
        while True:
            line = state["f"].readline()
            if not line:
                lines.append("<closed>")
                return lines
            text = line.rstrip(b"\r\n")
            # A string sent as a literal ({n}): its octets follow, then the rest of the line.
            while text.endswith(b"}") and b"{" in text:
                n = text[text.rindex(b"{") + 1:-1]
                if not n.isdigit():
                    break
                data = state["f"].read(int(n))
                rest = state["f"].readline().rstrip(b"\r\n")
                text = text[:text.rindex(b"{")] + b"{" + n + b"}" + data + rest
            lines.append(text.decode("utf-8", "replace"))
            if text.split(b" ", 1)[0] in (b"OK", b"NO", b"BYE"):
                return lines

    def send(data):
        state["sock"].sendall(data) if "sock" in state else sock.sendall(data)

    out = {"greeting": read_response(), "steps": []}
    for step in a.step:
        if step == "starttls":
            send(b"STARTTLS\r\n")
            lines = read_response()
            if lines[-1].startswith("OK"):
                tls = tls_context(a.ca).wrap_socket(sock, server_hostname=a.host)
                state["sock"] = tls
                state["f"] = tls.makefile("rb")
                lines += read_response()
        elif step == "auth":
            send(b'AUTHENTICATE "PLAIN"\r\n')
            challenge = state["f"].readline().rstrip(b"\r\n").decode()
            resp = base64.b64encode(("\0%s\0%s" % (a.user, a.password)).encode())
            send(b"{%d+}\r\n%s\r\n" % (len(resp), resp))
            lines = [challenge] + read_response()
        elif step.startswith("put:"):
            _, name, script = step.split(":", 2)
            body = base64.b64decode(script)
            send(b'PUTSCRIPT "%s" {%d+}\r\n%s\r\n' % (name.encode(), len(body), body))
            lines = read_response()
        elif step.startswith("raw:"):
            send(step[4:].encode() + b"\r\n")
            lines = read_response()
        else:
            raise SystemExit("unknown step " + step)
        out["steps"].append({"step": step.split(":", 1)[0], "lines": lines})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--implicit-tls", action="store_true")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--mail-from", default="")
    ap.add_argument("--rcpt", action="append", default=[])
    ap.add_argument("--unknown-rcpt", default="")
    ap.add_argument("--message-b64", default="")
    ap.add_argument("--mech", default="")
    ap.add_argument("--big-kb", type=int, default=0)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--wait", type=float, default=20.0)
    ap.add_argument("--authenticate", action="store_true")
    ap.add_argument("--mail-option", action="append", default=[])
    ap.add_argument("--rcpt-option", action="append", default=[])
    ap.add_argument("--step", action="append", default=[])
    ap.add_argument("--attempt", action="append", default=[])
    ap.add_argument("--folder", default="INBOX")
    ap.add_argument("--ready-file", default="")
    a = ap.parse_args()
    socket.setdefaulttimeout(30)
    fn = {"send": cmd_send, "send-errors": cmd_send_errors, "fetch": cmd_fetch, "mime": cmd_mime,
          "imap-wrong-password": cmd_imap_wrong_password, "pop3": cmd_pop3, "mx": cmd_mx,
          "session": cmd_session, "folders": cmd_folders, "lmtp": cmd_lmtp, "auth-attempts": cmd_auth_attempts, "scram": cmd_scram,
          "idle": cmd_idle, "managesieve": cmd_managesieve, "resync": cmd_resync,
          "imap-ext": cmd_imap_ext, "compress": cmd_compress}[a.command]
    json.dump(fn(a), sys.stdout)


if __name__ == "__main__":
    main()
