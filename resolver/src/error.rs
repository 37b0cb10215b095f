//! What can go wrong in the GNS.

use std::io;
use std::path::PathBuf;

use namesock_identity::Guid;

use crate::config::ConfigError;
use crate::dns::DnsError;
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
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The DNS backend failed (lookup, transport, TSIG, the server's answer).
    #[error(transparent)]
    Dns(#[from] DnsError),
}

impl GnsError {
    /// Is this "nothing there" (as opposed to a failure or a forgery)?
    pub fn is_not_found(&self) -> bool {
        matches!(self, GnsError::NotFound(_))
    }
}
