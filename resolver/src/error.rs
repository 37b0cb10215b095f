//! What can go wrong in the GNS.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use namesock_identity::Guid;

use crate::config::ConfigError;
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
    /// The DNS lookup failed (timeout, server failure): not the same as "not found".
    #[error("DNS lookup of {name} failed: {source}")]
    Lookup {
        name: String,
        #[source]
        source: Box<hickory_resolver::error::ResolveError>,
    },
    /// The DNS server could not be reached for an update.
    #[error("DNS server {server}: {source} (is it running, and is NAMESOCK_GNS right?)")]
    DnsTransport {
        server: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// A DNS message could not be built or parsed.
    #[error("DNS: {what}: {source}")]
    DnsMessage {
        what: String,
        #[source]
        source: hickory_proto::error::ProtoError,
    },
    /// The server's answer is not what an answer to our update must be.
    #[error("DNS server {server} gave a bad answer: {detail}")]
    BadResponse { server: SocketAddr, detail: String },
    /// Publishing to DNS needs a TSIG key.
    #[error(
        "publishing to DNS needs a TSIG key: add ?tsig-key=/path/to/keyfile (or tsig-name=..&tsig-secret=..) to NAMESOCK_GNS"
    )]
    NoTsigKey,
    /// The server did not accept our TSIG key or signature (RFC 8945 NOTAUTH).
    #[error(
        "DNS server {server} rejected the TSIG key {key}: check its name and secret against the server's `key` statement (and the clocks)"
    )]
    TsigRejected { server: SocketAddr, key: String },
    /// The server refused the update (e.g. REFUSED: the key may not update this zone).
    #[error(
        "DNS server {server} refused the update of zone {zone}: {rcode} (check the zone's allow-update / update-policy)"
    )]
    UpdateRefused {
        server: SocketAddr,
        zone: String,
        rcode: String,
    },
    /// A conditional update lost a race: the name changed meanwhile.
    #[error("{name} changed while it was being registered; try again")]
    UpdateConflict { name: String },
}

impl GnsError {
    /// Is this "nothing there" (as opposed to a failure or a forgery)?
    pub fn is_not_found(&self) -> bool {
        matches!(self, GnsError::NotFound(_))
    }
}
