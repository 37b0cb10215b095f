//! The server side before a session exists: checks a HELLO and creates the session.

use std::sync::Arc;
use std::time::Instant;

use namesock_identity::{Guid, Keypair};

use super::{HandshakeError, Session, SessionConfig, auth};
use crate::wire::{Hello, PathId};

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
    /// the server session with HELLO_ACK queued on `path`. The engine checks the port first.
    pub fn accept_hello(
        &self,
        now: Instant,
        hello: &Hello,
        path: PathId,
    ) -> Result<Session, HandshakeError> {
        if hello.target != self.guid {
            return Err(HandshakeError::WrongTarget);
        }
        hello
            .client_key
            .verify(&auth::hello(hello), &hello.signature)
            .map_err(|_| HandshakeError::BadSignature)?;
        Ok(Session::server(
            self.cfg,
            self.key.clone(),
            hello,
            path,
            now,
        ))
    }
}
