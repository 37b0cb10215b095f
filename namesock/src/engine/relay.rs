//! The application side of a session: the program's real kernel socket (loopback TCP), and
//! the bounded relay between it and the session.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::Token;
use mio::net::TcpStream;

use crate::session::Session;

use super::delivery::DeliveryEntry;
use super::path::READ_CHUNK;
use super::sock_diag::{Queues, SockDiag};
use super::sys;

/// How long a program's exit waits for the peer's end of stream once the peer confirmed the
/// end the engine sent for it ([`AppSide::still_closing_at_exit`]).
pub const PEER_END_WAIT: Duration = Duration::from_secs(2);

/// Length of the secret a connecting program writes first on its relay connection, so the
/// engine knows which session the connection belongs to.
pub const SECRET_LEN: usize = 16;

pub struct AppSide {
    /// Server side: the delivery's entry. Declared before `stream`, so it is dropped (and
    /// the delivery forgotten) before the socket closes: an entry never outlives the
    /// engine's end of its connection.
    delivery: Option<DeliveryEntry>,
    pub stream: TcpStream,
    pub token: Token,
    /// Edge-triggered readiness, remembered until WouldBlock (see [`AppSide::pump_in`]).
    pub readable: bool,
    pub writable: bool,
    /// The delivery connect (server side) has not completed yet.
    pub connecting: bool,
    /// The program half-closed (EOF seen and passed on with `app_shutdown_write`).
    read_eof: bool,
    /// SHUT_WR sent to the program after the peer's FIN.
    wrote_eof: bool,
    /// The program's socket failed: the session was aborted.
    pub failed: bool,
    /// The program exited, and the session closed for it: `Some(when the peer confirmed
    /// that end)`, once it did.
    closed_at_exit: Option<Option<Instant>>,
}

impl AppSide {
    /// `stream` is a program's socket's other end: accepted from a relay listener, or
    /// dialled to deliver a session; either way it has `TCP_NODELAY` already.
    pub fn new(stream: TcpStream, token: Token, connecting: bool) -> AppSide {
        AppSide {
            delivery: None,
            stream,
            token,
            readable: !connecting,
            writable: !connecting,
            connecting,
            read_eof: false,
            wrote_eof: false,
            failed: false,
            closed_at_exit: None,
        }
    }

    /// This socket delivers a session (server side): `entry` lives as long as it.
    pub fn delivering(mut self, entry: DeliveryEntry) -> AppSide {
        self.delivery = Some(entry);
        self
    }

    /// Notes an edge-triggered event's readiness.
    pub fn on_event(&mut self, ev: &mio::event::Event) {
        self.note_readiness(
            ev.is_readable(),
            ev.is_read_closed() || ev.is_error(),
            ev.is_writable() || ev.is_error(),
        );
    }

    fn note_readiness(&mut self, readable: bool, read_closed: bool, writable: bool) {
        self.readable |= readable || read_closed;
        self.writable |= writable;
    }

    /// The program half-closed its socket (and the session took every byte before it).
    pub fn read_eof(&self) -> bool {
        self.read_eof
    }

    /// Bytes of the program that the session has not taken yet (still in the socket), or
    /// its end of stream not yet seen (a full replay buffer stops the reads before it).
    pub fn has_backlog(&self) -> bool {
        sys::has_input(self.stream.as_raw_fd())
    }

    /// The kernel's queues of the program's end of this connection.
    fn program_queues(&self, diag: &SockDiag) -> Option<Queues> {
        let ours = self.stream.local_addr().ok()?;
        let program = self.stream.peer_addr().ok()?;
        diag.queues(program, ours)
            .inspect_err(
                |e| tracing::debug!(error = %e, "sock_diag: no word of the program's socket"),
            )
            .ok()
            .flatten()
    }

    /// Bytes (or the end of stream) the program wrote that have not reached this socket yet:
    /// still in the loopback queue, held back by this socket's window, or by the program's
    /// Nagle until this socket acknowledges what came before. `has_backlog` cannot see them;
    /// once this is `false`, it can. An acknowledgement this socket is holding back goes out
    /// now, so that bytes held for it follow.
    pub fn has_bytes_on_the_way(&self, diag: &SockDiag) -> bool {
        let on_the_way = self
            .program_queues(diag)
            .is_some_and(|q| q.unacknowledged > 0);
        if on_the_way {
            let _ = sys::ack_now(self.stream.as_raw_fd());
        }
        on_the_way
    }

