//! The namesock GNS: who is where, trusted because of signatures rather than servers.
//!
//! A GUID's [`Record`] (its key, a sequence number, an expiry, its locators) and a name's
//! [`NameBinding`] are signed by the GUID's key ([`record`] has the format). [`Gns`] stores and
//! fetches them through one backend, the embedded [`file`] store (the default) or a DNS zone
//! ([`dns`]), and verifies everything it reads: the key must hash to the GUID, the signature must
//! hold, the record must not have expired, and its sequence number must not be lower than one
//! this `Gns` has already seen for that GUID or name (no rollback to stale addresses).
//!
//! ```no_run
//! # fn main() -> Result<(), namesock_resolver::GnsError> {
//! use namesock_resolver::Gns;
//! let gns = Gns::from_env()?;
//! if let Some(target) = gns.parse_target("web.ns.alt") {
//!     let record = gns.resolve(&target)?;
//!     println!("{:?}", record.locators);
//! }
//! # Ok(()) }
//! ```

pub mod config;
pub mod dns;
pub mod error;
pub mod file;
pub mod name;
pub mod record;
mod seen;

use std::net::SocketAddr;
use std::sync::Mutex;

use namesock_identity::{Guid, Keypair};

pub use config::{Backend, DnsConfig, GnsConfig, TsigKey};
pub use error::GnsError;
pub use name::Target;
pub use record::{NameBinding, RECORD_LIFETIME, Record, RecordError};

use dns::{DnsStore, Expect};
use file::FileStore;
use seen::SeenSeqs;

/// How many GUIDs (and, separately, names) the anti-rollback memory holds.
const SEEN_CAPACITY: usize = 4096;

enum Store {
    File(FileStore),
    Dns(Box<DnsStore>),
}

/// The GNS client: resolve and publish through the configured backend.
///
/// `Send + Sync`; every call blocks (on the filesystem or the network, bounded by timeouts).
pub struct Gns {
    zone: String,
    store: Store,
    seen_guids: Mutex<SeenSeqs<Guid>>,
    seen_names: Mutex<SeenSeqs<String>>,
}

impl std::fmt::Debug for Gns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gns")
            .field("zone", &self.zone)
            .field("backend", &self.backend_description())
            .finish_non_exhaustive()
    }
}

impl Gns {
    /// The backend selected by `NAMESOCK_GNS`, `NAMESOCK_ZONE` and `NAMESOCK_CONFIG`
    /// (default: the file store, zone `ns.alt`).
    pub fn from_env() -> Result<Gns, GnsError> {
        Gns::new(&GnsConfig::from_env()?)
    }

    pub fn new(config: &GnsConfig) -> Result<Gns, GnsError> {
        let store = match &config.backend {
            Backend::File(dir) => Store::File(FileStore::open(dir)?),
            Backend::Dns(dns) => Store::Dns(Box::new(DnsStore::new(dns)?)),
        };
        Ok(Gns {
            zone: config.zone.clone(),
            store,
            seen_guids: Mutex::new(SeenSeqs::new(SEEN_CAPACITY)),
            seen_names: Mutex::new(SeenSeqs::new(SEEN_CAPACITY)),
        })
    }

    /// A file store in `dir` serving `zone`.
    pub fn file(dir: &std::path::Path, zone: &str) -> Result<Gns, GnsError> {
        Gns::new(&GnsConfig {
            backend: Backend::File(dir.to_owned()),
            zone: config::check_zone(zone)?,
        })
    }

    /// The zone names live in, e.g. `ns.alt`.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// Where records are kept, for people: `file:/path` or `dns://server/zone`.
    pub fn backend_description(&self) -> String {
        match &self.store {
            Store::File(s) => format!("file:{}", s.dir().display()),
            Store::Dns(s) => format!("dns://{}/{}", s.config().server, s.config().zone),
        }
    }

    /// `web.ns.alt` or `<guid>.ns.alt` -> `Some(Target)`; any name outside the zone (or not a
    /// valid DNS name) -> `None`. Case and a trailing dot do not matter.
    pub fn parse_target(&self, host: &str) -> Option<Target> {
        name::parse_target(host, &self.zone)
    }

