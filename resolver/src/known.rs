//! What this user has seen, on disk, like ssh's `known_hosts`: for every name the GUID it was
//! bound to (the pin) and the highest binding sequence number, and for every GUID the highest
//! record sequence number (anti-rollback that survives the process).
//!
//! One text file per user (`$XDG_STATE_HOME/namesock/known_names`, else
//! `~/.local/state/namesock/known_names`; `NAMESOCK_KNOWN_NAMES` overrides), each line one
//! entry, scoped by the store it came from (a name in one GNS is not the same name in another):
//!
//! ```text
//! name <store> <full name> <guid> <seq> <updated>
//! guid <store> <guid> <seq> <updated>
//! ```
//!
//! It holds at most [`MAX_ENTRIES`] names and as many GUIDs (the least recently updated go
//! first) and is read only if it is a regular file of ours that nobody else can write. Every
//! update takes `known_names.lock` (0600, bounded wait), re-reads the file, and replaces it by
//! rename. Reads take no lock; a process re-reads the file only when it changed.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use namesock_identity::Guid;

use crate::fsutil::{self, LOCK_WAIT, StoreError, Trusted};

/// Most names (and, separately, GUIDs) the file remembers.
pub const MAX_ENTRIES: usize = 2048;
/// Largest file read (a full file is well below this).
const MAX_FILE_LEN: usize = 4 << 20;
/// Longest store description kept (longer ones are cut; they stay distinct in practice).
const MAX_STORE_LEN: usize = 512;

/// Why the known-names file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KnownError {
    #[error("known names file: {0}")]
    File(#[from] StoreError),
    #[error(
        "known names file {path}, line {line}: not a `name` or `guid` entry; fix or delete that line"
    )]
    Malformed { path: PathBuf, line: usize },
    #[error(
        "known names file {path} is larger than {MAX_FILE_LEN} bytes; it was not written by namesock: move it away"
    )]
    TooLarge { path: PathBuf },
    #[error(
        "no place for the known names file: none of NAMESOCK_KNOWN_NAMES, XDG_STATE_HOME, HOME is set and uid {uid} has no home directory; set NAMESOCK_KNOWN_NAMES=/a/private/path"
    )]
    NoHome { uid: u32 },
}

/// The pinned binding of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    pub guid: Guid,
    pub seq: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entries {
    /// (store, name) -> (pin, updated)
    names: HashMap<(String, String), (Pin, u64)>,
    /// (store, guid) -> (seq, updated)
    guids: HashMap<(String, Guid), (u64, u64)>,
}

/// `$NAMESOCK_KNOWN_NAMES`, else `$XDG_STATE_HOME/namesock/known_names`, else
/// `~/.local/state/namesock/known_names` (HOME, else the password database).
pub fn default_path() -> Result<PathBuf, KnownError> {
    let var = |k| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = var("NAMESOCK_KNOWN_NAMES") {
        return Ok(PathBuf::from(p));
    }
    let state = var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            var("HOME")
                .map(PathBuf::from)
                .or_else(namesock_identity::home_from_passwd)
                .map(|h| h.join(".local").join("state"))
        })
        .ok_or(KnownError::NoHome {
            uid: fsutil::euid(),
        })?;
    Ok(state.join("namesock").join("known_names"))
}

/// The known names of one user, seen through one store.
#[derive(Debug)]
pub struct KnownNames {
    path: PathBuf,
    lock_path: PathBuf,
    store: String,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    /// (inode, size, mtime ns) of the file last read.
    stamp: Option<(u64, u64, i128)>,
    file: Entries,
    /// What this process saw but could not write (kept in memory all the same).
    unsaved: Entries,
}

fn escape(store: &str) -> String {
    let mut out = String::with_capacity(store.len());
    for b in store.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.truncate(MAX_STORE_LEN);
    out
}

