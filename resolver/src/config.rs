//! Which GNS backend to use, from the environment and the optional TOML file.
//!
//! | key (env / file)              | values                                                   |
//! |-------------------------------|----------------------------------------------------------|
//! | `NAMESOCK_GNS` / `gns`        | `file` (default directory), `file:/path`, or a DNS URL    |
//! | `NAMESOCK_ZONE` / `zone`      | zone of the file store, default `ns.alt`                  |
//! | `NAMESOCK_CONFIG`             | path of the TOML file holding `gns` and `zone`            |
//!
//! The environment wins over the file. A DNS URL is
//! `dns://SERVER_IP:PORT/ZONE[?tsig-key=/path/to/keyfile]` or
//! `dns://SERVER_IP:PORT/ZONE?tsig-name=NAME&tsig-secret=BASE64`, plus `&timeout-ms=N`
//! (default 2000), `&ttl=N` (seconds, default 2) and `&trust-anchor=/path` (a DNSKEY line of
//! the zone: answers are then validated with DNSSEC, see [`crate::dnssec`]). The key file is the BIND format that
//! `tsig-keygen -a hmac-sha256 NAME` prints; the algorithm is HMAC-SHA256. Without a TSIG key
//! the DNS backend can resolve but not publish. For DNS the zone comes from the URL.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default zone of the file store.
pub const DEFAULT_ZONE: &str = "ns.alt";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Toml {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error(
        "GNS backend {value:?}: {reason} (expected `file`, `file:/path` or `dns://IP:PORT/ZONE?tsig-key=/path`)"
    )]
    Backend { value: String, reason: &'static str },
    #[error("zone {value:?} is not a valid DNS name: {source}")]
    Zone {
        value: String,
        #[source]
        source: crate::name::NameError,
    },
    #[error("TSIG key file {path}: {source}")]
    TsigKeyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TSIG key {what}: {reason} (expected the output of `tsig-keygen -a hmac-sha256 NAME`)")]
    TsigKey { what: String, reason: &'static str },
}

/// A TSIG key (HMAC-SHA256) that authorizes updates to the zone.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// The key's name, as the server knows it.
    pub name: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Where the DNS backend reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The authoritative server (updates and lookups go there).
    pub server: SocketAddr,
    /// The zone, normalized (e.g. `gns.test`).
    pub zone: String,
    /// Needed to publish; lookups need none.
    pub tsig: Option<TsigKey>,
    /// Bound on every lookup and update.
    pub timeout: Duration,
    /// TTL of the published records, in seconds (kept low: addresses change).
    pub ttl: u32,
    /// DNSSEC trust anchor (a DNSKEY line of the zone): with it, lookups are validated.
    pub trust_anchor: Option<PathBuf>,
}

/// The selected backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The embedded file store in this directory.
    File(PathBuf),
    Dns(DnsConfig),
}

/// The whole GNS configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GnsConfig {
    pub backend: Backend,
    /// The zone names live in (`ns.alt` by default; a DNS backend's zone).
    pub zone: String,
}

#[derive(Debug, Default, serde::Deserialize)]
struct FileKeys {
    gns: Option<String>,
    zone: Option<String>,
}

impl GnsConfig {
    /// `NAMESOCK_GNS`, `NAMESOCK_ZONE`, and the file at `NAMESOCK_CONFIG` if set.
    pub fn from_env() -> Result<GnsConfig, ConfigError> {
        GnsConfig::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`GnsConfig::from_env`], with the variables read through `var`.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<GnsConfig, ConfigError> {
        let var = |key| var(key).filter(|v| !v.is_empty());
        let file = match var("NAMESOCK_CONFIG") {
            Some(path) => read_file(Path::new(&path))?,
            None => FileKeys::default(),
        };
        GnsConfig::from_values(
            var("NAMESOCK_GNS").or(file.gns).as_deref(),
            var("NAMESOCK_ZONE").or(file.zone).as_deref(),
        )
    }

