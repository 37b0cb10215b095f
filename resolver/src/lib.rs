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

use file::FileStore;
use seen::SeenSeqs;

/// How many GUIDs (and, separately, names) the anti-rollback memory holds.
const SEEN_CAPACITY: usize = 4096;

enum Store {
    File(FileStore),
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
        let backend = match &self.store {
            Store::File(s) => format!("file:{}", s.dir().display()),
        };
        f.debug_struct("Gns")
            .field("zone", &self.zone)
            .field("backend", &backend)
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
            Backend::Dns(dns) => {
                return Err(GnsError::Config(config::ConfigError::Backend {
                    value: format!("dns://{}/{}", dns.server, dns.zone),
                    reason: "the DNS backend is not available yet",
                }));
            }
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
        Gns::new(&GnsConfig::from_values(
            Some(&format!("file:{}", dir.display())),
            Some(zone),
        )?)
    }

    /// The zone names live in, e.g. `ns.alt`.
    pub fn zone(&self) -> &str {
        &self.zone
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

    /// The verified binding of `name` (a full name in the zone).
    pub fn resolve_name(&self, name: &str) -> Result<NameBinding, GnsError> {
        let target = Target::Name(name.to_owned());
        let bytes = self
            .fetch_name(name)?
            .ok_or_else(|| GnsError::NotFound(target.clone()))?;
        let reject = |source| GnsError::Rejected {
            target: target.clone(),
            source,
        };
        let binding = NameBinding::decode(&bytes).map_err(reject)?;
        if binding.name != name {
            return Err(reject(RecordError::Misplaced {
                expected: name.to_owned(),
                found: binding.name,
            }));
        }
        binding.check_expiry(record::unix_now()).map_err(reject)?;
        lock(&self.seen_names)
            .observe(&binding.name, binding.seq)
            .map_err(reject)?;
        Ok(binding)
    }

    fn resolve_guid(&self, guid: &Guid, target: &Target) -> Result<Record, GnsError> {
        let bytes = self
            .fetch_record(guid)?
            .ok_or_else(|| GnsError::NotFound(target.clone()))?;
        let reject = |source| GnsError::Rejected {
            target: target.clone(),
            source,
        };
        let rec = Record::decode(&bytes).map_err(reject)?;
        if rec.guid != *guid {
            return Err(reject(RecordError::Misplaced {
                expected: guid.to_string(),
                found: rec.guid.to_string(),
            }));
        }
        rec.check_expiry(record::unix_now()).map_err(reject)?;
        lock(&self.seen_guids)
            .observe(guid, rec.seq)
            .map_err(reject)?;
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
        let _lock = self.lock_store()?;
        let stored = self
            .fetch_record(&guid)
            .ok()
            .flatten()
            .and_then(|b| Record::decode(&b).ok())
            .filter(|r| r.guid == guid)
            .map(|r| r.seq);
        let seen = lock(&self.seen_guids).get(&guid);
        let seq = record::next_seq(stored.max(seen));
        let rec =
            Record::sign(key, seq, expiry(), locators, &names).map_err(GnsError::Unpublishable)?;
        self.store_record(&rec)?;
        // Our own newest record: never accept an older one for this GUID again.
        let _ = lock(&self.seen_guids).observe(&guid, seq);
        tracing::debug!(%guid, seq, locators = ?rec.locators, "published");
        Ok(rec)
    }

    /// Binds `name` (`web` or `web.<zone>`) to `key`'s GUID. In the file store names are
    /// first-come: a name held (validly, unexpired) by another key is refused with
    /// [`GnsError::NameTaken`].
    pub fn register(&self, key: &Keypair, name: &str) -> Result<(), GnsError> {
        let name = self.full_name(name)?;
        let guid = key.guid();
        let _lock = self.lock_store()?;
        let now = record::unix_now();
        // A binding that does not verify or has expired holds nothing.
        let current = self
            .fetch_name(&name)?
            .and_then(|b| NameBinding::decode(&b).ok())
            .filter(|b| b.name == name && b.check_expiry(now).is_ok());
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
        let seen = lock(&self.seen_names).get(&name);
        let seq = record::next_seq(last.max(seen));
        let binding =
            NameBinding::sign(key, &name, seq, expiry()).map_err(GnsError::Unpublishable)?;
        self.store_name(&binding)?;
        let _ = lock(&self.seen_names).observe(&name, seq);
        tracing::debug!(%guid, name, seq, "registered");
        Ok(())
    }

    fn lock_store(&self) -> Result<Option<file::StoreLock>, GnsError> {
        match &self.store {
            Store::File(s) => s.lock().map(Some),
        }
    }

    fn fetch_record(&self, guid: &Guid) -> Result<Option<Vec<u8>>, GnsError> {
        match &self.store {
            Store::File(s) => s.get_record(guid),
        }
    }

    fn fetch_name(&self, name: &str) -> Result<Option<Vec<u8>>, GnsError> {
        match &self.store {
            Store::File(s) => s.get_name(name),
        }
    }

    fn store_record(&self, rec: &Record) -> Result<(), GnsError> {
        match &self.store {
            Store::File(s) => s.put_record(&rec.guid, &rec.encode()),
        }
    }

    fn store_name(&self, binding: &NameBinding) -> Result<(), GnsError> {
        match &self.store {
            Store::File(s) => s.put_name(&binding.name, &binding.encode()),
        }
    }
}

fn expiry() -> u64 {
    record::unix_now().saturating_add(RECORD_LIFETIME.as_secs())
}

/// The anti-rollback maps stay consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
