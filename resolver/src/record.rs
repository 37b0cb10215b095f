//! The signed GNS records: where a GUID is ([`Record`]) and which GUID a name is ([`NameBinding`]).
//!
//! Both are canonical binary blobs signed by the GUID's ed25519 key. Every field is fixed-width
//! or length-prefixed, big-endian, with nothing optional and no trailing bytes, so one record has
//! exactly one encoding and the signature covers every byte before it:
//!
//! ```text
//! record  = "NSR" version:u8=2 guid:20 key:32 seq:u64 expires:u64
//!           n:u8 n*locator
//!           map:u8 (0 | 1 s:u8 s*(service:u16 engine:u16))
//!           m:u8 m*(len:u8 name:len)
//!           r:u8 r*locator                  (0..=8 relays that reach this GUID)
//!           signature:64
//! locator = family:u8 (4 => ip:4 | 6 => ip:16) port:u16
//! binding = "NSN" version:u8=2 len:u8 name:len guid:20 key:32 seq:u64 expires:u64
//!           h:u8 (0 | 1 handover) signature:64
//! handover = "NSH" version:u8=1 len:u8 name:len from:20 from_key:32 to:20 seq:u64 signature:64
//! ```
//!
//! A record without a service map (`map` 0) is one engine that answers for every port at its
//! locators (`namesock publish`, a relay). A record with one ([`Services`]) says, for each
//! service port, which engine port serves it; a client dials the locators' addresses at that
//! port, and a port not in the map is not served. Entries are sorted by service port, each
//! port once, at most [`MAX_SERVICES`].
//!
//! A [`Handover`] is signed by the key that holds a name and gives it to another GUID; the new
//! holder's binding carries it, so a reader that pinned the old holder can check the move.
//!
//! The different magics keep a signature over one kind from being valid as the other.
//! `seq` orders the records of one GUID (resp. the bindings of one name); publishers use
//! `max(last + 1, unix time in microseconds)`. `expires` is in unix seconds. Readers refuse an
//! expiry more than [`MAX_EXPIRY_AHEAD`] ahead and a sequence number more than
//! [`MAX_SEQ_AHEAD`] ahead of their clock: a value from the far future would otherwise hold a
//! name (or block every later record) for ever.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use namesock_identity::{
    GUID_LEN, Guid, Keypair, PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN, Signature,
};

use crate::name;

/// Largest encoded record or binding accepted (a TXT record holds it comfortably).
pub const MAX_RECORD_LEN: usize = 2048;
/// Most locators one record may carry.
pub const MAX_LOCATORS: usize = 32;
/// Most names one record may claim.
pub const MAX_NAMES: usize = 8;
/// Most service ports one record may map (4 bytes each).
pub const MAX_SERVICES: usize = 64;
/// Most relays one record may list.
pub const MAX_RELAYS: usize = 8;
/// How long a published record or binding stays valid; publishers republish well before.
pub const RECORD_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Latest expiry a reader accepts, counted from its own clock: the lifetime publishers use,
/// plus room for clocks that disagree.
pub const MAX_EXPIRY_AHEAD: Duration = Duration::from_secs(7 * 24 * 3600);
/// Latest sequence number a reader accepts, as microseconds after its own clock (sequence
/// numbers are publication times in microseconds).
pub const MAX_SEQ_AHEAD: Duration = Duration::from_secs(7 * 24 * 3600);

const RECORD_MAGIC: &[u8; 3] = b"NSR";
const BINDING_MAGIC: &[u8; 3] = b"NSN";
const HANDOVER_MAGIC: &[u8; 3] = b"NSH";
const VERSION: u8 = 1;
/// Version 2 of the record carries the optional service map and the relays.
const RECORD_VERSION: u8 = 2;
/// Version 2 of the binding carries an optional handover.
const BINDING_VERSION: u8 = 2;

