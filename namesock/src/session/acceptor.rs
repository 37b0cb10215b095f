//! The server side before a session exists: checks a HELLO and creates the session.

use std::sync::Arc;
use std::time::Instant;

use namesock_identity::{Guid, Keypair, Signature};

use super::{HandshakeError, Session, SessionConfig, auth};
use crate::ticket::Verified;
use crate::wire::{ConnId, Frame, Hello, Open, PathId, Payload, Refuse, ResetReason};

/// Turns verified HELLOs into server sessions (like quinn-proto's `Endpoint`).
#[derive(Debug)]
pub struct Acceptor {
    cfg: SessionConfig,
    key: Arc<Keypair>,
    guid: Guid,
}

impl Acceptor {
    pub fn new(cfg: SessionConfig, key: Arc<Keypair>) -> Acceptor {
        let guid = key.guid();
        Acceptor { cfg, key, guid }
    }

    /// Verifies a HELLO (target is our GUID, signed by the client key it names) and creates
    /// the server session with HELLO_ACK queued on `path`; the session reaches the program
    /// only once the client proved it holds the keys. The engine checks the port first.
    pub fn accept_hello(
        &self,
        now: Instant,
        hello: &Hello,
        path: PathId,
    ) -> Result<Session, HandshakeError> {
        self.verify_hello(hello)?;
        self.accept_verified(now, hello, path)
    }

    /// Checks that a HELLO is for our GUID and signed by the client key it names (so that
    /// policy decides on a key that is really there).
    pub fn verify_hello(&self, hello: &Hello) -> Result<(), HandshakeError> {
        if hello.target != self.guid {
            return Err(HandshakeError::WrongTarget);
        }
        hello
            .client_key
            .verify(&auth::hello(hello), &hello.signature)
            .map_err(|_| HandshakeError::BadSignature)
    }

    /// [`Acceptor::accept_hello`] for a HELLO that passed [`Acceptor::verify_hello`].
    pub fn accept_verified(
        &self,
        now: Instant,
        hello: &Hello,
        path: PathId,
    ) -> Result<Session, HandshakeError> {
        Session::server(self.cfg, self.key.clone(), hello, path, now)
    }

    /// The server session for an OPEN its parent's ticket verified (`crate::ticket`), with
    /// OPEN_ACK queued on `path`; proven at once (no signature either way).
    pub fn accept_open(
        &self,
        now: Instant,
        open: &Open,
        verified: &Verified,
        path: PathId,
    ) -> Session {
        Session::server_open(self.cfg, self.key.clone(), open, verified, path, now)
    }

    /// A REFUSE of the HELLO, RESUME or OPEN `first`, signed by our key.
    pub fn refuse<P: Payload>(
        &self,
        first: &Frame<P>,
        conn_id: ConnId,
        reason: ResetReason,
    ) -> Refuse {
        let mut refuse = Refuse {
            conn_id,
            reason,
            echo: super::handshake::echo_of(first),
            server_key: self.key.public(),
            signature: Signature([0; 64]),
        };
        refuse.signature = self.key.sign(&auth::refuse(&refuse));
        refuse
    }
}
