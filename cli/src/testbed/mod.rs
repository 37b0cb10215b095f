//! A network-namespace test bed: hosts joined through a router, which can move, lose links and
//! lose packets while real programs run on them.
//!
//! Layout: one router namespace `<prefix>-router` with IP forwarding, and one namespace
//! `<prefix>-<host>` per host. Each host link is a veth pair (router side `v<id>`, host side
//! `eth<i>`) on its own subnet from the bed's [`Plan`]; the host has a default route over each
//! link (metric 100 for the first, 200 for the second, ...). Moving a host gives a link a new
//! subnet (a new address, unreachable from the old one); loss and cuts are nftables rules inside
//! the host's namespace that spare loopback, so a host's own local traffic is never touched.
//!
//! Everything it builds is named with the prefix and removed when the [`Testbed`] is dropped
//! (processes in its namespaces are killed first). [`Testbed::sweep_stale`] removes what a killed
//! run left behind. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and the `ip` and `nft` tools.

mod delay;
pub mod demo;
mod forward;
mod measure;
mod plan;
mod process;
pub mod scenario;
mod state;

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

pub use delay::DelayLine;
pub use measure::{Progress, Sample, Stall, median, stalls};
pub use plan::{Plan, Subnet, SubnetAllocator};
pub use process::{Process, run_with_input};
use process::{ip, kill_pid, tool};
pub use state::{HostState, LinkState, State};

/// What can go wrong while building or changing a test bed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {after:?}")]
    Timeout { command: String, after: Duration },
    #[error("{0:?} is not a usable name (letters, digits and '-', at most 40 characters)")]
    BadName(String),
    #[error("the test bed already has a host named {0:?}")]
    HostExists(String),
    #[error("the test bed has no host named {0:?}")]
    NoSuchHost(String),
    #[error("host {host:?} has no link {index}")]
    NoSuchLink { host: String, index: usize },
    #[error("all {} subnets of this test bed are used", plan::MAX_SUBNET)]
    SubnetsExhausted,
    #[error("loss must be a percentage from 0 to 100, not {0}")]
    BadLoss(f64),
    #[error("test bed state file {path}: {reason}")]
    State { path: String, reason: String },
}

type Result<T> = std::result::Result<T, TestbedError>;

/// Route metric of a host's link `i`: the first link is preferred.
fn metric(link: usize) -> u32 {
    100 * (link as u32 + 1)
}

/// A test bed: the router and its hosts. Cheap to clone; the namespaces are removed when the last
/// clone (and every [`Host`] handle) is gone, unless [`Testbed::keep`] was called.
#[derive(Clone)]
pub struct Testbed {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    keep: Mutex<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !*self.keep.get_mut() {
            remove_prefix(&self.state.get_mut().prefix);
        }
    }
}

impl Testbed {
    /// A new bed whose every namespace name starts with `prefix` (e.g. `nst-<scenario>-<pid>`),
    /// with the router namespace up and forwarding. Leftovers with the same prefix are removed
    /// first.
    pub fn new(prefix: &str) -> Result<Testbed> {
        check_name(prefix)?;
        remove_prefix(prefix);
        let state = State::new(prefix);
        let bed = Testbed::from_state(state);
        bed.build_router()?;
        Ok(bed)
    }

    /// A bed for a test scenario: prefix `nst-<scenario>-<pid>`, after removing the beds of
    /// earlier runs that were killed before they could clean up.
    pub fn for_scenario(scenario: &str) -> Result<Testbed> {
        Testbed::sweep_stale();
        Testbed::new(&format!(
            "{SCENARIO_PREFIX}{scenario}-{}",
            std::process::id()
        ))
    }