    /// From the two settings, each optional.
    pub fn from_values(gns: Option<&str>, zone: Option<&str>) -> Result<GnsConfig, ConfigError> {
        let zone = match zone {
            Some(z) => check_zone(z)?,
            None => DEFAULT_ZONE.to_owned(),
        };
        let backend = match gns {
            Some(value) => parse_backend(value)?,
            None => Backend::File(default_file_dir()),
        };
        let zone = match &backend {
            Backend::Dns(dns) => dns.zone.clone(),
            Backend::File(_) => zone,
        };
        Ok(GnsConfig { backend, zone })
    }
}

/// `$XDG_RUNTIME_DIR/namesock/gns` (the user's private runtime directory), else
/// `/tmp/namesock-gns-<uid>`: one store per user, created 0700, refused on open if another
/// user made it first.
pub fn default_file_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("namesock").join("gns"),
        _ => PathBuf::from(format!("/tmp/namesock-gns-{}", crate::fsutil::euid())),
    }
}

fn read_file(path: &Path) -> Result<FileKeys, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Toml {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn check_zone(zone: &str) -> Result<String, ConfigError> {
    let z = crate::name::normalize(zone);
    crate::name::check_name(&z).map_err(|source| ConfigError::Zone {
        value: zone.to_owned(),
        source,
    })?;
    Ok(z)
}

/// Parses a `NAMESOCK_GNS` value.
pub fn parse_backend(value: &str) -> Result<Backend, ConfigError> {
    let err = |reason| ConfigError::Backend {
        value: value.to_owned(),
        reason,
    };
    if value == "file" {
        return Ok(Backend::File(default_file_dir()));
    }
    if let Some(path) = value.strip_prefix("file:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(err("empty path"));
        }
        return Ok(Backend::File(PathBuf::from(path)));
    }
    let rest = value
        .strip_prefix("dns://")
        .ok_or_else(|| err("unknown backend"))?;
    let (authority, rest) = rest
        .split_once('/')
        .ok_or_else(|| err("missing /ZONE after the server address"))?;
    let server: SocketAddr = authority
        .parse()
        .map_err(|_| err("the server must be IP:PORT (IPv6 in brackets)"))?;
    let (zone, query) = rest.split_once('?').unwrap_or((rest, ""));
    if zone.is_empty() {
        return Err(err("missing zone"));
    }
    let zone = check_zone(zone)?;
    let mut dns = DnsConfig {
        server,
        zone,
        tsig: None,
        timeout: Duration::from_millis(2000),
        ttl: 2,
        trust_anchor: None,
    };
    let (mut key_name, mut key_secret) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| err("parameters are key=value"))?;
        match k {
            "tsig-key" => dns.tsig = Some(read_tsig_key_file(Path::new(v))?),
            "tsig-name" => key_name = Some(v.to_owned()),
            "tsig-secret" => key_secret = Some(v.to_owned()),
            "timeout-ms" => {
                let ms: u64 = v.parse().map_err(|_| err("timeout-ms is a number"))?;
                dns.timeout = Duration::from_millis(ms.max(1));
            }
            "ttl" => dns.ttl = v.parse().map_err(|_| err("ttl is a number of seconds"))?,
            "trust-anchor" => dns.trust_anchor = Some(PathBuf::from(v)),
            _ => return Err(err("unknown parameter")),
        }
    }
    match (key_name, key_secret) {
        (Some(name), Some(secret)) => {
            dns.tsig = Some(TsigKey {
                secret: decode_secret(&secret, &name)?,
                name: normalize_key_name(&name),
            });
        }
        (None, None) => {}
        _ => return Err(err("tsig-name and tsig-secret go together")),
    }
    Ok(Backend::Dns(dns))
}

fn normalize_key_name(name: &str) -> String {
    crate::name::normalize(name)
}