/// Why a record or binding was rejected. Each cause is its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is {len} bytes, more than the {max} allowed")]
    Oversized { len: usize, max: usize },
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    #[error(
        "record format version {found} is not supported (this build reads version {supported}); the publisher has to republish with this version"
    )]
    UnsupportedVersion { found: u8, supported: u8 },
    #[error("record claims GUID {guid} but its key hashes to {key_guid}")]
    KeyMismatch { guid: Guid, key_guid: Guid },
    #[error("record signature does not verify with its key")]
    BadSignature,
    #[error("record expired at unix time {expired_at}")]
    Expired { expired_at: u64 },
    #[error(
        "record has sequence {got}, older than sequence {seen} already seen: refusing a rollback"
    )]
    Rollback { seen: u64, got: u64 },
    #[error("record is for {found}, but {expected} was looked up")]
    Misplaced { expected: String, found: String },
    #[error(
        "record expires at unix time {expires}, more than {max_days} days from now: refusing a record from the far future (its publisher's clock is wrong, or it is an attempt to hold the name for ever)"
    )]
    FarFutureExpiry { expires: u64, max_days: u64 },
    #[error(
        "record has sequence {seq}, a publication time more than {max_days} days from now: refusing a record from the far future (its publisher's clock is wrong, or it is an attempt to block every later record)"
    )]
    FarFutureSequence { seq: u64, max_days: u64 },
    #[error(
        "the handover in the binding of {name} is for {found}, not for this binding (a handover gives one name from one GUID to one other GUID)"
    )]
    HandoverMismatch { name: String, found: String },
}

/// The verified record of one GUID: its key and where it can be reached.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub guid: Guid,
    pub key: PublicKey,
    pub seq: u64,
    /// Unix seconds.
    pub expires: u64,
    pub locators: Vec<SocketAddr>,
    /// Which engine port serves which service port (`None`: the locators serve every port).
    pub services: Option<Services>,
    pub names: Vec<String>,
    /// Relays that reach this GUID when its locators do not answer (a server behind NAT).
    pub relays: Vec<SocketAddr>,
    signature: Signature,
}

/// A record's service map: `(service port, engine port)`, sorted by service port, each
/// service port once, at most [`MAX_SERVICES`] entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Services(Vec<(u16, u16)>);

impl Services {
    /// The map of `entries`, sorted; `None` if a service port appears twice or there are
    /// more than [`MAX_SERVICES`].
    pub fn new(mut entries: Vec<(u16, u16)>) -> Option<Services> {
        entries.sort_unstable();
        let unique = entries.windows(2).all(|w| w[0].0 != w[1].0);
        (unique && entries.len() <= MAX_SERVICES).then_some(Services(entries))
    }

    /// The engine port that serves `service`.
    pub fn engine_port(&self, service: u16) -> Option<u16> {
        self.0
            .binary_search_by_key(&service, |&(s, _)| s)
            .ok()
            .map(|i| self.0[i].1)
    }

    pub fn entries(&self) -> &[(u16, u16)] {
        &self.0
    }
}

/// A verified binding of a name (full DNS name, e.g. `web.ns.alt`) to a GUID.
#[derive(Clone, PartialEq, Eq)]
pub struct NameBinding {
    pub name: String,
    pub guid: Guid,
    pub key: PublicKey,
    pub seq: u64,
    /// Unix seconds.
    pub expires: u64,
    /// The previous holder's consent, when the name moved to this GUID from another.
    pub handover: Option<Handover>,
    signature: Signature,
}

/// A name given by the GUID that holds it (`from`) to another GUID (`to`), signed by `from`'s
/// key. `seq` is a sequence number of the name taken when it was signed: a reader accepts the
/// handover only if it is newer than the binding it had pinned, so an old handover cannot be
/// replayed to take the name back later.
#[derive(Clone, PartialEq, Eq)]
pub struct Handover {
    pub name: String,
    pub from: Guid,
    pub from_key: PublicKey,
    pub to: Guid,
    pub seq: u64,
    signature: Signature,
}

/// Seconds since the unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Microseconds since the unix epoch (the unit of sequence numbers).
pub fn unix_now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The next sequence number after `last`: `max(last + 1, now in unix microseconds)`.
pub fn next_seq(last: Option<u64>) -> u64 {
    let now = unix_now_micros();
    last.map_or(now, |l| now.max(l.saturating_add(1)))
}

