//! Every real MetalLB configuration in `../shared/metallb-examples/` is accepted, as it is there
//! (ferrolb.io) and in its original metallb.io form, each with the same outcome. Objects an
//! example names but does not define (a pool, a peer, a BFD profile, a Community alias, a Secret)
//! are supplied as the smallest valid stand-ins.

use ferrolb_config::manifest::Manifests;
use ferrolb_config::{build, Config};
use kube::ResourceExt;
use serde::Deserialize;
use serde_yaml::Value;

/// The words of every refusal of a MetalLB field FerroLB does not implement yet.
const NOT_YET: &str = "not supported by FerroLB yet";
use std::collections::BTreeSet;
use std::path::PathBuf;

fn examples_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/metallb-examples");
    dir.is_dir().then_some(dir)
}

/// The example files, sorted; `None` (with a visible message) where shared/ is not beside the
/// project.
fn example_files() -> Option<Vec<PathBuf>> {
    let Some(dir) = examples_dir() else {
        eprintln!("SKIP: ../shared/metallb-examples is not beside the project");
        return None;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    Some(files)
}

/// The text with every document put back into MetalLB's API: metallb.io/v1beta1 (v1beta2 for
/// BGPPeer) in metallb-system.
fn as_metallb(text: &str) -> String {
    let mut out = String::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let mut value = Value::deserialize(document).unwrap();
        if let Value::Mapping(map) = &mut value {
            let is_ours = map
                .get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|v| v == "ferrolb.io/v1beta1");
            if is_ours {
                let version = if map.get("kind").and_then(Value::as_str) == Some("BGPPeer") {
                    "metallb.io/v1beta2"
                } else {
                    "metallb.io/v1beta1"
                };
                map.insert("apiVersion".into(), version.into());
            }
            if let Some(Value::Mapping(meta)) = map.get_mut("metadata") {
                if meta.get("namespace").and_then(Value::as_str) == Some("ferrolb-system") {
                    meta.insert("namespace".into(), "metallb-system".into());
                }
            }
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&value).unwrap());
    }
    out
}

/// Stand-ins for what `m` names but does not define.
fn stand_ins(m: &Manifests) -> String {
    let r = &m.resources;
    let pools: BTreeSet<String> = r.pools.iter().map(|p| p.name_any()).collect();
    let peers: BTreeSet<String> = r.bgp_peers.iter().map(|p| p.name_any()).collect();
    let profiles: BTreeSet<String> = r.bfd_profiles.iter().map(|p| p.name_any()).collect();
    let aliases: BTreeSet<String> = r
        .communities
        .iter()
        .flat_map(|c| c.spec.communities.iter().map(|a| a.name.clone()))
        .collect();
    let secrets: BTreeSet<String> = r.secrets.iter().map(|s| s.name_any()).collect();

    let mut wanted_pools = BTreeSet::new();
    let mut wanted_peers = BTreeSet::new();
    let mut wanted_aliases = BTreeSet::new();
    for a in &r.l2_advertisements {
        wanted_pools.extend(a.spec.ip_address_pools.iter().cloned());
    }
    for a in &r.bgp_advertisements {
        wanted_pools.extend(a.spec.ip_address_pools.iter().cloned());
        wanted_peers.extend(a.spec.peers.iter().cloned());
        wanted_aliases.extend(
            a.spec
                .communities
                .iter()
                .filter(|c| !c.contains(':'))
                .cloned(),
        );
    }
    let wanted_profiles: BTreeSet<String> = r
        .bgp_peers
        .iter()
        .filter_map(|p| p.spec.bfd_profile.clone())
        .collect();
    let wanted_secrets: BTreeSet<String> = r
        .bgp_peers
        .iter()
        .filter_map(|p| p.spec.password_secret.as_ref()?.name.clone())
        .collect();

    let mut out = String::new();
    for (i, name) in wanted_pools.difference(&pools).enumerate() {
        // Large blocks, so any aggregation length an example uses fits them.
        out.push_str(&format!(
            "---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}}}\nspec: {{addresses: [100.{}.0.0/16, '2001:db8:ff{i:02x}::/48']}}\n",
            64 + i
        ));
    }
    for (i, name) in wanted_peers.difference(&peers).enumerate() {
        out.push_str(&format!(
            "---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: {name}}}\nspec: {{myASN: 64500, peerASN: 64501, peerAddress: 192.0.2.{}}}\n",
            200 + i
        ));
    }
    for name in wanted_profiles.difference(&profiles) {
        out.push_str(&format!(
            "---\napiVersion: ferrolb.io/v1beta1\nkind: BFDProfile\nmetadata: {{name: {name}}}\n"
        ));
    }
    let missing_aliases: Vec<&String> = wanted_aliases.difference(&aliases).collect();
    if !missing_aliases.is_empty() {
        out.push_str("---\napiVersion: ferrolb.io/v1beta1\nkind: Community\nmetadata: {name: stand-in-aliases}\nspec:\n  communities:\n");
        for name in missing_aliases {
            out.push_str(&format!("  - {{name: {name}, value: '64500:1'}}\n"));
        }
    }
    for name in wanted_secrets.difference(&secrets) {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/basic-auth\nstringData: {{password: stand-in}}\n"
        ));
    }
    out
}

