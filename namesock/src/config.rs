//! Configuration: defaults, then an optional TOML file (`NAMESOCK_CONFIG`), then the
//! `NAMESOCK_*` environment variables, each layer overriding the one before.
//!
//! The file uses the environment names in lower case without the prefix:
//!
//! ```toml
//! zone = "ns.alt"
//! gns = "file:/var/lib/namesock/gns"
//! keepalive_ms = 2000
//! linger_ms = 30000
//! allow = "/etc/namesock/allow"
//! max_sessions_per_peer = 16
//! ```
//!
//! `gns` and `zone` are carried here only so that one file describes a deployment; the
//! resolver reads them itself (`namesock_resolver::Gns::from_env`), there is one parser.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::endpoint::Limits;
use crate::engine::congestion::{BadName, Congestion};
use crate::path_manager::LoopbackLocators;

/// Every setting of the engine, with its effective value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// GNS backend (`NAMESOCK_GNS`), interpreted by the resolver.
    pub gns: Option<String>,
    /// Managed zone (`NAMESOCK_ZONE`), interpreted by the resolver.
    pub zone: Option<String>,
    /// Identity key file (`NAMESOCK_KEY`); default [`crate::identity::default_key_path`].
    pub key: Option<PathBuf>,
    /// Name a serving process registers (`NAMESOCK_NAME`).
    pub name: Option<String>,
    /// Port the engine accepts flow paths on; 0 = ephemeral (`NAMESOCK_ENGINE_PORT`).
    pub engine_port: u16,
    /// A proxy relay (`NAMESOCK_PROXY=NAME:PORT`, `namesock run --via`, a name or
    /// `<guid>.<zone>` and its proxy port): connections to ordinary addresses go through it as
    /// namesock sessions, so they survive this host's moves.
    pub proxy: Option<String>,
    /// Relays a serving process registers with and lists in its record, so that clients
    /// reach it behind a NAT (`NAMESOCK_RELAY=ENTRY[,ENTRY...]`, at most 8; an entry is
    /// `ADDR:PORT`, a name or `<guid>.<zone>`).
    pub relays: Vec<RelayEntry>,
    /// Keepalive interval on an idle flow path (`NAMESOCK_KEEPALIVE_MS`).
    pub keepalive_ms: u64,
    /// Silence after which a flow path is declared dead (`NAMESOCK_PATH_DEAD_MS`).
    pub path_dead_ms: u64,
    /// Silence after which a flow path that owes an answer is suspect, and after which a
    /// stopped stream is probed with a PING; either way a client asks the GNS whether the
    /// server moved (`NAMESOCK_SUSPECT_MS`; at least 3 RTTs).
    pub suspect_ms: u64,
    /// How long a session without any flow path is kept (`NAMESOCK_LINGER_MS`).
    pub linger_ms: u64,
    /// Replay (unacknowledged) buffer per session and direction (`NAMESOCK_REPLAY_BYTES`).
    pub replay_bytes: usize,
    /// Connect timeout (`NAMESOCK_CONNECT_TIMEOUT_MS`).
    pub connect_timeout_ms: u64,
    /// tracing filter; logging is off when unset (`NAMESOCK_LOG`).
    pub log: Option<String>,
    /// Log file instead of stderr (`NAMESOCK_LOG_FILE`).
    pub log_file: Option<PathBuf>,
    /// Allow list of the GUIDs and names that may connect (`NAMESOCK_ALLOW`); unset: the
    /// key file's path with `.allow` appended, if that file exists; else everyone may.
    pub allow: Option<PathBuf>,
    /// Server sessions at once, lingering ones included (`NAMESOCK_MAX_SESSIONS`).
    pub max_sessions: usize,
    /// Server sessions one peer GUID holds at once (`NAMESOCK_MAX_SESSIONS_PER_PEER`).
    pub max_sessions_per_peer: usize,
    /// Bytes of replay and receive buffers all server sessions may hold together, counted
    /// at their capacity (`NAMESOCK_BUFFER_BUDGET`).
    pub buffer_budget: usize,
    /// Unauthenticated paths and unproven sessions per source address, an IPv4 address or
    /// an IPv6 /64 (`NAMESOCK_MAX_PREAUTH_PER_SOURCE`).
    pub max_preauth_per_source: usize,
    /// Ports served by name although the program binds them to loopback
    /// (`NAMESOCK_SERVE=8000,8001`).
    pub serve: Vec<u16>,
    /// Ports never served by name, whatever the program binds (`NAMESOCK_HIDE=...`).
    pub hide: Vec<u16>,
    /// Dial loopback locators found in records and MOVED frames: for a lab on one host's
    /// loopback only (`NAMESOCK_DIAL_LOOPBACK=true`); see [`LoopbackLocators`].
    pub dial_loopback: bool,
    /// Hand this process's client tickets on to the next process of this user at exit, and
    /// take one left by an earlier process (`NAMESOCK_SHARE_TICKETS`, default true; see
    /// [`crate::ticket_store`]).
    pub share_tickets: bool,
    /// Dial one more path to a peer when a session to it is established, so that the next
    /// connect to it sends its first frame at once (`NAMESOCK_SPARE_PATHS`, default true;
    /// see `crate::spare_paths`).
    pub spare_paths: bool,
    /// The TCP congestion control of flow paths (`NAMESOCK_PATH_CONGESTION`, e.g. `cubic`);
    /// unset: the host's default (see `crate::engine::congestion`).
    pub path_congestion: Option<Congestion>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gns: None,
            zone: None,
            key: None,
            name: None,
            engine_port: 0,
            relays: Vec::new(),
            proxy: None,
            keepalive_ms: 5_000,
            path_dead_ms: 15_000,
            suspect_ms: 200,
            linger_ms: 60_000,
            replay_bytes: 4 << 20,
            connect_timeout_ms: 10_000,
            log: None,
            log_file: None,
            allow: None,
            max_sessions: Limits::default().sessions,
            max_sessions_per_peer: Limits::default().sessions_per_peer,
            buffer_budget: Limits::default().buffer_budget,
            max_preauth_per_source: Limits::default().preauth_per_source,
            serve: Vec::new(),
            hide: Vec::new(),
            dial_loopback: false,
            share_tickets: true,
            spare_paths: true,
            path_congestion: None,
        }
    }
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("environment variable {var}={value:?}: {reason}")]
    Env {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error("{what} must be greater than zero")]
    Zero { what: &'static str },
    #[error("serve and hide list at most {max} ports each")]
    PortList { max: usize },
    #[error("{count} relays configured; a record lists at most {max}")]
    TooManyRelays { count: usize, max: usize },
}

