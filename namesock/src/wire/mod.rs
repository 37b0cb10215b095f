//! The namesock wire protocol: the frames that travel on a flow path, and their codec.
//!
//! Every frame is `type: u8 | length: u32 BE | body`, where `length` counts the body only.
//! The frames that open a path (HELLO, HELLO_ACK, RESUME, REFUSE, OPEN) travel as such; every
//! other frame travels sealed: inside a SEALED record whose body is the AEAD ciphertext of
//! `inner type: u8 | inner body` and its tag (see [`Record`]; the keys are the session's).
//! The decoder is strict and bounded: the length is checked against [`MAX_FRAME`] as soon as
//! the 5 header bytes are there (before waiting for or buffering a body), every field is
//! checked, trailing bytes are an error, and nothing allocates more than the checked length.
//! `docs/protocol.md` documents every frame byte by byte. A [`FrameReader`] cuts a byte stream
//! that arrives in reads of any size into frames, decoded in place.
//!
//! Room for later frame types: type codes 16..=255 are reserved (14 OPEN and 15 OPEN_ACK were
//! added to version 2 on 2026-12-02: an older version-2 engine closes a path that sends them). A decoder that meets one
//! returns [`DecodeError::UnknownType`] (the path is closed), so a peer may send a new type only
//! after the protocol version in HELLO/RESUME told it the other side knows it.

mod codec;
mod reader;
mod record;

pub use reader::{FrameReader, Round, Step};
pub use record::{Record, SealedRef, TAG_LEN};

use std::net::SocketAddr;

use namesock_identity::{Guid, PublicKey, Signature};

/// A session's identity on the wire: random, chosen by the client, never reused.
pub type ConnId = [u8; 16];
/// A flow path, numbered by the engine that owns it (the two ends number paths independently).
pub type PathId = u32;

/// Protocol version carried in HELLO and RESUME. Version 1 (cleartext) is refused.
pub const VERSION: u8 = 2;
/// What a server answers a HELLO or RESUME of protocol version 1 with: the version-1
/// RESET(Protocol) frame (`0x0a | length 2 | reason 4`), the one refusal such a client
/// understands before a handshake. Version 2 has no RESET in clear.
pub const VERSION_1_REFUSAL: [u8; 7] = [10, 0, 0, 0, 2, 0, 4];
/// First bytes of the body of the frames that open a flow path (HELLO, RESUME).
pub const MAGIC: [u8; 4] = *b"nsok";
/// Frame header: type (1) and body length (4).
pub const HEADER_LEN: usize = 5;
/// Largest DATA payload.
pub const MAX_DATA: usize = 32 * 1024;
/// Largest frame on the wire, header included. Longer length fields are refused unread.
pub const MAX_FRAME: usize = 64 * 1024 + HEADER_LEN;
/// Most locators in one MOVED frame.
pub const MAX_LOCATORS: usize = 32;
/// An X25519 public key: the ephemeral key of each side of a handshake.
pub type EphemeralKey = [u8; 32];
/// RESUME's sealed fields (path ID and received count) and their tag.
pub const RESUME_SEALED_LEN: usize = 4 + 8 + TAG_LEN;

/// One protocol message. `P` holds a DATA payload: owned (`Vec<u8>`, the default) or
/// borrowed from the bytes it was decoded from ([`FrameRef`]), so that a received payload is
/// copied once, into the session's receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<P = Vec<u8>> {
    Hello(Hello),
    HelloAck(HelloAck),
    Data {
        offset: u64,
        ack: u64,
        payload: P,
    },
    Ack {
        ack: u64,
    },
    Ping {
        token: u64,
    },
    Pong {
        token: u64,
    },
    Resume(Resume),
    ResumeAck(ResumeAck),
    Moved {
        seq: u64,
        locators: Vec<SocketAddr>,
    },
    /// The sender's stream ends at `offset` (its total length).
    Fin {
        offset: u64,
    },
    Reset {
        reason: ResetReason,
    },
    Refuse(Refuse),
    Open(Open),
    OpenAck(OpenAck),
}

/// A frame decoded in place: its DATA payload borrows the decoder's input.
pub type FrameRef<'a> = Frame<&'a [u8]>;

/// The bytes of a DATA payload, in at most two pieces (a ring buffer's two halves), so a
/// frame can be encoded straight from where its bytes are kept.
pub trait Payload {
    fn parts(&self) -> [&[u8]; 2];

