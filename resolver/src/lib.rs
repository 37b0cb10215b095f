//! The namesock GNS: who is where, trusted because of signatures rather than servers.
//!
//! A GUID's [`Record`] (its key, a sequence number, an expiry, its locators) and a name's
//! [`NameBinding`] are signed by the GUID's key ([`record`] has the format). [`Gns`] stores and
//! fetches them through one backend, the embedded [`file`] store (the default) or a DNS zone
//! ([`dns`]), and verifies everything it reads: the key must hash to the GUID, the signature must
//! hold, the record must not have expired nor come from the far future, and its sequence number
//! must not be lower than one this user has already seen for that GUID or name (no rollback to
//! stale addresses, also across processes: [`known`] keeps them on disk). A name this user has
//! seen is pinned to its GUID; it moves to another GUID only with a [`Handover`] signed by the
//! pinned GUID's key, or when the user accepts the change ([`Gns::trust`]).
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
pub mod dnssec;
pub mod error;
pub mod file;
pub mod fsutil;
pub mod known;
pub mod name;
pub mod record;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use namesock_identity::{Guid, Keypair};

pub use config::{Backend, DnsConfig, GnsConfig, TsigKey};
pub use error::GnsError;
pub use fsutil::StoreError;
pub use known::{KnownError, KnownNames, Pin};
pub use name::Target;
pub use record::{Handover, NameBinding, RECORD_LIFETIME, Record, RecordError, Services};