/// One relay of `NAMESOCK_RELAY`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum RelayEntry {
    /// A bare address: registered with as is; its GUID cannot be checked.
    Addr(SocketAddr),
    /// A name (`relay`, `relay.ns.alt`) or `<guid>.<zone>`, normalized: resolved through the
    /// GNS like any peer, and the relay that answers must have the GUID it resolved to.
    Named(String),
}

/// A `NAMESOCK_RELAY` entry that is neither an address nor a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("relay {entry:?} is neither ADDR:PORT nor a name or <guid>.<zone> ({reason})")]
pub struct RelayEntryError {
    entry: String,
    reason: namesock_resolver::name::NameError,
}

impl std::str::FromStr for RelayEntry {
    type Err = RelayEntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(RelayEntry::Addr(addr));
        }
        let name = namesock_resolver::name::normalize(s);
        namesock_resolver::name::check_name(&name).map_err(|reason| RelayEntryError {
            entry: s.to_owned(),
            reason,
        })?;
        Ok(RelayEntry::Named(name))
    }
}

impl TryFrom<String> for RelayEntry {
    type Error = RelayEntryError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl std::fmt::Display for RelayEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayEntry::Addr(a) => write!(f, "{a}"),
            RelayEntry::Named(n) => f.write_str(n),
        }
    }
}

/// Most ports `serve` or `hide` may list.
pub const MAX_PORT_LIST: usize = 1024;

/// A comma-separated list of ports from `var`, replacing `slot` when set.
fn ports(
    env: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    slot: &mut Vec<u16>,
) -> Result<(), ConfigError> {
    let Some(value) = env(var).filter(|v| !v.trim().is_empty()) else {
        return Ok(());
    };
    let parsed: Result<Vec<u16>, _> = value.split(',').map(|p| p.trim().parse::<u16>()).collect();
    match parsed {
        Ok(list) if !list.contains(&0) => {
            *slot = list;
            Ok(())
        }
        Ok(_) => Err(ConfigError::Env {
            var,
            value,
            reason: "port 0 is not a port".into(),
        }),
        Err(e) => Err(ConfigError::Env {
            var,
            reason: format!("a comma-separated list of ports: {e}"),
            value,
        }),
    }
}

impl Config {
    /// Defaults, then the file named by `NAMESOCK_CONFIG` (if set), then the environment.
    pub fn load() -> Result<Config, ConfigError> {
        Self::load_from(|var| std::env::var(var).ok())
    }

