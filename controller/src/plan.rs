//! `ferrolb-controller plan`: what the controller would hand out for a set of manifests, with
//! the allocation code the live controller runs.

use crate::allocator::{self, service_info, ServiceKey};
use ferrolb_config::files::load_config;
use ferrolb_config::{Config, InForce};
use ferrolb_crds::AddressCount;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::ResourceExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One Service's outcome.
#[derive(Debug, Serialize, PartialEq)]
pub struct ServicePlan {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<String>,
    pub pool: Option<String>,
    pub error: Option<String>,
}

/// One pool's counts after the plan.
#[derive(Debug, Serialize, PartialEq)]
pub struct PoolPlan {
    pub name: String,
    #[serde(rename = "assignedIPv4")]
    pub assigned_ipv4: AddressCount,
    #[serde(rename = "assignedIPv6")]
    pub assigned_ipv6: AddressCount,
    #[serde(rename = "availableIPv4")]
    pub available_ipv4: AddressCount,
    #[serde(rename = "availableIPv6")]
    pub available_ipv6: AddressCount,
}

/// The whole plan, in the JSON shape `--output json` prints.
#[derive(Debug, Serialize, PartialEq)]
pub struct PlanReport {
    pub services: Vec<ServicePlan>,
    pub pools: Vec<PoolPlan>,
}

/// Reads manifests and plans; `Err` carries the configuration problems (as `validate` prints).
pub fn plan(
    paths: &[PathBuf],
    recursive: bool,
    lb_class: Option<&str>,
) -> Result<PlanReport, Vec<String>> {
    let (manifests, config) = load_config(paths, recursive)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    Ok(plan_objects(
        &config,
        &manifests.namespaces,
        &manifests.services,
        lb_class,
    ))
}

/// The configuration the controller allocates under, from the configuration in force: pools
/// left out as invalid are withheld, so what they handed out is kept rather than taken back.
/// The live controller and the kubectl plugin build it the same way.
pub fn allocation_config(outcome: &InForce) -> Config {
    let mut config = outcome.config.clone();
    config.withheld_pools = outcome
        .left_out
        .iter()
        .filter_map(|o| o.strip_prefix("IPAddressPool/"))
        .map(str::to_string)
        .collect();
    config
}

/// Plans `services` under `config`, as the live controller would decide them (addresses in
/// their status are kept where the configuration allows): the offline `plan` and the kubectl
/// plugin both give these outcomes, in these words.
pub fn plan_objects(
    config: &Config,
    namespaces: &[Namespace],
    services: &[Service],
    lb_class: Option<&str>,
) -> PlanReport {
    let namespaces = namespaces
        .iter()
        .map(|ns| (ns.name_any(), ns.labels().clone()))
        .collect();
    let mut infos = Vec::new();
    let mut invalid: BTreeMap<ServiceKey, String> = BTreeMap::new();
    for svc in services
        .iter()
        .filter(|s| allocator::service::is_ours(s, lb_class))
    {
        match service_info(svc) {
            Ok(info) => infos.push(info),
            Err(errs) => {
                let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
                invalid.insert(ServiceKey::of(svc), text.join("; "));
            }
        }
    }
    let (alloc, plan) = allocator::plan(config, &namespaces, &infos);
    let mut services: BTreeMap<ServiceKey, ServicePlan> = BTreeMap::new();
    for (key, result) in plan.results {
        let entry = match result {
            Ok(a) => ServicePlan {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                ips: a.ips.iter().map(ToString::to_string).collect(),
                pool: Some(a.pool),
                error: None,
            },
            Err(e) => ServicePlan {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                ips: vec![],
                pool: None,
                error: Some(e.to_string()),
            },
        };
        services.insert(key, entry);
    }
    for (key, error) in invalid {
        services.insert(
            key.clone(),
            ServicePlan {
                namespace: key.namespace,
                name: key.name,
                ips: vec![],
                pool: None,
                error: Some(error),
            },
        );
    }
    let pools = alloc
        .pool_names()
        .map(|name| {
            let c = alloc.counts(name).unwrap_or_default();
            PoolPlan {
                name: name.clone(),
                assigned_ipv4: c.assigned_v4.into(),
                assigned_ipv6: c.assigned_v6.into(),
                available_ipv4: c.available_v4.into(),
                available_ipv6: c.available_v6.into(),
            }
        })
        .collect();
    PlanReport {
        services: services.into_values().collect(),
        pools,
    }
}

impl PlanReport {
    /// Two aligned tables: Services, then pools.
    pub fn table(&self) -> String {
        let mut rows = vec![vec![
            "NAMESPACE".to_string(),
            "NAME".into(),
            "IPS".into(),
            "POOL".into(),
            "PROBLEM".into(),
        ]];
        for s in &self.services {
            rows.push(vec![
                s.namespace.clone(),
                s.name.clone(),
                if s.ips.is_empty() {
                    "<none>".into()
                } else {
                    s.ips.join(",")
                },
                s.pool.clone().unwrap_or_else(|| "-".into()),
                s.error.clone().unwrap_or_default(),
            ]);
        }
        let mut out = align(&rows);
        out.push('\n');
        let mut rows = vec![vec![
            "POOL".to_string(),
            "ASSIGNED IPV4".into(),
            "AVAILABLE IPV4".into(),
            "ASSIGNED IPV6".into(),
            "AVAILABLE IPV6".into(),
        ]];
        for p in &self.pools {
            rows.push(vec![
                p.name.clone(),
                p.assigned_ipv4.to_string(),
                p.available_ipv4.to_string(),
                p.assigned_ipv6.to_string(),
                p.available_ipv6.to_string(),
            ]);
        }
        out.push_str(&align(&rows));
        out
    }
}

/// Rows as columns padded to their widest cell, three spaces apart.
pub fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}