    /// Take over a bed described by saved state (see [`Testbed::save`]).
    pub fn from_state(state: State) -> Testbed {
        Testbed {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                keep: Mutex::new(false),
            }),
        }
    }

    /// Load a bed saved with [`Testbed::save`]. The loaded bed is kept on drop (call
    /// [`Testbed::discard`] to remove it).
    pub fn load(path: &Path) -> Result<Testbed> {
        let bed = Testbed::from_state(State::load(path)?);
        bed.keep();
        Ok(bed)
    }

    /// Save the bed's description so another process can [`Testbed::load`] it.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner.state.lock().save(path)
    }

    /// Leave the namespaces in place when the bed is dropped.
    pub fn keep(&self) {
        *self.inner.keep.lock() = true;
    }

    /// Remove the namespaces when the bed is dropped (the default for a new bed).
    pub fn discard(&self) {
        *self.inner.keep.lock() = false;
    }

    pub fn prefix(&self) -> String {
        self.inner.state.lock().prefix.clone()
    }

    pub fn plan(&self) -> Plan {
        self.inner.state.lock().plan
    }

    /// The router's namespace name.
    pub fn router_namespace(&self) -> String {
        self.inner.state.lock().router_namespace()
    }

    /// A copy of the bed's current description.
    pub fn state(&self) -> State {
        self.inner.state.lock().clone()
    }

    /// Remove the namespaces whose names start with `prefix`, killing what runs in them.
    pub fn sweep(prefix: &str) {
        remove_prefix(prefix);
    }

    /// Remove the scenario beds (`nst-<scenario>-<pid>-...`) whose process no longer runs.
    pub fn sweep_stale() {
        for namespace in namespaces() {
            let stale = scenario_pid(&namespace)
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            if stale {
                remove_namespace(&namespace);
            }
        }
    }

    /// Add a host with one link to the router.
    pub fn add_host(&self, name: &str) -> Result<Host> {
        check_host_name(name)?;
        let namespace = {
            let mut state = self.inner.state.lock();
            if name == "router" || state.host(name).is_some() {
                return Err(TestbedError::HostExists(name.to_owned()));
            }
            state.hosts.push(HostState {
                name: name.to_owned(),
                links: Vec::new(),
            });
            state.host_namespace(name)
        };
        ip(&["netns", "add", &namespace])?;
        in_namespace(&namespace, &["ip", "link", "set", "lo", "up"])?;
        // No duplicate address detection: a moved host's IPv6 address works at once.
        sysctl(&namespace, "net/ipv6/conf/all/accept_dad", "0")?;
        sysctl(&namespace, "net/ipv6/conf/default/accept_dad", "0")?;
        // Keep IPv6 addresses over link down/up, as IPv4 does.
        sysctl(&namespace, "net/ipv6/conf/all/keep_addr_on_down", "1")?;
        sysctl(&namespace, "net/ipv6/conf/default/keep_addr_on_down", "1")?;
        let host = self.host(name)?;
        host.add_link()?;
        Ok(host)
    }

    /// A handle on an existing host.
    pub fn host(&self, name: &str) -> Result<Host> {
        if self.inner.state.lock().host(name).is_none() {
            return Err(TestbedError::NoSuchHost(name.to_owned()));
        }
        Ok(Host {
            bed: self.clone(),
            name: name.to_owned(),
        })
    }

    /// Names of the hosts, in the order they were added.
    pub fn host_names(&self) -> Vec<String> {
        let state = self.inner.state.lock();
        state.hosts.iter().map(|h| h.name.clone()).collect()
    }

    /// Drop `percent` % of the packets the router forwards, in each direction, on every path.
    pub fn add_loss(&self, percent: f64) -> Result<()> {
        let rules = loss_rules(percent, "forward")?;
        nft_replace(&self.router_namespace(), LOSS_TABLE, &rules)
    }

    /// Stop dropping packets at the router.
    pub fn clear_loss(&self) -> Result<()> {
        nft_delete(&self.router_namespace(), LOSS_TABLE)
    }

    fn build_router(&self) -> Result<()> {
        let namespace = self.router_namespace();
        ip(&["netns", "add", &namespace])?;
        in_namespace(&namespace, &["ip", "link", "set", "lo", "up"])?;
        sysctl(&namespace, "net/ipv4/ip_forward", "1")?;
        sysctl(&namespace, "net/ipv6/conf/all/forwarding", "1")?;
        sysctl(&namespace, "net/ipv6/conf/all/accept_dad", "0")?;
        sysctl(&namespace, "net/ipv6/conf/default/accept_dad", "0")
    }
}

/// A TCP port that is free on this machine now, for a test server. Taken below the kernel's
/// ephemeral range (32768 and up by default), where every outgoing connection and every
/// port-0 listener (engines included) gets its port: a port picked there can be taken by
/// someone else between the check and the server's `bind`.
pub fn free_port() -> u16 {
    let free = |port: u16| {
        std::net::TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, port)).is_ok()
            && std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)).is_ok()
    };
    (0..1000)
        .map(|_| 20_000 + rand::random::<u16>() % 12_000)
        .find(|&port| free(port))
        .unwrap_or(0)
}

