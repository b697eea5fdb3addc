//! THREAD=REFERENCES (RFC 5256 §3, the algorithm of its §2.2 steps 1–6): threads from
//! Message-ID / References / In-Reply-To, pruned of empty containers, then threads of the same
//! base subject merged, every level sorted by sent date (then sequence number).

use std::collections::HashMap;

/// What the algorithm needs from one message.
pub(super) struct ThreadMessage {
    /// The number to print (sequence number or UID).
    pub id: u32,
    pub date: i64,
    pub subject: String,
    /// The subject had a reply/forward marker (`Re:`, `Fwd:`, `(fwd)`, `[fwd: ...]`).
    pub reply: bool,
    pub message_id: Option<String>,
    /// References, or else the In-Reply-To message-id.
    pub references: Vec<String>,
}

struct Node {
    msg: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Forest<'m> {
    msgs: &'m [ThreadMessage],
    nodes: Vec<Node>,
    ids: HashMap<String, usize>,
}

impl Forest<'_> {
    fn new_node(&mut self) -> usize {
        self.nodes.push(Node {
            msg: None,
            parent: None,
            children: Vec::new(),
        });
        self.nodes.len() - 1
    }

    fn by_id(&mut self, id: &str) -> usize {
        if let Some(&n) = self.ids.get(id) {
            return n;
        }
        let n = self.new_node();
        self.ids.insert(id.to_string(), n);
        n
    }

    /// Whether `a` is `b` or one of its ancestors.
    fn is_ancestor(&self, a: usize, b: usize) -> bool {
        let mut at = Some(b);
        let mut steps = 0;
        while let Some(n) = at {
            if n == a {
                return true;
            }
            steps += 1;
            if steps > self.nodes.len() {
                return true; // a loop: refuse the link
            }
            at = self.nodes[n].parent;
        }
        false
    }

    fn set_parent(&mut self, child: usize, parent: usize) {
        if let Some(old) = self.nodes[child].parent.take() {
            self.nodes[old].children.retain(|&c| c != child);
        }
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    /// Step 3: empty containers without children go; those with children give them to their
    /// parent, except that several children are not promoted to the root.
    fn prune(&mut self, list: Vec<usize>, root: bool) -> Vec<usize> {
        let mut out = Vec::new();
        for n in list {
            let kids = std::mem::take(&mut self.nodes[n].children);
            let kids = self.prune(kids, false);
            self.nodes[n].children = kids;
            if self.nodes[n].msg.is_none() {
                if self.nodes[n].children.is_empty() {
                    continue;
                }
                if !root || self.nodes[n].children.len() == 1 {
                    out.extend(std::mem::take(&mut self.nodes[n].children));
                    continue;
                }
            }
            out.push(n);
        }
        out
    }

    /// The message standing for a node: its own, or its first child's.
    fn first_message(&self, n: usize) -> Option<&ThreadMessage> {
        match self.nodes[n].msg {
            Some(m) => Some(&self.msgs[m]),
            None => self.nodes[n]
                .children
                .first()
                .and_then(|&c| self.first_message(c)),
        }
    }

    fn sort_key(&self, n: usize) -> (i64, u32) {
        self.first_message(n).map_or((0, 0), |m| (m.date, m.id))
    }

    /// Step 6 (and 4): every level by sent date, children first.
    fn sort(&mut self, list: &mut [usize]) {
        for &n in list.iter() {
            let mut kids = std::mem::take(&mut self.nodes[n].children);
            self.sort(&mut kids);
            self.nodes[n].children = kids;
        }
        list.sort_by_key(|&n| self.sort_key(n));
    }

    fn render(&self, n: usize, out: &mut String) {
        out.push('(');
        self.members(n, out);
        out.push(')');
    }

    /// RFC 5256 §4 `thread-members` / `thread-nested`.
    fn members(&self, n: usize, out: &mut String) {
        let node = &self.nodes[n];
        if let Some(m) = node.msg {
            out.push_str(&self.msgs[m].id.to_string());
            match node.children.as_slice() {
                [] => {}
                [only] => {
                    out.push(' ');
                    self.members(*only, out);
                }
                many => {
                    out.push(' ');
                    for &c in many {
                        self.render(c, out);
                    }
                }
            }
        } else {
            for &c in &node.children {
                self.render(c, out);
            }
        }
    }
}

