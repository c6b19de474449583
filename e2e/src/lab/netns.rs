//! Network namespaces and veth links, removed on drop.

use super::run;

/// A network namespace we created; deleted on drop (unless only [`NetNs::existing`]).
#[derive(Debug)]
pub struct NetNs {
    name: String,
    owned: bool,
}

impl NetNs {
    /// Creates `name`, replacing a leftover of the same name from an aborted run, with
    /// loopback up.
    pub fn new(name: &str) -> Result<NetNs, String> {
        let _ = run("ip", &["netns", "del", name]);
        run("ip", &["netns", "add", name])?;
        let ns = NetNs {
            name: name.to_owned(),
            owned: true,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A namespace made by someone else (a lab left up by `ferrolb-lab up`): used, never
    /// deleted on drop.
    pub fn existing(name: &str) -> Result<NetNs, String> {
        let list = run("ip", &["netns", "list"])?;
        if !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name))
        {
            return Err(format!("no network namespace {name}"));
        }
        Ok(NetNs {
            name: name.to_owned(),
            owned: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["netns", "exec", &self.name, cmd];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Adds an address (CIDR) to an interface; IPv6 without duplicate address detection so it
    /// is usable at once.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<(), String> {
        if cidr.contains(':') {
            self.ip(&["addr", "add", cidr, "dev", ifname, "nodad"])?;
        } else {
            self.ip(&["addr", "add", cidr, "dev", ifname])?;
        }
        Ok(())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if self.owned {
            let _ = run("ip", &["netns", "del", &self.name]);
        }
    }
}

/// A veth pair between two namespaces (created directly inside them, so names never clash
/// in the root namespace); it goes away with either namespace.
#[derive(Debug)]
pub struct VethPair {
    pub a: String,
    pub b: String,
}

impl VethPair {
    pub fn new(ns_a: &NetNs, a: &str, ns_b: &NetNs, b: &str) -> Result<VethPair, String> {
        run(
            "ip",
            &[
                "link",
                "add",
                a,
                "netns",
                ns_a.name(),
                "type",
                "veth",
                "peer",
                "name",
                b,
                "netns",
                ns_b.name(),
            ],
        )?;
        ns_a.ip(&["link", "set", a, "up"])?;
        ns_b.ip(&["link", "set", b, "up"])?;
        Ok(VethPair {
            a: a.to_owned(),
            b: b.to_owned(),
        })
    }
}
