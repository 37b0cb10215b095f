//! The record layer: a frame in clear, or a SEALED record carrying one frame under AEAD.
//!
//! A SEALED record is `0x0d | length: u32 BE | ciphertext | tag (16)`, where the ciphertext
//! is that of `inner type: u8 | inner body` and the 5-byte header is the associated data.
//! This module only frames and parses; the keys and nonces are the session's, which seals
//! through the closure [`Frame::encode_sealed`] takes and opens with [`SealedRef::open`].

use super::codec::{SEALED, decode_sealed_inner};
use super::{DecodeError, Frame, FrameRef, HEADER_LEN, Payload};

/// Length of an AEAD tag (AES-256-GCM).
pub const TAG_LEN: usize = 16;

/// One record as it arrived on a path.
// Handed out by value once and consumed at once, never stored: the size of a HELLO in the
// rare clear variant costs nothing worth an allocation per handshake.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Record<'a> {
    /// HELLO, HELLO_ACK, RESUME or REFUSE.
    Clear(FrameRef<'a>),
    /// Any other frame, still encrypted.
    Sealed(SealedRef<'a>),
}

/// A SEALED record, borrowed mutably from the reader's buffer so that it opens in place.
#[derive(Debug)]
pub struct SealedRef<'a> {
    header: [u8; HEADER_LEN],
    body: &'a mut [u8],
}

impl<'a> SealedRef<'a> {
    pub(super) fn new(header: [u8; HEADER_LEN], body: &'a mut [u8]) -> Self {
        SealedRef { header, body }
    }

    /// Opens the record: `open(aad, ciphertext_and_tag)` decrypts in place and returns the
    /// plaintext (`None`: authentication failed). The plaintext is then decoded as the inner
    /// frame; a frame that travels in clear is refused inside a SEALED record.
    pub fn open<E>(
        self,
        open: impl FnOnce(&[u8; HEADER_LEN], &'a mut [u8]) -> Result<&'a [u8], E>,
    ) -> Result<Result<FrameRef<'a>, DecodeError>, E> {
        let plain = open(&self.header, self.body)?;
        Ok(decode_sealed_inner(plain))
    }

    /// Bytes on the wire, header included.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }
}

impl<P: Payload> Frame<P> {
    /// Appends the frame as a SEALED record: `seal(aad, plaintext)` encrypts in place and
    /// returns the tag. For frames that travel in clear, see [`Frame::travels_in_clear`].
    pub fn encode_sealed(
        &self,
        out: &mut Vec<u8>,
        seal: impl FnOnce(&[u8; HEADER_LEN], &mut [u8]) -> [u8; TAG_LEN],
    ) {
        debug_assert!(!self.travels_in_clear(), "{} is sent in clear", self.name());
        let start = out.len();
        out.extend_from_slice(&[SEALED, 0, 0, 0, 0]);
        out.push(self.type_code());
        self.encode_body(out);
        let len = out.len() - start - HEADER_LEN + TAG_LEN;
        out[start + 1..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        let mut header = [0; HEADER_LEN];
        header.copy_from_slice(&out[start..start + HEADER_LEN]);
        let tag = seal(&header, &mut out[start + HEADER_LEN..]);
        out.extend_from_slice(&tag);
    }
}
