//! One bad object never stops the rest: what `in_force` keeps, restores and leaves out.

use ferrolb_config::manifest::Manifests;
use ferrolb_config::{in_force, InForce, Resources};
use std::collections::BTreeSet;

fn resources(yaml: &str) -> Resources {
    let mut m = Manifests::default();
    let errors = m.add_yaml(yaml, "test.yaml");
    assert!(errors.is_empty(), "{errors:?}");
    m.resources
}

fn pool(name: &str, addresses: &[&str]) -> String {
    let list: Vec<String> = addresses.iter().map(|a| format!("  - {a:?}")).collect();
    format!(
        "---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {name}\nspec:\n  addresses:\n{}\n",
        list.join("\n")
    )
}

fn object(kind: &str, name: &str, spec: &str) -> String {
    format!("---\napiVersion: ferrolb.io/v1beta1\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: ferrolb-system\nspec:\n{spec}\n")
}

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

fn start(yaml: &str) -> InForce {
    in_force(&resources(yaml), &Resources::default(), &none())
}

fn addresses(outcome: &InForce, pool: &str) -> Vec<String> {
    outcome.config.pools[pool]
        .ranges
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn everything_valid_is_all_in_force() {
    let out = start(&(pool("a", &["192.0.2.0/28"]) + &pool("b", &["198.51.100.0/28"])));
    assert!(out.is_valid(), "{:?}", out.report_lines());
    assert_eq!(out.config.pools.len(), 2);
}

#[test]
fn a_garbage_pool_on_a_fresh_start_leaves_the_good_pool_working() {
    let out = start(&(pool("bad", &["not-an-ip"]) + &pool("good", &["192.0.2.0/28"])));
    assert!(!out.is_valid());
    assert_eq!(
        out.config.pools.keys().collect::<Vec<_>>(),
        vec!["good"],
        "{:?}",
        out.report_lines()
    );
    assert_eq!(
        out.left_out.iter().collect::<Vec<_>>(),
        vec!["IPAddressPool/bad"]
    );
    assert_eq!(out.errors.len(), 1);
    assert!(out.errors[0]
        .to_string()
        .starts_with("IPAddressPool/bad: spec.addresses[0]: "));
    assert!(out
        .report_lines()
        .contains(&"IPAddressPool/bad: left out of the configuration".to_string()));
}

#[test]
fn a_pool_edited_into_garbage_keeps_its_last_valid_addresses() {
    let first = start(&pool("p", &["192.0.2.0/28"]));
    assert!(first.is_valid());
    let second = in_force(
        &resources(&pool("p", &["192.0.2.0/33"])),
        &first.resources,
        &none(),
    );
    assert_eq!(addresses(&second, "p"), vec!["192.0.2.0-192.0.2.15"]);
    assert_eq!(
        second.kept.iter().collect::<Vec<_>>(),
        vec!["IPAddressPool/p"]
    );
    assert!(
        second.errors.iter().all(|e| e
            .to_string()
            .starts_with("IPAddressPool/p: spec.addresses[0]: ")),
        "{:?}",
        second.errors
    );
    // Fixed: the new version is in force and nothing is reported.
    let third = in_force(
        &resources(&pool("p", &["192.0.2.16/28"])),
        &second.resources,
        &none(),
    );
    assert!(third.is_valid());
    assert_eq!(addresses(&third, "p"), vec!["192.0.2.16-192.0.2.31"]);
    // Deleted while invalid: gone (deletion is not a mistake to guard against).
    let fourth = in_force(&Resources::default(), &second.resources, &none());
    assert!(fourth.config.pools.is_empty() && fourth.is_valid());
}

#[test]
fn a_new_pool_overlapping_one_in_force_gives_way_whatever_its_name() {
    let first = start(&pool("z-old", &["192.0.2.0/24"]));
    let both = pool("z-old", &["192.0.2.0/24"]) + &pool("a-new", &["192.0.2.0/25"]);
    let out = in_force(&resources(&both), &first.resources, &none());
    assert_eq!(
        out.config.pools.keys().collect::<Vec<_>>(),
        vec!["z-old"],
        "{:?}",
        out.report_lines()
    );
    assert_eq!(
        out.left_out.iter().collect::<Vec<_>>(),
        vec!["IPAddressPool/a-new"]
    );
    assert!(
        out.errors[0]
            .to_string()
            .starts_with("IPAddressPool/a-new: spec.addresses[0]: "),
        "{:?}",
        out.errors
    );
}

#[test]
fn on_a_start_the_older_of_two_overlapping_pools_stays() {
    let yaml = "---
apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: a-newer, creationTimestamp: '2026-02-01T00:00:00Z'}
spec: {addresses: [192.0.2.0/25]}
---
apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: b-older, creationTimestamp: '2026-01-01T00:00:00Z'}
spec: {addresses: [192.0.2.0/24]}
";
    let out = start(yaml);
    assert_eq!(
        out.config.pools.keys().collect::<Vec<_>>(),
        vec!["b-older"],
        "{:?}",
        out.report_lines()
    );
}