/// Is this process running as root (effective uid 0), as a test bed needs?
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            // Uid: real effective saved filesystem
            line.split_whitespace().nth(2).map(|uid| uid == "0")
        })
        .unwrap_or(false)
}

/// Prefix of the beds made by [`Testbed::for_scenario`].
pub const SCENARIO_PREFIX: &str = "nst-";

/// One host of a bed.
#[derive(Clone)]
pub struct Host {
    bed: Testbed,
    name: String,
}

impl Host {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's namespace name (for `ip netns exec`).
    pub fn namespace(&self) -> String {
        self.bed.inner.state.lock().host_namespace(&self.name)
    }

    /// A command that runs `program` inside the host: `ip netns exec <ns> program`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec"])
            .arg(self.namespace())
            .arg(program);
        command
    }

    /// Run `argv` inside the host to completion (at most `timeout`).
    pub fn run(&self, argv: &[&str], timeout: Duration) -> Result<Output> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| TestbedError::BadName(String::new()))?;
        let mut command = self.command(program);
        command.args(args);
        run_with_input(command, None, timeout)
    }

    /// Start `program args...` inside the host; it is killed when the [`Process`] is dropped.
    pub fn spawn<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Result<Process> {
        let mut command = self.command(program);
        command.args(args);
        Process::spawn(command)
    }

    /// The host's current addresses, per link, IPv4 first.
    pub fn addrs(&self) -> Vec<IpAddr> {
        self.with_state(|h| h.links.iter().flat_map(|l| l.subnet.host_addrs()).collect())
            .unwrap_or_default()
    }

    /// The host's IPv4 address on its first link.
    pub fn v4(&self) -> Ipv4Addr {
        self.link(0)
            .map(|l| l.subnet.host_v4())
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// The host's IPv6 address on its first link.
    pub fn v6(&self) -> Ipv6Addr {
        self.link(0)
            .map(|l| l.subnet.host_v6())
            .unwrap_or(Ipv6Addr::UNSPECIFIED)
    }

    /// The description of link `index`.
    pub fn link(&self, index: usize) -> Result<LinkState> {
        self.with_state(|h| h.links.get(index).cloned())?
            .ok_or_else(|| TestbedError::NoSuchLink {
                host: self.name.clone(),
                index,
            })
    }

    /// How many links the host has.
    pub fn link_count(&self) -> usize {
        self.with_state(|h| h.links.len()).unwrap_or(0)
    }

    /// Join the host to the router by one more veth pair on a new subnet; returns its index.
    pub fn add_link(&self) -> Result<usize> {
        let (link, index) = {
            let mut state = self.bed.inner.state.lock();
            let subnet = state.allocate_subnet()?;
            let id = state.allocate_link_id();
            let host = state
                .host_mut(&self.name)
                .ok_or_else(|| TestbedError::NoSuchHost(self.name.clone()))?;
            let index = host.links.len();
            let link = LinkState {
                router_if: format!("v{id}"),
                host_if: host.free_interface_name(),
                subnet,
                up: true,
            };
            host.links.push(link.clone());
            (link, index)
        };
        let router = self.bed.router_namespace();
        let namespace = self.namespace();
        ip(&[
            "-n",
            &router,
            "link",
            "add",
            &link.router_if,
            "type",
            "veth",
            "peer",
            "name",
            &link.host_if,
            "netns",
            &namespace,
        ])?;
        ip(&["-n", &router, "link", "set", &link.router_if, "up"])?;
        add_router_addrs(&router, &link)?;
        ip(&["-n", &namespace, "link", "set", &link.host_if, "up"])?;
        add_host_addrs(&namespace, &link, index)?;
        Ok(index)
    }

    /// Move the host: its first link gets a new subnet (the old address is removed from host and
    /// router, so it is unreachable; routes follow). Returns the new IPv4 and IPv6 addresses.
    pub fn move_to_new_subnet(&self) -> Result<(Ipv4Addr, Ipv6Addr)> {
        self.move_link(0)
    }

    /// Give link `index` a new subnet, as [`Host::move_to_new_subnet`] does for the first link.
    pub fn move_link(&self, index: usize) -> Result<(Ipv4Addr, Ipv6Addr)> {
        let old = self.link(index)?;
        let subnet = self.bed.inner.state.lock().allocate_subnet()?;
        let new = LinkState {
            subnet,
            ..old.clone()
        };
        let router = self.bed.router_namespace();
        let namespace = self.namespace();
        add_router_addrs(&router, &new)?;
        del_addrs(&namespace, &old.host_if, &old.subnet.host_addrs())?;
        add_host_addrs(&namespace, &new, index)?;
        del_addrs(
            &router,
            &old.router_if,
            &[old.subnet.router_v4().into(), old.subnet.router_v6().into()],
        )?;
        self.set_link(index, new)?;
        Ok((subnet.host_v4(), subnet.host_v6()))
    }

    /// Move link `index` make-before-break: the new address is added (and becomes the source
    /// of new connections), both work for `overlap`, then the old one is removed. Connections
    /// on the old address live until then, so a server can announce where it went.
    pub fn move_link_with_overlap(
        &self,
        index: usize,
        overlap: Duration,
    ) -> Result<(Ipv4Addr, Ipv6Addr)> {
        let old = self.link(index)?;
        let subnet = self.bed.inner.state.lock().allocate_subnet()?;
        let new = LinkState {
            subnet,
            ..old.clone()
        };
        let router = self.bed.router_namespace();
        let namespace = self.namespace();
        add_router_addrs(&router, &new)?;
        add_host_addrs(&namespace, &new, index)?;
        self.set_link(index, new)?;
        std::thread::sleep(overlap);
        del_addrs(&namespace, &old.host_if, &old.subnet.host_addrs())?;
        del_addrs(
            &router,
            &old.router_if,
            &[old.subnet.router_v4().into(), old.subnet.router_v6().into()],
        )?;
        Ok((subnet.host_v4(), subnet.host_v6()))
    }

    /// Move the host to a new link: a new veth pair on a new subnet replaces link `index` (the
    /// old interface disappears, as when a laptop goes from one network to another).
    pub fn move_to_new_link(&self, index: usize) -> Result<(Ipv4Addr, Ipv6Addr)> {
        let old = self.link(index)?;
        let added = self.add_link()?;
        let new = self.link(added)?;
        ip(&[
            "-n",
            &self.bed.router_namespace(),
            "link",
            "del",
            &old.router_if,
        ])?;
        // The new pair takes the old one's place (and interface name slot stays unique).
        self.with_state_mut(|h| {
            let link = h.links.remove(added);
            h.links[index] = link;
        })?;
        Ok((new.subnet.host_v4(), new.subnet.host_v6()))
    }

    /// Take link `index` down on the host side (its routes go with it).
    pub fn link_down(&self, index: usize) -> Result<()> {
        let link = self.link(index)?;
        ip(&[
            "-n",
            &self.namespace(),
            "link",
            "set",
            &link.host_if,
            "down",
        ])?;
        self.set_link(index, LinkState { up: false, ..link })
    }

    /// Bring link `index` back up, with its routes.
    pub fn link_up(&self, index: usize) -> Result<()> {
        let link = self.link(index)?;
        let namespace = self.namespace();
        ip(&["-n", &namespace, "link", "set", &link.host_if, "up"])?;
        add_default_routes(&namespace, &link, index)?;
        self.set_link(index, LinkState { up: true, ..link })
    }

    /// Cut the host off: every packet in or out of it (except loopback) is dropped, but its
    /// addresses and links stay. Undo with [`Host::restore`].
    pub fn cut(&self) -> Result<()> {
        let rules = "  iifname \"lo\" accept\n  drop\n";
        let script = format!(
            "  chain input {{\n    type filter hook input priority -10; policy accept;\n{rules}  }}\n  \
             chain output {{\n    type filter hook output priority -10; policy accept;\n    \
             oifname \"lo\" accept\n    drop\n  }}\n"
        );
        nft_replace(&self.namespace(), CUT_TABLE, &script)
    }

    /// Undo [`Host::cut`].
    pub fn restore(&self) -> Result<()> {
        nft_delete(&self.namespace(), CUT_TABLE)
    }

    /// Drop `percent` % of the packets into and out of the host (loopback spared).
    pub fn add_loss(&self, percent: f64) -> Result<()> {
        let mut rules = loss_rules(percent, "input")?;
        rules.push_str(&loss_rules(percent, "output")?);
        nft_replace(&self.namespace(), LOSS_TABLE, &rules)
    }

    /// Stop dropping packets at the host.
    pub fn clear_loss(&self) -> Result<()> {
        nft_delete(&self.namespace(), LOSS_TABLE)
    }

    /// Limit the host's sending rate on every link to `kbit_per_s` (a token-bucket qdisc), so
    /// that a fast transfer lasts long enough to move during it; `None` removes the limit.
    pub fn limit_rate(&self, kbit_per_s: Option<u64>) -> Result<()> {
        let namespace = self.namespace();
        let interfaces: Vec<String> =
            self.with_state(|h| h.links.iter().map(|l| l.host_if.clone()).collect())?;
        for interface in interfaces {
            match kbit_per_s {
                Some(rate) => {
                    let rate = format!("{rate}kbit");
                    in_namespace(
                        &namespace,
                        &[
                            "tc", "qdisc", "replace", "dev", &interface, "root", "tbf", "rate",
                            &rate, "burst", "64kb", "latency", "200ms",
                        ],
                    )?;
                }
                None => {
                    // Absent already is fine.
                    let _ = in_namespace(
                        &namespace,
                        &["tc", "qdisc", "del", "dev", &interface, "root"],
                    );
                }
            }
        }
        Ok(())
    }

    fn with_state<T>(&self, f: impl FnOnce(&HostState) -> T) -> Result<T> {
        let state = self.bed.inner.state.lock();
        state
            .host(&self.name)
            .map(f)
            .ok_or_else(|| TestbedError::NoSuchHost(self.name.clone()))
    }

    fn with_state_mut<T>(&self, f: impl FnOnce(&mut HostState) -> T) -> Result<T> {
        let mut state = self.bed.inner.state.lock();
        state
            .host_mut(&self.name)
            .map(f)
            .ok_or_else(|| TestbedError::NoSuchHost(self.name.clone()))
    }

    fn set_link(&self, index: usize, link: LinkState) -> Result<()> {
        self.with_state_mut(|h| h.links[index] = link)
    }
}

