//! Which interfaces the speaker answers and announces on.
//!
//! Rules (as MetalLB's): skip interfaces that are down, enslaved to a bridge or bond (the
//! master is the one to use), NOARP, loopback or not Ethernet; skip names matching the
//! exclusion patterns (by default container and CNI devices) unless an L2Advertisement names
//! the interface explicitly; with `interfaces` in the advertisement, only those.
//! Reading the interfaces is a thin layer over /sys/class/net; choosing is pure.

use crate::l2::packet::MacAddr;
use regex::Regex;
use std::path::Path;

/// Names skipped unless an L2Advertisement names them: container, CNI and virtual devices
/// whose segment is not the one clients are on.
pub const DEFAULT_EXCLUSIONS: &[&str] = &[
    "^docker.*",
    "^cbr.*",
    "^dummy.*",
    "^virbr.*",
    "^lxcbr.*",
    "^veth.*",
    "^lo$",
    "^cali.*",
    "^tunl.*",
    "^flannel.*",
    "^kube-ipvs.*",
    "^cni.*",
    "^vxlan.*",
    "^cilium.*",
    "^lxc.*",
    "^nodelocaldns.*",
];

// Interface flags (linux/if.h).
const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;
const IFF_NOARP: u32 = 0x80;
/// ARPHRD_ETHER (linux/if_arp.h).
const ARPHRD_ETHER: u32 = 1;

/// What the selection needs to know of one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: MacAddr,
    pub up: bool,
    pub loopback: bool,
    pub noarp: bool,
    /// Enslaved to a bridge, bond or VRF.
    pub has_master: bool,
    /// Ethernet (ARPHRD_ETHER).
    pub ethernet: bool,
}

impl Interface {
    /// Why the interface can carry no announcement whatever the configuration says, if so.
    pub fn unusable(&self) -> Option<&'static str> {
        if !self.ethernet {
            Some("not Ethernet")
        } else if self.loopback {
            Some("loopback")
        } else if !self.up {
            Some("down")
        } else if self.has_master {
            Some("enslaved (has a master)")
        } else if self.noarp {
            Some("NOARP")
        } else {
            None
        }
    }
}

/// Compiled name exclusions.
#[derive(Clone, Debug)]
pub struct Exclusions(Vec<Regex>);

impl Exclusions {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Exclusions, regex::Error> {
        patterns
            .iter()
            .map(|p| Regex::new(p.as_ref()))
            .collect::<Result<_, _>>()
            .map(Exclusions)
    }

    pub fn default_list() -> Exclusions {
        Exclusions::new(DEFAULT_EXCLUSIONS).expect("default exclusions compile")
    }

    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|r| r.is_match(name))
    }
}

/// The interfaces to use for an address whose L2Advertisements name `wanted` (empty: any).
pub fn select<'a>(
    all: &'a [Interface],
    wanted: &[String],
    exclusions: &Exclusions,
) -> Vec<&'a Interface> {
    all.iter()
        .filter(|i| i.unusable().is_none())
        .filter(|i| {
            if wanted.is_empty() {
                !exclusions.matches(&i.name)
            } else {
                // Named explicitly: the user knows better than the default list.
                wanted.contains(&i.name)
            }
        })
        .collect()
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn parse_mac(text: &str) -> Option<MacAddr> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(MacAddr(mac))
}