/// Refuses an expiry or a sequence number from the far future (see [`MAX_EXPIRY_AHEAD`] and
/// [`MAX_SEQ_AHEAD`]); `now` in unix seconds, `now_micros` in microseconds.
pub fn check_not_future(
    seq: u64,
    expires: Option<u64>,
    now: u64,
    now_micros: u64,
) -> Result<(), RecordError> {
    if let Some(expires) = expires
        && expires > now.saturating_add(MAX_EXPIRY_AHEAD.as_secs())
    {
        return Err(RecordError::FarFutureExpiry {
            expires,
            max_days: MAX_EXPIRY_AHEAD.as_secs() / 86_400,
        });
    }
    let max_seq = now_micros.saturating_add(MAX_SEQ_AHEAD.as_secs() * 1_000_000);
    if seq > max_seq {
        return Err(RecordError::FarFutureSequence {
            seq,
            max_days: MAX_SEQ_AHEAD.as_secs() / 86_400,
        });
    }
    Ok(())
}

impl Record {
    /// Builds and signs a record for `key`'s GUID.
    pub fn sign(
        key: &Keypair,
        seq: u64,
        expires: u64,
        locators: &[SocketAddr],
        names: &[String],
    ) -> Result<Record, RecordError> {
        Record::sign_with(key, seq, expires, locators, None, &[], names)
    }

    /// Like [`Record::sign`], with a service map (`None`: the locators serve every port) and
    /// the relays that reach the GUID when its locators do not answer.
    pub fn sign_with(
        key: &Keypair,
        seq: u64,
        expires: u64,
        locators: &[SocketAddr],
        services: Option<Services>,
        relays: &[SocketAddr],
        names: &[String],
    ) -> Result<Record, RecordError> {
        if relays.len() > MAX_RELAYS {
            return Err(RecordError::Malformed("too many relays"));
        }
        if locators.len() > MAX_LOCATORS {
            return Err(RecordError::Malformed("too many locators"));
        }
        if names.len() > MAX_NAMES {
            return Err(RecordError::Malformed("too many names"));
        }
        if names.iter().any(|n| name::check_name(n).is_err()) {
            return Err(RecordError::Malformed("invalid name"));
        }
        let mut record = Record {
            guid: key.guid(),
            key: key.public(),
            seq,
            expires,
            locators: locators.iter().map(canonical_addr).collect(),
            services,
            names: names.to_vec(),
            relays: relays.iter().map(canonical_addr).collect(),
            signature: Signature([0; SIGNATURE_LEN]),
        };
        let body = record.body();
        if body.len() + SIGNATURE_LEN > MAX_RECORD_LEN {
            return Err(RecordError::Oversized {
                len: body.len() + SIGNATURE_LEN,
                max: MAX_RECORD_LEN,
            });
        }
        record.signature = key.sign(&body);
        Ok(record)
    }

    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(RECORD_MAGIC);
        out.push(RECORD_VERSION);
        out.extend_from_slice(self.guid.as_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.expires.to_be_bytes());
        // Lengths are bounded by MAX_LOCATORS / MAX_SERVICES / MAX_NAMES / MAX_RELAYS /
        // name::MAX_NAME_LEN, all < 256.
        encode_addrs(&mut out, &self.locators);
        match &self.services {
            None => out.push(0),
            Some(services) => {
                out.push(1);
                out.push(services.0.len() as u8);
                for (service, engine) in &services.0 {
                    out.extend_from_slice(&service.to_be_bytes());
                    out.extend_from_slice(&engine.to_be_bytes());
                }
            }
        }
        out.push(self.names.len() as u8);
        for n in &self.names {
            out.push(n.len() as u8);
            out.extend_from_slice(n.as_bytes());
        }
        encode_addrs(&mut out, &self.relays);
        out
    }

    /// The canonical signed encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature.0);
        out
    }

    /// Parses and verifies (key hashes to the GUID, signature) an encoded record.
    /// Expiry and rollback depend on the reader and are checked by [`crate::Gns`].
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let mut r = Reader::new(bytes)?;
        r.header_version(RECORD_MAGIC, RECORD_VERSION)?;
        let guid = Guid::from_bytes(r.array::<GUID_LEN>()?);
        let key_bytes = r.array::<PUBLIC_KEY_LEN>()?;
        let seq = r.u64()?;
        let expires = r.u64()?;
        let locators = r.addrs(0, MAX_LOCATORS, "too many locators")?;
        let services = match r.u8()? {
            0 => None,
            1 => {
                let s = usize::from(r.u8()?);
                if s > MAX_SERVICES {
                    return Err(RecordError::Malformed("too many services"));
                }
                let mut entries = Vec::with_capacity(s);
                for _ in 0..s {
                    entries.push((r.u16()?, r.u16()?));
                }
                // Canonical: strictly increasing service ports (one encoding per record).
                if entries.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Err(RecordError::Malformed("service map not sorted or repeated"));
                }
                Some(Services(entries))
            }
            _ => return Err(RecordError::Malformed("service map flag")),
        };
        let m = usize::from(r.u8()?);
        if m > MAX_NAMES {
            return Err(RecordError::Malformed("too many names"));
        }
        let mut names = Vec::with_capacity(m);
        for _ in 0..m {
            names.push(r.name()?);
        }
        let relays = r.addrs(0, MAX_RELAYS, "too many relays")?;
        let (body, signature) = r.finish()?;
        let key = verify(&guid, &key_bytes, body, &signature)?;
        Ok(Record {
            guid,
            key,
            seq,
            expires,
            locators,
            services,
            names,
            relays,
            signature,
        })
    }

    /// Where service `port` is reached: the locators' addresses at the engine port the
    /// service map gives (the locators as they are without a map); `None` if the record maps
    /// services and `port` is not among them.
    pub fn locators_for(&self, port: u16) -> Option<Vec<SocketAddr>> {
        let Some(services) = &self.services else {
            return Some(self.locators.clone());
        };
        let engine = services.engine_port(port)?;
        let mut out: Vec<SocketAddr> = Vec::with_capacity(self.locators.len());
        for l in &self.locators {
            let a = SocketAddr::new(l.ip(), engine);
            if !out.contains(&a) {
                out.push(a);
            }
        }
        Some(out)
    }

    /// `Err(Expired)` if the record is no longer valid at unix time `now`.
    pub fn check_expiry(&self, now: u64) -> Result<(), RecordError> {
        check_expiry(self.expires, now)
    }

    /// Expired, or from the far future: what a reader checks beyond the signature.
    pub fn check_time(&self, now: u64, now_micros: u64) -> Result<(), RecordError> {
        self.check_expiry(now)?;
        check_not_future(self.seq, Some(self.expires), now, now_micros)
    }
}