/// Reads `text` with its stand-ins: the problems, or the configuration.
fn load(text: &str, source: &str) -> Result<(Manifests, Config), Vec<String>> {
    let mut first = Manifests::default();
    let mut problems: Vec<String> = first
        .add_yaml(text, source)
        .iter()
        .map(ToString::to_string)
        .collect();
    let extra = stand_ins(&first);
    let mut m = Manifests::default();
    problems.clear();
    for (text, source) in [(text, source), (extra.as_str(), "stand-ins")] {
        problems.extend(m.add_yaml(text, source).iter().map(ToString::to_string));
    }
    // Each where the components read it: ferrolb-system, or metallb-system for metallb.io.
    problems.extend(
        m.namespace_problems("ferrolb-system", "metallb-system")
            .iter()
            .map(ToString::to_string),
    );
    match build(&m.resources) {
        Ok(config) if problems.is_empty() => Ok((m, config)),
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(more.iter().map(ToString::to_string));
            Err(problems)
        }
    }
}

#[test]
fn every_real_metallb_configuration_is_accepted_in_both_api_groups() {
    let Some(files) = example_files() else { return };
    assert!(files.len() >= 83, "{} examples", files.len());
    let mut failures = Vec::new();
    let mut not_yet: Vec<String> = Vec::new();
    let mut objects = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        let ours = load(&text, &name);
        let theirs = load(&as_metallb(&text), &name);
        match (&ours, &theirs) {
            (Ok((m, a)), Ok((_, b))) => {
                assert_eq!(
                    a, b,
                    "{name}: the two API groups give different configurations"
                );
                objects += m.resources.pools.len()
                    + m.resources.l2_advertisements.len()
                    + m.resources.bgp_advertisements.len()
                    + m.resources.bgp_peers.len()
                    + m.resources.bfd_profiles.len()
                    + m.resources.communities.len()
                    + m.services.len();
            }
            _ => {
                let problems: Vec<&String> = [&ours, &theirs]
                    .into_iter()
                    .filter_map(|r| r.as_ref().err())
                    .flatten()
                    .collect();
                if problems.iter().all(|p| p.contains(NOT_YET)) {
                    not_yet.push(name.clone());
                } else {
                    failures.push(format!(
                        "{name}:\n  ferrolb.io: {:?}\n  metallb.io: {:?}",
                        ours.as_ref().err(),
                        theirs.as_ref().err()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} examples rejected:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    // Nothing is refused as "not supported yet" any more.
    assert!(
        not_yet.is_empty(),
        "the examples refused as not supported yet: {not_yet:?}"
    );
    assert!(objects >= 83, "only {objects} objects read");
}
