//! `migrate`: MetalLB's configuration (metallb.io objects, the legacy ConfigMap) into FerroLB's
//! manifests: deterministic, lossless, errors naming what cannot be carried over.

use ferrolb_config::manifest::Manifests;
use ferrolb_config::migrate::{Migrated, Migration};
use ferrolb_config::{build, Config};
use serde_json::Value;

fn migrate(text: &str) -> Result<Migrated, Vec<String>> {
    let mut m = Migration::new("ferrolb-system");
    m.add_yaml(text, "in.yaml");
    m.finish()
        .map_err(|e| e.iter().map(ToString::to_string).collect())
}

fn config_of(yaml: &str) -> Config {
    let mut m = Manifests::default();
    let errors = m.add_yaml(yaml, "out.yaml");
    assert!(errors.is_empty(), "{errors:?}\n{yaml}");
    build(&m.resources).unwrap_or_else(|e| panic!("{e:#?}\n{yaml}"))
}

fn find<'a>(m: &'a Migrated, kind: &str, name: &str) -> &'a Value {
    m.objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in {}", m.to_yaml()))
}

/// A legacy configuration written for this test, in the shape MetalLB read before v0.13.
const LEGACY: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: config
  namespace: metallb-system
data:
  config: |
    peers:
    - peer-address: 192.0.2.1
      peer-asn: 64501
      my-asn: 64500
      hold-time: 30s
      bfd-profile: Fast_Profile
      node-selectors:
      - match-labels:
          rack: r1
        match-expressions:
        - key: kubernetes.io/arch
          operator: In
          values: [amd64]
    - peer-address: 192.0.2.2
      peer-asn: 64500
      my-asn: 64500
      password: s3cret
    bgp-communities:
      no-export: 65535:65281
    bfd-profiles:
    - name: Fast_Profile
      receive-interval: 100
      transmit-interval: 100
    address-pools:
    - name: lan
      protocol: layer2
      addresses: [198.51.100.0/28]
    - name: public
      protocol: bgp
      avoid-buggy-ips: true
      auto-assign: false
      addresses: [203.0.113.0/24]
      bgp-advertisements:
      - aggregation-length: 24
        localpref: 100
        communities: [no-export]
      - aggregation-length: 32
        localpref: 100
    - name: plain-bgp
      protocol: bgp
      addresses: [203.0.113.0/24-x]
"#;

#[test]
fn the_legacy_config_map_becomes_objects_named_as_metallbs_converter_names_them() {
    let legacy = LEGACY.replace("203.0.113.0/24-x", "192.0.2.128/25");
    let out = migrate(&legacy).unwrap();
    let kinds: Vec<String> = out
        .objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "BGPPeer/peer1",
            "BGPPeer/peer2",
            "IPAddressPool/lan",
            "IPAddressPool/plain-bgp",
            "IPAddressPool/public",
            "BGPAdvertisement/bgpadvertisement1",
            "BGPAdvertisement/bgpadvertisement2",
            "BGPAdvertisement/bgpadvertisement3",
            "L2Advertisement/l2advertisement1",
            "BFDProfile/fast-profile",
            "Community/communities",
        ]
    );
    assert!(out
        .objects
        .iter()
        .all(|o| o["apiVersion"] == "ferrolb.io/v1beta1"
            && o["metadata"]["namespace"] == "ferrolb-system"));
    let peer1 = find(&out, "BGPPeer", "peer1");
    assert_eq!(peer1["spec"]["bfdProfile"], "fast-profile");
    assert_eq!(peer1["spec"]["holdTime"], "30s");
    assert_eq!(
        peer1["spec"]["nodeSelectors"][0]["matchLabels"]["rack"],
        "r1"
    );
    assert_eq!(find(&out, "BGPPeer", "peer2")["spec"]["password"], "s3cret");
    let public = find(&out, "IPAddressPool", "public");
    assert_eq!(public["spec"]["autoAssign"], false);
    assert_eq!(public["spec"]["avoidBuggyIPs"], true);
    let adv = find(&out, "BGPAdvertisement", "bgpadvertisement1");
    assert_eq!(adv["spec"]["ipAddressPools"][0], "public");
    assert_eq!(adv["spec"]["communities"][0], "no-export");
    // A bgp pool without advertisements gets one, as MetalLB announced it.
    let plain = find(&out, "BGPAdvertisement", "bgpadvertisement3");
    assert_eq!(plain["spec"]["ipAddressPools"][0], "plain-bgp");
    assert!(
        out.notes.iter().any(|n| n.contains("\"fast-profile\"")),
        "{:?}",
        out.notes
    );
    // What comes out is a valid FerroLB configuration with the same meaning.
    let config = config_of(&out.to_yaml());
    assert_eq!(config.peers["peer1"].hold_time.as_secs(), 30);
    assert_eq!(
        config.bgp_advertisements["bgpadvertisement1"].aggregation_length,
        24
    );
    assert!(config.pools["public"].avoid_buggy_ips);
    // Deterministic: the same text twice gives the same bytes.
    assert_eq!(migrate(&legacy).unwrap().to_yaml(), out.to_yaml());
}