impl NameBinding {
    /// Binds `name` (a full, normalized DNS name) to `key`'s GUID.
    pub fn sign(
        key: &Keypair,
        name: &str,
        seq: u64,
        expires: u64,
    ) -> Result<NameBinding, RecordError> {
        NameBinding::sign_with_handover(key, name, seq, expires, None)
    }

    /// Like [`NameBinding::sign`], carrying the previous holder's `handover` (which must give
    /// `name` to `key`'s GUID).
    pub fn sign_with_handover(
        key: &Keypair,
        name: &str,
        seq: u64,
        expires: u64,
        handover: Option<Handover>,
    ) -> Result<NameBinding, RecordError> {
        name::check_name(name).map_err(|_| RecordError::Malformed("invalid name"))?;
        if let Some(h) = &handover {
            h.check_for(name, &key.guid())?;
        }
        let mut binding = NameBinding {
            name: name.to_owned(),
            guid: key.guid(),
            key: key.public(),
            seq,
            expires,
            handover,
            signature: Signature([0; SIGNATURE_LEN]),
        };
        binding.signature = key.sign(&binding.body());
        Ok(binding)
    }

    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.name.len());
        out.extend_from_slice(BINDING_MAGIC);
        out.push(BINDING_VERSION);
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(self.guid.as_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.expires.to_be_bytes());
        match &self.handover {
            None => out.push(0),
            Some(h) => {
                out.push(1);
                out.extend_from_slice(&h.encode());
            }
        }
        out
    }

    /// The canonical signed encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature.0);
        out
    }

    /// Parses and verifies (key hashes to the GUID, signature) an encoded binding.
    pub fn decode(bytes: &[u8]) -> Result<NameBinding, RecordError> {
        let mut r = Reader::new(bytes)?;
        r.header_version(BINDING_MAGIC, BINDING_VERSION)?;
        let name = r.name()?;
        let guid = Guid::from_bytes(r.array::<GUID_LEN>()?);
        let key_bytes = r.array::<PUBLIC_KEY_LEN>()?;
        let seq = r.u64()?;
        let expires = r.u64()?;
        let handover = match r.u8()? {
            0 => None,
            1 => Some(Handover::read(&mut r)?),
            _ => return Err(RecordError::Malformed("handover flag")),
        };
        let (body, signature) = r.finish()?;
        let key = verify(&guid, &key_bytes, body, &signature)?;
        if let Some(h) = &handover {
            h.check_for(&name, &guid)?;
        }
        Ok(NameBinding {
            name,
            guid,
            key,
            seq,
            expires,
            handover,
            signature,
        })
    }

    /// `Err(Expired)` if the binding is no longer valid at unix time `now`.
    pub fn check_expiry(&self, now: u64) -> Result<(), RecordError> {
        check_expiry(self.expires, now)
    }

    /// Expired, or from the far future (the binding's or its handover's sequence number).
    pub fn check_time(&self, now: u64, now_micros: u64) -> Result<(), RecordError> {
        self.check_expiry(now)?;
        check_not_future(self.seq, Some(self.expires), now, now_micros)?;
        if let Some(h) = &self.handover {
            check_not_future(h.seq, None, now, now_micros)?;
        }
        Ok(())
    }
}