    fn len(&self) -> usize {
        let [a, b] = self.parts();
        <[u8]>::len(a) + <[u8]>::len(b)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Payload for Vec<u8> {
    fn parts(&self) -> [&[u8]; 2] {
        [self, &[]]
    }
}

impl Payload for &[u8] {
    fn parts(&self) -> [&[u8]; 2] {
        [self, &[]]
    }
}

impl Payload for [&[u8]; 2] {
    fn parts(&self) -> [&[u8]; 2] {
        *self
    }
}

/// Client -> server, first frame of a new session's first path (in clear).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub conn_id: ConnId,
    pub client_key: PublicKey,
    /// The GUID the client wants to reach; the server must own it.
    pub target: Guid,
    /// The service port the application asked for.
    pub port: u16,
    /// The client's ephemeral X25519 key, fresh for every HELLO.
    pub ephemeral: EphemeralKey,
    /// How many unread bytes the client buffers (the server never sends further ahead).
    pub window: u32,
    /// By `client_key`, over the HELLO transcript (see `docs/protocol.md`).
    pub signature: Signature,
}

impl Hello {
    pub fn conn_id(&self) -> ConnId {
        self.conn_id
    }
}

/// Server -> client (in clear): the server's key, its ephemeral key and the session's
/// parameters, signed over the transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloAck {
    pub conn_id: ConnId,
    pub server_key: PublicKey,
    /// The server's ephemeral X25519 key, fresh for every HELLO_ACK.
    pub ephemeral: EphemeralKey,
    /// How many unread bytes the server buffers.
    pub window: u32,
    /// How long the server keeps a session without paths, in milliseconds.
    pub linger_ms: u32,
    /// By `server_key`, over the HELLO and the fields above.
    pub signature: Signature,
}

/// Client -> server, first frame of an additional or replacement path: the connection ID
/// and freshness in clear, the rest sealed with the session's resume key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub conn_id: ConnId,
    /// Strictly greater than in any RESUME the server accepted before for this session; the
    /// path's number in the key schedule and the resume key's nonce.
    pub freshness: u64,
    /// [`ResumeBody`] sealed, with its tag.
    pub sealed: [u8; RESUME_SEALED_LEN],
}

impl Resume {
    pub fn conn_id(&self) -> ConnId {
        self.conn_id
    }
}

/// RESUME's sealed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeBody {
    /// The client's number for this path (for logs; the server numbers it its own way).
    pub path_id: PathId,
    /// Stream bytes the client has received (plus one once it has the server's FIN).
    pub received: u64,
}

/// Server -> client, sealed on the resumed path: the resume was accepted; what the server
/// has received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeAck {
    /// Echo of [`ResumeBody::path_id`].
    pub path_id: PathId,
    /// Stream bytes the server has received (plus one once it has the client's FIN).
    pub received: u64,
}

/// Client -> server (in clear), first frame of a new session's path to a server this engine
/// holds a ticket of (resumption without a handshake): the new session's ID, the parent
/// session whose ticket it uses, a child number never used before with that ticket, and a tag
/// that proves the client holds the ticket (see `docs/protocol.md`, "Resumption (OPEN)").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The new session's connection ID (random).
    pub conn_id: ConnId,
    /// The session whose ticket this OPEN uses.
    pub parent: ConnId,
    /// From 1 per parent, each used once: the tag's nonce, and the server's replay check.
    pub child: u64,
    /// The service port the application asked for (the parent's).
    pub port: u16,
    /// How many unread bytes the client buffers.
    pub window: u32,
    /// AES-256-GCM tag over an empty plaintext, the fields above as associated data.
    pub tag: [u8; TAG_LEN],
}

impl Open {
    pub fn conn_id(&self) -> ConnId {
        self.conn_id
    }
}

/// Server -> client, sealed: the first record of a session an OPEN made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenAck {
    /// How many unread bytes the server buffers.
    pub window: u32,
    /// How long the server keeps a session without paths, in milliseconds.
    pub linger_ms: u32,
}

/// Length of an OPEN's body.
pub const OPEN_BODY_LEN: usize = 4 + 1 + 16 + 16 + 8 + 2 + 4 + TAG_LEN;

/// Server -> client (in clear), instead of HELLO_ACK or RESUME_ACK: the server refuses the
/// path's first frame, and signs that it does, so nobody else can end a session this way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refuse {
    pub conn_id: ConnId,
    /// `PortRefused` (HELLO) or `LingerExpired` (RESUME of a session the server no longer has).
    pub reason: ResetReason,
    /// SHA-256 of the encoded HELLO or RESUME refused: binds the refusal to that one frame.
    pub echo: [u8; 32],
    pub server_key: PublicKey,
    /// By `server_key`, over the fields above.
    pub signature: Signature,
}