    /// The program exits, and the session has every byte it wrote. The kernel would close
    /// the program's socket after the exit: a FIN behind those bytes (if the program did not
    /// half-close already), or a reset if it left bytes unread. The engine dies with the
    /// program, so the session does it now; [`AppSide::still_closing_at_exit`] follows it to
    /// the end.
    pub fn close_at_exit(&mut self, session: &mut Session, diag: Option<&SockDiag>) {
        // The peer's FIN, once passed on, is one more in the queue, and no data.
        let unread = diag
            .and_then(|d| self.program_queues(d))
            .is_some_and(|q| q.unread > u32::from(self.wrote_eof));
        if unread || !session.app_readable()[0].is_empty() {
            tracing::debug!("program exits with bytes unread: reset, as its kernel would");
            session.app_abort();
        } else if !self.read_eof {
            tracing::debug!("program exits with its socket open: end of stream");
            session.app_shutdown_write();
        }
        self.closed_at_exit = Some(None);
    }

    /// After [`AppSide::close_at_exit`]: while the exit must wait, `Some(time to look again
    /// by)`. Until the peer has everything the program wrote, the exit waits (bounded by the
    /// drain's own limit), path or no path: a client re-dials, a server waits for its
    /// client's resume. Then, as the kernel's closed socket would, the session waits for the
    /// peer's end of stream, for [`PEER_END_WAIT`] at most and only while a path is live:
    /// the peer's engine needs a confirmation of its own end only if it comes soon (at its
    /// own exit). Bytes the peer sends meanwhile, which the program will never read, reset
    /// the session (they stay in it: nothing is written to the program after its exit). Asks
    /// the kernel nothing, so that an exit with many sockets open costs each a look per loop
    /// turn, not a query.
    pub fn still_closing_at_exit(
        &mut self,
        session: &mut Session,
        now: Instant,
    ) -> Option<Instant> {
        let confirmed = self.closed_at_exit?;
        if !session.is_reset() && !session.app_readable()[0].is_empty() {
            tracing::debug!("bytes came after the program's exit: reset, as its kernel would");
            session.app_abort();
        }
        if session.is_reset() {
            // Its RESET goes out on a live path; with none, nothing is owed.
            return session.has_live_path().then_some(now);
        }
        let confirmed = match confirmed {
            Some(at) => at,
            None if session.app_write_done() => {
                self.closed_at_exit = Some(Some(now));
                now
            }
            // Its confirmation wakes the loop; the time is only a backstop.
            None => return Some(now + PEER_END_WAIT),
        };
        let by = confirmed + PEER_END_WAIT;
        (session.has_live_path() && now < by).then_some(by)
    }

    /// [`AppSide::close_at_exit`] was done.
    pub fn closed_at_exit(&self) -> bool {
        self.closed_at_exit.is_some()
    }

    /// The peer's FIN reached the program's socket, and with it every byte before it.
    pub fn passed_eof(&self) -> bool {
        self.wrote_eof
    }

    /// Moves bytes both ways as far as readiness, buffers and the session's room allow.
    /// `true`: some moved.
    pub fn pump(&mut self, session: &mut Session) -> bool {
        if self.connecting || self.failed {
            return false;
        }
        let taken = self.pump_in(session);
        let given = !self.failed && self.pump_out(session);
        taken || given
    }

    /// Program -> session. Reads from the program only what the session has room for:
    /// otherwise the socket's own buffers fill and the program blocks (until ACKs free
    /// replay room and the engine pumps again).
    ///
    /// Reads go on until WouldBlock, not only until a short count (tokio's rule, which mio's
    /// edge-triggered readiness would allow): measured, ending at a short count made busy
    /// sessions slower here (docs/architecture.md, "Buffer sizing"), and an end of stream
    /// behind the bytes may have had its edge already (a relay connection's pairing read
    /// takes the edges before the session does; the tests below keep that case).
    fn pump_in(&mut self, session: &mut Session) -> bool {
        let mut moved = false;
        while self.readable && !self.read_eof && self.closed_at_exit.is_none() {
            // Straight into the replay buffer's room: no copy of the engine's.
            let [a, b] = session.app_spare(READ_CHUNK);
            let asked = a.len() + b.len();
            if asked == 0 {
                break;
            }
            let read = self
                .stream
                .read_vectored(&mut [IoSliceMut::new(a), IoSliceMut::new(b)]);
            match read {
                Ok(0) => {
                    self.read_eof = true;
                    session.app_shutdown_write();
                }
                Ok(n) => {
                    moved = true;
                    session.app_commit(n);
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => self.readable = false,
                    io::ErrorKind::Interrupted => {}
                    _ => {
                        self.fail(session, &e);
                        break;
                    }
                },
            }
        }
        moved
    }