impl Handover {
    /// `key` (the name's current holder) gives `name` to `to`.
    pub fn sign(key: &Keypair, name: &str, to: Guid, seq: u64) -> Result<Handover, RecordError> {
        name::check_name(name).map_err(|_| RecordError::Malformed("invalid name"))?;
        let mut h = Handover {
            name: name.to_owned(),
            from: key.guid(),
            from_key: key.public(),
            to,
            seq,
            signature: Signature([0; SIGNATURE_LEN]),
        };
        h.signature = key.sign(&h.body());
        Ok(h)
    }

    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + self.name.len());
        out.extend_from_slice(HANDOVER_MAGIC);
        out.push(VERSION);
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(self.from.as_bytes());
        out.extend_from_slice(self.from_key.as_bytes());
        out.extend_from_slice(self.to.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out
    }

    /// The canonical signed encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature.0);
        out
    }

    /// The encoding as one line of base64 (what `namesock handover` prints).
    pub fn to_text(&self) -> String {
        data_encoding::BASE64.encode(&self.encode())
    }

    /// Reads [`Handover::to_text`]'s line back, verified.
    pub fn from_text(text: &str) -> Result<Handover, RecordError> {
        let bytes = data_encoding::BASE64
            .decode(text.trim().as_bytes())
            .map_err(|_| RecordError::Malformed("a handover is one line of base64"))?;
        Handover::decode(&bytes)
    }

    /// Parses and verifies (key hashes to `from`, signature) an encoded handover.
    pub fn decode(bytes: &[u8]) -> Result<Handover, RecordError> {
        let mut r = Reader::new(bytes)?;
        let h = Handover::read(&mut r)?;
        if r.pos != r.bytes.len() {
            return Err(RecordError::Malformed("trailing bytes after the signature"));
        }
        Ok(h)
    }

    fn read(r: &mut Reader<'_>) -> Result<Handover, RecordError> {
        let start = r.pos;
        r.header(HANDOVER_MAGIC)?;
        let name = r.name()?;
        let from = Guid::from_bytes(r.array::<GUID_LEN>()?);
        let key_bytes = r.array::<PUBLIC_KEY_LEN>()?;
        let to = Guid::from_bytes(r.array::<GUID_LEN>()?);
        let seq = r.u64()?;
        let body_end = r.pos;
        let signature = Signature(r.array::<SIGNATURE_LEN>()?);
        let from_key = verify(&from, &key_bytes, &r.bytes[start..body_end], &signature)?;
        Ok(Handover {
            name,
            from,
            from_key,
            to,
            seq,
            signature,
        })
    }

    /// The handover must give `name` to `to`, and not to the GUID that signed it.
    fn check_for(&self, name: &str, to: &Guid) -> Result<(), RecordError> {
        if self.name != name || self.to != *to || self.from == self.to {
            return Err(RecordError::HandoverMismatch {
                name: name.to_owned(),
                found: format!("{} from {} to {}", self.name, self.from, self.to),
            });
        }
        Ok(())
    }
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handover")
            .field("name", &self.name)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("guid", &self.guid)
            .field("seq", &self.seq)
            .field("expires", &self.expires)
            .field("locators", &self.locators)
            .field("services", &self.services)
            .field("names", &self.names)
            .field("relays", &self.relays)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NameBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameBinding")
            .field("name", &self.name)
            .field("guid", &self.guid)
            .field("seq", &self.seq)
            .field("expires", &self.expires)
            .field("handover", &self.handover)
            .finish_non_exhaustive()
    }
}