impl KnownNames {
    /// The file at `path`, for the store described by `store` (e.g. `file:/dir`).
    pub fn new(path: PathBuf, store: &str) -> KnownNames {
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        KnownNames {
            path,
            lock_path: PathBuf::from(lock_path),
            store: escape(store),
            cache: Mutex::new(Cache::default()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cache(&self) -> Result<std::sync::MutexGuard<'_, Cache>, KnownError> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stamp = match fs::symlink_metadata(&self.path) {
            Ok(m) => Some((
                m.ino(),
                m.size(),
                i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            )),
            Err(_) => None,
        };
        if stamp != cache.stamp {
            cache.file = self.read()?;
            cache.stamp = stamp;
        }
        Ok(cache)
    }

    /// The pinned binding of `name` in this store.
    pub fn pin(&self, name: &str) -> Result<Option<Pin>, KnownError> {
        let cache = self.cache()?;
        let key = (self.store.clone(), name.to_owned());
        let file = cache.file.names.get(&key).map(|e| e.0);
        let unsaved = cache.unsaved.names.get(&key).map(|e| e.0);
        Ok(match (file, unsaved) {
            (Some(f), Some(u)) if f.guid == u.guid && u.seq > f.seq => Some(u),
            (Some(f), _) => Some(f),
            (None, u) => u,
        })
    }

    /// The highest record sequence number seen for `guid` in this store.
    pub fn guid_seq(&self, guid: &Guid) -> Result<Option<u64>, KnownError> {
        let cache = self.cache()?;
        let key = (self.store.clone(), *guid);
        let file = cache.file.guids.get(&key).map(|e| e.0);
        let unsaved = cache.unsaved.guids.get(&key).map(|e| e.0);
        Ok(file.max(unsaved))
    }

    /// Remembers that `name` is bound to `pin` (replacing any other pin: callers check first).
    pub fn set_pin(&self, name: &str, pin: Pin) {
        if self.pin(name).ok().flatten() == Some(pin) {
            return;
        }
        let key = (self.store.clone(), name.to_owned());
        self.update(|e, now| {
            e.names.insert(key.clone(), (pin, now));
        });
    }

    /// Remembers `seq` for `guid` if it is higher than what is known.
    pub fn raise_guid(&self, guid: &Guid, seq: u64) {
        if self.guid_seq(guid).ok().flatten().is_some_and(|s| s >= seq) {
            return;
        }
        let key = (self.store.clone(), *guid);
        self.update(|e, now| {
            let entry = e.guids.entry(key.clone()).or_insert((seq, now));
            if entry.0 <= seq {
                *entry = (seq, now);
            }
        });
    }

    /// Forgets the pin of `name` (what `namesock trust` does before pinning the new binding).
    pub fn forget(&self, name: &str) -> Result<(), KnownError> {
        let key = (self.store.clone(), name.to_owned());
        if let Ok(mut cache) = self.cache() {
            cache.unsaved.names.remove(&key);
        }
        self.write(|e, _| {
            e.names.remove(&key);
        })
    }

    /// Applies `change` to the file; if the file cannot be written, to this process's memory
    /// (a warning says so: the memory still protects this process).
    fn update(&self, change: impl Fn(&mut Entries, u64)) {
        if let Err(e) = self.write(&change) {
            tracing::warn!(error = %e, "could not update the known names file; remembering in memory only");
            if let Ok(mut cache) = self.cache() {
                change(&mut cache.unsaved, crate::record::unix_now());
            }
        }
    }

    fn write(&self, change: impl Fn(&mut Entries, u64)) -> Result<(), KnownError> {
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fsutil::create_private_dir(dir)?;
        let _lock = fsutil::lock(&self.lock_path, 0o600, &Trusted::me(), LOCK_WAIT)?;
        let mut entries = self.read()?;
        change(&mut entries, crate::record::unix_now());
        trim(&mut entries.names);
        trim(&mut entries.guids);
        let text = render(&entries);
        fsutil::write_atomic(dir, &self.path, text.as_bytes(), 0o600, false)?;
        Ok(())
    }

    fn read(&self) -> Result<Entries, KnownError> {
        let Some(bytes) = fsutil::read_bounded(&self.path, &Trusted::me(), MAX_FILE_LEN)? else {
            return Ok(Entries::default());
        };
        if bytes.len() > MAX_FILE_LEN {
            return Err(KnownError::TooLarge {
                path: self.path.clone(),
            });
        }
        let malformed = |line| KnownError::Malformed {
            path: self.path.clone(),
            line,
        };
        let text = String::from_utf8(bytes).map_err(|_| malformed(0))?;
        let mut entries = Entries::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            let num = |s: &str| s.parse::<u64>().map_err(|_| malformed(i + 1));
            let guid = |s: &str| s.parse::<Guid>().map_err(|_| malformed(i + 1));
            match f.as_slice() {
                ["name", store, name, g, seq, updated] => {
                    let pin = Pin {
                        guid: guid(g)?,
                        seq: num(seq)?,
                    };
                    entries.names.insert(
                        ((*store).to_owned(), (*name).to_owned()),
                        (pin, num(updated)?),
                    );
                }
                ["guid", store, g, seq, updated] => {
                    entries
                        .guids
                        .insert(((*store).to_owned(), guid(g)?), (num(seq)?, num(updated)?));
                }
                _ => return Err(malformed(i + 1)),
            }
        }
        Ok(entries)
    }
}