    /// The full name in this zone for what a user typed: `web` or `web.ns.alt` -> `web.ns.alt`.
    pub fn full_name(&self, name: &str) -> Result<String, GnsError> {
        Ok(name::full_name(name, &self.zone)?)
    }

    /// The verified, current record of `target`.
    pub fn resolve(&self, target: &Target) -> Result<Record, GnsError> {
        match target {
            Target::Guid(guid) => self.resolve_guid(guid, target),
            Target::Name(name) => {
                let binding = self.resolve_name(name)?;
                self.resolve_guid(&binding.guid, target)
            }
        }
    }

    /// The name `guid` goes by: the first name its signed record claims whose binding really
    /// points back at it (a record can claim any name; only the binding proves it).
    pub fn verified_name(&self, guid: Guid) -> Option<String> {
        let record = self.resolve(&Target::Guid(guid)).ok()?;
        record
            .names
            .into_iter()
            .find(|name| self.resolve_name(name).is_ok_and(|b| b.guid == guid))
    }

    /// The verified binding of `name` (a full name in the zone).
    pub fn resolve_name(&self, name: &str) -> Result<NameBinding, GnsError> {
        let target = Target::Name(name.to_owned());
        let now = record::unix_now();
        let binding = pick(&self.fetch_name(name)?, &target, |bytes| {
            let b = NameBinding::decode(bytes)?;
            if b.name != name {
                return Err(RecordError::Misplaced {
                    expected: name.to_owned(),
                    found: b.name,
                });
            }
            b.check_expiry(now)?;
            Ok((b.seq, b))
        })?;
        lock(&self.seen_names)
            .observe(&binding.name, binding.seq)
            .map_err(|source| GnsError::Rejected { target, source })?;
        Ok(binding)
    }

    fn resolve_guid(&self, guid: &Guid, target: &Target) -> Result<Record, GnsError> {
        let now = record::unix_now();
        let rec = pick(&self.fetch_record(guid)?, target, |bytes| {
            let rec = Record::decode(bytes)?;
            if rec.guid != *guid {
                return Err(RecordError::Misplaced {
                    expected: guid.to_string(),
                    found: rec.guid.to_string(),
                });
            }
            rec.check_expiry(now)?;
            Ok((rec.seq, rec))
        })?;
        lock(&self.seen_guids)
            .observe(guid, rec.seq)
            .map_err(|source| GnsError::Rejected {
                target: target.clone(),
                source,
            })?;
        Ok(rec)
    }

    /// Signs and publishes `key`'s current locators (and the names it claims), replacing its
    /// previous record. The sequence number is `max(last + 1, now in microseconds)`.
    pub fn publish(
        &self,
        key: &Keypair,
        locators: &[SocketAddr],
        names: &[String],
    ) -> Result<Record, GnsError> {
        let guid = key.guid();
        let names = names
            .iter()
            .map(|n| self.full_name(n))
            .collect::<Result<Vec<_>, _>>()?;
        let _lock = self.lock_store(guid.as_bytes())?;
        // The highest sequence already out there (any verified record, even expired).
        let stored = self
            .fetch_record(&guid)
            .unwrap_or_default()
            .iter()
            .filter_map(|b| Record::decode(b).ok())
            .filter(|r| r.guid == guid)
            .map(|r| r.seq)
            .max();
        let seen = lock(&self.seen_guids).get(&guid);
        let seq = record::next_seq(stored.max(seen));
        let rec =
            Record::sign(key, seq, expiry(), locators, &names).map_err(GnsError::Unpublishable)?;
        let encoded = rec.encode();
        match &self.store {
            Store::File(s) => s.put_record(&guid, &encoded)?,
            Store::Dns(s) => {
                let ips: Vec<_> = rec.locators.iter().map(SocketAddr::ip).collect();
                s.put_record(&guid, &encoded, &ips)?;
            }
        }
        // Our own newest record: never accept an older one for this GUID again.
        let _ = lock(&self.seen_guids).observe(&guid, seq);
        tracing::debug!(%guid, seq, locators = ?rec.locators, "published");
        Ok(rec)
    }

