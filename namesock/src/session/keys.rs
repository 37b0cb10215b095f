//! The session's keys: the handshake's X25519 exchange, the key schedule (HKDF-SHA256) and the
//! AEAD (AES-256-GCM) of each path and direction. All primitives are ring's.
//!
//! ```text
//! shared   = X25519(client ephemeral, server ephemeral)
//! prk      = HKDF-Extract(salt = SHA-256(transcript), ikm = shared)
//! c2s, s2c = HKDF-Expand(prk, "namesock/2 c2s" | "namesock/2 s2c")     (direction secrets)
//! resume   = HKDF-Expand(prk, "namesock/2 resume")                     (AEAD key, client -> server)
//! key(dir, path, epoch) = HKDF-Expand(dir, "namesock/2 path" | path u64 | epoch u64)
//! ticket   = HKDF-Expand(prk, "namesock/2 ticket", 32)                (secret of later OPENs)
//! nonce    = 0u32 | record counter u64                                  (12 bytes, big-endian)
//!
//! OPEN (a new session from a ticket, no handshake):
//! open key = HKDF-Expand(ticket, "namesock/2 open", 32)   (AEAD key; nonce 0u32 | child u64)
//! prk      = HKDF-Extract(salt = SHA-256("namesock/2 open keys\0" | OPEN body), ikm = ticket)
//! ```
//!
//! A path's number is 0 for the path that carried HELLO and the RESUME's freshness for a
//! resumed one (the server accepts each freshness once), so no two paths of a session share a
//! key; within a path and direction the record counter never repeats, and the key changes every
//! [`RECORDS_PER_KEY`] records, far below AES-GCM's limits. The resume key seals only RESUMEs,
//! with their freshness as the nonce.

use ring::{aead, agreement, hkdf, rand::SystemRandom};
use sha2::{Digest, Sha256};

use crate::wire::{EphemeralKey, HEADER_LEN, TAG_LEN};

/// Records sealed under one key before the next key of the path and direction takes over.
pub const RECORDS_PER_KEY: u64 = 1 << 20;

const C2S: &[u8] = b"namesock/2 c2s";
const S2C: &[u8] = b"namesock/2 s2c";
const RESUME: &[u8] = b"namesock/2 resume";
const PATH: &[u8] = b"namesock/2 path";
const TICKET: &[u8] = b"namesock/2 ticket";
const OPEN: &[u8] = b"namesock/2 open";
const OPEN_KEYS: &[u8] = b"namesock/2 open keys\0";

/// A session's ticket secret: what a later OPEN to the same peer proves it holds.
pub type TicketSecret = [u8; 32];

/// HKDF output length for raw secrets.
struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// A record or RESUME that does not authenticate under the keys it should: never acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the record does not authenticate")]
    Unauthentic,
    #[error("the peer's ephemeral key is not a usable X25519 key")]
    BadEphemeral,
    #[error("the path sealed 2^64 records")]
    Exhausted,
}

/// One side's ephemeral X25519 key for one handshake; used once.
pub struct Ephemeral {
    private: agreement::EphemeralPrivateKey,
    public: EphemeralKey,
}

impl Ephemeral {
    pub fn generate() -> Ephemeral {
        let rng = SystemRandom::new();
        // Invariant: generating and deriving an X25519 key fails only without a system RNG.
        let private = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng)
            .expect("the system random number generator works");
        let mut public = [0; 32];
        public.copy_from_slice(
            private
                .compute_public_key()
                .expect("an X25519 public key derives from its private key")
                .as_ref(),
        );
        Ephemeral { private, public }
    }

    pub fn public(&self) -> EphemeralKey {
        self.public
    }

    /// The session's keys from the peer's ephemeral key and the handshake transcript.
    pub fn agree(self, peer: &EphemeralKey, transcript: &[u8]) -> Result<SessionKeys, CryptoError> {
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, peer);
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, &Sha256::digest(transcript));
        // ring refuses a peer key that yields the all-zero shared secret (a small-order point).
        agreement::agree_ephemeral(self.private, &peer, |shared| salt.extract(shared))
            .map(|prk| SessionKeys::from_prk(&prk))
            .map_err(|_| CryptoError::BadEphemeral)
    }
}

fn expand_prk(prk: &hkdf::Prk, info: &[&[u8]]) -> hkdf::Prk {
    // Invariant: HKDF-Expand fails only for outputs longer than 255 hashes.
    prk.expand(info, hkdf::HKDF_SHA256)
        .expect("one hash of output")
        .into()
}

