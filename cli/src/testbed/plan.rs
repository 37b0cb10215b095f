//! Address planning: which subnets a test bed uses.
//!
//! A test bed owns the IPv4 block `10.<k>.0.0/16` and the IPv6 block `fd00:<k>::/32`, where `k`
//! is derived from the bed's prefix, so that parallel beds do not use the same numbers (the
//! namespaces isolate them anyway; distinct numbers make logs and captures unambiguous). Link
//! subnet `n` is `10.<k>.<n>.0/24` and `fd00:<k>:<n>::/64`; the router is `.1`/`::1` on it and
//! the host is `.2`/`::2`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// The highest subnet index a bed can use (`10.<k>.254.0/24`).
pub const MAX_SUBNET: u8 = 254;

/// The address block of one test bed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The second octet of every IPv4 address and the second group of every IPv6 address.
    pub block: u8,
}

impl Plan {
    /// The block for a bed named by `prefix`: a stable hash of the prefix into 1..=250.
    pub fn for_prefix(prefix: &str) -> Plan {
        // FNV-1a: stable across runs and Rust versions, unlike `DefaultHasher`.
        let hash = prefix
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        Plan {
            block: (hash % 250) as u8 + 1,
        }
    }

    /// Link subnet number `index` (1..=[`MAX_SUBNET`]) of this bed.
    pub fn subnet(&self, index: u8) -> Subnet {
        Subnet {
            block: self.block,
            index,
        }
    }
}

/// One point-to-point subnet between the router and a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub block: u8,
    pub index: u8,
}

impl Subnet {
    pub fn router_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.block, self.index, 1)
    }

    pub fn host_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.block, self.index, 2)
    }

    pub fn router_v6(&self) -> Ipv6Addr {
        self.v6(1)
    }

    pub fn host_v6(&self) -> Ipv6Addr {
        self.v6(2)
    }

    /// `10.<k>.<n>.0/24`
    pub fn v4_cidr(&self) -> String {
        format!("10.{}.{}.0/24", self.block, self.index)
    }

    /// `fd00:<k>:<n>::/64`
    pub fn v6_cidr(&self) -> String {
        format!("{}/64", self.v6(0))
    }

    /// The host's addresses on this subnet, IPv4 first.
    pub fn host_addrs(&self) -> [IpAddr; 2] {
        [self.host_v4().into(), self.host_v6().into()]
    }

    fn v6(&self, last: u16) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd00,
            u16::from(self.block),
            u16::from(self.index),
            0,
            0,
            0,
            0,
            last,
        )
    }
}

/// Hands out subnet numbers in order, never reusing one within a bed's life (so an address a
/// host left is never someone else's address later in the same test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetAllocator {
    next: u16,
}

impl Default for SubnetAllocator {
    fn default() -> Self {
        SubnetAllocator { next: 1 }
    }
}

impl SubnetAllocator {
    /// The next unused subnet index, or `None` when all 254 are used.
    pub fn allocate(&mut self) -> Option<u8> {
        let index = u8::try_from(self.next).ok().filter(|&i| i <= MAX_SUBNET)?;
        self.next += 1;
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_is_stable_and_in_range() {
        for prefix in ["nst-a-1", "nst-b-2", "", "x"] {
            let plan = Plan::for_prefix(prefix);
            assert!((1..=250).contains(&plan.block));
            assert_eq!(plan, Plan::for_prefix(prefix));
        }
    }

    #[test]
    fn different_prefixes_usually_get_different_blocks() {
        let blocks: std::collections::HashSet<u8> = (0..40)
            .map(|i| Plan::for_prefix(&format!("nst-mobility-{i}")).block)
            .collect();
        assert!(blocks.len() > 30, "poor spread: {}", blocks.len());
    }

    #[test]
    fn subnet_addresses() {
        let subnet = Plan { block: 7 }.subnet(3);
        assert_eq!(subnet.router_v4(), Ipv4Addr::new(10, 7, 3, 1));
        assert_eq!(subnet.host_v4(), Ipv4Addr::new(10, 7, 3, 2));
        assert_eq!(subnet.router_v6().to_string(), "fd00:7:3::1");
        assert_eq!(subnet.host_v6().to_string(), "fd00:7:3::2");
        assert_eq!(subnet.v4_cidr(), "10.7.3.0/24");
        assert_eq!(subnet.v6_cidr(), "fd00:7:3::/64");
    }

    #[test]
    fn allocator_hands_out_each_subnet_once() {
        let mut alloc = SubnetAllocator::default();
        let all: Vec<u8> = std::iter::from_fn(|| alloc.allocate()).collect();
        assert_eq!(all, (1..=MAX_SUBNET).collect::<Vec<u8>>());
        assert_eq!(alloc.allocate(), None);
    }
}
