//! Who an endpoint is: an ed25519 key pair and the GUID derived from its public key.
//!
//! A GUID is the first 160 bits of SHA-256 over the 32-byte public key, written as 32
//! characters of lowercase, unpadded base32: a valid DNS label, so `<guid>.ns.alt` is a name.
//! Anyone can check that a key belongs to a GUID, so no server has to be trusted for it.

mod keyfile;

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

pub use keyfile::{KeyFileError, default_key_path, home_from_passwd};

/// Length of a GUID in bytes (160 bits).
pub const GUID_LEN: usize = 20;
/// Length of a GUID in its text form.
pub const GUID_TEXT_LEN: usize = 32;
/// Length of an ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// A self-certifying identifier: the truncated SHA-256 of a public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid([u8; GUID_LEN]);

impl Guid {
    pub const fn from_bytes(bytes: [u8; GUID_LEN]) -> Self {
        Guid(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; GUID_LEN] {
        &self.0
    }

    /// The GUID that `key` certifies.
    pub fn of(key: &PublicKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut guid = [0u8; GUID_LEN];
        guid.copy_from_slice(&digest[..GUID_LEN]);
        Guid(guid)
    }

    /// Does `key` hash to this GUID?
    pub fn is_certified_by(&self, key: &PublicKey) -> bool {
        Guid::of(key) == *self
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &data_encoding::BASE32_NOPAD
                .encode(&self.0)
                .to_ascii_lowercase(),
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// Why a string is not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuidParseError {
    #[error("a GUID has {GUID_TEXT_LEN} characters, this has {0}")]
    Length(usize),
    #[error("a GUID is base32 (a-z, 2-7); found {0:?}")]
    Character(char),
}

impl FromStr for Guid {
    type Err = GuidParseError;

    /// Parses the text form; DNS names are case-insensitive, so upper case is accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != GUID_TEXT_LEN {
            return Err(GuidParseError::Length(s.chars().count()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !matches!(c.to_ascii_lowercase(), 'a'..='z' | '2'..='7'))
        {
            return Err(GuidParseError::Character(c));
        }
        let bytes = data_encoding::BASE32_NOPAD
            .decode(s.to_ascii_uppercase().as_bytes())
            .map_err(|_| GuidParseError::Length(s.len()))?;
        let mut guid = [0u8; GUID_LEN];
        guid.copy_from_slice(&bytes);
        Ok(Guid(guid))
    }
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

/// Why a public key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("not a valid ed25519 public key")]
    BadKey,
    #[error("signature does not verify")]
    BadSignature,
}

impl PublicKey {
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, CryptoError> {
        VerifyingKey::from_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| CryptoError::BadKey)
    }

    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        self.0.as_bytes()
    }

    pub fn guid(&self) -> Guid {
        Guid::of(self)
    }

    /// Strict verification: rejects small-order keys and malleable signatures.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), CryptoError> {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0
            .verify_strict(message, &sig)
            .map_err(|_| CryptoError::BadSignature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.guid())
    }
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

/// A key pair: the secret that proves an identity.
pub struct Keypair(SigningKey);

impl Keypair {
    pub fn generate() -> Self {
        Keypair(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// A key pair from a 32-byte seed (deterministic; for tests and simulations).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Keypair(SigningKey::from_bytes(seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn guid(&self) -> Guid {
        self.public().guid()
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }

    fn seed(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.guid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_is_32_lowercase_base32_chars_and_round_trips() {
        for seed in 0..50u8 {
            let kp = Keypair::from_seed(&[seed; 32]);
            let text = kp.guid().to_string();
            assert_eq!(text.len(), GUID_TEXT_LEN);
            assert!(text.chars().all(|c| matches!(c, 'a'..='z' | '2'..='7')));
            assert_eq!(text.parse::<Guid>().unwrap(), kp.guid());
            assert_eq!(text.to_uppercase().parse::<Guid>().unwrap(), kp.guid());
        }
    }

    #[test]
    fn guid_is_truncated_sha256_of_the_key() {
        let kp = Keypair::from_seed(&[7; 32]);
        let digest = Sha256::digest(kp.public().as_bytes());
        assert_eq!(&kp.guid().as_bytes()[..], &digest[..20]);
        assert!(kp.guid().is_certified_by(&kp.public()));
        assert!(
            !kp.guid()
                .is_certified_by(&Keypair::from_seed(&[8; 32]).public())
        );
    }

    #[test]
    fn malformed_guids_are_refused() {
        assert_eq!("abc".parse::<Guid>(), Err(GuidParseError::Length(3)));
        let bad = "a".repeat(31) + "1";
        assert_eq!(bad.parse::<Guid>(), Err(GuidParseError::Character('1')));
        let bad = "a".repeat(31) + "é";
        assert!(bad.parse::<Guid>().is_err());
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let kp = Keypair::from_seed(&[1; 32]);
        let sig = kp.sign(b"hello");
        assert_eq!(kp.public().verify(b"hello", &sig), Ok(()));
        assert_eq!(
            kp.public().verify(b"hellp", &sig),
            Err(CryptoError::BadSignature)
        );
        let other = Keypair::from_seed(&[2; 32]);
        assert_eq!(
            other.public().verify(b"hello", &sig),
            Err(CryptoError::BadSignature)
        );
    }
}
