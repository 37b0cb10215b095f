//! Relays (docs/architecture.md, "Relays"): a server behind NAT keeps an authenticated control
//! connection to a relay; a client whose direct dials do not answer dials the relay and names
//! the GUID it wants; the relay asks the server to dial back with a one-time token and splices
//! the two TCP connections. The flow path through a relay carries the end-to-end records
//! unchanged: the relay forwards ciphertext it has no key for.
//!
//! Sans-IO like the rest of the core: [`Registration`] is the server's side of a control
//! connection, [`Registry`] the relay's tables and limits; the engine and `namesock relay`
//! only move bytes.

pub mod proxy;
pub mod rate;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use namesock_identity::{Guid, Keypair};

use wire::{
    ChallengeError, Down, MAX_DOWN_LEN, NONCE_LEN, Preamble, RefuseReason, RelayWireError, Token,
};

/// Why a control connection to a relay ended, as the server sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("relay protocol: {0}")]
    Wire(#[from] RelayWireError),
    #[error("the relay refused the registration: {0}")]
    Refused(RefuseReason),
    #[error("unexpected relay message: {0}")]
    Unexpected(&'static str),
    /// The relay did not prove the key its challenge names.
    #[error("the relay's challenge: {0}")]
    Challenge(#[from] ChallengeError),
    /// The relay named in `NAMESOCK_RELAY` resolved to `expected`, but whoever answers at its
    /// address says it is `got`: not the relay we meant (a stale record, or an impostor).
    #[error("the relay at this address is {got}, not {expected} (the GUID its name resolved to)")]
    WrongRelay { expected: Guid, got: Guid },
}

/// What a relay asked of a registered server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationEvent {
    /// The relay accepted the proof: clients can reach us through it.
    Registered { relay: Guid },
    /// A client is waiting: dial the relay and open with `Preamble::Accept { token }`.
    Dial(Token),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegState {
    AwaitChallenge,
    AwaitResult,
    Registered,
}

/// The server's side of one control connection: its preamble (with a fresh nonce the relay
/// signs), the check of the relay's key, the proof for the relay's challenge, then dial-back
/// requests. Holds at most one message (129 bytes) between reads.
pub struct Registration {
    key: Arc<Keypair>,
    nonce: [u8; NONCE_LEN],
    /// The relay's GUID when it was found by name or GUID; `None` for a bare address.
    expected: Option<Guid>,
    state: RegState,
    relay: Option<Guid>,
    buf: [u8; MAX_DOWN_LEN],
    len: usize,
}

impl Registration {
    /// A new registration and the preamble to send first. With `expected`, a challenge from
    /// any other relay GUID ends the registration before anything is signed for it.
    pub fn new(key: Arc<Keypair>, expected: Option<Guid>) -> (Registration, Vec<u8>) {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut out = Vec::new();
        Preamble::Register {
            guid: key.guid(),
            key: *key.public().as_bytes(),
            nonce,
        }
        .encode(&mut out);
        let reg = Registration {
            key,
            nonce,
            expected,
            state: RegState::AwaitChallenge,
            relay: None,
            buf: [0; MAX_DOWN_LEN],
            len: 0,
        };
        (reg, out)
    }

    /// Bytes from the relay: what to send back goes to `out`, what happened to `events`.
    /// An error ends the control connection.
    pub fn received(
        &mut self,
        mut bytes: &[u8],
        out: &mut Vec<u8>,
        events: &mut Vec<RegistrationEvent>,
    ) -> Result<(), RegistrationError> {
        while !bytes.is_empty() {
            let need = Down::len_from_type(if self.len == 0 { bytes[0] } else { self.buf[0] })?;
            let take = (need - self.len).min(bytes.len());
            self.buf[self.len..self.len + take].copy_from_slice(&bytes[..take]);
            self.len += take;
            bytes = &bytes[take..];
            if self.len < need {
                return Ok(());
            }
            let msg = Down::decode(&self.buf[..need])?;
            self.len = 0;
            self.on_message(msg, out, events)?;
        }
        Ok(())
    }

    fn on_message(
        &mut self,
        msg: Down,
        out: &mut Vec<u8>,
        events: &mut Vec<RegistrationEvent>,
    ) -> Result<(), RegistrationError> {
        match (self.state, msg) {
            (
                RegState::AwaitChallenge,
                Down::Challenge {
                    nonce,
                    relay_key,
                    signature,
                },
            ) => {
                let relay = wire::verify_challenge(
                    &self.nonce,
                    &self.key.guid(),
                    &nonce,
                    &relay_key,
                    &signature,
                )?;
                if let Some(expected) = self.expected.filter(|&e| e != relay) {
                    return Err(RegistrationError::WrongRelay {
                        expected,
                        got: relay,
                    });
                }
                out.extend_from_slice(&wire::prove(&self.key, &nonce, &relay));
                self.relay = Some(relay);
                self.state = RegState::AwaitResult;
            }
            (RegState::AwaitResult, Down::Registered) => {
                self.state = RegState::Registered;
                if let Some(relay) = self.relay {
                    events.push(RegistrationEvent::Registered { relay });
                }
            }
            (_, Down::Refused(why)) => return Err(RegistrationError::Refused(why)),
            (RegState::Registered, Down::Dial { token }) => {
                events.push(RegistrationEvent::Dial(token))
            }
            (RegState::AwaitChallenge, _) => {
                return Err(RegistrationError::Unexpected("before the challenge"));
            }
            (RegState::AwaitResult, _) => {
                return Err(RegistrationError::Unexpected(
                    "before the registration result",
                ));
            }
            (RegState::Registered, _) => {
                return Err(RegistrationError::Unexpected("after the registration"));
            }
        }
        Ok(())
    }
}

/// A relay's limits: every table is bounded by one of these.
#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// Registered servers (control connections).
    pub max_servers: usize,
    /// Clients waiting for their server's dial-back.
    pub max_pending: usize,
    /// Spliced pairs (relayed flow paths) at once.
    pub max_sessions: usize,
    /// How long a client waits for the dial-back before the relay closes it.
    pub pending_timeout: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_servers: 1024,
            max_pending: 256,
            max_sessions: 1024,
            pending_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a relay turned a client away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectRefusal {
    #[error("no server with this GUID is registered here")]
    NotRegistered,
    #[error("too many clients waiting for a dial-back")]
    PendingFull,
    #[error("the relay carries its maximum of sessions")]
    SessionsFull,
}

/// One registered server: its control handle, and the splices its dial-backs carry (ended
/// when it registers again: they run from an address it may have left).
struct Server<C, S> {
    generation: u64,
    control: C,
    splices: HashMap<u64, S>,
}

struct Pending<P> {
    client: P,
    guid: Guid,
    until: Instant,
}

/// The relay's state, generic over the IO handles (`C` a control connection, `P` a waiting
/// client, `S` a splice) so that its decisions are tested without sockets.
pub struct Registry<C, P, S> {
    limits: RelayLimits,
    servers: HashMap<Guid, Server<C, S>>,
    pending: HashMap<Token, Pending<P>>,
    sessions: usize,
    next_id: u64,
}

/// What [`Registry::register`] displaced.
pub struct Displaced<C, S> {
    pub control: C,
    pub splices: Vec<S>,
}

impl<C, P, S> Registry<C, P, S> {
    pub fn new(limits: RelayLimits) -> Self {
        Registry {
            limits,
            servers: HashMap::new(),
            pending: HashMap::new(),
            sessions: 0,
            next_id: 1,
        }
    }

    pub fn limits(&self) -> RelayLimits {
        self.limits
    }

    /// (registered servers, waiting clients, sessions).
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.servers.len(), self.pending.len(), self.sessions)
    }

    /// A verified server registers: it replaces its own earlier registration (whose control
    /// connection and splices the caller closes). Returns its generation.
    pub fn register(
        &mut self,
        guid: Guid,
        control: C,
    ) -> Result<(u64, Option<Displaced<C, S>>), RefuseReason> {
        if !self.servers.contains_key(&guid) && self.servers.len() >= self.limits.max_servers {
            return Err(RefuseReason::Full);
        }
        let generation = self.id();
        let old = self.servers.insert(
            guid,
            Server {
                generation,
                control,
                splices: HashMap::new(),
            },
        );
        let displaced = old.map(|s| Displaced {
            control: s.control,
            splices: s.splices.into_values().collect(),
        });
        Ok((generation, displaced))
    }

    /// A control connection ended: forget the registration if it is still this one.
    pub fn unregister(&mut self, guid: &Guid, generation: u64) {
        if self
            .servers
            .get(guid)
            .is_some_and(|s| s.generation == generation)
        {
            self.servers.remove(guid);
        }
    }

    /// A client asks for `guid`: returns the token to send on the server's control
    /// connection (and that connection).
    pub fn connect(
        &mut self,
        guid: Guid,
        client: P,
        now: Instant,
    ) -> Result<(Token, &C), (ConnectRefusal, P)> {
        if !self.servers.contains_key(&guid) {
            return Err((ConnectRefusal::NotRegistered, client));
        }
        if self.sessions >= self.limits.max_sessions {
            return Err((ConnectRefusal::SessionsFull, client));
        }
        if self.pending.len() >= self.limits.max_pending {
            return Err((ConnectRefusal::PendingFull, client));
        }
        let token: Token = rand::random();
        self.pending.insert(
            token,
            Pending {
                client,
                guid,
                until: now + self.limits.pending_timeout,
            },
        );
        let control = &self.servers[&guid].control;
        Ok((token, control))
    }

    /// A server dialed back with `token`: the waiting client (once; a token is good for one
    /// dial-back) and the splice's id, counted as a session until [`Registry::splice_ended`].
    pub fn accept(&mut self, token: &Token, now: Instant, splice: S) -> Option<(P, u64)> {
        let p = self.pending.remove(token)?;
        if p.until < now {
            return None;
        }
        let server = self.servers.get_mut(&p.guid)?;
        let id = self.next_id;
        self.next_id += 1;
        server.splices.insert(id, splice);
        self.sessions += 1;
        Some((p.client, id))
    }

    /// A splice ended (both directions done).
    pub fn splice_ended(&mut self, id: u64) {
        self.sessions = self.sessions.saturating_sub(1);
        for s in self.servers.values_mut() {
            if s.splices.remove(&id).is_some() {
                return;
            }
        }
    }

    /// Clients whose server did not dial back in time (the caller closes them).
    pub fn expire(&mut self, now: Instant) -> Vec<P> {
        let late: Vec<Token> = self
            .pending
            .iter()
            .filter(|(_, p)| p.until < now)
            .map(|(t, _)| *t)
            .collect();
        late.into_iter()
            .filter_map(|t| self.pending.remove(&t).map(|p| p.client))
            .collect()
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

#[cfg(test)]
mod tests;