    /// Like [`Config::load`] with an explicit environment (for tests and embedders).
    pub fn load_from(env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut cfg = match env("NAMESOCK_CONFIG").filter(|p| !p.is_empty()) {
            Some(path) => Config::from_file(Path::new(&path))?,
            None => Config::default(),
        };
        cfg.apply_env(&env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Defaults overridden by a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Defaults overridden by TOML text.
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn num<T: std::str::FromStr>(
            env: &impl Fn(&str) -> Option<String>,
            var: &'static str,
            slot: &mut T,
        ) -> Result<(), ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            if let Some(value) = env(var).filter(|v| !v.is_empty()) {
                *slot = value.trim().parse().map_err(|e: T::Err| ConfigError::Env {
                    var,
                    reason: e.to_string(),
                    value,
                })?;
            }
            Ok(())
        }
        let text = |var: &str, slot: &mut Option<String>| {
            if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                *slot = Some(v);
            }
        };
        text("NAMESOCK_GNS", &mut self.gns);
        text("NAMESOCK_ZONE", &mut self.zone);
        text("NAMESOCK_NAME", &mut self.name);
        text("NAMESOCK_LOG", &mut self.log);
        text("NAMESOCK_PROXY", &mut self.proxy);
        if let Some(v) = env("NAMESOCK_KEY").filter(|v| !v.is_empty()) {
            self.key = Some(PathBuf::from(v));
        }
        if let Some(v) = env("NAMESOCK_LOG_FILE").filter(|v| !v.is_empty()) {
            self.log_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("NAMESOCK_ALLOW").filter(|v| !v.is_empty()) {
            self.allow = Some(PathBuf::from(v));
        }
        num(env, "NAMESOCK_MAX_SESSIONS", &mut self.max_sessions)?;
        num(
            env,
            "NAMESOCK_MAX_SESSIONS_PER_PEER",
            &mut self.max_sessions_per_peer,
        )?;
        num(env, "NAMESOCK_BUFFER_BUDGET", &mut self.buffer_budget)?;
        num(
            env,
            "NAMESOCK_MAX_PREAUTH_PER_SOURCE",
            &mut self.max_preauth_per_source,
        )?;
        num(env, "NAMESOCK_ENGINE_PORT", &mut self.engine_port)?;
        if let Some(value) = env("NAMESOCK_RELAY").filter(|v| !v.is_empty()) {
            self.relays = value
                .split(',')
                .map(str::parse::<RelayEntry>)
                .collect::<Result<_, _>>()
                .map_err(|e| ConfigError::Env {
                    var: "NAMESOCK_RELAY",
                    reason: e.to_string(),
                    value: value.clone(),
                })?;
        }
        num(env, "NAMESOCK_KEEPALIVE_MS", &mut self.keepalive_ms)?;
        num(env, "NAMESOCK_PATH_DEAD_MS", &mut self.path_dead_ms)?;
        num(env, "NAMESOCK_SUSPECT_MS", &mut self.suspect_ms)?;
        num(env, "NAMESOCK_LINGER_MS", &mut self.linger_ms)?;
        num(env, "NAMESOCK_REPLAY_BYTES", &mut self.replay_bytes)?;
        num(
            env,
            "NAMESOCK_CONNECT_TIMEOUT_MS",
            &mut self.connect_timeout_ms,
        )?;
        num(env, "NAMESOCK_DIAL_LOOPBACK", &mut self.dial_loopback)?;
        num(env, "NAMESOCK_SHARE_TICKETS", &mut self.share_tickets)?;
        num(env, "NAMESOCK_SPARE_PATHS", &mut self.spare_paths)?;
        if let Some(value) = env("NAMESOCK_PATH_CONGESTION").filter(|v| !v.is_empty()) {
            let cc = value
                .trim()
                .parse()
                .map_err(|e: BadName| ConfigError::Env {
                    var: "NAMESOCK_PATH_CONGESTION",
                    reason: e.to_string(),
                    value: value.clone(),
                })?;
            self.path_congestion = Some(cc);
        }
        ports(env, "NAMESOCK_SERVE", &mut self.serve)?;
        ports(env, "NAMESOCK_HIDE", &mut self.hide)?;
        Ok(())
    }

