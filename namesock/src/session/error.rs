//! Why a handshake, a resume or a frame on a path was refused.

use super::CryptoError;
use crate::wire::{DecodeError, PathId};

/// A HELLO (server side) or HELLO_ACK / RESUME_ACK (client side) that must not be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("the HELLO is for another GUID than ours")]
    WrongTarget,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the server key does not hash to the GUID we asked for")]
    KeyMismatch,
    #[error("the answer is for another connection or path")]
    WrongConnection,
    #[error("the peer's ephemeral key is not a usable X25519 key")]
    BadEphemeral,
}

/// A RESUME the server must refuse; the live session was not touched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("the RESUME is for another connection")]
    WrongConnection,
    #[error("only a server session accepts RESUME")]
    NotServer,
    #[error("the session has ended")]
    Finished,
    #[error("the RESUME does not open with the session's resume key")]
    Unauthentic,
    #[error("freshness {freshness} is not above {last}, already accepted: a replay")]
    Replayed { freshness: u64, last: u64 },
    #[error("the RESUME claims {received} bytes received, only {sent} were ever sent")]
    ReceivedBeyondSent { received: u64, sent: u64 },
}

/// A frame that breaks the protocol; the engine closes the path it came on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("unknown path {0}")]
    UnknownPath(PathId),
    #[error("{frame} is not allowed here ({why})")]
    UnexpectedFrame {
        frame: &'static str,
        why: &'static str,
    },
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("ACK or received count {ack} beyond the {sent} bytes sent")]
    AckBeyondSent { ack: u64, sent: u64 },
    #[error("DATA ending at {end} beyond the receive window ending at {limit}")]
    BeyondWindow { end: u64, limit: u64 },
    #[error("DATA at {offset} leaves a gap after {expected}")]
    Gap { offset: u64, expected: u64 },
    #[error("data up to {offset} after the FIN at {fin}")]
    DataAfterFin { offset: u64, fin: u64 },
    #[error("FIN moved from {fin} to {offset}")]
    FinMoved { fin: u64, offset: u64 },
    #[error("stream offset overflows 64 bits")]
    OffsetOverflow,
    #[error("sealed record refused: {0}")]
    Crypto(CryptoError),
    #[error("sealed frame malformed: {0}")]
    Malformed(#[from] DecodeError),
}

impl SessionError {
    /// The variant's name, for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            SessionError::UnknownPath(_) => "UnknownPath",
            SessionError::UnexpectedFrame { .. } => "UnexpectedFrame",
            SessionError::Handshake(_) => "Handshake",
            SessionError::AckBeyondSent { .. } => "AckBeyondSent",
            SessionError::BeyondWindow { .. } => "BeyondWindow",
            SessionError::Gap { .. } => "Gap",
            SessionError::DataAfterFin { .. } => "DataAfterFin",
            SessionError::FinMoved { .. } => "FinMoved",
            SessionError::OffsetOverflow => "OffsetOverflow",
            SessionError::Crypto(_) => "Unauthentic",
            SessionError::Malformed(_) => "Malformed",
        }
    }
}