    /// Binds `name` (`web` or `web.<zone>`) to `key`'s GUID. Names are first-come: a name held
    /// (validly, unexpired) by another key is refused with [`GnsError::NameTaken`]. The file
    /// store makes the check and the write atomic with a lock; DNS with an RFC 2136
    /// prerequisite ([`GnsError::UpdateConflict`] if the name changed in between).
    pub fn register(&self, key: &Keypair, name: &str) -> Result<(), GnsError> {
        let name = self.full_name(name)?;
        let guid = key.guid();
        let _lock = self.lock_store(name.as_bytes())?;
        let now = record::unix_now();
        let raw = self.fetch_name(&name)?;
        // A binding that does not verify or has expired holds nothing.
        let current = raw
            .iter()
            .filter_map(|b| NameBinding::decode(b).ok())
            .filter(|b| b.name == name && b.check_expiry(now).is_ok())
            .max_by_key(|b| b.seq);
        let last = match current {
            Some(b) if b.guid != guid => {
                return Err(GnsError::NameTaken {
                    name,
                    holder: b.guid,
                });
            }
            Some(b) => Some(b.seq),
            None => None,
        };
        let expect = match (raw.as_slice(), last) {
            ([], _) => Expect::Absent,
            ([only], Some(_)) => Expect::Current(only.clone()),
            _ => Expect::Anything,
        };
        let seen = lock(&self.seen_names).get(&name);
        let seq = record::next_seq(last.max(seen));
        let binding =
            NameBinding::sign(key, &name, seq, expiry()).map_err(GnsError::Unpublishable)?;
        let encoded = binding.encode();
        match &self.store {
            // The store lock makes read-check-write atomic already.
            Store::File(s) => s.put_name(&name, &encoded)?,
            Store::Dns(s) => s.put_name(&name, &encoded, &expect)?,
        }
        let _ = lock(&self.seen_names).observe(&name, seq);
        tracing::debug!(%guid, name, seq, "registered");
        Ok(())
    }

    /// The file store's lock, held across read-modify-write (nothing for DNS).
    fn lock_store(&self, key: &[u8]) -> Result<Option<file::StoreLock>, GnsError> {
        match &self.store {
            Store::File(s) => s.lock(key).map(Some),
            Store::Dns(_) => Ok(None),
        }
    }

    fn fetch_record(&self, guid: &Guid) -> Result<Vec<Vec<u8>>, GnsError> {
        match &self.store {
            Store::File(s) => Ok(s.get_record(guid)?.into_iter().collect()),
            Store::Dns(s) => Ok(s.get_record(guid)?),
        }
    }

    fn fetch_name(&self, name: &str) -> Result<Vec<Vec<u8>>, GnsError> {
        match &self.store {
            Store::File(s) => Ok(s.get_name(name)?.into_iter().collect()),
            Store::Dns(s) => Ok(s.get_name(name)?),
        }
    }
}

/// Of the blobs found for `target`, the verified one with the highest sequence number; if none
/// verifies, why the first was rejected; if there are none, `NotFound`.
fn pick<T>(
    blobs: &[Vec<u8>],
    target: &Target,
    verify: impl Fn(&[u8]) -> Result<(u64, T), RecordError>,
) -> Result<T, GnsError> {
    let mut best: Option<(u64, T)> = None;
    let mut first_error = None;
    for blob in blobs {
        match verify(blob) {
            Ok((seq, item)) if best.as_ref().is_none_or(|(s, _)| seq > *s) => {
                best = Some((seq, item));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(%target, error = %e, "ignoring GNS data that does not verify");
                first_error.get_or_insert(e);
            }
        }
    }
    match (best, first_error) {
        (Some((_, item)), _) => Ok(item),
        (None, Some(source)) => Err(GnsError::Rejected {
            target: target.clone(),
            source,
        }),
        (None, None) => Err(GnsError::NotFound(target.clone())),
    }
}

fn expiry() -> u64 {
    record::unix_now().saturating_add(RECORD_LIFETIME.as_secs())
}

/// The anti-rollback maps stay consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #[test]
    fn gns_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::Gns>();
    }
}
