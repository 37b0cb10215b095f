//! The relay protocol's messages, version 2 (docs/protocol.md, "Relay protocol"): every
//! connection to a relay opens with a preamble saying what it is; a registration then
//! exchanges a few fixed-size messages. Nothing here is secret: a relay never sees a key of an
//! end-to-end session, it splices sealed records it cannot read.

use namesock_identity::{
    GUID_LEN, Guid, Keypair, PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, Signature,
};

/// First bytes of every connection to a relay.
pub const MAGIC: &[u8; 4] = b"NSRL";
/// Relay protocol version (2: the relay proves its key to a registering server).
pub const VERSION: u8 = 2;
/// Length of the one-time token that pairs a server's dial-back with a waiting client.
pub const TOKEN_LEN: usize = 16;
/// Length of the relay's challenge nonce, and of the server's nonce in REGISTER.
pub const NONCE_LEN: usize = 32;
/// The longest preamble (REGISTER).
pub const MAX_PREAMBLE_LEN: usize = 6 + GUID_LEN + PUBLIC_KEY_LEN + NONCE_LEN;
/// The longest relay -> server message (CHALLENGE).
pub const MAX_DOWN_LEN: usize = 1 + NONCE_LEN + PUBLIC_KEY_LEN + SIGNATURE_LEN;
/// What a registration signs before the nonce (a signature made for anything else, a
/// handshake or a record, can never be one).
const REGISTER_CONTEXT: &[u8] = b"namesock relay register v1\0";
/// What a relay signs in its challenge, likewise.
const CHALLENGE_CONTEXT: &[u8] = b"namesock relay challenge v2\0";

pub type Token = [u8; TOKEN_LEN];

/// What a connection to a relay is for (the preamble's kind byte and body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preamble {
    /// A server registers its GUID (kind 1): `guid:20 key:32 nonce:32`; the relay signs the
    /// nonce in its challenge.
    Register {
        guid: Guid,
        key: [u8; PUBLIC_KEY_LEN],
        nonce: [u8; NONCE_LEN],
    },
    /// A client wants the server with this GUID (kind 2): `guid:20`.
    Connect { guid: Guid },
    /// A server dials back for a client (kind 3): `token:16`.
    Accept { token: Token },
}

/// Relay -> server messages on a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// `0x81 nonce:32 relay_key:32 signature:64`: sign this; the relay's signature over the
    /// server's nonce proves it holds `relay_key` (its GUID is the key's hash).
    Challenge {
        nonce: [u8; NONCE_LEN],
        relay_key: [u8; PUBLIC_KEY_LEN],
        signature: [u8; SIGNATURE_LEN],
    },
    /// `0x82`: the registration holds.
    Registered,
    /// `0x83 reason:u8`: the registration was refused; the relay closes.
    Refused(RefuseReason),
    /// `0x84 token:16`: a client is waiting: dial back and present the token.
    Dial { token: Token },
}

/// Server -> relay: `0x02 signature:64` over the context, nonce, relay GUID and GUID.
pub const PROOF_TYPE: u8 = 0x02;
pub const PROOF_LEN: usize = 1 + SIGNATURE_LEN;

/// Why a relay refused a registration (the byte after `0x83`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefuseReason {
    #[error("the key does not hash to the GUID")]
    KeyMismatch = 1,
    #[error("the signature does not verify")]
    BadSignature = 2,
    #[error("the relay is full")]
    Full = 3,
    #[error("this relay serves no such GUID (allow list)")]
    NotAllowed = 4,
}

/// Malformed relay protocol input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayWireError {
    #[error("not the relay protocol (bad magic)")]
    BadMagic,
    #[error("relay protocol version {0} is not supported (this build speaks version 2)")]
    Version(u8),
    #[error("unknown preamble kind {0}")]
    UnknownKind(u8),
    #[error("unknown relay message type {0:#04x}")]
    UnknownType(u8),
    #[error("unknown refusal reason {0}")]
    UnknownReason(u8),
}

