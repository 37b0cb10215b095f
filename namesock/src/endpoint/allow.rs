//! Who may connect: an allow list of GUIDs (or names, resolved to GUIDs by the engine) per
//! identity and per port, in the spirit of ssh's `authorized_keys`. Without one every
//! verified client may connect, as with plain TCP.
//!
//! The file (`NAMESOCK_ALLOW`, else `<key file>.allow` next to the key), one entry a line:
//!
//! ```text
//! # comment; blank lines are ignored
//! 3ob3fqzsr7lrzxqhd7yd2wtaxrsdkzv6          every port
//! laptop                 8000 8443         a name, two ports
//! laptop.ns.alt          22,80             commas work too
//! ```
//!
//! Parsing is pure; resolving names is IO and the engine's.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use namesock_identity::Guid;

/// At most this many entries (a file beyond it is refused, not cut).
pub const MAX_ENTRIES: usize = 4096;
/// At most this many ports on one line.
pub const MAX_PORTS_PER_ENTRY: usize = 64;

/// Who an entry names: a GUID, or a name the GNS maps to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Guid(Guid),
    Name(String),
}

/// One line: who, and which ports (`None`: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<P> {
    pub who: P,
    pub ports: Option<Vec<u16>>,
    /// 1-based line number, for messages.
    pub line: usize,
}

/// Why an allow file is refused (the server does not start serving with a file it cannot
/// read whole: an allow list that is half applied would let in whom it meant to keep out).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowError {
    #[error("line {line}: {text:?} is not a port (1-65535)")]
    BadPort { line: usize, text: String },
    #[error("line {line}: more than {MAX_PORTS_PER_ENTRY} ports")]
    TooManyPorts { line: usize },
    #[error("more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("line {line}: {name:?} is neither a GUID nor a name")]
    BadName { line: usize, name: String },
}

/// Parses an allow file's text.
pub fn parse(text: &str) -> Result<Vec<Entry<Principal>>, AllowError> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or_default();
        let mut words = content
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty());
        let Some(first) = words.next() else {
            continue;
        };
        if entries.len() >= MAX_ENTRIES {
            return Err(AllowError::TooManyEntries);
        }
        let who = match Guid::from_str(first) {
            Ok(g) => Principal::Guid(g),
            Err(_) if is_name(first) => Principal::Name(first.to_ascii_lowercase()),
            Err(_) => {
                return Err(AllowError::BadName {
                    line,
                    name: first.to_owned(),
                });
            }
        };
        let mut ports = Vec::new();
        for w in words {
            if ports.len() >= MAX_PORTS_PER_ENTRY {
                return Err(AllowError::TooManyPorts { line });
            }
            match w.parse::<u16>() {
                Ok(p) if p != 0 => ports.push(p),
                _ => {
                    return Err(AllowError::BadPort {
                        line,
                        text: w.to_owned(),
                    });
                }
            }
        }
        entries.push(Entry {
            who,
            ports: (!ports.is_empty()).then_some(ports),
            line,
        });
    }
    Ok(entries)
}

/// DNS-style labels: letters, digits, `-` and `.`, at most 253 characters.
fn is_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// The allow list in force: GUIDs and the ports each may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    /// `None`: every port.
    rules: HashMap<Guid, Option<HashSet<u16>>>,
}

impl AllowList {
    /// From entries whose names are resolved; two lines for one GUID add up.
    pub fn new(entries: impl IntoIterator<Item = Entry<Guid>>) -> AllowList {
        let mut rules: HashMap<Guid, Option<HashSet<u16>>> = HashMap::new();
        for e in entries {
            match (rules.entry(e.who).or_insert(Some(HashSet::new())), e.ports) {
                (all @ Some(_), None) => *all = None,
                (Some(set), Some(ports)) => set.extend(ports),
                (None, _) => {}
            }
        }
        AllowList { rules }
    }

    /// May `guid` open a session to `port`?
    pub fn permits(&self, guid: &Guid, port: u16) -> bool {
        self.rules
            .get(guid)
            .is_some_and(|ports| ports.as_ref().is_none_or(|p| p.contains(&port)))
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use namesock_identity::Keypair;

    use super::*;

    fn guid() -> Guid {
        Keypair::generate().guid()
    }

    #[test]
    fn lines_with_comments_names_guids_and_ports_parse() {
        let (a, b) = (guid(), guid());
        let text = format!(
            "# who may connect\n\n{a}\n  laptop  8000 8443 # two ports\nLaptop.ns.alt 22,80\n{b} 9000\n"
        );
        let entries = parse(&text).unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].who, Principal::Guid(a));
        assert_eq!(entries[0].ports, None);
        assert_eq!(entries[1].who, Principal::Name("laptop".into()));
        assert_eq!(entries[1].ports, Some(vec![8000, 8443]));
        assert_eq!(entries[1].line, 4);
        assert_eq!(entries[2].who, Principal::Name("laptop.ns.alt".into()));
        assert_eq!(entries[2].ports, Some(vec![22, 80]));
        assert_eq!(entries[3].who, Principal::Guid(b));
    }

    #[test]
    fn bad_lines_are_refused_with_their_line_number() {
        assert_eq!(
            parse("web 80\nweb 0\n"),
            Err(AllowError::BadPort {
                line: 2,
                text: "0".into()
            })
        );
        assert_eq!(
            parse("web 70000"),
            Err(AllowError::BadPort {
                line: 1,
                text: "70000".into()
            })
        );
        assert_eq!(
            parse("\nwe/b 80"),
            Err(AllowError::BadName {
                line: 2,
                name: "we/b".into()
            })
        );
        let many: String = (1..=65).map(|p| format!(" {p}")).collect();
        assert_eq!(
            parse(&format!("web{many}")),
            Err(AllowError::TooManyPorts { line: 1 })
        );
        let lines = "web\n".repeat(MAX_ENTRIES + 1);
        assert_eq!(parse(&lines), Err(AllowError::TooManyEntries));
    }

    #[test]
    fn a_guid_may_connect_to_the_ports_its_lines_name() {
        let (all, some, stranger) = (guid(), guid(), guid());
        let list = AllowList::new([
            Entry {
                who: all,
                ports: None,
                line: 1,
            },
            Entry {
                who: some,
                ports: Some(vec![80]),
                line: 2,
            },
            Entry {
                who: some,
                ports: Some(vec![443]),
                line: 3,
            },
            // A line with every port after one with some: every port.
            Entry {
                who: all,
                ports: Some(vec![22]),
                line: 4,
            },
        ]);
        assert!(list.permits(&all, 1) && list.permits(&all, 22));
        assert!(list.permits(&some, 80) && list.permits(&some, 443));
        assert!(!list.permits(&some, 22));
        assert!(!list.permits(&stranger, 80));
        assert_eq!(list.len(), 2);
    }
}
