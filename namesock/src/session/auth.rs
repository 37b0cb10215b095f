//! What each side signs. Every transcript starts with a context string naming the protocol,
//! version and message, so a signature for one message can never pass as another.

use namesock_identity::Guid;

use crate::wire::{Hello, HelloAck, Resume, ResumeAck};

const HELLO: &[u8] = b"namesock/1 HELLO\0";
const HELLO_ACK: &[u8] = b"namesock/1 HELLO_ACK\0";
const RESUME: &[u8] = b"namesock/1 RESUME\0";
const RESUME_ACK: &[u8] = b"namesock/1 RESUME_ACK\0";

/// Client key signs: context || HELLO body without its signature.
pub(crate) fn hello(h: &Hello) -> Vec<u8> {
    let mut t = HELLO.to_vec();
    h.encode_signed_part(&mut t);
    t
}

/// Server key signs: context || the whole HELLO body (client nonce and signature included)
/// || HELLO_ACK body without its signature.
pub(crate) fn hello_ack(h: &Hello, a: &HelloAck) -> Vec<u8> {
    let mut t = HELLO_ACK.to_vec();
    h.encode_signed_part(&mut t);
    t.extend_from_slice(&h.signature.0);
    a.encode_signed_part(&mut t);
    t
}

/// Client key signs: context || server GUID || RESUME body without its signature.
pub(crate) fn resume(server: &Guid, r: &Resume) -> Vec<u8> {
    let mut t = RESUME.to_vec();
    t.extend_from_slice(server.as_bytes());
    r.encode_signed_part(&mut t);
    t
}

/// Server key signs: context || the whole RESUME body it answers || RESUME_ACK body without
/// its signature.
pub(crate) fn resume_ack(r: &Resume, a: &ResumeAck) -> Vec<u8> {
    let mut t = RESUME_ACK.to_vec();
    r.encode_signed_part(&mut t);
    t.extend_from_slice(&r.signature.0);
    a.encode_signed_part(&mut t);
    t
}
