//! Service defaulting and allocation: clusterIPs per IP family from the service CIDRs (with
//! ipFamilies / ipFamilyPolicy defaulting like kube-apiserver), and node ports.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Value};

use super::error::FieldError;

const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

fn family_of(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    }
}

fn family_of_ip(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// The cluster's service network and who holds which address and node port.
#[derive(Debug, Clone)]
pub struct ServiceNetwork {
    /// Primary family first.
    cidrs: Vec<IpNet>,
    ips: BTreeMap<IpAddr, String>,
    node_ports: BTreeMap<u16, String>,
}

impl ServiceNetwork {
    pub fn new(cidrs: Vec<IpNet>) -> Self {
        Self {
            cidrs,
            ips: BTreeMap::new(),
            node_ports: BTreeMap::new(),
        }
    }

    fn cidr(&self, family: &str) -> Option<IpNet> {
        self.cidrs.iter().find(|c| family_of(c) == family).copied()
    }

    fn free_ip(&self, family: &str, owner: &str, taken: &[IpAddr]) -> Option<IpAddr> {
        let net = self.cidr(family)?;
        // Skip the network address (and, for IPv4, the broadcast one), as the real allocator does.
        net.hosts()
            .filter(|ip| *ip != net.network())
            .take(1 << 20)
            .find(|ip| !taken.contains(ip) && self.ips.get(ip).is_none_or(|o| o == owner))
    }

    fn free_node_port(&self, owner: &str, taken: &[u16]) -> Option<u16> {
        NODE_PORTS
            .clone()
            .find(|p| !taken.contains(p) && self.node_ports.get(p).is_none_or(|o| o == owner))
    }

    /// Defaults and allocates for a Service being created (`old` is `None`) or updated.
    /// Nothing is recorded until [`ServiceNetwork::commit`].
    pub fn admit(
        &self,
        owner: &str,
        old: Option<&Value>,
        svc: &mut Value,
    ) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if !svc["spec"].is_object() {
            svc["spec"] = json!({});
        }
        if let Some(old) = old {
            for key in [
                "clusterIP",
                "clusterIPs",
                "ipFamilies",
                "ipFamilyPolicy",
                "healthCheckNodePort",
            ] {
                if svc["spec"].get(key).is_none_or(Value::is_null) {
                    if let Some(v) = old["spec"].get(key) {
                        svc["spec"][key] = v.clone();
                    }
                }
            }
        }
        let spec = svc["spec"].as_object_mut().expect("spec is an object");
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        spec.insert("type".into(), Value::from(ty.clone()));
        if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty.as_str()) {
            errors.push(FieldError::not_supported(
                "spec.type",
                &Value::from(ty.clone()),
                &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"].map(Value::from),
            ));
            return Err(errors);
        }
        spec.entry("sessionAffinity")
            .or_insert_with(|| Value::from("None"));
        if ty == "ExternalName" {
            if spec
                .get("externalName")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errors.push(FieldError::required("spec.externalName"));
            }
            for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                spec.remove(key);
            }
            return if errors.is_empty() {
                Ok(())
            } else {
                Err(errors)
            };
        }
        spec.entry("internalTrafficPolicy")
            .or_insert_with(|| Value::from("Cluster"));
        if ty != "ClusterIP" {
            spec.entry("externalTrafficPolicy")
                .or_insert_with(|| Value::from("Cluster"));
        }
        if ty == "LoadBalancer" {
            spec.entry("allocateLoadBalancerNodePorts")
                .or_insert(Value::Bool(true));
        }
        let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
        let ports = spec
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if ports.is_empty() && !headless {
            errors.push(FieldError::required("spec.ports"));
        }
        let mut ports_out = Vec::new();
        for (i, mut p) in ports.into_iter().enumerate() {
            let port = p["port"].as_i64().unwrap_or(0);
            if !(1..=65535).contains(&port) {
                errors.push(FieldError::invalid(
                    &format!("spec.ports[{i}].port"),
                    &p["port"],
                    "must be between 1 and 65535, inclusive",
                ));
            }
            if p.get("protocol").is_none_or(Value::is_null) {
                p["protocol"] = Value::from("TCP");
            }
            if p.get("targetPort").is_none_or(Value::is_null) {
                p["targetPort"] = Value::from(port);
            }
            ports_out.push(p);
        }

        // IP families.
        let policy_given = spec
            .get("ipFamilyPolicy")
            .and_then(Value::as_str)
            .map(String::from);
        let policy = policy_given.clone().unwrap_or_else(|| "SingleStack".into());
        if !["SingleStack", "PreferDualStack", "RequireDualStack"].contains(&policy.as_str()) {
            errors.push(FieldError::not_supported(
                "spec.ipFamilyPolicy",
                &Value::from(policy.clone()),
                &["PreferDualStack", "RequireDualStack", "SingleStack"].map(Value::from),
            ));
        }
        let mut given_ips: Vec<String> = spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if given_ips.is_empty() {
            if let Some(ip) = spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                given_ips.push(ip.into());
            }
        }
        if let (Some(first), Some(single)) = (
            given_ips.first(),
            spec.get("clusterIP").and_then(Value::as_str),
        ) {
            if !single.is_empty() && single != first {
                errors.push(FieldError::invalid(
                    "spec.clusterIPs",
                    &Value::from(given_ips.clone()),
                    "element [0] must match clusterIP",
                ));
            }
        }
        if let Some(old) = old {
            let old_first = old["spec"]["clusterIPs"][0]
                .as_str()
                .or(old["spec"]["clusterIP"].as_str());
            if let (Some(o), Some(n)) = (old_first, given_ips.first()) {
                if o != n {
                    errors.push(FieldError::invalid(
                        "spec.clusterIPs[0]",
                        &Value::from(n.clone()),
                        "may not change once set",
                    ));
                }
            }
        }
        let mut families: Vec<String> = spec
            .get("ipFamilies")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let mut parsed_ips = Vec::new();
        for (i, ip) in given_ips.iter().enumerate() {
            if ip == "None" {
                continue;
            }
            match ip.parse::<IpAddr>() {
                Ok(addr) => {
                    if families.len() <= i {
                        families.push(family_of_ip(&addr).into());
                    } else if families[i] != family_of_ip(&addr) {
                        errors.push(FieldError::invalid(
                            &format!("spec.clusterIPs[{i}]"),
                            &Value::from(ip.clone()),
                            &format!(
                                "expected an {} value as indicated by `ipFamilies[{i}]`",
                                families[i]
                            ),
                        ));
                    }
                    parsed_ips.push(addr);
                }
                Err(_) => errors.push(FieldError::invalid(
                    &format!("spec.clusterIPs[{i}]"),
                    &Value::from(ip.clone()),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                )),
            }
        }
        if families.len() > 2 {
            errors.push(FieldError::too_many("spec.ipFamilies", families.len(), 2));
        }
        if families.len() == 2 && families[0] == families[1] {
            errors.push(FieldError::duplicate(
                "spec.ipFamilies[1]",
                &Value::from(families[1].clone()),
            ));
        }
        if families.len() == 2 && policy == "SingleStack" {
            errors.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                &Value::from(policy.clone()),
                "must be RequireDualStack or PreferDualStack when multiple IP families are specified",
            ));
        }
        let configured: Vec<&'static str> = self.cidrs.iter().map(family_of).collect();
        let dual = configured.len() == 2;
        if policy == "RequireDualStack" && !dual {
            errors.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                &Value::from(policy.clone()),
                "this cluster is not configured for dual-stack services",
            ));
        }
        if families.is_empty() {
            families.push(configured.first().copied().unwrap_or("IPv4").into());
        }
        if policy != "SingleStack" && dual && families.len() == 1 {
            let other = if families[0] == "IPv4" {
                "IPv6"
            } else {
                "IPv4"
            };
            families.push(other.into());
        }
        if policy == "SingleStack"
            && families.len() == 2
            && policy_given.is_none()
            && errors.is_empty()
        {
            families.truncate(1);
        }
        for (i, f) in families.iter().enumerate() {
            if !configured.contains(&f.as_str()) {
                errors.push(FieldError::invalid(
                    &format!("spec.ipFamilies[{i}]"),
                    &Value::from(f.clone()),
                    "not configured on this cluster",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let mut cluster_ips: Vec<String> = Vec::new();
        if headless {
            cluster_ips.push("None".into());
        } else {
            let mut taken = Vec::new();
            for (i, family) in families.iter().enumerate() {
                let ip = match parsed_ips.get(i) {
                    Some(ip) => {
                        let net = self.cidr(family).expect("family checked above");
                        if !net.contains(ip) {
                            errors.push(FieldError::invalid(
                                &format!("spec.clusterIPs[{i}]"),
                                &Value::from(ip.to_string()),
                                &format!("provided IP is not in the valid range. The range of valid IPs is {net}"),
                            ));
                            continue;
                        }
                        if self.ips.get(ip).is_some_and(|o| o != owner) {
                            errors.push(FieldError::invalid(
                                &format!("spec.clusterIPs[{i}]"),
                                &Value::from(ip.to_string()),
                                "provided IP is already allocated",
                            ));
                            continue;
                        }
                        *ip
                    }
                    None => match self.free_ip(family, owner, &taken) {
                        Some(ip) => ip,
                        None => {
                            errors.push(FieldError::invalid(
                                &format!("spec.clusterIPs[{i}]"),
                                &Value::from(""),
                                &format!("failed to allocate IP: range is full ({family})"),
                            ));
                            continue;
                        }
                    },
                };
                taken.push(ip);
                cluster_ips.push(ip.to_string());
            }
        }

        // Node ports for NodePort and LoadBalancer services.
        let wants_node_ports = ty == "NodePort"
            || (ty == "LoadBalancer"
                && spec
                    .get("allocateLoadBalancerNodePorts")
                    .and_then(Value::as_bool)
                    != Some(false));
        let mut taken_ports = Vec::new();
        let old_ports = old
            .and_then(|o| o["spec"]["ports"].as_array().cloned())
            .unwrap_or_default();
        if wants_node_ports {
            for (i, p) in ports_out.iter_mut().enumerate() {
                let inherited = old_ports
                    .iter()
                    .find(|o| {
                        o["port"] == p["port"]
                            && o["protocol"].as_str().unwrap_or("TCP") == p["protocol"]
                    })
                    .and_then(|o| o["nodePort"].as_u64());
                let wanted = p["nodePort"].as_u64().or(inherited);
                let port = match wanted {
                    Some(n) => {
                        let n = n as u16;
                        if self.node_ports.get(&n).is_some_and(|o| o != owner)
                            || taken_ports.contains(&n)
                        {
                            errors.push(FieldError::invalid(
                                &format!("spec.ports[{i}].nodePort"),
                                &Value::from(n),
                                "provided port is already allocated",
                            ));
                            continue;
                        }
                        n
                    }
                    None => match self.free_node_port(owner, &taken_ports) {
                        Some(n) => n,
                        None => {
                            errors.push(FieldError::invalid(
                                &format!("spec.ports[{i}].nodePort"),
                                &Value::Null,
                                "node port range is full",
                            ));
                            continue;
                        }
                    },
                };
                taken_ports.push(port);
                p["nodePort"] = Value::from(port);
            }
            if ty == "LoadBalancer"
                && spec.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local")
            {
                let hc = spec
                    .get("healthCheckNodePort")
                    .and_then(Value::as_u64)
                    .map(|n| n as u16)
                    .or_else(|| self.free_node_port(owner, &taken_ports));
                if let Some(hc) = hc {
                    taken_ports.push(hc);
                    spec.insert("healthCheckNodePort".into(), Value::from(hc));
                }
            } else {
                spec.remove("healthCheckNodePort");
            }
        } else {
            for p in ports_out.iter_mut() {
                if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
            }
            spec.remove("healthCheckNodePort");
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        spec.insert("ports".into(), Value::Array(ports_out));
        spec.insert("clusterIP".into(), Value::from(cluster_ips[0].clone()));
        spec.insert("clusterIPs".into(), Value::from(cluster_ips));
        spec.insert("ipFamilies".into(), Value::from(families));
        spec.insert("ipFamilyPolicy".into(), Value::from(policy));
        if svc.get("status").is_none_or(Value::is_null) {
            svc["status"] = json!({"loadBalancer": {}});
        }
        Ok(())
    }

    /// Records what a stored Service holds (or, with `None`, releases what a deleted one held).
    pub fn commit(&mut self, owner: &str, svc: Option<&Value>) {
        self.ips.retain(|_, o| o != owner);
        self.node_ports.retain(|_, o| o != owner);
        let Some(svc) = svc else { return };
        for ip in svc["spec"]["clusterIPs"].as_array().into_iter().flatten() {
            if let Some(ip) = ip.as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
                self.ips.insert(ip, owner.into());
            }
        }
        for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(n) = p["nodePort"].as_u64() {
                self.node_ports.insert(n as u16, owner.into());
            }
        }
        if let Some(n) = svc["spec"]["healthCheckNodePort"].as_u64() {
            self.node_ports.insert(n as u16, owner.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> ServiceNetwork {
        ServiceNetwork::new(vec![
            "198.51.100.0/24".parse().unwrap(),
            "2001:db8:5::/112".parse().unwrap(),
        ])
    }

    #[test]
    fn single_stack_defaults_to_primary_family() {
        let net = network();
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        net.admit("ns/a", None, &mut svc).unwrap();
        assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(svc["spec"]["clusterIPs"], json!(["198.51.100.1"]));
        assert_eq!(svc["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
    }

    #[test]
    fn prefer_dual_stack_gets_both_and_allocations_do_not_collide() {
        let mut net = network();
        let mut a = json!({"spec": {"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv6"], "ports": [{"port": 80}]}});
        net.admit("ns/a", None, &mut a).unwrap();
        assert_eq!(a["spec"]["ipFamilies"], json!(["IPv6", "IPv4"]));
        net.commit("ns/a", Some(&a));
        let mut b = json!({"spec": {"ports": [{"port": 80}]}});
        net.admit("ns/b", None, &mut b).unwrap();
        assert_ne!(a["spec"]["clusterIPs"][1], b["spec"]["clusterIP"]);
        net.commit("ns/a", None);
        let mut c = json!({"spec": {"ports": [{"port": 80}]}});
        net.admit("ns/c", None, &mut c).unwrap();
        assert_eq!(c["spec"]["clusterIP"], a["spec"]["clusterIPs"][1]);
    }

    #[test]
    fn require_dual_stack_fails_on_single_stack_cluster() {
        let net = ServiceNetwork::new(vec!["198.51.100.0/24".parse().unwrap()]);
        let mut svc =
            json!({"spec": {"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]}});
        let errors = net.admit("ns/a", None, &mut svc).unwrap_err();
        assert_eq!(errors[0].field, "spec.ipFamilyPolicy");
    }
}