    /// Whether a listener bound to `bound` is served to other hosts by name: hidden ports
    /// never, ports named in `serve` always, otherwise unless the program bound it to
    /// loopback (it meant it for this host only; IPv4-mapped loopback counts too).
    pub fn exposes(&self, bound: &SocketAddr) -> bool {
        let port = bound.port();
        if self.hide.contains(&port) {
            return false;
        }
        if self.serve.contains(&port) {
            return true;
        }
        let loopback = match bound.ip() {
            IpAddr::V4(ip) => ip.is_loopback(),
            IpAddr::V6(ip) => {
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        };
        !loopback
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.serve.len() > MAX_PORT_LIST || self.hide.len() > MAX_PORT_LIST {
            return Err(ConfigError::PortList { max: MAX_PORT_LIST });
        }
        if self.relays.len() > namesock_resolver::record::MAX_RELAYS {
            return Err(ConfigError::TooManyRelays {
                count: self.relays.len(),
                max: namesock_resolver::record::MAX_RELAYS,
            });
        }
        for (what, v) in [
            ("keepalive_ms", self.keepalive_ms),
            ("path_dead_ms", self.path_dead_ms),
            ("suspect_ms", self.suspect_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("replay_bytes", self.replay_bytes as u64),
            ("max_sessions", self.max_sessions as u64),
            ("max_sessions_per_peer", self.max_sessions_per_peer as u64),
            ("buffer_budget", self.buffer_budget as u64),
            ("max_preauth_per_source", self.max_preauth_per_source as u64),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero { what });
            }
        }
        Ok(())
    }

    /// The identity key file: the configured one, else the default location.
    pub fn key_path(&self) -> PathBuf {
        self.key
            .clone()
            .unwrap_or_else(namesock_identity::default_key_path)
    }

    /// The allow file: the configured one (which must exist), else the key file's path with
    /// `.allow` appended (used only if it exists).
    pub fn allow_path(&self) -> (PathBuf, bool) {
        match &self.allow {
            Some(p) => (p.clone(), true),
            None => {
                let mut p = self.key_path().into_os_string();
                p.push(".allow");
                (PathBuf::from(p), false)
            }
        }
    }