fn check_expiry(expires: u64, now: u64) -> Result<(), RecordError> {
    if expires <= now {
        Err(RecordError::Expired {
            expired_at: expires,
        })
    } else {
        Ok(())
    }
}

/// `n:u8 n*locator` (n < 256: the callers' lists are bounded far below).
fn encode_addrs(out: &mut Vec<u8>, addrs: &[SocketAddr]) {
    out.push(addrs.len() as u8);
    for addr in addrs {
        encode_locator(out, addr);
    }
}

/// `locator = family:u8 (4 => ip:4 | 6 => ip:16) port:u16`, the one address encoding of
/// records and of the relay's proxy header.
pub fn encode_locator(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// IPv6 flow info and scope ids are not part of a locator.
fn canonical_addr(addr: &SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port())
}

fn verify(
    guid: &Guid,
    key_bytes: &[u8; PUBLIC_KEY_LEN],
    body: &[u8],
    signature: &Signature,
) -> Result<PublicKey, RecordError> {
    let key = PublicKey::from_bytes(key_bytes)
        .map_err(|_| RecordError::Malformed("not an ed25519 public key"))?;
    let key_guid = key.guid();
    if key_guid != *guid {
        return Err(RecordError::KeyMismatch {
            guid: *guid,
            key_guid,
        });
    }
    key.verify(body, signature)
        .map_err(|_| RecordError::BadSignature)?;
    Ok(key)
}