fn decode_secret(secret: &str, name: &str) -> Result<Vec<u8>, ConfigError> {
    data_encoding::BASE64
        .decode(secret.as_bytes())
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ConfigError::TsigKey {
            what: name.to_owned(),
            reason: "the secret is not base64",
        })
}

/// Reads a BIND key file:
/// `key "NAME" { algorithm hmac-sha256; secret "BASE64"; };`
pub fn read_tsig_key_file(path: &Path) -> Result<TsigKey, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TsigKeyRead {
        path: path.to_owned(),
        source,
    })?;
    parse_tsig_key(&text).map_err(|reason| ConfigError::TsigKey {
        what: path.display().to_string(),
        reason,
    })
}

/// Parses the text of a BIND key file (see [`read_tsig_key_file`]).
pub fn parse_tsig_key(text: &str) -> Result<TsigKey, &'static str> {
    let quoted = |s: &str| -> Option<String> {
        let s = s.trim_start().strip_prefix('"')?;
        Some(s[..s.find('"')?].to_owned())
    };
    let start = text.find("key").ok_or("no `key` statement")?;
    let body = &text[start + 3..];
    let name = quoted(body).ok_or("no quoted key name")?;
    let algorithm = body
        .split_once("algorithm")
        .and_then(|(_, rest)| rest.split(';').next())
        .map(|a| a.trim().trim_matches('"').to_ascii_lowercase())
        .ok_or("no algorithm")?;
    if algorithm != "hmac-sha256" {
        return Err("only hmac-sha256 is supported");
    }
    let secret = body
        .split_once("secret")
        .and_then(|(_, rest)| quoted(rest))
        .ok_or("no quoted secret")?;
    let secret = data_encoding::BASE64
        .decode(secret.as_bytes())
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or("the secret is not base64")?;
    Ok(TsigKey {
        name: normalize_key_name(&name),
        secret,
    })
}

impl TsigKey {
    /// A new random HMAC-SHA256 key for one identity, named `<guid>.<zone>`: BIND9's
    /// `update-policy` rules name it ([`update_policy`]).
    pub fn for_identity(guid: &namesock_identity::Guid, zone: &str) -> TsigKey {
        TsigKey {
            name: format!("{guid}.{zone}"),
            secret: rand::random::<[u8; 32]>().to_vec(),
        }
    }

    /// The key as BIND's `key` statement (what `tsig-keygen` prints; [`parse_tsig_key`] reads
    /// it back).
    pub fn to_bind(&self) -> String {
        format!(
            "key \"{}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{}\";\n}};\n",
            self.name,
            data_encoding::BASE64.encode(&self.secret)
        )
    }
}