/// The THREAD response body (without `* THREAD `) for `msgs`.
pub(super) fn references(msgs: &[ThreadMessage]) -> String {
    let mut f = Forest {
        msgs,
        nodes: Vec::new(),
        ids: HashMap::new(),
    };
    // Step 1: containers and links.
    for (i, m) in msgs.iter().enumerate() {
        let own = match m.message_id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) => {
                let n = f.by_id(id);
                // A duplicate Message-ID is a message of its own.
                if f.nodes[n].msg.is_some() {
                    f.new_node()
                } else {
                    n
                }
            }
            None => f.new_node(),
        };
        f.nodes[own].msg = Some(i);
        for pair in m.references.windows(2) {
            let (a, b) = (f.by_id(&pair[0]), f.by_id(&pair[1]));
            if f.nodes[b].parent.is_none() && !f.is_ancestor(b, a) {
                f.set_parent(b, a);
            }
        }
        if let Some(old) = f.nodes[own].parent.take() {
            f.nodes[old].children.retain(|&c| c != own);
        }
        if let Some(last) = m.references.last() {
            let p = f.by_id(last);
            if !f.is_ancestor(own, p) {
                f.set_parent(own, p);
            }
        }
    }
    // Step 2-3: the root set, pruned.
    let roots: Vec<usize> = (0..f.nodes.len())
        .filter(|&n| f.nodes[n].parent.is_none())
        .collect();
    let mut roots = f.prune(roots, true);
    f.sort(&mut roots);

    // Step 5: threads with the same base subject are merged.
    let subject = |f: &Forest<'_>, n: usize| {
        f.first_message(n)
            .map(|m| m.subject.to_ascii_uppercase())
            .unwrap_or_default()
    };
    let reply = |f: &Forest<'_>, n: usize| f.first_message(n).is_some_and(|m| m.reply);
    let mut table: HashMap<String, usize> = HashMap::new();
    for &n in &roots {
        let s = subject(&f, n);
        if s.is_empty() {
            continue;
        }
        match table.get(&s) {
            None => {
                table.insert(s, n);
            }
            Some(&t) => {
                let dummy = |x: usize| f.nodes[x].msg.is_none();
                if (dummy(n) && !dummy(t)) || (!dummy(t) && reply(&f, t) && !reply(&f, n)) {
                    table.insert(s, n);
                }
            }
        }
    }
    let mut merged: Vec<Option<usize>> = roots.iter().copied().map(Some).collect();
    for i in 0..merged.len() {
        let Some(n) = merged[i] else { continue };
        let s = subject(&f, n);
        if s.is_empty() {
            continue;
        }
        let t = table[&s];
        if t == n {
            continue;
        }
        let (t_dummy, n_dummy) = (f.nodes[t].msg.is_none(), f.nodes[n].msg.is_none());
        if t_dummy && n_dummy {
            let kids = std::mem::take(&mut f.nodes[n].children);
            for k in kids {
                f.set_parent(k, t);
            }
        } else if t_dummy || (reply(&f, n) && !reply(&f, t)) {
            f.set_parent(n, t);
        } else {
            let d = f.new_node();
            if let Some(slot) = merged.iter_mut().find(|x| **x == Some(t)) {
                *slot = Some(d);
            }
            f.set_parent(t, d);
            f.set_parent(n, d);
            table.insert(s, d);
        }
        merged[i] = None;
    }
    let mut roots: Vec<usize> = merged.into_iter().flatten().collect();
    f.sort(&mut roots);
    let mut out = String::new();
    for n in roots {
        f.render(n, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u32, date: i64, subject: &str, mid: &str, refs: &[&str]) -> ThreadMessage {
        let reply = subject.to_ascii_lowercase().starts_with("re:");
        ThreadMessage {
            id,
            date,
            subject: subject
                .trim_start_matches("Re: ")
                .trim_start_matches("re: ")
                .to_string(),
            reply,
            message_id: (!mid.is_empty()).then(|| mid.to_string()),
            references: refs.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn replies_nest_under_their_parents() {
        let msgs = [
            msg(1, 10, "A", "a", &[]),
            msg(2, 20, "Re: A", "b", &["a"]),
            msg(3, 30, "Re: A", "c", &["a", "b"]),
            msg(4, 25, "Re: A", "d", &["a"]),
            msg(5, 5, "B", "e", &[]),
        ];
        assert_eq!(references(&msgs), "(5)(1 (2 3)(4))");
    }

    #[test]
    fn missing_parents_and_subjects() {
        // 2 and 3 reply to a message we do not have: a dummy holds them at the root.
        let msgs = [
            msg(1, 10, "X", "x", &[]),
            msg(2, 20, "Re: Lost", "b", &["gone"]),
            msg(3, 30, "Re: Lost", "c", &["gone"]),
            // Same base subject as 1, no references: joins its thread.
            msg(4, 40, "Re: X", "d", &[]),
            // Duplicate Message-ID and no subject: a thread of its own.
            msg(5, 50, "", "x", &[]),
        ];
        assert_eq!(references(&msgs), "(1 4)((2)(3))(5)");
    }

    #[test]
    fn loops_are_refused() {
        let msgs = [msg(1, 10, "L", "a", &["b"]), msg(2, 20, "L", "b", &["a"])];
        // 1 names 2 as its parent; 2's own References would make a loop and are ignored.
        assert_eq!(references(&msgs), "(2 1)");
    }

    #[test]
    fn same_subject_originals_share_a_dummy() {
        let msgs = [msg(1, 10, "Lunch", "a", &[]), msg(2, 20, "Lunch", "b", &[])];
        assert_eq!(references(&msgs), "((1)(2))");
    }
}