/// Why a session was reset. Codes not listed are a decode error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ResetReason {
    /// The server does not serve the requested port.
    PortRefused = 1,
    /// No flow path came back within the linger period.
    LingerExpired = 2,
    /// A handshake or resume failed authentication.
    AuthFailed = 3,
    /// The peer broke the protocol.
    Protocol = 4,
    /// The application went away without closing.
    AppAbort = 5,
    /// The server has no room for another session (its session or memory limit).
    Overloaded = 6,
    /// The server's allow list does not name the client's GUID for this port.
    NotAllowed = 7,
    /// The client's GUID holds as many sessions with this server as it allows one peer.
    TooManySessions = 8,
}

impl ResetReason {
    /// Whether a REFUSE with this reason turns a client's connect down for good
    /// (ECONNREFUSED), rather than ending a session.
    pub fn refuses_connect(self) -> bool {
        matches!(
            self,
            ResetReason::PortRefused
                | ResetReason::Overloaded
                | ResetReason::NotAllowed
                | ResetReason::TooManySessions
        )
    }

    /// What a client's user is told about a refusal.
    pub fn describe(self) -> &'static str {
        match self {
            ResetReason::PortRefused => "the port is not served",
            ResetReason::LingerExpired => "the session is gone (linger period over)",
            ResetReason::AuthFailed => "authentication failed",
            ResetReason::Protocol => "protocol error",
            ResetReason::AppAbort => "the program went away",
            ResetReason::Overloaded => "it has no room for another session",
            ResetReason::NotAllowed => "not on its allow list",
            ResetReason::TooManySessions => "too many sessions from this identity",
        }
    }

    fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1 => ResetReason::PortRefused,
            2 => ResetReason::LingerExpired,
            3 => ResetReason::AuthFailed,
            4 => ResetReason::Protocol,
            5 => ResetReason::AppAbort,
            6 => ResetReason::Overloaded,
            7 => ResetReason::NotAllowed,
            8 => ResetReason::TooManySessions,
            _ => return None,
        })
    }
}

/// Why bytes are not a frame. Any of these closes the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    #[error("frame body of {len} bytes exceeds the maximum of {max}")]
    TooLong { len: usize, max: usize },
    #[error("{0} frame body is shorter than its fields")]
    Truncated(&'static str),
    #[error("{0} frame body has bytes after its fields")]
    TrailingBytes(&'static str),
    #[error("bad magic: not a namesock flow path")]
    BadMagic,
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    #[error("not a valid ed25519 public key")]
    BadKey,
    #[error("DATA payload of {0} bytes exceeds {MAX_DATA}")]
    PayloadTooLarge(usize),
    #[error("unknown reset reason {0}")]
    UnknownResetReason(u16),
    #[error("unknown address family {0}")]
    BadAddressFamily(u8),
    #[error("{0} locators exceed the maximum of {MAX_LOCATORS}")]
    TooManyLocators(usize),
    #[error("{0} frame in clear: it travels sealed")]
    Unsealed(&'static str),
    #[error("{0} frame inside a SEALED record: it travels in clear")]
    ClearInSealed(&'static str),
    #[error("SEALED record of {0} bytes is shorter than its tag and inner type")]
    SealedTooShort(usize),
}

impl DecodeError {
    /// The variant's name, for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::UnknownType(_) => "UnknownType",
            DecodeError::TooLong { .. } => "TooLong",
            DecodeError::Truncated(_) => "Truncated",
            DecodeError::TrailingBytes(_) => "TrailingBytes",
            DecodeError::BadMagic => "BadMagic",
            DecodeError::UnsupportedVersion(_) => "UnsupportedVersion",
            DecodeError::BadKey => "BadKey",
            DecodeError::PayloadTooLarge(_) => "PayloadTooLarge",
            DecodeError::UnknownResetReason(_) => "UnknownResetReason",
            DecodeError::BadAddressFamily(_) => "BadAddressFamily",
            DecodeError::TooManyLocators(_) => "TooManyLocators",
            DecodeError::Unsealed(_) => "Unsealed",
            DecodeError::ClearInSealed(_) => "ClearInSealed",
            DecodeError::SealedTooShort(_) => "SealedTooShort",
        }
    }
}
