//! What can go wrong in the GNS.

use std::io;
use std::path::PathBuf;

use namesock_identity::Guid;

use crate::config::ConfigError;
use crate::dns::DnsError;
use crate::fsutil::StoreError;
use crate::known::KnownError;
use crate::name::{NameError, Target};
use crate::record::RecordError;

/// A GNS operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GnsError {
    /// Nothing is published for this name or GUID.
    #[error(
        "{0} is not in the GNS (its owner has to run `namesock publish`, and `namesock register NAME` for a name)"
    )]
    NotFound(Target),
    /// Something was published, but it failed verification.
    #[error("GNS data for {target} rejected: {source}")]
    Rejected {
        target: Target,
        #[source]
        source: RecordError,
    },
    /// A name that cannot be registered or looked up.
    #[error("invalid name: {0}")]
    InvalidName(#[from] NameError),
    /// First-come names: someone else's key holds this one.
    #[error(
        "name {name} is already held by GUID {holder}; only that key can rebind it (pick another name)"
    )]
    NameTaken { name: String, holder: Guid },
    /// The record to publish cannot be built (too many locators or names, too large).
    #[error("cannot publish: {0}")]
    Unpublishable(#[source] RecordError),
    /// The file store could not be read or written.
    #[error("GNS file store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file or directory of the store is not safe to use (someone else's, a link, a FIFO,
    /// writable by others) or a lock was held too long.
    #[error("GNS file store: {0}")]
    Store(StoreError),
    /// The known-names file (pins, anti-rollback) cannot be used.
    #[error(transparent)]
    Known(#[from] KnownError),
    /// The name is bound to another GUID than the one this user pinned, without a handover
    /// signed by the pinned GUID's key.
    #[error(
        "name {name} changed owner: you pinned it to GUID {pinned} (in {file}), but the GNS now binds it to GUID {found} without a handover signed by {pinned}'s key; someone may be taking the name over. If you know its owner moved to a new key, accept the change with `namesock trust {name}`"
    )]
    NameChanged {
        name: String,
        pinned: Guid,
        found: Guid,
        file: PathBuf,
    },
    /// A handover was asked of a key that does not hold the name.
    #[error(
        "name {name} is not held by your GUID {you} (its holder is {holder}): only the key that holds a name can hand it over"
    )]
    NotHolder {
        name: String,
        you: Guid,
        holder: String,
    },
    /// A handover that does not give the name from its current holder.
    #[error(
        "the handover of {name} comes from GUID {from}, but the name is held by GUID {holder}: ask {holder}'s owner for a handover (`namesock handover {name} --to YOUR_GUID`)"
    )]
    HandoverNotFromHolder {
        name: String,
        from: Guid,
        holder: Guid,
    },
    /// A handover older than the holder's current binding: signed before the name last
    /// changed, so it no longer speaks for the holder.
    #[error(
        "the handover of {name} (sequence {handover_seq}) is older than the binding it would replace (sequence {binding_seq}): it was signed before the name last changed; ask the holder for a new one (`namesock handover {name} --to YOUR_GUID`)"
    )]
    HandoverStale {
        name: String,
        handover_seq: u64,
        binding_seq: u64,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The DNS backend failed (lookup, transport, TSIG, the server's answer).
    #[error(transparent)]
    Dns(#[from] DnsError),
}

impl From<StoreError> for GnsError {
    fn from(e: StoreError) -> GnsError {
        match e {
            // A plain I/O failure stays `Io` (a store that cannot be read now, perhaps later).
            StoreError::Io { path, source } => GnsError::Io { path, source },
            other => GnsError::Store(other),
        }
    }
}

impl GnsError {
    /// Is this "nothing there" (as opposed to a failure or a forgery)?
    pub fn is_not_found(&self) -> bool {
        matches!(self, GnsError::NotFound(_))
    }
}