fn expand_key(prk: &hkdf::Prk, info: &[&[u8]]) -> aead::LessSafeKey {
    let okm = prk
        .expand(info, &aead::AES_256_GCM)
        .expect("one AES-256 key of output");
    aead::LessSafeKey::new(aead::UnboundKey::from(okm))
}

fn nonce(counter: u64) -> aead::Nonce {
    let mut n = [0; aead::NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    aead::Nonce::assume_unique_for_key(n)
}

/// What a handshake (or an OPEN) agreed: the direction secrets, the resume key and the
/// ticket.
pub struct SessionKeys {
    c2s: hkdf::Prk,
    s2c: hkdf::Prk,
    resume: aead::LessSafeKey,
    ticket: TicketSecret,
}

impl SessionKeys {
    fn from_prk(prk: &hkdf::Prk) -> SessionKeys {
        let mut ticket = [0; 32];
        prk.expand(&[TICKET], Len32)
            .and_then(|okm| okm.fill(&mut ticket))
            .expect("32 bytes of output");
        SessionKeys {
            c2s: expand_prk(prk, &[C2S]),
            s2c: expand_prk(prk, &[S2C]),
            resume: expand_key(prk, &[RESUME]),
            ticket,
        }
    }

    /// The keys of a session an OPEN makes: from the parent's ticket and the OPEN's body (as
    /// on the wire, tag included), so each child has keys of its own.
    pub fn from_open(ticket: &TicketSecret, open_body: &[u8]) -> SessionKeys {
        let mut salt = Sha256::new();
        salt.update(OPEN_KEYS);
        salt.update(open_body);
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt.finalize());
        SessionKeys::from_prk(&salt.extract(ticket))
    }

    /// The secret a later OPEN to this peer uses.
    pub fn ticket(&self) -> &TicketSecret {
        &self.ticket
    }

    /// The keys of path number `number` for one end (`client`: it seals client -> server).
    pub fn path(&self, client: bool, number: u64) -> PathKeys {
        let (seal, open) = if client {
            (&self.c2s, &self.s2c)
        } else {
            (&self.s2c, &self.c2s)
        };
        PathKeys {
            seal: Direction::new(seal.clone(), number),
            open: Direction::new(open.clone(), number),
        }
    }

    /// Client: seals a RESUME's body in place (`aad`: its fields in clear) and returns the tag.
    pub fn seal_resume(&self, freshness: u64, aad: &[u8], body: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .resume
            .seal_in_place_separate_tag(nonce(freshness), aead::Aad::from(aad), body)
            .expect("a RESUME body is far below AES-GCM's message limit");
        tag_bytes(tag)
    }

    /// Server: opens a RESUME's sealed part in place; the plaintext on success.
    pub fn open_resume<'a>(
        &self,
        freshness: u64,
        aad: &[u8],
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], CryptoError> {
        self.resume
            .open_in_place(nonce(freshness), aead::Aad::from(aad), sealed)
            .map_err(|_| CryptoError::Unauthentic)
    }
}

/// The AEAD key an OPEN's tag is made with: the ticket's.
fn open_key(ticket: &TicketSecret) -> aead::LessSafeKey {
    expand_key(
        &hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, ticket),
        &[OPEN],
    )
}

/// Client: the tag of an OPEN with child number `child` and clear fields `aad`.
pub fn open_tag(ticket: &TicketSecret, child: u64, aad: &[u8]) -> [u8; TAG_LEN] {
    let tag = open_key(ticket)
        .seal_in_place_separate_tag(nonce(child), aead::Aad::from(aad), &mut [])
        .expect("an empty plaintext is within AES-GCM's limits");
    tag_bytes(tag)
}

/// Server: whether an OPEN's tag is the one the ticket makes.
pub fn open_tag_verifies(
    ticket: &TicketSecret,
    child: u64,
    aad: &[u8],
    tag: &[u8; TAG_LEN],
) -> bool {
    let mut sealed = *tag;
    open_key(ticket)
        .open_in_place(nonce(child), aead::Aad::from(aad), &mut sealed)
        .is_ok()
}

fn tag_bytes(tag: aead::Tag) -> [u8; TAG_LEN] {
    let mut t = [0; TAG_LEN];
    t.copy_from_slice(tag.as_ref());
    t
}

/// One path's sealing (outgoing) and opening (incoming) state.
pub struct PathKeys {
    seal: Direction,
    open: Direction,
}

