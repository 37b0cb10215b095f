//! The description of a test bed: enough to find and change everything it built, from this
//! process or (saved to a file) from a later `namesock testbed` invocation.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::TestbedError;
use super::plan::{Plan, Subnet, SubnetAllocator};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub prefix: String,
    pub plan: Plan,
    pub subnets: SubnetAllocator,
    pub next_link_id: u32,
    pub hosts: Vec<HostState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostState {
    pub name: String,
    pub links: Vec<LinkState>,
}

/// One veth pair between the router and a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    /// Interface name in the router namespace (`v<id>`).
    pub router_if: String,
    /// Interface name in the host namespace (`eth<i>`).
    pub host_if: String,
    pub subnet: Subnet,
    pub up: bool,
}

impl State {
    pub fn new(prefix: &str) -> State {
        State {
            prefix: prefix.to_owned(),
            plan: Plan::for_prefix(prefix),
            subnets: SubnetAllocator::default(),
            next_link_id: 1,
            hosts: Vec::new(),
        }
    }

    pub fn router_namespace(&self) -> String {
        format!("{}-router", self.prefix)
    }

    pub fn host_namespace(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    pub fn host(&self, name: &str) -> Option<&HostState> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn host_mut(&mut self, name: &str) -> Option<&mut HostState> {
        self.hosts.iter_mut().find(|h| h.name == name)
    }

    pub fn allocate_subnet(&mut self) -> Result<Subnet, TestbedError> {
        let index = self
            .subnets
            .allocate()
            .ok_or(TestbedError::SubnetsExhausted)?;
        Ok(self.plan.subnet(index))
    }

    pub fn allocate_link_id(&mut self) -> u32 {
        let id = self.next_link_id;
        self.next_link_id += 1;
        id
    }

    pub fn load(path: &Path) -> Result<State, TestbedError> {
        let error = |reason: String| TestbedError::State {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        toml::from_str(&text).map_err(|e| error(e.to_string()))
    }

    pub fn save(&self, path: &Path) -> Result<(), TestbedError> {
        let error = |reason: String| TestbedError::State {
            path: path.display().to_string(),
            reason,
        };
        let text = toml::to_string(self).map_err(|e| error(e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| error(e.to_string()))?;
        }
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, text).map_err(|e| error(e.to_string()))?;
        std::fs::rename(&temporary, path).map_err(|e| error(e.to_string()))
    }
}

impl HostState {
    /// The first `eth<i>` name none of the host's links uses.
    pub fn free_interface_name(&self) -> String {
        (0..)
            .map(|i| format!("eth{i}"))
            .find(|name| self.links.iter().all(|l| &l.host_if != name))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bed.toml");
        let mut state = State::new("nsu-demo");
        let subnet = state.allocate_subnet().unwrap();
        state.hosts.push(HostState {
            name: "client".into(),
            links: vec![LinkState {
                router_if: "v1".into(),
                host_if: "eth0".into(),
                subnet,
                up: true,
            }],
        });
        state.save(&path).unwrap();
        let loaded = State::load(&path).unwrap();
        assert_eq!(loaded.prefix, "nsu-demo");
        assert_eq!(loaded.host("client").unwrap().links[0].subnet, subnet);
        assert_eq!(loaded.subnets, state.subnets);
    }

    #[test]
    fn interface_names_are_reused_only_when_free() {
        let subnet = Plan { block: 1 }.subnet(1);
        let link = |name: &str| LinkState {
            router_if: "v1".into(),
            host_if: name.into(),
            subnet,
            up: true,
        };
        let host = HostState {
            name: "h".into(),
            links: vec![link("eth1")],
        };
        assert_eq!(host.free_interface_name(), "eth0");
        let host = HostState {
            name: "h".into(),
            links: vec![link("eth0"), link("eth1")],
        };
        assert_eq!(host.free_interface_name(), "eth2");
    }
}
