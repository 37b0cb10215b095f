//! Reading the allow list when the server side starts: the file (`Config::allow_path`),
//! parsed by the core (`endpoint::allow`), its names resolved to GUIDs through the GNS with
//! the user's pins (a name that moved to another GUID without a handover is refused like
//! on a connect). Blocking, once per process, like loading the key.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use namesock_resolver::{Gns, GnsError};

use crate::config::Config;
use crate::endpoint::allow::{self, AllowError, AllowList, Entry, Principal};

use super::ServeError;
use super::event_loop::Engine;

impl Engine {
    /// Who may connect and the limits, set on the endpoint before the first session.
    pub(super) fn start_policy(&mut self) -> Result<(), ServeError> {
        let allow = load(&self.cfg, || self.shared.gns())?;
        self.endpoint.set_allow(allow);
        self.endpoint.set_limits(self.cfg.limits());
        Ok(())
    }
}

/// Why the server side did not start: its allow list could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum AllowFileError {
    #[error("allow list {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("allow list {path}: {source}")]
    Parse { path: PathBuf, source: AllowError },
    #[error("allow list {path} line {line}: cannot resolve {name}: {source}")]
    Name {
        path: PathBuf,
        line: usize,
        name: String,
        source: Box<GnsError>,
    },
}

/// The allow list in force: `None` (everyone may connect) when no file is configured and
/// none sits next to the key. `gns` opens the GNS (cached by the caller).
pub(super) fn load(
    cfg: &Config,
    gns: impl Fn() -> Result<Arc<Gns>, GnsError>,
) -> Result<Option<AllowList>, AllowFileError> {
    let (path, required) = cfg.allow_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !required => return Ok(None),
        Err(source) => return Err(AllowFileError::Read { path, source }),
    };
    let entries = allow::parse(&text).map_err(|source| AllowFileError::Parse {
        path: path.clone(),
        source,
    })?;
    let mut resolved = Vec::with_capacity(entries.len());
    for e in entries {
        let who = match &e.who {
            Principal::Guid(g) => *g,
            Principal::Name(n) => {
                gns()
                    .and_then(|gns| gns.resolve_name(&gns.full_name(n)?))
                    .map_err(|source| name_error(&path, &e, source))?
                    .guid
            }
        };
        resolved.push(Entry {
            who,
            ports: e.ports,
            line: e.line,
        });
    }
    let list = AllowList::new(resolved);
    tracing::info!(path = %path.display(), guids = list.len(), "allow list in force");
    Ok(Some(list))
}

fn name_error(path: &Path, e: &Entry<Principal>, source: GnsError) -> AllowFileError {
    AllowFileError::Name {
        path: path.to_owned(),
        line: e.line,
        name: match &e.who {
            Principal::Name(n) => n.clone(),
            Principal::Guid(g) => g.to_string(),
        },
        source: Box::new(source),
    }
}