/// Keeps the [`MAX_ENTRIES`] most recently updated.
fn trim<K: Clone + Eq + std::hash::Hash, V>(map: &mut HashMap<K, (V, u64)>) {
    if map.len() <= MAX_ENTRIES {
        return;
    }
    let mut ages: Vec<(u64, K)> = map.iter().map(|(k, v)| (v.1, k.clone())).collect();
    ages.sort_by_key(|(updated, _)| *updated);
    let excess = map.len() - MAX_ENTRIES;
    for (_, k) in ages.into_iter().take(excess) {
        map.remove(&k);
    }
}

fn render(e: &Entries) -> String {
    let mut lines: Vec<String> = Vec::with_capacity(e.names.len() + e.guids.len());
    for ((store, name), (pin, updated)) in &e.names {
        lines.push(format!(
            "name {store} {name} {} {} {updated}",
            pin.guid, pin.seq
        ));
    }
    for ((store, guid), (seq, updated)) in &e.guids {
        lines.push(format!("guid {store} {guid} {seq} {updated}"));
    }
    lines.sort();
    let mut out = String::from(
        "# namesock known names: the GUID each name was bound to (pins) and the highest sequence\n\
         # numbers seen. Written by namesock; accept a changed name with `namesock trust NAME`.\n",
    );
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use namesock_identity::Keypair;

    #[test]
    fn pins_and_sequences_survive_a_new_instance_and_stay_per_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/known_names");
        let guid = Keypair::from_seed(&[1; 32]).guid();
        let a = KnownNames::new(path.clone(), "file:/a b");
        a.set_pin("web.ns.alt", Pin { guid, seq: 5 });
        a.raise_guid(&guid, 7);
        a.raise_guid(&guid, 6);
        let fresh = KnownNames::new(path.clone(), "file:/a b");
        assert_eq!(fresh.pin("web.ns.alt").unwrap(), Some(Pin { guid, seq: 5 }));
        assert_eq!(fresh.guid_seq(&guid).unwrap(), Some(7));
        let other = KnownNames::new(path.clone(), "file:/c");
        assert_eq!(other.pin("web.ns.alt").unwrap(), None);
        fresh.forget("web.ns.alt").unwrap();
        assert_eq!(a.pin("web.ns.alt").unwrap(), None);
        let mode = fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn the_file_is_bounded() {
        let mut map = HashMap::new();
        for i in 0..(MAX_ENTRIES as u64 + 10) {
            map.insert(i, ((), i));
        }
        trim(&mut map);
        assert_eq!(map.len(), MAX_ENTRIES);
        assert!(!map.contains_key(&9) && map.contains_key(&10));
    }

    #[test]
    fn a_malformed_line_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_names");
        fs::write(&path, "# c\nname x\n").unwrap();
        let k = KnownNames::new(path, "file:/a");
        assert!(matches!(
            k.pin("x"),
            Err(KnownError::Malformed { line: 2, .. })
        ));
    }
}