/// BIND9 `update-policy` rules that let the key of `guid` change only its own GUID's RRs
/// (`<guid>.<zone>`: TXT, A, AAAA) and the bindings (TXT) of `names` (full names).
pub fn update_policy(guid: &namesock_identity::Guid, zone: &str, names: &[String]) -> Vec<String> {
    let key = format!("{guid}.{zone}.");
    let mut rules = vec![format!("grant {key} self {key} TXT A AAAA;")];
    for name in names {
        rules.push(format!("grant {key} name {name}. TXT;"));
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_keys_round_trip_through_the_bind_format() {
        let guid = namesock_identity::Keypair::from_seed(&[4; 32]).guid();
        let key = TsigKey::for_identity(&guid, "gns.test");
        assert_eq!(parse_tsig_key(&key.to_bind()).unwrap(), key);
        assert_ne!(TsigKey::for_identity(&guid, "gns.test").secret, key.secret);
        let rules = update_policy(&guid, "gns.test", &["web.gns.test".to_owned()]);
        assert_eq!(
            rules,
            [
                format!("grant {guid}.gns.test. self {guid}.gns.test. TXT A AAAA;"),
                format!("grant {guid}.gns.test. name web.gns.test. TXT;"),
            ]
        );
    }

    #[test]
    fn backends() {
        assert_eq!(
            parse_backend("file:/x/y").unwrap(),
            Backend::File("/x/y".into())
        );
        assert_eq!(
            parse_backend("file").unwrap(),
            Backend::File(default_file_dir())
        );
        let Backend::Dns(d) =
            parse_backend("dns://127.0.0.1:5353/GNS.test.?tsig-name=k1&tsig-secret=AAECAw==&ttl=1")
                .unwrap()
        else {
            panic!("not dns")
        };
        assert_eq!(d.server, "127.0.0.1:5353".parse().unwrap());
        assert_eq!(d.trust_anchor, None);
        let Backend::Dns(anchored) =
            parse_backend("dns://127.0.0.1:53/z?trust-anchor=/etc/a.key").unwrap()
        else {
            panic!("not dns")
        };
        assert_eq!(anchored.trust_anchor, Some(PathBuf::from("/etc/a.key")));
        assert_eq!(d.zone, "gns.test");
        assert_eq!(d.ttl, 1);
        assert_eq!(
            d.tsig,
            Some(TsigKey {
                name: "k1".into(),
                secret: vec![0, 1, 2, 3]
            })
        );
        for bad in [
            "dns://localhost:53/z",
            "dns://127.0.0.1/z",
            "dns://127.0.0.1:53/",
            "dns://127.0.0.1:53/z?tsig-name=a",
            "dns://127.0.0.1:53/z?what=1",
            "ftp://x",
            "file:",
        ] {
            assert!(parse_backend(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn zone_comes_from_the_dns_url() {
        let c = GnsConfig::from_values(Some("dns://[::1]:53/gns.test"), Some("ns.alt")).unwrap();
        assert_eq!(c.zone, "gns.test");
        let c = GnsConfig::from_values(Some("file:/x"), Some("Other.Alt")).unwrap();
        assert_eq!(c.zone, "other.alt");
        assert!(GnsConfig::from_values(None, Some("bad zone")).is_err());
    }

    #[test]
    fn environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("namesock.toml");
        std::fs::write(
            &path,
            "gns = \"file:/from/file\"\nzone = \"file.alt\"\nkeepalive_ms = 5000\n",
        )
        .unwrap();
        let path = path.display().to_string();
        let env = |pairs: &'static [(&'static str, &'static str)], path: String| {
            move |key: &str| {
                if key == "NAMESOCK_CONFIG" {
                    return Some(path.clone());
                }
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = GnsConfig::from_lookup(env(&[], path.clone())).unwrap();
        assert_eq!(c.backend, Backend::File("/from/file".into()));
        assert_eq!(c.zone, "file.alt");
        let c = GnsConfig::from_lookup(env(
            &[("NAMESOCK_GNS", "file:/from/env"), ("NAMESOCK_ZONE", "")],
            path.clone(),
        ))
        .unwrap();
        assert_eq!(c.backend, Backend::File("/from/env".into()));
        assert_eq!(c.zone, "file.alt");
        let c = GnsConfig::from_lookup(|_| None).unwrap();
        assert_eq!(c.backend, Backend::File(default_file_dir()));
        assert_eq!(c.zone, DEFAULT_ZONE);
        std::fs::write(dir.path().join("bad.toml"), "gns = [").unwrap();
        let bad = dir.path().join("bad.toml").display().to_string();
        assert!(matches!(
            GnsConfig::from_lookup(env(&[], bad)),
            Err(ConfigError::Toml { .. })
        ));
        assert!(matches!(
            GnsConfig::from_lookup(env(&[], "/nonexistent.toml".into())),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn bind_key_files() {
        let text = "key \"gns-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n";
        assert_eq!(
            parse_tsig_key(text).unwrap(),
            TsigKey {
                name: "gns-key".into(),
                secret: b"secret".to_vec()
            }
        );
        assert!(parse_tsig_key(&text.replace("sha256", "md5")).is_err());
        assert!(parse_tsig_key("garbage").is_err());
    }
}