    /// The server's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            sessions: self.max_sessions,
            sessions_per_peer: self.max_sessions_per_peer,
            buffer_budget: self.buffer_budget,
            preauth_per_source: self.max_preauth_per_source,
        }
    }

    /// Whether the path manager dials loopback locators from records and MOVED frames.
    pub fn loopback_locators(&self) -> LoopbackLocators {
        if self.dial_loopback {
            LoopbackLocators::Dial
        } else {
            LoopbackLocators::Refuse
        }
    }

    pub fn keepalive(&self) -> Duration {
        Duration::from_millis(self.keepalive_ms)
    }

    pub fn path_dead(&self) -> Duration {
        Duration::from_millis(self.path_dead_ms)
    }

    pub fn suspect(&self) -> Duration {
        Duration::from_millis(self.suspect_ms)
    }

    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ns.toml");
        std::fs::write(
            &file,
            "linger_ms = 500\nkeepalive_ms = 100\nzone = \"x.alt\"\n",
        )
        .unwrap();
        let f = file.to_str().unwrap().to_owned();
        let cfg = Config::load_from(|v| match v {
            "NAMESOCK_CONFIG" => Some(f.clone()),
            "NAMESOCK_LINGER_MS" => Some("700".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.linger_ms, 700);
        assert_eq!(cfg.keepalive_ms, 100);
        assert_eq!(cfg.zone.as_deref(), Some("x.alt"));
        assert_eq!(cfg.path_dead_ms, Config::default().path_dead_ms);
    }

    #[test]
    fn exposure_follows_the_bind_unless_a_port_is_named() {
        let cfg = Config::load_from(|v| match v {
            "NAMESOCK_SERVE" => Some("8001, 8003".into()),
            "NAMESOCK_HIDE" => Some("8002,8003".into()),
            _ => None,
        })
        .unwrap();
        let at = |s: &str| cfg.exposes(&s.parse().unwrap());
        assert!(at("0.0.0.0:8000"));
        assert!(at("[::]:8000"));
        assert!(at("192.0.2.1:8000"));
        assert!(!at("127.0.0.1:8000"));
        assert!(!at("127.1.2.3:8000"));
        assert!(!at("[::1]:8000"));
        assert!(!at("[::ffff:127.0.0.1]:8000"));
        assert!(at("127.0.0.1:8001"), "served by name on purpose");
        assert!(!at("0.0.0.0:8002"), "hidden on purpose");
        assert!(!at("127.0.0.1:8003"), "hide wins");
        for bad in ["80,x", "0", "70000"] {
            let err = Config::load_from(|v| (v == "NAMESOCK_SERVE").then(|| bad.into()));
            assert!(matches!(err, Err(ConfigError::Env { .. })), "{bad}");
        }
        let toml = Config::from_toml("serve = [8000]\nhide = [22]\n").unwrap();
        assert_eq!((toml.serve, toml.hide), (vec![8000], vec![22]));
    }

    #[test]
    fn bad_values_are_errors() {
        let err = Config::load_from(|v| (v == "NAMESOCK_ENGINE_PORT").then(|| "99999".into()));
        assert!(matches!(err, Err(ConfigError::Env { .. })));
        let err = Config::load_from(|v| (v == "NAMESOCK_KEEPALIVE_MS").then(|| "0".into()));
        assert!(matches!(err, Err(ConfigError::Zero { .. })));
        assert!(Config::from_toml("bogus = 1").is_err());
        let err =
            Config::load_from(|v| (v == "NAMESOCK_MAX_SESSIONS_PER_PEER").then(|| "0".into()));
        assert!(matches!(err, Err(ConfigError::Zero { .. })));
    }

    #[test]
    fn the_path_congestion_control_is_a_name_from_the_environment_or_the_file() {
        assert_eq!(
            Config::default().path_congestion,
            None,
            "the host's default"
        );
        let cfg =
            Config::load_from(|v| (v == "NAMESOCK_PATH_CONGESTION").then(|| "bbr".into())).unwrap();
        assert_eq!(
            cfg.path_congestion.map(|c| c.to_string()).as_deref(),
            Some("bbr")
        );
        let toml = Config::from_toml("path_congestion = \"cubic\"\n").unwrap();
        assert_eq!(toml.path_congestion, Some("cubic".parse().unwrap()));
        for bad in ["BBR", "a b", "sixteen_letters_"] {
            let err = Config::load_from(|v| (v == "NAMESOCK_PATH_CONGESTION").then(|| bad.into()));
            assert!(
                matches!(
                    err,
                    Err(ConfigError::Env {
                        var: "NAMESOCK_PATH_CONGESTION",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert!(Config::from_toml("path_congestion = \"x/y\"\n").is_err());
    }

    #[test]
    fn limits_and_the_allow_file_come_from_the_environment() {
        let cfg = Config::load_from(|v| match v {
            "NAMESOCK_MAX_SESSIONS_PER_PEER" => Some("3".into()),
            "NAMESOCK_BUFFER_BUDGET" => Some("1000000".into()),
            "NAMESOCK_KEY" => Some("/k/key".into()),
            _ => None,
        })
        .unwrap();
        let l = cfg.limits();
        assert_eq!((l.sessions_per_peer, l.buffer_budget), (3, 1_000_000));
        assert_eq!(l.sessions, Limits::default().sessions);
        assert_eq!(cfg.allow_path(), (PathBuf::from("/k/key.allow"), false));
        let cfg = Config::load_from(|v| (v == "NAMESOCK_ALLOW").then(|| "/a".into())).unwrap();
        assert_eq!(cfg.allow_path(), (PathBuf::from("/a"), true));
    }

    #[test]
    fn relays_come_from_a_comma_separated_list_and_are_bounded() {
        let guid = namesock_identity::Keypair::from_seed(&[4; 32]).guid();
        let list = format!("10.0.0.1:7000, [2001:db8::1]:7000,Relay.ns.alt.,{guid}.ns.alt,r1");
        let cfg = Config::load_from(|v| (v == "NAMESOCK_RELAY").then(|| list.clone())).unwrap();
        assert_eq!(
            cfg.relays,
            [
                RelayEntry::Addr("10.0.0.1:7000".parse().unwrap()),
                RelayEntry::Addr("[2001:db8::1]:7000".parse().unwrap()),
                RelayEntry::Named("relay.ns.alt".into()),
                RelayEntry::Named(format!("{guid}.ns.alt")),
                RelayEntry::Named("r1".into()),
            ]
        );
        for bad in ["relay_1:7000", "10.0.0.1:", "a..b", ""] {
            let err = bad.parse::<RelayEntry>().unwrap_err();
            assert!(
                err.to_string().contains("neither ADDR:PORT"),
                "{bad}: {err}"
            );
        }
        let err = Config::load_from(|v| (v == "NAMESOCK_RELAY").then(|| "r1,bad name".into()));
        assert!(matches!(
            err,
            Err(ConfigError::Env {
                var: "NAMESOCK_RELAY",
                ..
            })
        ));
        let nine = ["10.0.0.1:7000"; 9].join(",");
        let err = Config::load_from(|v| (v == "NAMESOCK_RELAY").then(|| nine.clone()));
        assert!(matches!(
            err,
            Err(ConfigError::TooManyRelays { count: 9, .. })
        ));
    }
}