#[test]
fn an_advertisement_naming_a_bad_pool_still_announces_the_good_one() {
    let yaml = pool("bad", &["nope"])
        + &pool("good", &["192.0.2.0/28"])
        + &object("L2Advertisement", "l2", "  ipAddressPools: [good, bad]");
    let out = start(&yaml);
    let adv = &out.config.l2_advertisements["l2"];
    assert_eq!(adv.pools.iter().collect::<Vec<_>>(), vec!["good"]);
    // The advertisement is not itself a problem.
    assert!(out.errors.iter().all(|e| e.object == "IPAddressPool/bad"));
}

#[test]
fn an_advertisement_naming_a_pool_that_does_not_exist_announces_the_others() {
    // As MetalLB: a pool not created yet, or just deleted, is no reason to stop announcing the
    // pools that exist. Reported, not left out.
    let yaml = pool("main", &["192.0.2.0/28"])
        + &object("L2Advertisement", "l2", "  ipAddressPools: [main, spare]")
        + &object("BGPAdvertisement", "bgp", "  ipAddressPools: [gone]");
    let out = start(&yaml);
    assert_eq!(
        out.config.l2_advertisements["l2"]
            .pools
            .iter()
            .collect::<Vec<_>>(),
        vec!["main"]
    );
    assert!(out.config.bgp_advertisements["bgp"].pools.is_empty());
    assert!(out.left_out.is_empty() && out.kept.is_empty(), "{out:?}");
    let lines: Vec<String> = out.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        vec![
            "BGPAdvertisement/bgp: spec.ipAddressPools[0]: IPAddressPool/gone does not exist",
            "L2Advertisement/l2: spec.ipAddressPools[1]: IPAddressPool/spare does not exist",
        ]
    );
    // The pool deleted later: the same, from a configuration that had it.
    let with_spare = resources(&(yaml.clone() + &pool("spare", &["192.0.2.16/28"])));
    let before = in_force(&with_spare, &Resources::default(), &none());
    assert!(before
        .errors
        .iter()
        .all(|e| e.object == "BGPAdvertisement/bgp"));
    let after = in_force(&resources(&yaml), &before.resources, &none());
    assert_eq!(
        after.config.l2_advertisements["l2"]
            .pools
            .iter()
            .collect::<Vec<_>>(),
        vec!["main"]
    );
}

#[test]
fn an_advertisement_whose_only_pool_is_bad_announces_nothing() {
    let yaml = pool("bad", &["nope"])
        + &pool("good", &["192.0.2.0/28"])
        + &object("L2Advertisement", "l2", "  ipAddressPools: [bad]");
    let out = start(&yaml);
    assert!(out.config.l2_advertisements["l2"].pools.is_empty());
}

