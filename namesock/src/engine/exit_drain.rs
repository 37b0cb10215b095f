//! The process's exit: what the engine, which dies with the program, still owes the program's
//! peers, and how long the exit waits for it (docs/architecture.md, "End").

use std::cell::OnceCell;
use std::time::{Duration, Instant};

use super::conn::Side;
use super::event_loop::Engine;
use super::sock_diag::SockDiag;

/// How soon the exit drain looks again for bytes on their way from a program.
const DRAIN_RECHECK: Duration = Duration::from_millis(1);

/// Where the exit drain stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Drain {
    /// Nothing the programs wrote is left to deliver.
    Done,
    /// A session is still delivering: look again at the next event, or by the time given
    /// (when the change to wait for raises no event of its own).
    Delivering(Option<Instant>),
}

impl Drain {
    /// One more session to wait for, until the next event or `by`.
    fn wait(&mut self, by: Option<Instant>) {
        *self = match (*self, by) {
            (Drain::Delivering(Some(a)), Some(b)) => Drain::Delivering(Some(a.min(b))),
            (Drain::Delivering(Some(a)), None) => Drain::Delivering(Some(a)),
            _ => Drain::Delivering(by),
        };
    }
}

impl Engine {
    /// At the end of each loop turn while the exit waits: lets it go once nothing is owed.
    pub(super) fn answer_exit_drain(&mut self, now: Instant) {
        if self.drain_waiters.is_empty() {
            return;
        }
        self.drain_recheck_at = None;
        match self.drain_progress(now) {
            Drain::Done => {
                for w in self.drain_waiters.drain(..) {
                    let _ = w.send(());
                }
            }
            Drain::Delivering(by) => self.drain_recheck_at = by,
        }
    }

    /// Is a session still delivering what its program sent? At exit, the kernel would
    /// deliver a plain socket's last bytes after the process is gone; the engine goes with
    /// the process, so it waits:
    /// - for bytes still unread from a program's socket, or still on their way to it;
    /// - then, for every socket the program still holds, half-closed or not, it closes it as
    ///   the kernel would (`AppSide::close_at_exit`), waits until the peer has everything
    ///   the program wrote, and briefly for the peer's end (`AppSide::still_closing_at_exit`).
    ///
    /// A server session that closed waits, too, until its client closes the path: the client
    /// still asks it to confirm the close (PING after its last ACK), and an engine that exits
    /// first answers that PING with a TCP reset, leaving the client to re-dial a peer that is
    /// gone for the whole linger period.
    fn drain_progress(&mut self, now: Instant) -> Drain {
        // Opened only if a socket the program still holds is to be asked about.
        let diag = OnceCell::new();
        let diag = || {
            diag.get_or_init(|| {
                SockDiag::open()
                    .inspect_err(|e| tracing::debug!(error = %e, "sock_diag unavailable"))
                    .ok()
            })
            .as_ref()
        };
        let mut progress = Drain::Done;
        for (&key, c) in &mut self.conns {
            if let Side::Server(s) = &c.side
                && s.closed
                && !s.paths.is_empty()
            {
                progress.wait(None);
                continue;
            }
            if c.is_closed() || c.session().is_finished() {
                continue;
            }
            let Some((a, session)) = c
                .app_and_session()
                .filter(|(a, _)| !a.failed && !a.connecting)
            else {
                continue;
            };
            if a.read_eof() && !a.closed_at_exit() {
                // Half-closed: the rest of the close is the kernel's at exit, so the engine's.
                a.close_at_exit(session, diag());
                self.dirty.insert(key);
                progress.wait(Some(now));
                continue;
            }
            if a.closed_at_exit() {
                let was_reset = session.is_reset();
                if let Some(by) = a.still_closing_at_exit(session, now) {
                    // A reset decided here goes out next turn.
                    let reset_now = session.is_reset() && !was_reset;
                    if reset_now {
                        self.dirty.insert(key);
                    }
                    progress.wait(Some(if reset_now { now } else { by }));
                }
                continue;
            }
            // Only once all the program wrote has arrived does the engine's socket tell
            // what is left in it (measured: a CI run lost a program's last bytes and FIN
            // when the engine looked at its own socket alone). Their arrival wakes the loop;
            // the acknowledgement that shows them arrived and read does not.
            if diag().is_some_and(|d| a.has_bytes_on_the_way(d)) {
                tracing::debug!("exit drain: a program's bytes are on their way");
                progress.wait(Some(now + DRAIN_RECHECK));
            } else if a.has_backlog() {
                progress.wait(None);
            } else if let Some(d) = diag() {
                // Its end goes out next turn.
                a.close_at_exit(session, Some(d));
                self.dirty.insert(key);
                progress.wait(Some(now));
            }
        }
        progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_time_to_look_again_wins_and_an_event_alone_sets_none() {
        let now = Instant::now();
        let (soon, later) = (now + DRAIN_RECHECK, now + Duration::from_secs(2));
        let mut d = Drain::Done;
        d.wait(None);
        assert_eq!(d, Drain::Delivering(None));
        d.wait(Some(later));
        assert_eq!(d, Drain::Delivering(Some(later)));
        d.wait(None);
        assert_eq!(d, Drain::Delivering(Some(later)));
        d.wait(Some(soon));
        assert_eq!(d, Drain::Delivering(Some(soon)));
        d.wait(Some(later));
        assert_eq!(d, Drain::Delivering(Some(soon)));
    }
}
