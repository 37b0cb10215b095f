//! Names in the managed zone: normalization, validation and what a host name targets.

use namesock_identity::{GUID_TEXT_LEN, Guid};

/// Longest DNS name (RFC 1035, text form without the trailing dot).
pub const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// What a host name in the zone designates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A registered name: the full DNS name in the zone, lower case, no trailing dot
    /// (e.g. `web.ns.alt`).
    Name(String),
    /// A GUID literal (`<guid>.<zone>`), which needs no name record.
    Guid(Guid),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Name(name) => f.write_str(name),
            Target::Guid(guid) => write!(f, "{guid}"),
        }
    }
}

/// Why a name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("a label is empty or longer than {MAX_LABEL_LEN} characters")]
    BadLabelLength,
    #[error("labels may hold only letters, digits and '-' (not first or last); found {0:?}")]
    BadCharacter(char),
    #[error("a single label of {GUID_TEXT_LEN} base32 characters is a GUID, not a name")]
    LooksLikeGuid,
    #[error("name is not inside the zone {0}")]
    OutsideZone(String),
}

/// Lower case, no trailing dot.
pub fn normalize(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Checks a normalized full name: LDH labels, lower case, RFC 1035 lengths.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(NameError::BadLabelLength);
        }
        if let Some(c) = label
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
        {
            return Err(NameError::BadCharacter(c));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::BadCharacter('-'));
        }
    }
    Ok(())
}

/// The part of normalized `host` before `.zone`, if `host` is strictly inside `zone`.
fn relative<'a>(host: &'a str, zone: &str) -> Option<&'a str> {
    host.strip_suffix(zone)?
        .strip_suffix('.')
        .filter(|r| !r.is_empty())
}

/// What `host` designates in `zone` (normalized), or `None` outside the zone or if invalid.
pub fn parse_target(host: &str, zone: &str) -> Option<Target> {
    let host = normalize(host);
    let rel = relative(&host, zone)?;
    if !rel.contains('.')
        && rel.len() == GUID_TEXT_LEN
        && let Ok(guid) = rel.parse::<Guid>()
    {
        return Some(Target::Guid(guid));
    }
    check_name(&host).ok()?;
    Some(Target::Name(host))
}

/// The full name for `name` given by a user: `web` or `web.ns.alt` -> `web.ns.alt`.
pub fn full_name(name: &str, zone: &str) -> Result<String, NameError> {
    let name = normalize(name);
    let full = if relative(&name, zone).is_some() {
        name
    } else if name.is_empty() {
        return Err(NameError::Empty);
    } else {
        format!("{name}.{zone}")
    };
    check_name(&full)?;
    match parse_target(&full, zone) {
        Some(Target::Name(n)) => Ok(n),
        Some(Target::Guid(_)) => Err(NameError::LooksLikeGuid),
        None => Err(NameError::OutsideZone(zone.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use namesock_identity::Keypair;

    #[test]
    fn targets_in_the_zone() {
        let guid = Keypair::from_seed(&[3; 32]).guid();
        assert_eq!(
            parse_target("Web.NS.alt.", "ns.alt"),
            Some(Target::Name("web.ns.alt".into()))
        );
        assert_eq!(
            parse_target("a.b.ns.alt", "ns.alt"),
            Some(Target::Name("a.b.ns.alt".into()))
        );
        assert_eq!(
            parse_target(&format!("{guid}.ns.alt"), "ns.alt"),
            Some(Target::Guid(guid))
        );
        let upper = format!("{guid}.NS.ALT").to_uppercase();
        assert_eq!(parse_target(&upper, "ns.alt"), Some(Target::Guid(guid)));
    }

    #[test]
    fn outside_the_zone_is_none() {
        for host in [
            "ns.alt",
            ".ns.alt",
            "example.com",
            "webns.alt",
            "web.ns.alt.com",
            "",
            "web_x.ns.alt",
            "-web.ns.alt",
            "127.0.0.1",
            "a..ns.alt",
        ] {
            assert_eq!(parse_target(host, "ns.alt"), None, "{host}");
        }
    }

    #[test]
    fn full_names() {
        assert_eq!(full_name("web", "ns.alt").unwrap(), "web.ns.alt");
        assert_eq!(full_name("WEB.ns.alt.", "ns.alt").unwrap(), "web.ns.alt");
        assert_eq!(full_name("x.web", "ns.alt").unwrap(), "x.web.ns.alt");
        assert_eq!(full_name("", "ns.alt"), Err(NameError::Empty));
        assert_eq!(
            full_name("bad name", "ns.alt"),
            Err(NameError::BadCharacter(' '))
        );
        let guid = Keypair::from_seed(&[3; 32]).guid().to_string();
        assert_eq!(full_name(&guid, "ns.alt"), Err(NameError::LooksLikeGuid));
    }
}