impl PathKeys {
    /// Seals the next outgoing record in place; returns its tag.
    pub fn seal(
        &mut self,
        aad: &[u8; HEADER_LEN],
        plain: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let (key, n) = self.seal.next()?;
        let tag = key
            .seal_in_place_separate_tag(n, aead::Aad::from(aad), plain)
            .expect("a record is far below AES-GCM's message limit");
        Ok(tag_bytes(tag))
    }

    /// Opens the next incoming record in place (ciphertext and tag); the plaintext.
    pub fn open<'a>(
        &mut self,
        aad: &[u8; HEADER_LEN],
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], CryptoError> {
        let (key, n) = self.open.next()?;
        key.open_in_place(n, aead::Aad::from(aad), sealed)
            .map_err(|_| CryptoError::Unauthentic)
    }
}

/// One direction of a path: the records counted so far and the key of the current epoch.
struct Direction {
    secret: hkdf::Prk,
    number: u64,
    counter: u64,
    key: aead::LessSafeKey,
}

impl Direction {
    fn new(secret: hkdf::Prk, number: u64) -> Direction {
        let key = Self::epoch_key(&secret, number, 0);
        Direction {
            secret,
            number,
            counter: 0,
            key,
        }
    }

    fn epoch_key(secret: &hkdf::Prk, number: u64, epoch: u64) -> aead::LessSafeKey {
        expand_key(secret, &[PATH, &number.to_be_bytes(), &epoch.to_be_bytes()])
    }

    /// The key and nonce of the next record. A record that fails to open still used its
    /// counter, but the path is closed after it anyway.
    fn next(&mut self) -> Result<(&aead::LessSafeKey, aead::Nonce), CryptoError> {
        let counter = self.counter;
        self.counter = counter.checked_add(1).ok_or(CryptoError::Exhausted)?;
        if counter > 0 && counter.is_multiple_of(RECORDS_PER_KEY) {
            self.key = Self::epoch_key(&self.secret, self.number, counter / RECORDS_PER_KEY);
        }
        Ok((&self.key, nonce(counter)))
    }