#[test]
fn legacy_mistakes_are_named_and_nothing_is_written() {
    let unknown = LEGACY.replace("hold-time: 30s", "hold-time: 30s\n      hold_timer: 30s");
    let errors = migrate(&unknown).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .starts_with("ConfigMap/config: data.config: not MetalLB's legacy configuration: "),
        "{errors:?}"
    );
    assert!(errors[0].contains("hold_timer"), "{errors:?}");
    let protocol = LEGACY
        .replace("203.0.113.0/24-x", "192.0.2.128/25")
        .replace("protocol: layer2", "protocol: l2");
    let errors = migrate(&protocol).unwrap_err();
    assert_eq!(
        errors,
        ["ConfigMap/config: data.config: address pool \"lan\": protocol: \"l2\" is neither layer2 nor bgp"]
    );
}

#[test]
fn metallb_objects_move_to_ferrolb_with_their_secrets_and_without_their_history() {
    let text = r#"
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: tor
  namespace: metallb-system
  uid: 0b0c0d0e
  resourceVersion: "42"
  creationTimestamp: "2025-01-01T00:00:00Z"
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: "{}"
    team: network
spec:
  myASN: 64500
  peerASN: 64501
  peerAddress: 192.0.2.1
  passwordSecret: {name: tor-md5}
---
apiVersion: v1
kind: Secret
metadata: {name: tor-md5, namespace: metallb-system, uid: x}
type: kubernetes.io/basic-auth
stringData: {password: s3cret}
---
apiVersion: v1
kind: Secret
metadata: {name: unrelated, namespace: metallb-system}
stringData: {x: y}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: pool, namespace: metallb-system}
spec: {addresses: [192.0.2.64/26]}
status: {assignedIPv4: 3, availableIPv4: 61, assignedIPv6: 0, availableIPv6: 0}
---
apiVersion: metallb.io/v1beta1
kind: ServiceL2Status
metadata: {name: l2-abcde, namespace: metallb-system}
"#;
    let out = migrate(text).unwrap();
    assert_eq!(out.objects.len(), 3, "{}", out.to_yaml());
    let peer = find(&out, "BGPPeer", "tor");
    assert_eq!(peer["metadata"]["namespace"], "ferrolb-system");
    assert_eq!(peer["metadata"]["annotations"]["team"], "network");
    assert!(peer["metadata"].get("uid").is_none());
    assert!(peer["metadata"]["annotations"]
        .get("kubectl.kubernetes.io/last-applied-configuration")
        .is_none());
    let secret = find(&out, "Secret", "tor-md5");
    assert_eq!(secret["metadata"]["namespace"], "ferrolb-system");
    assert!(find(&out, "IPAddressPool", "pool").get("status").is_none());
    assert!(out
        .notes
        .iter()
        .any(|n| n.starts_with("ServiceL2Status/l2-abcde: skipped")));
    let config = config_of(&out.to_yaml());
    assert_eq!(config.peers["tor"].password.as_ref().unwrap().0, "s3cret");
}

#[test]
fn a_field_ferrolb_has_no_place_for_is_not_dropped_silently() {
    let text = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [192.0.2.0/28], autoassign: true}\n";
    let errors = migrate(text).unwrap_err();
    assert_eq!(
        errors,
        ["IPAddressPool/p: spec.autoassign: unknown field (misspelt? the API server would silently drop it)"]
    );
}

/// Every real MetalLB configuration in ../shared/metallb-examples, in its metallb.io form,
/// migrates into objects that build the same configuration as its ferrolb.io form.
#[test]
fn every_real_metallb_configuration_migrates_to_the_same_configuration() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/metallb-examples");
    if !dir.is_dir() {
        eprintln!("SKIP: ../shared/metallb-examples is not beside the project");
        return;
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let metallb = text
            .replace(
                "apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer",
                "apiVersion: metallb.io/v1beta2\nkind: BGPPeer",
            )
            .replace(
                "apiVersion: ferrolb.io/v1beta1",
                "apiVersion: metallb.io/v1beta1",
            )
            .replace("namespace: ferrolb-system", "namespace: metallb-system");
        let out = migrate(&metallb).unwrap_or_else(|e| panic!("{}: {e:?}", file.display()));
        let mut direct = Manifests::default();
        assert!(direct.add_yaml(&text, "direct").is_empty());
        let mut migrated = Manifests::default();
        assert!(migrated.add_yaml(&out.to_yaml(), "migrated").is_empty());
        let a = build(&direct.resources).map_err(|e| e.len());
        let b = build(&migrated.resources).map_err(|e| e.len());
        assert_eq!(a, b, "{}", file.display());
        checked += 1;
    }
    assert!(checked >= 83, "{checked}");
}