const LOSS_TABLE: &str = "namesock_loss";
const CUT_TABLE: &str = "namesock_cut";

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(TestbedError::BadName(name.to_owned()))
    }
}

/// Host names are single words, so that a namespace name `<prefix>-<host>` can be split.
fn check_host_name(name: &str) -> Result<()> {
    check_name(name)?;
    if name.bytes().all(|b| b.is_ascii_alphanumeric()) && name.len() <= 15 {
        Ok(())
    } else {
        Err(TestbedError::BadName(name.to_owned()))
    }
}

/// The nftables chain that drops `percent` % of the packets at `hook`, sparing loopback.
fn loss_rules(percent: f64, hook: &str) -> Result<String> {
    if !(0.0..=100.0).contains(&percent) {
        return Err(TestbedError::BadLoss(percent));
    }
    let threshold = (percent / 100.0 * 65536.0).round() as u32;
    let lo = if hook == "output" {
        "oifname"
    } else {
        "iifname"
    };
    Ok(format!(
        "  chain {hook} {{\n    type filter hook {hook} priority 0; policy accept;\n    \
         {lo} \"lo\" accept\n    meta random & 65535 < {threshold} drop\n  }}\n"
    ))
}

/// Create (or replace) table `inet <table>` with `body` in `namespace`.
fn nft_replace(namespace: &str, table: &str, body: &str) -> Result<()> {
    // Declaring the table first makes the delete succeed when it did not exist yet.
    let script =
        format!("table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n{body}}}\n");
    tool(
        "ip",
        &["netns", "exec", namespace, "nft", "-f", "-"],
        Some(&script),
    )
    .map(drop)
}

