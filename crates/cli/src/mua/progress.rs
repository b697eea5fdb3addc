//! Progress on standard error for the long operations of the MUA (listing many messages,
//! sending a large message, saving attachments), shown only when standard error is a terminal
//! so that scripts and logs get clean output.
//!
//! One line, redrawn in place with a carriage return at most ten times a second, and erased
//! when the work ends. Deliberately not done here: bars, ETA estimates, colours, and any output
//! on standard output (which belongs to the command's result).

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const REDRAW: Duration = Duration::from_millis(100);

/// A counter shown as `label done/total`.
pub struct Progress {
    enabled: bool,
    label: String,
    total: u64,
    done: u64,
    drawn: Option<Instant>,
}

impl Progress {
    /// Shows progress only when `worth_it` and standard error is a terminal.
    pub fn new(label: impl Into<String>, total: u64, worth_it: bool) -> Progress {
        Progress {
            enabled: worth_it && std::io::stderr().is_terminal(),
            label: label.into(),
            total,
            done: 0,
            drawn: None,
        }
    }

    /// The line as it is drawn; separate so it is tested without a terminal.
    pub(super) fn line(&self) -> String {
        format!(
            "{} {}/{}",
            self.label,
            self.done.min(self.total),
            self.total
        )
    }

    pub fn inc(&mut self, n: u64) {
        self.done = self.done.saturating_add(n);
        if !self.enabled {
            return;
        }
        let due = self.drawn.is_none_or(|t| t.elapsed() >= REDRAW) || self.done >= self.total;
        if due {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{}\x1b[K", self.line());
            let _ = err.flush();
            self.drawn = Some(Instant::now());
        }
    }

    /// Erases the line.
    pub fn finish(self) {
        if self.enabled && self.drawn.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

/// Runs `work`, showing `label` and the seconds elapsed while it runs (for steps such as an
/// SMTP DATA transfer that report no intermediate progress).
pub async fn while_running<T>(label: &str, worth_it: bool, work: impl Future<Output = T>) -> T {
    if !(worth_it && std::io::stderr().is_terminal()) {
        return work.await;
    }
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tokio::pin!(work);
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick() => {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{label} ({} s)\x1b[K", start.elapsed().as_secs());
                let _ = err.flush();
            }
        }
    };
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[K");
    let _ = err.flush();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_without_a_terminal_and_never_overshoots() {
        let mut p = Progress::new("listing", 3, false);
        p.inc(2);
        assert_eq!(p.line(), "listing 2/3");
        p.inc(5);
        assert_eq!(p.line(), "listing 3/3");
        p.finish();
    }

    #[tokio::test]
    async fn while_running_returns_the_work() {
        assert_eq!(while_running("x", true, async { 7 }).await, 7);
    }
}