/// A bounds-checked cursor over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(RecordError::Oversized {
                len: bytes.len(),
                max: MAX_RECORD_LEN,
            });
        }
        Ok(Reader { bytes, pos: 0 })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(RecordError::Malformed("truncated"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn header(&mut self, magic: &[u8; 3]) -> Result<(), RecordError> {
        self.header_version(magic, VERSION)
    }

    /// `n:u8 n*locator` with `min <= n <= max`.
    fn addrs(
        &mut self,
        min: usize,
        max: usize,
        bad_count: &'static str,
    ) -> Result<Vec<SocketAddr>, RecordError> {
        let n = usize::from(self.u8()?);
        if n < min || n > max {
            return Err(RecordError::Malformed(bad_count));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let ip = match self.u8()? {
                4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
                6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
                _ => return Err(RecordError::Malformed("unknown address family")),
            };
            out.push(SocketAddr::new(ip, self.u16()?));
        }
        Ok(out)
    }

    fn header_version(&mut self, magic: &[u8; 3], version: u8) -> Result<(), RecordError> {
        if self.take(3)? != magic {
            return Err(RecordError::Malformed(
                "not a namesock GNS record of this kind",
            ));
        }
        match self.u8()? {
            v if v == version => Ok(()),
            found => Err(RecordError::UnsupportedVersion {
                found,
                supported: version,
            }),
        }
    }

    fn name(&mut self) -> Result<String, RecordError> {
        let len = usize::from(self.u8()?);
        let bytes = self.take(len)?;
        let text = std::str::from_utf8(bytes).map_err(|_| RecordError::Malformed("name"))?;
        name::check_name(text).map_err(|_| RecordError::Malformed("invalid name"))?;
        Ok(text.to_owned())
    }

    /// The signed body and the signature, which must end the input exactly.
    fn finish(mut self) -> Result<(&'a [u8], Signature), RecordError> {
        let body_end = self.pos;
        let signature = Signature(self.array::<SIGNATURE_LEN>()?);
        if self.pos != self.bytes.len() {
            return Err(RecordError::Malformed("trailing bytes after the signature"));
        }
        Ok((&self.bytes[..body_end], signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kp: &Keypair) -> Record {
        Record::sign(
            kp,
            7,
            unix_now() + 60,
            &[
                "192.0.2.1:4000".parse().unwrap(),
                "[2001:db8::1]:4000".parse().unwrap(),
            ],
            &["web.ns.alt".to_owned()],
        )
        .unwrap()
    }

    #[test]
    fn a_record_with_relays_round_trips_and_their_number_is_bounded() {
        let kp = Keypair::from_seed(&[1; 32]);
        let relays = ["192.0.2.9:7000".parse().unwrap()];
        let rec = Record::sign_with(&kp, 7, unix_now() + 60, &[], None, &relays, &[]).unwrap();
        let bytes = rec.encode();
        assert_eq!(bytes[3], RECORD_VERSION);
        assert_eq!(Record::decode(&bytes).unwrap().relays, relays);
        let too_many = vec![relays[0]; MAX_RELAYS + 1];
        assert!(Record::sign_with(&kp, 7, unix_now() + 60, &[], None, &too_many, &[]).is_err());
    }

    #[test]
    fn record_round_trips() {
        let kp = Keypair::from_seed(&[1; 32]);
        let rec = sample(&kp);
        let bytes = rec.encode();
        assert_eq!(Record::decode(&bytes).unwrap(), rec);
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let kp = Keypair::from_seed(&[1; 32]);
        let bytes = sample(&kp).encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(Record::decode(&b).is_err(), "flip at byte {i} accepted");
        }
        for len in 0..bytes.len() {
            assert!(Record::decode(&bytes[..len]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            Record::decode(&longer),
            Err(RecordError::Malformed("trailing bytes after the signature"))
        );
    }

    fn with_services(kp: &Keypair, entries: Vec<(u16, u16)>) -> Record {
        Record::sign_with(
            kp,
            9,
            unix_now() + 60,
            &[
                "192.0.2.1:4000".parse().unwrap(),
                "[2001:db8::1]:4000".parse().unwrap(),
            ],
            Some(Services::new(entries).unwrap()),
            &[],
            &["web.ns.alt".to_owned(), "echo.ns.alt".to_owned()],
        )
        .unwrap()
    }

    #[test]
    fn service_maps_round_trip_and_say_where_each_port_is() {
        let kp = Keypair::from_seed(&[1; 32]);
        let rec = with_services(&kp, vec![(9000, 4002), (8000, 4001)]);
        let bytes = rec.encode();
        assert_eq!(Record::decode(&bytes).unwrap(), rec);
        assert_eq!(
            rec.locators_for(9000).unwrap(),
            [
                "192.0.2.1:4002".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:4002".parse().unwrap()
            ]
        );
        assert_eq!(rec.locators_for(7000), None);
        // Without a map the locators serve every port.
        assert_eq!(
            sample(&kp).locators_for(7000).unwrap(),
            sample(&kp).locators
        );
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(Record::decode(&b).is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn service_maps_are_canonical_and_bounded() {
        assert_eq!(Services::new(vec![(80, 1), (80, 2)]), None);
        let full: Vec<(u16, u16)> = (0..MAX_SERVICES as u16).map(|p| (p, 1)).collect();
        assert!(Services::new(full.clone()).is_some());
        let mut over = full;
        over.push((60000, 1));
        assert_eq!(Services::new(over), None);
        // A map out of order (re-signed, so only the order is wrong) is refused.
        let kp = Keypair::from_seed(&[1; 32]);
        let rec = with_services(&kp, vec![(8000, 4001), (9000, 4002)]);
        let mut body = rec.body();
        let at = body
            .windows(8)
            .position(|w| w == [0x1f, 0x40, 0x0f, 0xa1, 0x23, 0x28, 0x0f, 0xa2])
            .unwrap();
        body[at..at + 8].copy_from_slice(&[0x23, 0x28, 0x0f, 0xa2, 0x1f, 0x40, 0x0f, 0xa1]);
        let sig = kp.sign(&body);
        body.extend_from_slice(&sig.0);
        assert_eq!(
            Record::decode(&body),
            Err(RecordError::Malformed("service map not sorted or repeated"))
        );
        // More entries than the bound, announced in the count: refused before reading them.
        let mut body = rec.body();
        body[at - 1] = MAX_SERVICES as u8 + 1;
        let sig = kp.sign(&body);
        body.extend_from_slice(&sig.0);
        assert_eq!(
            Record::decode(&body),
            Err(RecordError::Malformed("too many services"))
        );
    }

    #[test]
    fn version_1_records_are_refused_with_a_clear_error() {
        let kp = Keypair::from_seed(&[1; 32]);
        let mut bytes = sample(&kp).encode();
        bytes[3] = 1;
        assert_eq!(
            Record::decode(&bytes),
            Err(RecordError::UnsupportedVersion {
                found: 1,
                supported: 2
            })
        );
    }

    #[test]
    fn key_that_does_not_hash_to_guid_is_rejected() {
        let kp = Keypair::from_seed(&[1; 32]);
        let mut bytes = sample(&kp).encode();
        bytes[4] ^= 0xff; // first GUID byte
        assert!(matches!(
            Record::decode(&bytes),
            Err(RecordError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn bad_signature_is_rejected() {
        let kp = Keypair::from_seed(&[1; 32]);
        let mut bytes = sample(&kp).encode();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        assert_eq!(Record::decode(&bytes), Err(RecordError::BadSignature));
    }

    #[test]
    fn bindings_round_trip_and_are_not_records() {
        let kp = Keypair::from_seed(&[2; 32]);
        let b = NameBinding::sign(&kp, "web.ns.alt", 3, unix_now() + 60).unwrap();
        let bytes = b.encode();
        assert_eq!(NameBinding::decode(&bytes).unwrap(), b);
        assert!(Record::decode(&bytes).is_err());
        assert!(NameBinding::decode(&sample(&kp).encode()).is_err());
    }

    #[test]
    fn bindings_with_a_handover_round_trip_and_every_flipped_bit_is_rejected() {
        let old = Keypair::from_seed(&[2; 32]);
        let new = Keypair::from_seed(&[3; 32]);
        let h = Handover::sign(&old, "web.ns.alt", new.guid(), 9).unwrap();
        assert_eq!(Handover::decode(&h.encode()).unwrap(), h);
        let b = NameBinding::sign_with_handover(&new, "web.ns.alt", 10, unix_now() + 60, Some(h))
            .unwrap();
        let bytes = b.encode();
        assert_eq!(NameBinding::decode(&bytes).unwrap(), b);
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 1;
            assert!(
                NameBinding::decode(&flipped).is_err(),
                "flip at byte {i} accepted"
            );
        }
    }

    #[test]
    fn far_future_bounds() {
        let (now, micros) = (1_000_000, 1_000_000_000_000);
        let week = 7 * 24 * 3600;
        assert_eq!(
            check_not_future(micros, Some(now + week), now, micros),
            Ok(())
        );
        assert!(matches!(
            check_not_future(micros, Some(now + week + 1), now, micros),
            Err(RecordError::FarFutureExpiry { .. })
        ));
        assert_eq!(
            check_not_future(micros + week * 1_000_000, None, now, micros),
            Ok(())
        );
        assert!(matches!(
            check_not_future(micros + week * 1_000_000 + 1, None, now, micros),
            Err(RecordError::FarFutureSequence { .. })
        ));
    }

    #[test]
    fn seq_is_monotonic_and_time_based() {
        let a = next_seq(None);
        assert!(a > 1_600_000_000_000_000);
        assert_eq!(next_seq(Some(u64::MAX - 1)), u64::MAX);
        assert!(next_seq(Some(a)) > a);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = Record::decode(&bytes);
            let _ = NameBinding::decode(&bytes);
        }

        #[test]
        fn any_record_round_trips(
            seed in proptest::array::uniform32(proptest::num::u8::ANY),
            seq in proptest::num::u64::ANY,
            expires in proptest::num::u64::ANY,
            v4 in proptest::collection::vec((proptest::array::uniform4(proptest::num::u8::ANY), proptest::num::u16::ANY), 0..8),
            v6 in proptest::collection::vec((proptest::array::uniform16(proptest::num::u8::ANY), proptest::num::u16::ANY), 0..8),
            names in proptest::collection::vec("[a-z0-9]{1,20}(\\.[a-z0-9]{1,20}){0,3}", 0..MAX_NAMES),
        ) {
            let kp = Keypair::from_seed(&seed);
            let mut locators: Vec<SocketAddr> = v4.iter().map(|(ip, port)| SocketAddr::from((*ip, *port))).collect();
            locators.extend(v6.iter().map(|(ip, port)| SocketAddr::from((*ip, *port))));
            let rec = Record::sign(&kp, seq, expires, &locators, &names).unwrap();
            let bytes = rec.encode();
            proptest::prop_assert!(bytes.len() <= MAX_RECORD_LEN);
            proptest::prop_assert_eq!(Record::decode(&bytes).unwrap(), rec);
        }
    }

    #[test]
    fn expiry() {
        let kp = Keypair::from_seed(&[1; 32]);
        let rec = Record::sign(&kp, 1, 100, &[], &[]).unwrap();
        assert_eq!(rec.check_expiry(99), Ok(()));
        assert_eq!(
            rec.check_expiry(100),
            Err(RecordError::Expired { expired_at: 100 })
        );
    }
}