#[test]
fn a_peer_needing_a_bad_bfd_profile_is_left_out_and_says_why() {
    let yaml = object("BFDProfile", "fast", "  detectMultiplier: 1")
        + &object(
            "BGPPeer",
            "with-bfd",
            "  myASN: 64500\n  peerASN: 64501\n  peerAddress: 192.0.2.1\n  bfdProfile: fast",
        )
        + &object(
            "BGPPeer",
            "plain",
            "  myASN: 64500\n  peerASN: 64501\n  peerAddress: 192.0.2.2",
        )
        + &object("BGPAdvertisement", "only-bad", "  peers: [with-bfd]");
    let out = start(&yaml);
    assert_eq!(
        out.config.peers.keys().collect::<Vec<_>>(),
        vec!["plain"],
        "{:?}",
        out.report_lines()
    );
    assert_eq!(
        out.left_out.iter().collect::<Vec<_>>(),
        vec!["BFDProfile/fast", "BGPPeer/with-bfd"]
    );
    assert!(out.errors.iter().any(|e| e.to_string()
        == "BGPPeer/with-bfd: spec.bfdProfile: BFDProfile/fast is invalid and left out, so this peer is too"));
    // The advertisement keeps naming the left-out peer: it must not widen to every peer.
    let adv = &out.config.bgp_advertisements["only-bad"];
    assert_eq!(adv.peers.iter().collect::<Vec<_>>(), vec!["with-bfd"]);
}

#[test]
fn a_peer_whose_secret_disappears_keeps_its_last_password() {
    let secret = "---
apiVersion: v1
kind: Secret
metadata: {name: md5, namespace: ferrolb-system}
type: kubernetes.io/basic-auth
stringData: {password: s3cret}
";
    let peer = object(
        "BGPPeer",
        "r1",
        "  myASN: 64500\n  peerASN: 64501\n  peerAddress: 192.0.2.1\n  passwordSecret: {name: md5}",
    );
    let first = start(&(peer.clone() + secret));
    assert!(first.is_valid(), "{:?}", first.report_lines());
    let second = in_force(&resources(&peer), &first.resources, &none());
    assert_eq!(
        second.kept.iter().collect::<Vec<_>>(),
        vec!["BGPPeer/r1"],
        "{:?}",
        second.report_lines()
    );
    let password = second.config.peers["r1"].password.as_ref().unwrap();
    assert_eq!(password.0, "s3cret");
}

#[test]
fn problems_are_reported_once_with_each_object_named() {
    let yaml = pool("bad", &["nope", "192.0.2.0/33"]) + &pool("good", &["192.0.2.0/28"]);
    let out = start(&yaml);
    let by_object = out.by_object();
    assert_eq!(by_object.len(), 1);
    assert_eq!(by_object["IPAddressPool/bad"].len(), 3, "{by_object:?}");
}

#[test]
fn an_unreadable_object_is_not_a_deletion() {
    let first = start(&pool("p", &["192.0.2.0/28"]));
    let unreadable: BTreeSet<String> = ["IPAddressPool/p".to_string()].into();
    let second = in_force(&Resources::default(), &first.resources, &unreadable);
    assert_eq!(addresses(&second, "p"), vec!["192.0.2.0-192.0.2.15"]);
    assert_eq!(second.kept, unreadable);
    // An advertisement naming the unreadable pool: the pool is there, not missing.
    let l2 = object("L2Advertisement", "l2", "  ipAddressPools: [p]");
    let first = start(&(pool("p", &["192.0.2.0/28"]) + &l2));
    let second = in_force(&resources(&l2), &first.resources, &unreadable);
    assert!(second.errors.is_empty(), "{:?}", second.errors);
    assert_eq!(
        second.config.l2_advertisements["l2"]
            .pools
            .iter()
            .collect::<Vec<_>>(),
        vec!["p"]
    );
}