/// Remove table `inet <table>` from `namespace` if it is there.
fn nft_delete(namespace: &str, table: &str) -> Result<()> {
    let script = format!("table inet {table}\ndelete table inet {table}\n");
    tool(
        "ip",
        &["netns", "exec", namespace, "nft", "-f", "-"],
        Some(&script),
    )
    .map(drop)
}

fn in_namespace(namespace: &str, argv: &[&str]) -> Result<String> {
    let mut args = vec!["netns", "exec", namespace];
    args.extend_from_slice(argv);
    tool("ip", &args, None)
}

/// Write `value` to `/proc/sys/<key>` inside `namespace`.
fn sysctl(namespace: &str, key: &str, value: &str) -> Result<()> {
    let script = format!("echo {value} > /proc/sys/{key}");
    in_namespace(namespace, &["sh", "-c", &script]).map(drop)
}

fn add_router_addrs(router: &str, link: &LinkState) -> Result<()> {
    let v4 = format!("{}/24", link.subnet.router_v4());
    let v6 = format!("{}/64", link.subnet.router_v6());
    ip(&["-n", router, "addr", "add", &v4, "dev", &link.router_if])?;
    ip(&[
        "-n",
        router,
        "addr",
        "add",
        &v6,
        "dev",
        &link.router_if,
        "nodad",
    ])
    .map(drop)
}

