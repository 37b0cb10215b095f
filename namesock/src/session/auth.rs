//! What each side signs, and the transcript the keys are derived from. Every transcript
//! starts with a context string naming the protocol, version and message, so a signature for
//! one message can never pass as another.

use crate::wire::{Hello, HelloAck, Refuse};

const HELLO: &[u8] = b"namesock/2 HELLO\0";
const HELLO_ACK: &[u8] = b"namesock/2 HELLO_ACK\0";
const KEYS: &[u8] = b"namesock/2 keys\0";
const REFUSE: &[u8] = b"namesock/2 REFUSE\0";

/// Client key signs: context || HELLO body without its signature (its ephemeral key included).
pub(crate) fn hello(h: &Hello) -> Vec<u8> {
    let mut t = HELLO.to_vec();
    h.encode_signed_part(&mut t);
    t
}

fn handshake(context: &[u8], h: &Hello, a: &HelloAck) -> Vec<u8> {
    let mut t = context.to_vec();
    h.encode_signed_part(&mut t);
    t.extend_from_slice(&h.signature.0);
    a.encode_signed_part(&mut t);
    t
}

/// Server key signs: context || the whole HELLO body (client signature included) || HELLO_ACK
/// body without its signature (the server's ephemeral key included).
pub(crate) fn hello_ack(h: &Hello, a: &HelloAck) -> Vec<u8> {
    handshake(HELLO_ACK, h, a)
}

/// The key schedule's salt is the SHA-256 of: context || the whole HELLO body || the whole
/// HELLO_ACK body (so the keys are bound to both identities, both signatures and the GUID
/// dialled).
pub(crate) fn keys(h: &Hello, a: &HelloAck) -> Vec<u8> {
    let mut t = handshake(KEYS, h, a);
    t.extend_from_slice(&a.signature.0);
    t
}

/// Server key signs: context || REFUSE body without its signature.
pub(crate) fn refuse(r: &Refuse) -> Vec<u8> {
    let mut t = REFUSE.to_vec();
    r.encode_signed_part(&mut t);
    t
}