    /// Session -> program. Writes the session's receive buffer in place; what the program's
    /// socket does not take stays there (and unacknowledged, so the peer's window holds).
    fn pump_out(&mut self, session: &mut Session) -> bool {
        let mut moved = false;
        // A program that exited reads nothing more: what comes stays in the session, where
        // `still_closing_at_exit` sees it.
        while self.closed_at_exit.is_none() {
            let [front, back] = session.app_readable();
            if front.is_empty() {
                self.pass_eof(session);
                break;
            }
            if !self.writable {
                break;
            }
            match self
                .stream
                .write_vectored(&[IoSlice::new(front), IoSlice::new(back)])
            {
                Ok(0) => {
                    self.fail(session, &io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => {
                    moved = true;
                    session.app_consume(n);
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        self.writable = false;
                        break;
                    }
                    io::ErrorKind::Interrupted => {}
                    _ => {
                        self.fail(session, &e);
                        break;
                    }
                },
            }
        }
        moved
    }

    /// The peer's FIN reaches the program once every byte before it did.
    fn pass_eof(&mut self, session: &Session) {
        if !self.wrote_eof && session.app_read_eof() {
            self.wrote_eof = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
    }

    fn fail(&mut self, session: &mut Session, e: &io::Error) {
        tracing::debug!(error = %e, "program socket failed: aborting session");
        self.failed = true;
        session.app_abort();
    }

    /// The session was reset: close the program's socket with a RST so it sees ECONNRESET.
    pub fn reset(mut self) {
        drop(self.delivery.take());
        let _ = sys::set_linger_zero(self.stream.as_raw_fd());
        drop(self.stream);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::net::{Shutdown, TcpListener as StdListener, TcpStream as StdStream};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use namesock_identity::Keypair;

    use super::*;
    use crate::session::tests::{deliver_all, transmit};
    use crate::session::{Acceptor, SessionConfig, SessionState};
    use crate::wire::Frame;

    /// A client session whose handshake is done (so it takes the program's bytes).
    fn open_client_session() -> Session {
        open_session_pair().0
    }

    /// The same, with its server session (client on path 1, server on path 100).
    fn open_session_pair() -> (Session, Session) {
        let now = Instant::now();
        let cfg = SessionConfig::default();
        let skey = Arc::new(Keypair::from_seed(&[2; 32]));
        let ckey = Arc::new(Keypair::from_seed(&[1; 32]));
        let mut client = Session::client(cfg, ckey, skey.guid(), 80, [1; 16], now);
        client.path_opened(now, 1);
        let hello = transmit(&mut client, now, 1);
        let Frame::Hello(hello) = Frame::decode(&hello).unwrap().unwrap().0 else {
            panic!("no HELLO");
        };
        let mut server = Acceptor::new(cfg, skey)
            .accept_hello(now, &hello, 100)
            .unwrap();
        loop {
            let down = transmit(&mut server, now, 100);
            let up = transmit(&mut client, now, 1);
            if down.is_empty() && up.is_empty() {
                break;
            }
            deliver_all(&mut client, now, 1, &down);
            deliver_all(&mut server, now, 100, &up);
        }
        assert!(client.app_room() > 0, "the session does not take bytes");
        (client, server)
    }

    /// The program's end of a loopback connection and the engine's (non-blocking) end.
    fn socket_pair() -> (StdStream, AppSide) {
        let l = StdListener::bind("127.0.0.1:0").unwrap();
        let program = StdStream::connect(l.local_addr().unwrap()).unwrap();
        let (engine, _) = l.accept().unwrap();
        engine.set_nonblocking(true).unwrap();
        let app = AppSide::new(TcpStream::from_std(engine), Token(99), false);
        (program, app)
    }

    /// What the echo test of the C API (`tests/capi.rs`) hung on when a short read ended the
    /// reads: the program wrote its message and half-closed before the engine's first read,
    /// and the edge that reported it went to the pairing read of the secret. Whatever rule
    /// ends the reads must still see the end of stream behind the bytes: it raises no edge
    /// of its own.
    #[test]
    fn bytes_and_end_of_stream_queued_before_the_first_read_are_both_taken() {
        let mut session = open_client_session();
        let (mut program, mut app) = socket_pair();
        program.write_all(b"hello").unwrap();
        program.shutdown(Shutdown::Write).unwrap();
        assert!(app.pump(&mut session), "the bytes moved");
        assert_eq!(session.stats().unacked, 5);
        assert!(app.read_eof(), "the end of stream was not seen");
        assert!(!app.pump(&mut session), "nothing more to move");
    }

    /// What a program wrote just before it exits may not have reached the engine's socket:
    /// here the program's Nagle holds its second write until the first is acknowledged,
    /// which the engine's socket delays. The exit drain must see it all the same.
    #[test]
    fn bytes_the_program_has_written_are_seen_before_they_arrive() {
        let mut session = open_client_session();
        let (mut program, mut app) = socket_pair();
        let diag = SockDiag::open().unwrap();
        assert!(!app.has_bytes_on_the_way(&diag));
        // Delayed ACKs on the engine's side (TCP_QUICKACK 0 enters the interactive mode).
        sys::setsockopt_int(
            app.stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            0,
        )
        .unwrap();
        program.write_all(b"a").unwrap();
        program.write_all(b"b").unwrap();
        app.pump(&mut session);
        // Until the engine's socket has "b", the drain sees one or the other (which one
        // depends on whether the delayed ACK fired meanwhile).
        let start = Instant::now();
        while session.stats().unacked < 2 {
            let on_the_way = app.has_bytes_on_the_way(&diag);
            assert!(
                on_the_way || app.has_backlog(),
                "the drain would let \"b\" die"
            );
            app.note_readiness(true, false, false);
            app.pump(&mut session);
            assert!(start.elapsed() < Duration::from_secs(5), "\"b\" never came");
        }
        assert_eq!(session.stats().unacked, 2);
        assert!(!app.has_bytes_on_the_way(&diag), "everything arrived");
    }

    /// A program that exits with its socket open and nothing unread: its session ends its
    /// stream behind the bytes it took, and takes nothing the program writes after.
    #[test]
    fn a_socket_left_open_at_exit_ends_the_stream_behind_its_bytes() {
        let (mut session, mut server) = open_session_pair();
        let (mut program, mut app) = socket_pair();
        let diag = SockDiag::open().unwrap();
        program.write_all(b"abc").unwrap();
        while session.stats().unacked < 3 {
            app.note_readiness(true, false, false);
            app.pump(&mut session);
        }
        let now = Instant::now();
        app.close_at_exit(&mut session, Some(&diag));
        assert!(app.closed_at_exit());
        assert!(!session.is_reset(), "an end of stream, not a reset");
        assert!(
            app.still_closing_at_exit(&mut session, now).is_some(),
            "the peer has not ended its stream"
        );
        // Delivery is not cut short: until the peer confirms the end, it is waited for.
        assert!(
            app.still_closing_at_exit(&mut session, now + 5 * PEER_END_WAIT)
                .is_some()
        );
        program.write_all(b"late").unwrap();
        app.note_readiness(true, false, false);
        app.pump(&mut session);
        assert_eq!(
            session.stats().unacked,
            3,
            "nothing taken after the end of stream"
        );
        // The peer's bytes that came after: the program is gone and will never read them.
        let now = Instant::now();
        assert_eq!(server.app_write(b"too late"), 8);
        let down = transmit(&mut server, now, 100);
        deliver_all(&mut session, now, 1, &down);
        assert!(!session.is_reset());
        app.note_readiness(false, false, true);
        app.pump(&mut session);
        assert_eq!(
            app.program_queues(&diag).unwrap().unread,
            0,
            "nothing is written to a program that exited"
        );
        assert!(app.still_closing_at_exit(&mut session, now).is_some());
        assert!(
            session.is_reset(),
            "reset, as the kernel's closed socket would"
        );
    }

    /// A program that exits leaving bytes unread: its kernel would reset the connection, so
    /// the session is reset.
    #[test]
    fn a_socket_left_open_at_exit_with_bytes_unread_resets_the_session() {
        let mut session = open_client_session();
        let (_program, mut app) = socket_pair();
        let diag = SockDiag::open().unwrap();
        // What the engine gave the program, which the program never read.
        app.stream.write_all(b"unread").unwrap();
        let start = Instant::now();
        while app.program_queues(&diag).unwrap().unread < 6 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the bytes never arrived"
            );
        }
        assert_eq!(session.stats().state, SessionState::Live);
        app.close_at_exit(&mut session, Some(&diag));
        assert_eq!(session.stats().state, SessionState::Closed, "reset");
    }

    /// An end of stream an event reported, behind bytes, is read in the same turn as they are:
    /// it raises no further edge.
    #[test]
    fn an_end_of_stream_reported_by_an_event_is_read_past_a_short_read() {
        let mut session = open_client_session();
        let (mut program, mut app) = socket_pair();
        app.pump(&mut session);
        assert!(!app.readable, "an empty socket reached WouldBlock");

        program.write_all(b"abc").unwrap();
        app.note_readiness(true, false, false);
        app.pump(&mut session);
        assert!(!app.readable);
        assert_eq!(session.stats().unacked, 3);

        program.write_all(b"def").unwrap();
        program.shutdown(Shutdown::Write).unwrap();
        app.note_readiness(true, true, false);
        app.pump(&mut session);
        assert_eq!(session.stats().unacked, 6);
        assert!(app.read_eof(), "the reported end of stream was not read");
    }
}