fn add_host_addrs(namespace: &str, link: &LinkState, index: usize) -> Result<()> {
    let v4 = format!("{}/24", link.subnet.host_v4());
    let v6 = format!("{}/64", link.subnet.host_v6());
    ip(&["-n", namespace, "addr", "add", &v4, "dev", &link.host_if])?;
    ip(&[
        "-n",
        namespace,
        "addr",
        "add",
        &v6,
        "dev",
        &link.host_if,
        "nodad",
    ])?;
    add_default_routes(namespace, link, index)
}

fn add_default_routes(namespace: &str, link: &LinkState, index: usize) -> Result<()> {
    let metric = metric(index).to_string();
    let (v4, v6) = (
        link.subnet.router_v4().to_string(),
        link.subnet.router_v6().to_string(),
    );
    ip(&[
        "-n",
        namespace,
        "route",
        "replace",
        "default",
        "via",
        &v4,
        "dev",
        &link.host_if,
        "metric",
        &metric,
    ])?;
    ip(&[
        "-n",
        namespace,
        "-6",
        "route",
        "replace",
        "default",
        "via",
        &v6,
        "dev",
        &link.host_if,
        "metric",
        &metric,
    ])
    .map(drop)
}

fn del_addrs(namespace: &str, interface: &str, addrs: &[IpAddr]) -> Result<()> {
    for addr in addrs {
        let len = if addr.is_ipv4() { 24 } else { 64 };
        ip(&[
            "-n",
            namespace,
            "addr",
            "del",
            &format!("{addr}/{len}"),
            "dev",
            interface,
        ])?;
    }
    Ok(())
}

/// Every network namespace name on the machine.
fn namespaces() -> Vec<String> {
    let listing = ip(&["netns", "list"]).unwrap_or_default();
    listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The pid in a scenario namespace name `nst-<scenario>-<pid>-<host>`.
fn scenario_pid(namespace: &str) -> Option<u32> {
    let rest = namespace.strip_prefix(SCENARIO_PREFIX)?;
    let mut parts = rest.rsplit('-');
    let _host = parts.next()?;
    parts.next()?.parse().ok()
}

/// Remove every namespace whose name starts with `prefix` followed by `-`.
fn remove_prefix(prefix: &str) {
    let start = format!("{prefix}-");
    for namespace in namespaces().into_iter().filter(|n| n.starts_with(&start)) {
        remove_namespace(&namespace);
    }
}

/// Kill what runs in `namespace`, then delete it (which also deletes its veth pairs).
fn remove_namespace(namespace: &str) {
    for _ in 0..3 {
        let pids = ip(&["netns", "pids", namespace]).unwrap_or_default();
        let pids: Vec<u32> = pids.lines().filter_map(|p| p.trim().parse().ok()).collect();
        if pids.is_empty() {
            break;
        }
        pids.into_iter().for_each(kill_pid);
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Err(error) = ip(&["netns", "del", namespace]) {
        tracing::warn!(%namespace, %error, "could not remove test bed namespace");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("nst-mobility-123").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"x".repeat(41)).is_err());
    }

    #[test]
    fn scenario_pid_from_namespace() {
        assert_eq!(scenario_pid("nst-client-moves-4242-router"), Some(4242));
        assert_eq!(scenario_pid("nst-x-17-client"), Some(17));
        assert_eq!(scenario_pid("nsu-demo-client"), None);
        assert_eq!(scenario_pid("nst-x-client"), None);
    }

    #[test]
    fn loss_threshold() {
        let rules = loss_rules(2.0, "input").unwrap();
        assert!(rules.contains("meta random & 65535 < 1311 drop"), "{rules}");
        assert!(rules.contains("iifname \"lo\" accept"));
        let rules = loss_rules(100.0, "output").unwrap();
        assert!(rules.contains("< 65536 drop"), "{rules}");
        assert!(rules.contains("oifname \"lo\" accept"));
        assert!(loss_rules(101.0, "input").is_err());
        assert!(loss_rules(-1.0, "input").is_err());
    }

    #[test]
    fn metrics_prefer_the_first_link() {
        assert!(metric(0) < metric(1));
    }
}
