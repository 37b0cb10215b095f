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

#[cfg(test)]
mod tests {
    use namesock_identity::Keypair;
    use namesock_resolver::{Backend, GnsConfig};

    use super::*;

    /// A file GNS in `dir`, pins kept in `dir` too.
    fn gns(dir: &Path) -> Arc<Gns> {
        let config = GnsConfig {
            backend: Backend::File(dir.join("gns")),
            zone: "ns.alt".into(),
        };
        Arc::new(Gns::with_known_names(&config, dir.join("known_names")).unwrap())
    }

    fn cfg(dir: &Path, allow: Option<&str>) -> Config {
        Config {
            key: Some(dir.join("key")),
            allow: allow.map(|a| dir.join(a)),
            ..Config::default()
        }
    }

    #[test]
    fn no_file_next_to_the_key_is_open_a_named_file_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let g = gns(dir.path());
        assert_eq!(
            load(&cfg(dir.path(), None), || Ok(g.clone())).unwrap(),
            None
        );
        assert!(matches!(
            load(&cfg(dir.path(), Some("missing")), || Ok(g.clone())),
            Err(AllowFileError::Read { .. })
        ));
    }

    #[test]
    fn guids_and_resolved_names_are_allowed_and_bad_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let g = gns(dir.path());
        let (friend, laptop) = (Keypair::generate(), Keypair::generate());
        g.publish(&laptop, &["192.0.2.1:7000".parse().unwrap()], &[])
            .unwrap();
        g.register(&laptop, "laptop.ns.alt").unwrap();
        std::fs::write(
            dir.path().join("key.allow"),
            format!("{}\nlaptop 22\n", friend.guid()),
        )
        .unwrap();
        let list = load(&cfg(dir.path(), None), || Ok(g.clone()))
            .unwrap()
            .expect("a list");
        assert!(list.permits(&friend.guid(), 1));
        assert!(list.permits(&laptop.guid(), 22));
        assert!(!list.permits(&laptop.guid(), 80));
        std::fs::write(dir.path().join("bad"), "laptop 0\n").unwrap();
        assert!(matches!(
            load(&cfg(dir.path(), Some("bad")), || Ok(g.clone())),
            Err(AllowFileError::Parse { .. })
        ));
        std::fs::write(dir.path().join("unknown"), "nobody\n").unwrap();
        let err = load(&cfg(dir.path(), Some("unknown")), || Ok(g.clone())).unwrap_err();
        assert!(
            matches!(&err, AllowFileError::Name { line: 1, name, .. } if name == "nobody"),
            "{err}"
        );
    }
}