use dns::{DnsStore, Expect};
use file::FileStore;

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
    known: KnownNames,
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

    /// The backend of `config`, with this user's known names ([`known::default_path`]).
    pub fn new(config: &GnsConfig) -> Result<Gns, GnsError> {
        Gns::with_known_names(config, known::default_path()?)
    }

    /// Like [`Gns::new`], keeping pins and sequence numbers in the file `known_names`.
    pub fn with_known_names(config: &GnsConfig, known_names: PathBuf) -> Result<Gns, GnsError> {
        let store = match &config.backend {
            Backend::File(dir) => Store::File(FileStore::open(dir)?),
            Backend::Dns(dns) => Store::Dns(Box::new(DnsStore::new(dns)?)),
        };
        let description = describe(&store);
        Ok(Gns {
            zone: config.zone.clone(),
            store,
            known: KnownNames::new(known_names, &description),
        })
    }

    /// The file holding this user's pins and sequence numbers.
    pub fn known_names_path(&self) -> &Path {
        self.known.path()
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
        describe(&self.store)
    }

    /// Where a file store keeps its records (`records/<guid>`), to watch for changes;
    /// `None` for a DNS zone, which cannot be watched.
    pub fn records_dir(&self) -> Option<&Path> {
        match &self.store {
            Store::File(f) => Some(f.records_dir()),
            Store::Dns(_) => None,
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

    /// The verified binding of `name` (a full name in the zone), checked against what this
    /// user pinned: a name bound to another GUID than the pinned one is refused
    /// ([`GnsError::NameChanged`]) unless the binding carries a handover signed by the pinned
    /// GUID's key, newer than the pinned binding. The first binding seen is pinned.
    pub fn resolve_name(&self, name: &str) -> Result<NameBinding, GnsError> {
        let mut binding = self.current_binding(name)?;
        let target = Target::Name(name.to_owned());
        match self.known.pin(name)? {
            None => {}
            Some(pin) if pin.guid == binding.guid => {
                if binding.seq < pin.seq {
                    // Another process may have read (and recorded) a newer binding published
                    // just after we read ours: only an older binding read again is a rollback.
                    binding = self.current_binding(name)?;
                }
                if binding.guid == pin.guid && binding.seq < pin.seq {
                    return Err(GnsError::Rejected {
                        target,
                        source: RecordError::Rollback {
                            seen: pin.seq,
                            got: binding.seq,
                        },
                    });
                }
            }
            Some(pin) => {
                let handed_over = binding
                    .handover
                    .as_ref()
                    .is_some_and(|h| h.from == pin.guid && h.seq > pin.seq);
                if !handed_over {
                    return Err(GnsError::NameChanged {
                        name: name.to_owned(),
                        pinned: pin.guid,
                        found: binding.guid,
                        file: self.known.path().to_owned(),
                    });
                }
                tracing::info!(name, from = %pin.guid, to = %binding.guid, "name handed over");
            }
        }
        self.known.set_pin(
            name,
            Pin {
                guid: binding.guid,
                seq: binding.seq,
            },
        );
        Ok(binding)
    }

    /// The newest binding of `name` that verifies, whatever this user pinned.
    fn current_binding(&self, name: &str) -> Result<NameBinding, GnsError> {
        let target = Target::Name(name.to_owned());
        let (now, now_micros) = (record::unix_now(), record::unix_now_micros());
        pick(&self.fetch_name(name)?, &target, |bytes| {
            let b = NameBinding::decode(bytes)?;
            if b.name != name {
                return Err(RecordError::Misplaced {
                    expected: name.to_owned(),
                    found: b.name,
                });
            }
            b.check_time(now, now_micros)?;
            Ok((b.seq, b))
        })
    }

    /// Accepts the current binding of `name` whatever was pinned (as `ssh-keygen -R` and a
    /// new connection do for a host): returns the GUID that was pinned, if any, and the
    /// binding now pinned. The binding itself must still verify.
    pub fn trust(&self, name: &str) -> Result<(Option<Guid>, NameBinding), GnsError> {
        let name = self.full_name(name)?;
        let binding = self.current_binding(&name)?;
        let old = self.known.pin(&name)?.map(|p| p.guid);
        self.known.forget(&name)?;
        self.known.set_pin(
            &name,
            Pin {
                guid: binding.guid,
                seq: binding.seq,
            },
        );
        Ok((old, binding))
    }

    fn resolve_guid(&self, guid: &Guid, target: &Target) -> Result<Record, GnsError> {
        let mut rec = self.current_record(guid, target)?;
        let seen = self.known.guid_seq(guid)?;
        if seen.is_some_and(|seen| rec.seq < seen) {
            // Read again: a newer record may have been published (and seen by another
            // process) since our read.
            rec = self.current_record(guid, target)?;
        }
        if let Some(seen) = seen
            && rec.seq < seen
        {
            return Err(GnsError::Rejected {
                target: target.clone(),
                source: RecordError::Rollback { seen, got: rec.seq },
            });
        }
        self.known.raise_guid(guid, rec.seq);
        Ok(rec)
    }

    /// The newest record of `guid` that verifies.
    fn current_record(&self, guid: &Guid, target: &Target) -> Result<Record, GnsError> {
        let (now, now_micros) = (record::unix_now(), record::unix_now_micros());
        pick(&self.fetch_record(guid)?, target, |bytes| {
            let rec = Record::decode(bytes)?;
            if rec.guid != *guid {
                return Err(RecordError::Misplaced {
                    expected: guid.to_string(),
                    found: rec.guid.to_string(),
                });
            }
            rec.check_time(now, now_micros)?;
            Ok((rec.seq, rec))
        })
    }

    /// Signs and publishes `key`'s current locators (and the names it claims), replacing its
    /// previous record. The sequence number is `max(last + 1, now in microseconds)`.
    pub fn publish(
        &self,
        key: &Keypair,
        locators: &[SocketAddr],
        names: &[String],
    ) -> Result<Record, GnsError> {
        self.publish_with(key, locators, None, &[], names)
    }

    /// [`Gns::publish`] with a service map (which engine port serves which service port;
    /// `None`: every port at the locators; engines of one identity on one host merge their
    /// maps before calling this, under a lock of their own: `namesock`'s service table) and
    /// the relays that reach `key`'s GUID.
    pub fn publish_with(
        &self,
        key: &Keypair,
        locators: &[SocketAddr],
        services: Option<Services>,
        relays: &[SocketAddr],
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
        let seen = self.known.guid_seq(&guid)?;
        let seq = record::next_seq(stored.max(seen));
        let rec = Record::sign_with(key, seq, expiry(), locators, services, relays, &names)
            .map_err(GnsError::Unpublishable)?;
        let encoded = rec.encode();
        match &self.store {
            Store::File(s) => s.put_record(&guid, &encoded)?,
            Store::Dns(s) => {
                let ips: Vec<_> = rec.locators.iter().map(SocketAddr::ip).collect();
                s.put_record(&guid, &encoded, &ips)?;
            }
        }
        // Our own newest record: never accept an older one for this GUID again.
        self.known.raise_guid(&guid, seq);
        tracing::debug!(%guid, seq, locators = ?rec.locators, "published");
        Ok(rec)
    }

    /// This host's addresses changed: connections to a DNS server are opened afresh (one
    /// bound to an address that went away would hold the next lookup for its timeout).
    pub fn local_addresses_changed(&self) {
        if let Store::Dns(s) = &self.store {
            s.reconnect();
        }
    }

    /// Binds `name` (`web` or `web.<zone>`) to `key`'s GUID. Names are first-come: a name held
    /// (validly, unexpired) by another key is refused with [`GnsError::NameTaken`]. The file
    /// store makes the check and the write atomic with a lock; DNS with an RFC 2136
    /// prerequisite ([`GnsError::UpdateConflict`] if the name changed in between).
    pub fn register(&self, key: &Keypair, name: &str) -> Result<(), GnsError> {
        self.register_with(key, name, None)
    }

    /// [`Gns::register`], taking the name over from its holder with the holder's `handover`
    /// (made by [`Gns::handover`]). A name this user pinned to `key`'s GUID is taken back from
    /// a binding that moved it elsewhere without a handover.
    pub fn register_with(
        &self,
        key: &Keypair,
        name: &str,
        handover: Option<Handover>,
    ) -> Result<(), GnsError> {
        let name = self.full_name(name)?;
        let guid = key.guid();
        let _lock = self.lock_store(name.as_bytes())?;
        let raw = self.fetch_name(&name)?;
        // A binding that does not verify, has expired or comes from the far future holds
        // nothing.
        let current = current_of(&raw, &name);
        let pin = self.known.pin(&name)?;
        if let Some(b) = &current
            && b.guid != guid
        {
            let consented = handover
                .as_ref()
                .is_some_and(|h| h.from == b.guid && h.seq > b.seq);
            let hijacked_from_us = pin.is_some_and(|p| p.guid == guid)
                && b.handover.as_ref().is_none_or(|h| h.from != guid);
            match (&handover, consented || hijacked_from_us) {
                (_, true) => {}
                (Some(h), false) if h.from == b.guid => {
                    return Err(GnsError::HandoverStale {
                        name,
                        handover_seq: h.seq,
                        binding_seq: b.seq,
                    });
                }
                (Some(h), false) => {
                    return Err(GnsError::HandoverNotFromHolder {
                        name,
                        from: h.from,
                        holder: b.guid,
                    });
                }
                (None, false) => {
                    return Err(GnsError::NameTaken {
                        name,
                        holder: b.guid,
                    });
                }
            }
        }
        let expect = match (raw.as_slice(), &current) {
            ([], _) => Expect::Absent,
            ([only], Some(_)) => Expect::Current(only.clone()),
            _ => Expect::Anything,
        };
        let last = [
            current.as_ref().map(|b| b.seq),
            pin.map(|p| p.seq),
            handover.as_ref().map(|h| h.seq),
        ]
        .into_iter()
        .flatten()
        .max();
        let seq = record::next_seq(last);
        let binding = NameBinding::sign_with_handover(key, &name, seq, expiry(), handover)
            .map_err(GnsError::Unpublishable)?;
        let encoded = binding.encode();
        match &self.store {
            // The store lock makes read-check-write atomic already.
            Store::File(s) => s.put_name(&name, &encoded)?,
            Store::Dns(s) => s.put_name(&name, &encoded, &expect)?,
        }
        self.known.forget(&name).ok();
        self.known.set_pin(&name, Pin { guid, seq });
        tracing::debug!(%guid, name, seq, "registered");
        Ok(())
    }

    /// Signs the handover of `name`, which `key` holds, to `to`: the new holder registers the
    /// name with it ([`Gns::register_with`]) and readers that pinned `key`'s GUID follow.
    pub fn handover(&self, key: &Keypair, name: &str, to: Guid) -> Result<Handover, GnsError> {
        let name = self.full_name(name)?;
        let current = current_of(&self.fetch_name(&name)?, &name);
        match &current {
            Some(b) if b.guid == key.guid() => {}
            other => {
                return Err(GnsError::NotHolder {
                    name,
                    you: key.guid(),
                    holder: other
                        .as_ref()
                        .map_or("nobody".to_owned(), |b| b.guid.to_string()),
                });
            }
        }
        let seq = record::next_seq(current.map(|b| b.seq));
        Handover::sign(key, &name, to, seq).map_err(GnsError::Unpublishable)
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

/// The valid (verified, unexpired, not from the future) binding of `name` with the highest
/// sequence among `raw`.
fn current_of(raw: &[Vec<u8>], name: &str) -> Option<NameBinding> {
    let (now, now_micros) = (record::unix_now(), record::unix_now_micros());
    raw.iter()
        .filter_map(|b| NameBinding::decode(b).ok())
        .filter(|b| b.name == name && b.check_time(now, now_micros).is_ok())
        .max_by_key(|b| b.seq)
}

fn describe(store: &Store) -> String {
    match store {
        Store::File(s) => format!("file:{}", s.dir().display()),
        Store::Dns(s) => format!("dns://{}/{}", s.config().server, s.config().zone),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gns_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::Gns>();
    }
}