fn parse_number(text: &str) -> Option<u32> {
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// One interface as /sys/class/net/NAME shows it (`None` if it vanished meanwhile).
pub fn read_interface(sys_class_net: &Path, name: &str) -> Option<Interface> {
    let dir = sys_class_net.join(name);
    let flags = parse_number(&read_trimmed(&dir.join("flags"))?)?;
    let kind = parse_number(&read_trimmed(&dir.join("type"))?)?;
    Some(Interface {
        name: name.to_owned(),
        index: parse_number(&read_trimmed(&dir.join("ifindex"))?)?,
        mac: read_trimmed(&dir.join("address"))
            .and_then(|m| parse_mac(&m))
            .unwrap_or(MacAddr::ZERO),
        up: flags & IFF_UP != 0,
        loopback: flags & IFF_LOOPBACK != 0,
        noarp: flags & IFF_NOARP != 0,
        has_master: dir.join("master").exists(),
        ethernet: kind == ARPHRD_ETHER,
    })
}

/// Every interface of this network namespace, by name.
pub fn list_interfaces(sys_class_net: &Path) -> std::io::Result<Vec<Interface>> {
    let mut names: Vec<String> = std::fs::read_dir(sys_class_net)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names
        .iter()
        .filter_map(|n| read_interface(sys_class_net, n))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str) -> Interface {
        Interface {
            name: name.into(),
            index: 2,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            up: true,
            loopback: false,
            noarp: false,
            has_master: false,
            ethernet: true,
        }
    }

    fn names(v: Vec<&Interface>) -> Vec<&str> {
        v.into_iter().map(|i| i.name.as_str()).collect()
    }

    #[test]
    fn down_enslaved_noarp_loopback_and_non_ethernet_are_never_used() {
        let mut all = vec![iface("eth0")];
        let mut down = iface("eth1");
        down.up = false;
        let mut slave = iface("eth2");
        slave.has_master = true;
        let mut noarp = iface("eth3");
        noarp.noarp = true;
        let mut lo = iface("lo");
        lo.loopback = true;
        let mut tun = iface("tun0");
        tun.ethernet = false;
        all.extend([down, slave, noarp, lo, tun]);
        let wanted_all: Vec<String> = all.iter().map(|i| i.name.clone()).collect();
        let none = Exclusions::new::<&str>(&[]).unwrap();
        assert_eq!(names(select(&all, &[], &none)), ["eth0"]);
        assert_eq!(names(select(&all, &wanted_all, &none)), ["eth0"]);
        assert_eq!(all[1].unusable(), Some("down"));
        assert_eq!(all[2].unusable(), Some("enslaved (has a master)"));
    }

    #[test]
    fn default_exclusions_apply_unless_the_advertisement_names_the_interface() {
        let all = vec![
            iface("eth0"),
            iface("veth1234"),
            iface("cali9"),
            iface("docker0"),
            iface("bond0"),
        ];
        let ex = Exclusions::default_list();
        assert_eq!(names(select(&all, &[], &ex)), ["eth0", "bond0"]);
        assert_eq!(names(select(&all, &["veth1234".into()], &ex)), ["veth1234"]);
        assert_eq!(names(select(&all, &["bond0".into()], &ex)), ["bond0"]);
        assert!(select(&all, &["nope".into()], &ex).is_empty());
        let custom = Exclusions::new(&["^eth.*"]).unwrap();
        assert_eq!(
            names(select(&all, &[], &custom)),
            ["veth1234", "cali9", "docker0", "bond0"]
        );
        assert!(Exclusions::new(&["("]).is_err());
    }

    #[test]
    fn sysfs_attributes_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let eth = dir.path().join("eth0");
        std::fs::create_dir(&eth).unwrap();
        std::fs::write(eth.join("flags"), "0x1003\n").unwrap();
        std::fs::write(eth.join("type"), "1\n").unwrap();
        std::fs::write(eth.join("ifindex"), "7\n").unwrap();
        std::fs::write(eth.join("address"), "02:00:00:aa:bb:cc\n").unwrap();
        let br = dir.path().join("br0");
        std::fs::create_dir(&br).unwrap();
        std::fs::write(br.join("flags"), "0x1083\n").unwrap();
        std::fs::write(br.join("type"), "1\n").unwrap();
        std::fs::write(br.join("ifindex"), "8\n").unwrap();
        std::fs::write(br.join("address"), "garbage\n").unwrap();
        std::fs::create_dir(br.join("master")).unwrap();
        std::fs::create_dir(dir.path().join("broken")).unwrap();
        let all = list_interfaces(dir.path()).unwrap();
        assert_eq!(all.len(), 2, "an unreadable entry is skipped: {all:?}");
        let br = &all[0];
        assert!(br.noarp && br.has_master && br.up && br.mac == MacAddr::ZERO);
        let eth = &all[1];
        assert_eq!(eth.index, 7);
        assert_eq!(eth.mac.to_string(), "02:00:00:aa:bb:cc");
        assert_eq!(eth.unusable(), None);
        assert_eq!(parse_mac("02:00:00:aa:bb"), None);
        assert_eq!(parse_mac("02:00:00:aa:bb:cc:dd"), None);
    }
}