    #[cfg(test)]
    fn skip_to(&mut self, counter: u64) {
        self.counter = counter;
        self.key = Self::epoch_key(&self.secret, self.number, counter / RECORDS_PER_KEY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (SessionKeys, SessionKeys) {
        let (c, s) = (Ephemeral::generate(), Ephemeral::generate());
        let (cp, sp) = (c.public(), s.public());
        (c.agree(&sp, b"t").unwrap(), s.agree(&cp, b"t").unwrap())
    }

    fn seal(keys: &mut PathKeys, text: &[u8]) -> Vec<u8> {
        let mut buf = text.to_vec();
        let tag = keys.seal(&[13, 0, 0, 0, 0], &mut buf).unwrap();
        buf.extend_from_slice(&tag);
        buf
    }

    #[test]
    fn both_ends_agree_and_each_direction_opens_in_order() {
        let (c, s) = pair();
        let (mut cp, mut sp) = (c.path(true, 0), s.path(false, 0));
        for i in 0..3u8 {
            let mut rec = seal(&mut cp, &[i; 40]);
            assert_eq!(sp.open(&[13, 0, 0, 0, 0], &mut rec).unwrap(), &[i; 40]);
            let mut back = seal(&mut sp, &[i; 7]);
            assert_eq!(cp.open(&[13, 0, 0, 0, 0], &mut back).unwrap(), &[i; 7]);
        }
    }

    #[test]
    fn reordered_replayed_altered_or_foreign_records_do_not_open() {
        let (c, s) = pair();
        let mut cp = c.path(true, 0);
        let first = seal(&mut cp, b"first");
        let second = seal(&mut cp, b"second");
        // Reordered: the second record under the first counter.
        let mut sp = s.path(false, 0);
        assert!(sp.open(&[13, 0, 0, 0, 0], &mut second.clone()).is_err());
        // Replayed: the first record twice.
        let mut sp = s.path(false, 0);
        sp.open(&[13, 0, 0, 0, 0], &mut first.clone()).unwrap();
        assert!(sp.open(&[13, 0, 0, 0, 0], &mut first.clone()).is_err());
        // One bit flipped, or another header.
        let mut sp = s.path(false, 0);
        let mut flipped = first.clone();
        flipped[2] ^= 1;
        assert!(sp.open(&[13, 0, 0, 0, 0], &mut flipped).is_err());
        let mut sp = s.path(false, 0);
        assert!(sp.open(&[13, 0, 0, 0, 1], &mut first.clone()).is_err());
        // Another path's keys, or the same direction's own key (a reflected record).
        let mut other = s.path(false, 1);
        assert!(other.open(&[13, 0, 0, 0, 0], &mut first.clone()).is_err());
        let mut reflected = c.path(true, 0);
        assert!(
            reflected
                .open(&[13, 0, 0, 0, 0], &mut first.clone())
                .is_err()
        );
        // Another session's keys.
        let (_, s2) = pair();
        assert!(
            s2.path(false, 0)
                .open(&[13, 0, 0, 0, 0], &mut first.clone())
                .is_err()
        );
    }

    #[test]
    fn the_key_changes_at_each_epoch_and_both_ends_follow() {
        let (c, s) = pair();
        let (mut cp, mut sp) = (c.path(true, 5), s.path(false, 5));
        cp.seal.skip_to(RECORDS_PER_KEY - 1);
        sp.open.skip_to(RECORDS_PER_KEY - 1);
        let before = cp.seal.key_fingerprint();
        for text in [b"last of epoch 0".as_slice(), b"first of epoch 1"] {
            let mut rec = seal(&mut cp, text);
            assert_eq!(sp.open(&[13, 0, 0, 0, 0], &mut rec).unwrap(), text);
        }
        assert_ne!(before, cp.seal.key_fingerprint());
    }

    #[test]
    fn a_resume_opens_only_with_its_freshness_and_clear_fields() {
        let (c, s) = pair();
        let mut body = *b"path+received";
        let tag = c.seal_resume(7, b"clear", &mut body);
        let sealed: Vec<u8> = body.iter().chain(&tag).copied().collect();
        assert_eq!(
            s.open_resume(7, b"clear", &mut sealed.clone()).unwrap(),
            b"path+received"
        );
        assert!(s.open_resume(8, b"clear", &mut sealed.clone()).is_err());
        assert!(s.open_resume(7, b"other", &mut sealed.clone()).is_err());
        let (_, stranger) = pair();
        assert!(
            stranger
                .open_resume(7, b"clear", &mut sealed.clone())
                .is_err()
        );
    }

    #[test]
    fn both_ends_get_the_same_ticket_and_an_open_makes_fresh_keys_from_it() {
        let (c, s) = pair();
        assert_eq!(c.ticket(), s.ticket());
        let (c2, _) = pair();
        assert_ne!(c.ticket(), c2.ticket());
        // The OPEN tag: only its ticket, child number and clear fields verify it.
        let tag = open_tag(c.ticket(), 1, b"clear");
        assert!(open_tag_verifies(s.ticket(), 1, b"clear", &tag));
        assert!(!open_tag_verifies(s.ticket(), 2, b"clear", &tag));
        assert!(!open_tag_verifies(s.ticket(), 1, b"other", &tag));
        assert!(!open_tag_verifies(c2.ticket(), 1, b"clear", &tag));
        // Child keys: both ends agree, the body decides, and they differ from the parent's.
        let (cc, sc) = (
            SessionKeys::from_open(c.ticket(), b"body 1"),
            SessionKeys::from_open(s.ticket(), b"body 1"),
        );
        let (mut cp, mut sp) = (cc.path(true, 0), sc.path(false, 0));
        let mut rec = seal(&mut cp, b"child");
        assert_eq!(sp.open(&[13, 0, 0, 0, 0], &mut rec).unwrap(), b"child");
        assert_eq!(cc.ticket(), sc.ticket());
        assert_ne!(cc.ticket(), c.ticket());
        let other = SessionKeys::from_open(c.ticket(), b"body 2");
        assert_ne!(other.ticket(), cc.ticket());
        let mut rec = seal(&mut cc.path(true, 0), b"child");
        assert!(
            other
                .path(false, 0)
                .open(&[13, 0, 0, 0, 0], &mut rec)
                .is_err()
        );
        let mut rec = seal(&mut cc.path(true, 0), b"child");
        assert!(s.path(false, 0).open(&[13, 0, 0, 0, 0], &mut rec).is_err());
    }

    #[test]
    fn a_small_order_ephemeral_key_is_refused() {
        let e = Ephemeral::generate();
        assert_eq!(
            e.agree(&[0; 32], b"t").err(),
            Some(CryptoError::BadEphemeral)
        );
    }

    impl Direction {
        /// Something that differs between keys: a record sealed under the current key.
        fn key_fingerprint(&self) -> Vec<u8> {
            let mut buf = vec![0; 16];
            let tag = self
                .key
                .seal_in_place_separate_tag(nonce(0), aead::Aad::empty(), &mut buf)
                .unwrap();
            tag.as_ref().to_vec()
        }
    }
}