impl Preamble {
    /// Length of the preamble whose first 6 bytes are `head`, or an error.
    pub fn len_from_head(head: &[u8; 6]) -> Result<usize, RelayWireError> {
        if &head[..4] != MAGIC {
            return Err(RelayWireError::BadMagic);
        }
        if head[4] != VERSION {
            return Err(RelayWireError::Version(head[4]));
        }
        Ok(6 + match head[5] {
            1 => GUID_LEN + PUBLIC_KEY_LEN + NONCE_LEN,
            2 => GUID_LEN,
            3 => TOKEN_LEN,
            k => return Err(RelayWireError::UnknownKind(k)),
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        match self {
            Preamble::Register { guid, key, nonce } => {
                out.push(1);
                out.extend_from_slice(guid.as_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(nonce);
            }
            Preamble::Connect { guid } => {
                out.push(2);
                out.extend_from_slice(guid.as_bytes());
            }
            Preamble::Accept { token } => {
                out.push(3);
                out.extend_from_slice(token);
            }
        }
    }

    /// Decodes a whole preamble (its length from [`Preamble::len_from_head`]).
    pub fn decode(bytes: &[u8]) -> Result<Preamble, RelayWireError> {
        let head: &[u8; 6] = bytes.first_chunk().ok_or(RelayWireError::BadMagic)?;
        let len = Preamble::len_from_head(head)?;
        let body = bytes.get(6..len).ok_or(RelayWireError::BadMagic)?;
        Ok(match head[5] {
            1 => Preamble::Register {
                guid: Guid::from_bytes(body[..GUID_LEN].try_into().expect("20 bytes")),
                key: body[GUID_LEN..GUID_LEN + PUBLIC_KEY_LEN]
                    .try_into()
                    .expect("32 bytes"),
                nonce: body[GUID_LEN + PUBLIC_KEY_LEN..]
                    .try_into()
                    .expect("32 bytes"),
            },
            2 => Preamble::Connect {
                guid: Guid::from_bytes(body.try_into().expect("20 bytes")),
            },
            _ => Preamble::Accept {
                token: body.try_into().expect("16 bytes"),
            },
        })
    }
}

impl Down {
    /// Length of the message whose type byte is `ty`.
    pub fn len_from_type(ty: u8) -> Result<usize, RelayWireError> {
        Ok(match ty {
            0x81 => MAX_DOWN_LEN,
            0x82 => 1,
            0x83 => 2,
            0x84 => 1 + TOKEN_LEN,
            t => return Err(RelayWireError::UnknownType(t)),
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Down::Challenge {
                nonce,
                relay_key,
                signature,
            } => {
                out.push(0x81);
                out.extend_from_slice(nonce);
                out.extend_from_slice(relay_key);
                out.extend_from_slice(signature);
            }
            Down::Registered => out.push(0x82),
            Down::Refused(r) => out.extend_from_slice(&[0x83, *r as u8]),
            Down::Dial { token } => {
                out.push(0x84);
                out.extend_from_slice(token);
            }
        }
    }

    /// Decodes one whole message (its length from [`Down::len_from_type`]).
    pub fn decode(bytes: &[u8]) -> Result<Down, RelayWireError> {
        let ty = *bytes.first().ok_or(RelayWireError::UnknownType(0))?;
        let len = Down::len_from_type(ty)?;
        let body = bytes.get(1..len).ok_or(RelayWireError::UnknownType(ty))?;
        Ok(match ty {
            0x81 => Down::Challenge {
                nonce: body[..NONCE_LEN].try_into().expect("32 bytes"),
                relay_key: body[NONCE_LEN..NONCE_LEN + PUBLIC_KEY_LEN]
                    .try_into()
                    .expect("32 bytes"),
                signature: body[NONCE_LEN + PUBLIC_KEY_LEN..]
                    .try_into()
                    .expect("64 bytes"),
            },
            0x82 => Down::Registered,
            0x83 => Down::Refused(match body[0] {
                1 => RefuseReason::KeyMismatch,
                2 => RefuseReason::BadSignature,
                3 => RefuseReason::Full,
                4 => RefuseReason::NotAllowed,
                r => return Err(RelayWireError::UnknownReason(r)),
            }),
            _ => Down::Dial {
                token: body.try_into().expect("16 bytes"),
            },
        })
    }
}

/// Why a server does not believe a relay's challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("the relay's key is not a valid ed25519 key")]
    BadKey,
    #[error("the relay's signature over our nonce does not verify")]
    BadSignature,
}

/// The bytes a relay's challenge signs: the server's nonce (fresh per connection, so a
/// recorded challenge convinces nobody), the relay's nonce and the server's GUID.
fn challenge_message(
    server_nonce: &[u8; NONCE_LEN],
    nonce: &[u8; NONCE_LEN],
    server: &Guid,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHALLENGE_CONTEXT.len() + 2 * NONCE_LEN + GUID_LEN);
    m.extend_from_slice(CHALLENGE_CONTEXT);
    m.extend_from_slice(server_nonce);
    m.extend_from_slice(nonce);
    m.extend_from_slice(server.as_bytes());
    m
}

/// The relay's challenge to `server`, whose REGISTER carried `server_nonce`.
pub fn challenge(
    relay: &Keypair,
    server_nonce: &[u8; NONCE_LEN],
    nonce: [u8; NONCE_LEN],
    server: &Guid,
) -> Down {
    Down::Challenge {
        nonce,
        relay_key: *relay.public().as_bytes(),
        signature: relay
            .sign(&challenge_message(server_nonce, &nonce, server))
            .0,
    }
}

/// The server's check of a challenge: the relay holds `relay_key`; returns its GUID.
pub fn verify_challenge(
    server_nonce: &[u8; NONCE_LEN],
    server: &Guid,
    nonce: &[u8; NONCE_LEN],
    relay_key: &[u8; PUBLIC_KEY_LEN],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<Guid, ChallengeError> {
    let key = PublicKey::from_bytes(relay_key).map_err(|_| ChallengeError::BadKey)?;
    key.verify(
        &challenge_message(server_nonce, nonce, server),
        &Signature(*signature),
    )
    .map_err(|_| ChallengeError::BadSignature)?;
    Ok(key.guid())
}

/// The bytes a registration signs: bound to this relay's challenge (fresh per connection, so
/// a recorded proof replays nowhere), this relay, and the GUID registered.
fn register_message(nonce: &[u8; NONCE_LEN], relay: &Guid, guid: &Guid) -> Vec<u8> {
    let mut m = Vec::with_capacity(REGISTER_CONTEXT.len() + NONCE_LEN + 2 * GUID_LEN);
    m.extend_from_slice(REGISTER_CONTEXT);
    m.extend_from_slice(nonce);
    m.extend_from_slice(relay.as_bytes());
    m.extend_from_slice(guid.as_bytes());
    m
}

/// The server's proof for a challenge: `0x02 signature:64`.
pub fn prove(key: &Keypair, nonce: &[u8; NONCE_LEN], relay: &Guid) -> [u8; PROOF_LEN] {
    let sig = key.sign(&register_message(nonce, relay, &key.guid()));
    let mut out = [0u8; PROOF_LEN];
    out[0] = PROOF_TYPE;
    out[1..].copy_from_slice(&sig.0);
    out
}

/// The relay's check of a registration: the key hashes to the GUID and signed this
/// relay's challenge.
pub fn verify_proof(
    guid: &Guid,
    key: &[u8; PUBLIC_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    relay: &Guid,
    proof: &[u8; PROOF_LEN],
) -> Result<(), RefuseReason> {
    let key = PublicKey::from_bytes(key).map_err(|_| RefuseReason::KeyMismatch)?;
    if key.guid() != *guid {
        return Err(RefuseReason::KeyMismatch);
    }
    if proof[0] != PROOF_TYPE {
        return Err(RefuseReason::BadSignature);
    }
    let sig = Signature(proof[1..].try_into().expect("64 bytes"));
    key.verify(&register_message(nonce, relay, guid), &sig)
        .map_err(|_| RefuseReason::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preambles_and_messages_round_trip() {
        let kp = Keypair::from_seed(&[3; 32]);
        for p in [
            Preamble::Register {
                guid: kp.guid(),
                key: *kp.public().as_bytes(),
                nonce: [8; NONCE_LEN],
            },
            Preamble::Connect { guid: kp.guid() },
            Preamble::Accept { token: [9; 16] },
        ] {
            let mut out = Vec::new();
            p.encode(&mut out);
            let head: [u8; 6] = out[..6].try_into().unwrap();
            assert_eq!(Preamble::len_from_head(&head).unwrap(), out.len());
            assert_eq!(Preamble::decode(&out).unwrap(), p);
        }
        for d in [
            challenge(&kp, &[2; NONCE_LEN], [1; NONCE_LEN], &kp.guid()),
            Down::Registered,
            Down::Refused(RefuseReason::Full),
            Down::Dial { token: [7; 16] },
        ] {
            let mut out = Vec::new();
            d.encode(&mut out);
            assert_eq!(Down::len_from_type(out[0]).unwrap(), out.len());
            assert_eq!(Down::decode(&out).unwrap(), d);
        }
    }

    #[test]
    fn bad_preambles_are_refused_with_their_cause() {
        assert_eq!(
            Preamble::len_from_head(b"GET / "),
            Err(RelayWireError::BadMagic)
        );
        assert_eq!(
            Preamble::len_from_head(b"NSRL\x01\x01"),
            Err(RelayWireError::Version(1))
        );
        assert_eq!(
            Preamble::len_from_head(b"NSRL\x02\x09"),
            Err(RelayWireError::UnknownKind(9))
        );
        assert_eq!(
            Down::len_from_type(0x42),
            Err(RelayWireError::UnknownType(0x42))
        );
    }

    #[test]
    fn only_the_guids_key_registers_it_and_a_proof_holds_for_one_challenge_only() {
        let server = Keypair::from_seed(&[1; 32]);
        let attacker = Keypair::from_seed(&[2; 32]);
        let relay = Keypair::from_seed(&[4; 32]).guid();
        let nonce = [5; NONCE_LEN];
        let guid = server.guid();
        let key = *server.public().as_bytes();
        let good = prove(&server, &nonce, &relay);
        assert_eq!(verify_proof(&guid, &key, &nonce, &relay, &good), Ok(()));
        // Someone else's GUID with the attacker's own key.
        let mine = *attacker.public().as_bytes();
        assert_eq!(
            verify_proof(
                &guid,
                &mine,
                &nonce,
                &relay,
                &prove(&attacker, &nonce, &relay)
            ),
            Err(RefuseReason::KeyMismatch)
        );
        // The victim's key, signed by the attacker.
        let mut forged = prove(&attacker, &nonce, &relay);
        forged[0] = PROOF_TYPE;
        assert_eq!(
            verify_proof(&guid, &key, &nonce, &relay, &forged),
            Err(RefuseReason::BadSignature)
        );
        // A recorded proof, replayed against a fresh challenge or another relay.
        assert_eq!(
            verify_proof(&guid, &key, &[6; NONCE_LEN], &relay, &good),
            Err(RefuseReason::BadSignature)
        );
        assert_eq!(
            verify_proof(&guid, &key, &nonce, &attacker.guid(), &good),
            Err(RefuseReason::BadSignature)
        );
    }

    #[test]
    fn only_the_relays_key_makes_its_challenge_and_a_recorded_one_convinces_nobody() {
        let relay = Keypair::from_seed(&[4; 32]);
        let impostor = Keypair::from_seed(&[5; 32]);
        let server = Keypair::from_seed(&[1; 32]).guid();
        let ours = [6; NONCE_LEN];
        let parts = |d: Down| match d {
            Down::Challenge {
                nonce,
                relay_key,
                signature,
            } => (nonce, relay_key, signature),
            _ => unreachable!("a challenge"),
        };
        let (nonce, key, sig) = parts(challenge(&relay, &ours, [7; NONCE_LEN], &server));
        assert_eq!(
            verify_challenge(&ours, &server, &nonce, &key, &sig),
            Ok(relay.guid())
        );
        // The relay's key, signed by someone else.
        let (_, _, forged) = parts(challenge(&impostor, &ours, nonce, &server));
        assert_eq!(
            verify_challenge(&ours, &server, &nonce, &key, &forged),
            Err(ChallengeError::BadSignature)
        );
        // A challenge recorded for another connection (another server nonce) or server.
        assert_eq!(
            verify_challenge(&[9; NONCE_LEN], &server, &nonce, &key, &sig),
            Err(ChallengeError::BadSignature)
        );
        assert_eq!(
            verify_challenge(&ours, &relay.guid(), &nonce, &key, &sig),
            Err(ChallengeError::BadSignature)
        );
    }
}
