//! A read-only look at the router of a [`super::bgp_lab::BgpLab`] from a process that does not
//! own the lab: a test body running as a child inside the client namespace (where the API
//! emulator must listen so the node namespaces reach it). FRR's tables are read through its
//! vtysh socket directory (a path, so any namespace can use it), the kernel's routes with
//! `ip -n <router>`. Nothing here starts, stops or deletes anything.

use std::path::PathBuf;

use serde_json::Value;

use super::frr::{lab_dir, VTYSH};
use super::run;

/// The router of lab `tag`, by name (cheap to clone into blocking tasks).
#[derive(Clone, Debug)]
pub struct RouterView {
    router_ns: String,
    vty_dir: PathBuf,
}

impl RouterView {
    /// The router of the lab built by `BgpLab::new(tag, _)` with FRR started by `start_frr`.
    pub fn of(tag: &str) -> RouterView {
        RouterView {
            router_ns: format!("flb-{tag}-r"),
            vty_dir: lab_dir(&format!("flb-{tag}")),
        }
    }

    /// A router in namespace `router_ns` whose FRR was started under the name `frr_name`
    /// (e.g. [`super::l2::L2Lab::with_bgp_router`]'s, named after its namespace).
    pub fn at(router_ns: &str, frr_name: &str) -> RouterView {
        RouterView {
            router_ns: router_ns.to_owned(),
            vty_dir: lab_dir(frr_name),
        }
    }

    /// Every route of `afi` in FRR's table with its next hops (best path and multipaths),
    /// sorted: one vtysh call for the whole table.
    pub fn rib(
        &self,
        afi: &str,
    ) -> Result<std::collections::BTreeMap<String, Vec<String>>, String> {
        let v = self.json(&format!("show bgp {afi} unicast json"))?;
        let mut out = std::collections::BTreeMap::new();
        let Some(routes) = v.get("routes").and_then(Value::as_object) else {
            return Ok(out);
        };
        for (prefix, paths) in routes {
            let mut hops: Vec<String> = paths
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| {
                    p.get("bestpath").and_then(Value::as_bool) == Some(true)
                        || p.get("multipath").and_then(Value::as_bool) == Some(true)
                })
                .filter_map(|p| p["nexthops"][0]["ip"].as_str().map(str::to_owned))
                .collect();
            hops.sort();
            hops.dedup();
            out.insert(prefix.clone(), hops);
        }
        Ok(out)
    }

    /// Runs a vtysh `... json` command and parses the answer.
    pub fn json(&self, cmd: &str) -> Result<Value, String> {
        let dir = self.vty_dir.to_string_lossy().into_owned();
        let out = run(VTYSH, &["--vty_socket", &dir, "-c", cmd])?;
        serde_json::from_str(&out).map_err(|e| format!("{cmd}: {e}: {out}"))
    }

    /// The neighbor's BGP state ("Established", "Active", ...).
    pub fn neighbor_state(&self, peer: &str) -> Option<String> {
        let v = self.json(&format!("show bgp neighbors {peer} json")).ok()?;
        v.get(peer)?.get("bgpState")?.as_str().map(str::to_owned)
    }

    /// The best path of `prefix` in FRR's table.
    pub fn best_path(&self, afi: &str, prefix: &str) -> Option<Value> {
        let v = self
            .json(&format!("show bgp {afi} unicast {prefix} json"))
            .ok()?;
        v.get("paths")?
            .as_array()?
            .iter()
            .find(|p| p.get("bestpath").is_some())
            .cloned()
    }

    /// The next hops FRR's table uses for `prefix` (best path and multipaths), sorted.
    pub fn rib_next_hops(&self, afi: &str, prefix: &str) -> Vec<String> {
        let Ok(v) = self.json(&format!("show bgp {afi} unicast {prefix} json")) else {
            return vec![];
        };
        let mut hops: Vec<String> = v
            .get("paths")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| {
                p.get("bestpath").is_some()
                    || p.get("multipath").and_then(Value::as_bool) == Some(true)
            })
            .filter_map(|p| p["nexthops"][0]["ip"].as_str().map(str::to_owned))
            .collect();
        hops.sort();
        hops
    }

    /// The gateways of the router's kernel route for `prefix`, sorted (following a nexthop
    /// group when zebra installed one).
    pub fn fib_next_hops(&self, prefix: &str) -> Vec<String> {
        let fam = if prefix.contains(':') { "-6" } else { "-4" };
        let Some(route) = self.ip_json(&[fam, "-j", "route", "show", prefix]) else {
            return vec![];
        };
        let Some(route) = route.get(0) else {
            return vec![];
        };
        let mut hops: Vec<String> = route
            .get("gateway")
            .into_iter()
            .chain(
                route
                    .get("nexthops")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|nh| nh.get("gateway")),
            )
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect();
        if hops.is_empty() {
            if let Some(id) = route.get("nhid").and_then(Value::as_u64) {
                hops = self.nexthop_group(id, 4);
            }
        }
        hops.sort();
        hops
    }

    /// Gateways of nexthop object `id`, descending at most `depth` groups.
    fn nexthop_group(&self, id: u64, depth: u32) -> Vec<String> {
        let Some(v) = self.ip_json(&["-j", "nexthop", "show", "id", &id.to_string()]) else {
            return vec![];
        };
        let Some(nh) = v.get(0) else { return vec![] };
        if let Some(gw) = nh.get("gateway").and_then(Value::as_str) {
            return vec![gw.to_owned()];
        }
        if depth == 0 {
            return vec![];
        }
        nh.get("group")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("id").and_then(Value::as_u64))
            .flat_map(|member| self.nexthop_group(member, depth - 1))
            .collect()
    }

    fn ip_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["-n", self.router_ns.as_str()];
        all.extend_from_slice(args);
        serde_json::from_str(&run("ip", &all).ok()?).ok()
    }

    /// Whether FRR's table and the kernel both use exactly `want` (sorted) for `prefix`; an
    /// empty `want` means the route is gone from both.
    pub fn next_hops_are(&self, afi: &str, prefix: &str, want: &[String]) -> bool {
        let mut want = want.to_vec();
        want.sort();
        self.rib_next_hops(afi, prefix) == want && self.fib_next_hops(prefix) == want
    }

    /// Both views of `prefix`, for failure messages.
    pub fn describe(&self, afi: &str, prefix: &str) -> String {
        format!(
            "{prefix}: RIB next hops {:?}, kernel next hops {:?}",
            self.rib_next_hops(afi, prefix),
            self.fib_next_hops(prefix)
        )
    }
}
