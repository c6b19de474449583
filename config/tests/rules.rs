//! Every validation rule, through the same path `ferrolb-controller validate` takes: manifests
//! are read with `Manifests::add_yaml`, then `build` validates them. Every case also runs as its
//! metallb.io twin (MetalLB's apiVersions), which must give the same result, and through
//! `in_force` (what the running components and file mode use), which must report at least the
//! same problems and leave out or keep every object named.

use ferrolb_config::addresses::Family;
use ferrolb_config::community::Community;
use ferrolb_config::manifest::Manifests;
use ferrolb_config::model::PeerAsn;
use ferrolb_config::{build, Config};
use std::time::Duration;

fn read(yaml: &str) -> (Manifests, Vec<String>) {
    let mut m = Manifests::default();
    let mut problems: Vec<String> = m
        .add_yaml(yaml, "test.yaml")
        .iter()
        .map(ToString::to_string)
        .collect();
    if let Err(errors) = build(&m.resources) {
        problems.extend(errors.iter().map(ToString::to_string));
    }
    (m, problems)
}

fn problems(yaml: &str) -> Vec<String> {
    read(yaml).1
}

/// The same manifests in MetalLB's API: metallb.io/v1beta2 for BGPPeer, v1beta1 otherwise.
fn metallb_twin(yaml: &str) -> String {
    yaml.replace(
        "apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer",
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer",
    )
    .replace(
        "apiVersion: ferrolb.io/v1beta1",
        "apiVersion: metallb.io/v1beta1",
    )
}

fn config(yaml: &str) -> Config {
    let mut m = Manifests::default();
    let errors = m.add_yaml(yaml, "test.yaml");
    assert!(errors.is_empty(), "{errors:?}");
    let config = build(&m.resources).unwrap_or_else(|e| panic!("{e:#?}"));
    let mut twin = Manifests::default();
    assert!(twin.add_yaml(&metallb_twin(yaml), "twin.yaml").is_empty());
    assert_eq!(
        build(&twin.resources).as_ref(),
        Ok(&config),
        "the metallb.io twin differs"
    );
    config
}

/// Asserts that `yaml` is rejected with exactly the `expected` problems (order-free), in both
/// API groups, and that the running components' path reports them too.
#[track_caller]
fn rejects(yaml: &str, expected: &[&str]) {
    let mut got = problems(yaml);
    got.sort();
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
    // Problems about the apiVersion or kind itself differ between the groups by nature.
    if want
        .iter()
        .all(|w| !w.contains(": apiVersion: ") && !w.contains(": kind: "))
    {
        let mut twin = problems(&metallb_twin(yaml));
        twin.sort();
        assert_eq!(twin, want, "the metallb.io twin differs");
    }
    // What the controller and the speakers do with the same objects.
    let (m, _) = read(yaml);
    let outcome = ferrolb_config::in_force(&m.resources, &Default::default(), &Default::default());
    let reported: Vec<String> = outcome.errors.iter().map(ToString::to_string).collect();
    for w in &want {
        let object = w.split(": ").next().unwrap_or_default();
        let read_problem = !object.contains('/') || object.contains(" (");
        let built = build(&m.resources).err().unwrap_or_default();
        if read_problem || !built.iter().any(|e| e.to_string() == *w) {
            continue; // a reading problem: the manifest reader's, not in_force's
        }
        assert!(
            reported.contains(w),
            "in_force does not report {w:?}: {reported:?}"
        );
        // A pool an advertisement names that does not exist is reported, and the advertisement
        // stays in force for the pools that do (MetalLB ignores such a name).
        let missing_pool = w.contains(": spec.ipAddressPools[") && w.ends_with(" does not exist");
        assert!(
            outcome.left_out.contains(object) || outcome.kept.contains(object) || missing_pool,
            "{object} is neither left out nor kept: {:?}",
            outcome.report_lines()
        );
    }
}

fn pool(name: &str, addresses: &[&str]) -> String {
    let list: Vec<String> = addresses.iter().map(|a| format!("  - {a:?}")).collect();
    format!(
        "---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {name}\nspec:\n  addresses:\n{}\n",
        list.join("\n")
    )
}

fn peer(name: &str, spec: &str) -> String {
    format!("---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata:\n  name: {name}\n  namespace: ferrolb-system\nspec:\n{spec}\n")
}

fn object(kind: &str, name: &str, spec: &str) -> String {
    format!("---\napiVersion: ferrolb.io/v1beta1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}\n")
}

const PEER_OK: &str = "  myASN: 64500\n  peerASN: 64501\n  peerAddress: 192.0.2.1";

#[test]
fn a_full_valid_configuration_builds_with_defaults_filled_in() {
    let yaml = [
        pool("v4", &["192.0.2.0/24", "198.51.100.10-198.51.100.20"]),
        pool("v6", &["2001:db8::/64"]),
        object("L2Advertisement", "l2", "  ipAddressPools: [v4]"),
        object(
            "BGPAdvertisement",
            "bgp",
            "  ipAddressPools: [v6]\n  communities: [\"65535:65282\", \"large:1:2:3\", no-export]\n  localPref: 50",
        ),
        object("Community", "names", "  communities:\n  - name: no-export\n    value: \"65535:65281\""),
        object("BFDProfile", "fast", "  receiveInterval: 50\n  transmitInterval: 50"),
        peer("router", &format!("{PEER_OK}\n  bfdProfile: fast")),
    ]
    .concat();
    let c = config(&yaml);
    let v4 = &c.pools["v4"];
    assert!(v4.auto_assign);
    assert_eq!(v4.size(Family::V4), 256 + 11);
    assert_eq!(c.pools["v6"].size(Family::V6), 1u128 << 64);
    assert_eq!(c.l2_advertisements["l2"].pools.len(), 1);
    let adv = &c.bgp_advertisements["bgp"];
    assert_eq!(
        (adv.aggregation_length, adv.aggregation_length_v6),
        (32, 128)
    );
    assert!(adv.communities.contains(&Community::Standard(0xffff_ff01)));
    assert!(adv.communities.contains(&Community::Large(1, 2, 3)));
    assert_eq!(adv.communities.len(), 3);
    let p = &c.peers["router"];
    assert_eq!(p.port, 179);
    assert_eq!(
        (p.hold_time, p.keepalive_time),
        (Duration::from_secs(90), Duration::from_secs(30))
    );
    assert_eq!(p.connect_time, Duration::from_secs(10));
    assert_eq!(p.peer_asn, PeerAsn::Fixed(64501));
    let bfd = &c.bfd_profiles["fast"];
    assert_eq!(
        (
            bfd.receive_interval_ms,
            bfd.detect_multiplier,
            bfd.minimum_ttl
        ),
        (50, 3, 254)
    );
}

#[test]
fn advertisements_without_pools_cover_every_pool_and_selectors_resolve_by_label() {
    let labelled = "---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: blue\n  labels:\n    color: blue\nspec:\n  addresses: [203.0.113.0/28]\n";
    let yaml = [
        pool("plain", &["192.0.2.0/28"]),
        labelled.to_string(),
        object("L2Advertisement", "all", "  interfaces: [eth0]"),
        object(
            "L2Advertisement",
            "by-label",
            "  ipAddressPoolSelectors:\n  - matchLabels: {color: blue}",
        ),
    ]
    .concat();
    let c = config(&yaml);
    assert_eq!(c.l2_advertisements["all"].pools.len(), 2);
    let picked: Vec<&String> = c.l2_advertisements["by-label"].pools.iter().collect();
    assert_eq!(picked, ["blue"]);
}

#[test]
fn overlapping_pools_are_rejected_across_and_within_pools() {
    rejects(
        &[pool("a", &["192.0.2.0/24"]), pool("b", &["192.0.2.128/25"])].concat(),
        &["IPAddressPool/b: spec.addresses[0]: 192.0.2.128-192.0.2.255 overlaps 192.0.2.0-192.0.2.255 (IPAddressPool/a spec.addresses[0]); pools must not overlap"],
    );
    rejects(
        &pool("a", &["192.0.2.0/24", "192.0.2.10-192.0.2.20"]),
        &["IPAddressPool/a: spec.addresses[1]: 192.0.2.10-192.0.2.20 overlaps 192.0.2.0-192.0.2.255 (spec.addresses[0] of the same pool); pools must not overlap"],
    );
    rejects(
        &[pool("a", &["2001:db8::/64"]), pool("b", &["2001:db8::ffff"])].concat(),
        &["IPAddressPool/b: spec.addresses[0]: 2001:db8::ffff overlaps 2001:db8::-2001:db8::ffff:ffff:ffff:ffff (IPAddressPool/a spec.addresses[0]); pools must not overlap"],
    );
    // Adjacent ranges and the same numbers in the other family do not overlap.
    config(
        &[
            pool("a", &["192.0.2.0/25"]),
            pool("b", &["192.0.2.128/25", "::c000:200/120"]),
        ]
        .concat(),
    );
}

#[test]
fn malformed_reversed_and_mixed_ranges_are_rejected() {
    rejects(
        &pool("a", &["192.0.2.0/33", "banana", "192.0.2.20-192.0.2.10", "192.0.2.1-2001:db8::1", ""]),
        &[
            "IPAddressPool/a: spec.addresses[0]: \"192.0.2.0/33\" is not a valid CIDR: invalid IP address syntax",
            "IPAddressPool/a: spec.addresses[1]: \"banana\": \"banana\" is not an IP address",
            "IPAddressPool/a: spec.addresses[2]: range \"192.0.2.20-192.0.2.10\" is reversed: its start is after its end",
            "IPAddressPool/a: spec.addresses[3]: range \"192.0.2.1-2001:db8::1\" mixes IPv4 and IPv6",
            "IPAddressPool/a: spec.addresses[4]: \"\" is not a CIDR, a start-end range or an address",
        ],
    );
    rejects(
        &object("IPAddressPool", "empty", "  addresses: []"),
        &["IPAddressPool/empty: spec.addresses: at least one address range is required"],
    );
}

#[test]
fn unknown_names_are_rejected() {
    let yaml = [
        pool("a", &["192.0.2.0/28"]),
        object("L2Advertisement", "l2", "  ipAddressPools: [a, nope]"),
        object(
            "BGPAdvertisement",
            "bgp",
            "  ipAddressPools: [gone]\n  peers: [ghost]\n  communities: [no-such-alias]",
        ),
        peer("p", &format!("{PEER_OK}\n  bfdProfile: missing")),
    ]
    .concat();
    rejects(
        &yaml,
        &[
            "L2Advertisement/l2: spec.ipAddressPools[1]: IPAddressPool/nope does not exist",
            "BGPAdvertisement/bgp: spec.ipAddressPools[0]: IPAddressPool/gone does not exist",
            "BGPAdvertisement/bgp: spec.peers[0]: BGPPeer/ghost does not exist",
            "BGPAdvertisement/bgp: spec.communities[0]: \"no-such-alias\" is not a community value and no Community object defines that alias",
            "BGPPeer/p: spec.bfdProfile: BFDProfile/missing does not exist",
        ],
    );
}

#[test]
fn peer_asn_rules() {
    rejects(
        &peer(
            "both",
            "  myASN: 64500\n  peerASN: 64501\n  dynamicASN: external\n  peerAddress: 192.0.2.1",
        ),
        &["BGPPeer/both: spec.peerASN: peerASN and dynamicASN are mutually exclusive"],
    );
    rejects(
        &peer("neither", "  myASN: 64500\n  peerAddress: 192.0.2.1"),
        &["BGPPeer/neither: spec.peerASN: one of peerASN or dynamicASN must be set"],
    );
    rejects(
        &peer("zero", "  myASN: 0\n  peerASN: 0\n  peerAddress: 192.0.2.1"),
        &[
            "BGPPeer/zero: spec.myASN: AS 0 is reserved (RFC 7607)",
            "BGPPeer/zero: spec.peerASN: AS 0 is reserved (RFC 7607)",
        ],
    );
    rejects(
        &peer("dyn", "  myASN: 64500\n  dynamicASN: sideways\n  peerAddress: 192.0.2.1"),
        &["BGPPeer/dyn: spec.dynamicASN: unknown variant `sideways`, expected `internal` or `external`"],
    );
    let c = config(&peer(
        "dyn",
        "  myASN: 4200000000\n  dynamicASN: internal\n  peerAddress: 2001:db8::1",
    ));
    assert_eq!(c.peers["dyn"].peer_asn, PeerAsn::Internal);
    assert!(c.peers["dyn"].is_internal());
}

#[test]
fn timer_rules_and_derived_timers() {
    for hold in ["1s", "2s", "2900ms"] {
        let cut = &hold[..1];
        rejects(
            &peer("p", &format!("{PEER_OK}\n  holdTime: {hold}")),
            &[&format!("BGPPeer/p: spec.holdTime: gives a hold time of {cut}s: it must be 0 or at least 3s (RFC 4271)")],
        );
    }
    // Only keepaliveTime: the hold time is three times it (0.9s gives 2.7s, cut to 2s).
    rejects(
        &peer("p", &format!("{PEER_OK}\n  keepaliveTime: 900ms")),
        &["BGPPeer/p: spec.keepaliveTime: gives a hold time of 2s: it must be 0 or at least 3s (RFC 4271)"],
    );
    rejects(
        &peer(
            "p",
            &format!("{PEER_OK}\n  holdTime: 9s\n  keepaliveTime: 10s"),
        ),
        &["BGPPeer/p: spec.keepaliveTime: 10s is greater than holdTime 9s"],
    );
    rejects(
        &peer(
            "p",
            &format!("{PEER_OK}\n  holdTime: 0s\n  keepaliveTime: 3s"),
        ),
        &["BGPPeer/p: spec.keepaliveTime: 3s is greater than holdTime 0ns"],
    );
    rejects(
        &peer("p", &format!("{PEER_OK}\n  holdTime: soon")),
        &["BGPPeer/p: spec.holdTime: \"soon\" is not a duration such as \"90s\", \"1m30s\" or \"500ms\""],
    );
    // As MetalLB: fractions are cut to whole seconds.
    let fraction = config(&peer("p", &format!("{PEER_OK}\n  holdTime: 4500ms")));
    assert_eq!(fraction.peers["p"].hold_time, Duration::from_secs(4));
    // keepaliveTime 0s beside a hold time (MetalLB's converter writes it): the usual third.
    let zero_keepalive = config(&peer(
        "p",
        &format!("{PEER_OK}\n  holdTime: 90s\n  keepaliveTime: 0s"),
    ));
    assert_eq!(
        zero_keepalive.peers["p"].keepalive_time,
        Duration::from_secs(30)
    );
    let equal = config(&peer(
        "p",
        &format!("{PEER_OK}\n  holdTime: 9s\n  keepaliveTime: 9s"),
    ));
    assert_eq!(equal.peers["p"].keepalive_time, Duration::from_secs(9));
    rejects(
        &peer("p", &format!("{PEER_OK}\n  connectTime: 1500ms")),
        &["BGPPeer/p: spec.connectTime: 1.5s is not a whole number of seconds"],
    );
    rejects(
        &peer("p", &format!("{PEER_OK}\n  connectTime: 65536s")),
        &["BGPPeer/p: spec.connectTime: 65536s is out of range 1s..=65535s"],
    );
    let hold_only = config(&peer("p", &format!("{PEER_OK}\n  holdTime: 9s")));
    assert_eq!(hold_only.peers["p"].keepalive_time, Duration::from_secs(3));
    let keepalive_only = config(&peer("p", &format!("{PEER_OK}\n  keepaliveTime: 1m")));
    assert_eq!(
        keepalive_only.peers["p"].hold_time,
        Duration::from_secs(180)
    );
    let zero = config(&peer("p", &format!("{PEER_OK}\n  holdTime: 0s")));
    assert_eq!(zero.peers["p"].keepalive_time, Duration::ZERO);
    rejects(
        &peer("p", &format!("{PEER_OK}\n  connectTime: 0s")),
        &["BGPPeer/p: spec.connectTime: 0ns is out of range 1s..=65535s"],
    );
}

#[test]
fn ports_and_addresses_are_checked() {
    rejects(
        &peer("p", &format!("{PEER_OK}\n  peerPort: 0")),
        &["BGPPeer/p: spec.peerPort: 0 is out of range 1..=65535"],
    );
    rejects(
        &peer("p", &format!("{PEER_OK}\n  peerPort: 70000")),
        &["BGPPeer/p: spec.peerPort: 70000 is out of range 1..=65535"],
    );
    rejects(
        &peer("p", "  myASN: 64500\n  peerASN: 64501\n  peerAddress: router.example\n  sourceAddress: 2001:db8::1\n  routerID: 2001:db8::1"),
        &[
            "BGPPeer/p: spec.peerAddress: \"router.example\" is not an IP address",
            "BGPPeer/p: spec.routerID: \"2001:db8::1\" is not an IPv4 address (a BGP identifier is 4 octets)",
        ],
    );
    rejects(
        &peer("p", &format!("{PEER_OK}\n  sourceAddress: 2001:db8::1")),
        &["BGPPeer/p: spec.sourceAddress: 2001:db8::1 is not of the same family as peerAddress 192.0.2.1"],
    );
    rejects(
        &peer("p", "  myASN: 64500\n  peerASN: 64501"),
        &["BGPPeer/p: spec.peerAddress: one of peerAddress or interface is required"],
    );
    // Two peers with one address on the same nodes: one session per address and node.
    let twins = [
        peer("a", PEER_OK),
        peer("b", &format!("{PEER_OK}\n  peerPort: 1179")),
        peer(
            "c",
            &format!("{PEER_OK}\n  nodeSelectors: [{{matchLabels: {{rack: r1}}}}]"),
        ),
        peer(
            "d",
            &format!("{PEER_OK}\n  nodeSelectors: [{{matchLabels: {{rack: r2}}}}]"),
        ),
    ]
    .concat();
    rejects(
        &twins,
        &[
            "BGPPeer/b: spec.peerAddress: 192.0.2.1 is already the address of BGPPeer/a on the same nodes; one session per address and node",
            "BGPPeer/c: spec.peerAddress: 192.0.2.1 is already the address of BGPPeer/a on the same nodes; one session per address and node",
            "BGPPeer/d: spec.peerAddress: 192.0.2.1 is already the address of BGPPeer/a on the same nodes; one session per address and node",
        ],
    );
    // Different racks: no node in common.
    let racks = [
        peer(
            "c",
            &format!("{PEER_OK}\n  nodeSelectors: [{{matchLabels: {{rack: r1}}}}]"),
        ),
        peer(
            "d",
            &format!("{PEER_OK}\n  nodeSelectors: [{{matchLabels: {{rack: r2}}}}]"),
        ),
    ]
    .concat();
    assert_eq!(config(&racks).peers.len(), 2);
}

#[test]
fn password_secret_without_a_name_is_no_reference() {
    let alone = config(&peer("p", &format!("{PEER_OK}\n  passwordSecret: {{}}")));
    assert!(alone.peers["p"].password.is_none());
    let beside = config(&peer(
        "p",
        &format!("{PEER_OK}\n  password: s3cret\n  passwordSecret: {{}}"),
    ));
    assert_eq!(beside.peers["p"].password.as_ref().unwrap().0, "s3cret");
}

#[test]
fn metallb_list_and_selector_rules() {
    let yaml = [
        pool("a", &["192.0.2.0/28"]),
        object("L2Advertisement", "l2", "  ipAddressPools: [a, a]"),
        object(
            "BGPAdvertisement",
            "dup",
            "  ipAddressPools: [a, a]\n  communities: [\"65000:1\", \"65000:1\"]",
        ),
        object(
            "BGPAdvertisement",
            "sel",
            "  aggregationLength: 28\n  serviceSelectors: [{matchLabels: {app: x}}]",
        ),
        object(
            "BGPAdvertisement",
            "nokey",
            "  nodeSelectors: [{matchExpressions: [{key: \"\", operator: Exists}]}]",
        ),
    ]
    .concat();
    rejects(
        &yaml,
        &[
            "L2Advertisement/l2: spec.ipAddressPools[1]: \"a\" is listed twice",
            "BGPAdvertisement/dup: spec.ipAddressPools[1]: \"a\" is listed twice",
            "BGPAdvertisement/dup: spec.communities[1]: \"65000:1\" is listed twice",
            "BGPAdvertisement/sel: spec.serviceSelectors: cannot be combined with an aggregationLength other than 32 or an aggregationLengthV6 other than 128",
            "BGPAdvertisement/nokey: spec.nodeSelectors[0]: matchExpressions[0].key: is required",
        ],
    );
    let repeats = object(
        "L2Advertisement",
        "twice",
        "  nodeSelectors:\n  - {matchLabels: {rack: r1}}\n  - {matchLabels: {rack: r1}}\n  - matchExpressions: [{key: zone, operator: In, values: [a, a]}]\n  - matchExpressions: [{key: zone, operator: Exists}, {key: zone, operator: Exists}]",
    );
    rejects(
        &repeats,
        &[
            "L2Advertisement/twice: spec.nodeSelectors[1]: repeats an earlier selector",
            "L2Advertisement/twice: spec.nodeSelectors[2]: matchExpressions[0].values: \"a\" is listed twice",
            "L2Advertisement/twice: spec.nodeSelectors[3]: matchExpressions[1] repeats an earlier expression",
        ],
    );
}

#[test]
fn local_pref_may_differ_only_where_routes_cannot_meet() {
    let base = pool("a", &["192.0.2.0/24"]);
    let conflict = [
        base.clone(),
        object("BGPAdvertisement", "one", "  localPref: 100"),
        object("BGPAdvertisement", "two", "  localPref: 200"),
    ]
    .concat();
    rejects(
        &conflict,
        &["BGPAdvertisement/two: spec.localPref: 200 conflicts with localPref 100 of BGPAdvertisement/one for IPAddressPool/a: both would announce the same routes to the same peers from the same nodes"],
    );
    // Different aggregation, disjoint peers, different nodes: each may differ.
    for (one, two) in [
        (
            "  localPref: 100",
            "  localPref: 200\n  aggregationLength: 24",
        ),
        (
            "  localPref: 100\n  peers: [p1]",
            "  localPref: 200\n  peers: [p2]",
        ),
        (
            "  localPref: 100\n  nodeSelectors: [{matchLabels: {rack: r1}}]",
            "  localPref: 200\n  nodeSelectors: [{matchLabels: {rack: r2}}]",
        ),
    ] {
        let yaml = [
            base.clone(),
            peer("p1", PEER_OK),
            peer(
                "p2",
                "  myASN: 64500\n  peerASN: 64501\n  peerAddress: 192.0.2.2",
            ),
            object("BGPAdvertisement", "one", one),
            object("BGPAdvertisement", "two", two),
        ]
        .concat();
        assert_eq!(config(&yaml).bgp_advertisements.len(), 2, "{one} / {two}");
    }
}

#[test]
fn communities_are_checked_in_advertisements_and_community_objects() {
    let yaml = [
        pool("a", &["192.0.2.0/28"]),
        object("BGPAdvertisement", "bgp", "  communities: [\"65536:1\", \"large:1:2\", \"1:2:3\", \"large:1:2:4294967296\"]"),
        object("Community", "c", "  communities:\n  - name: bad\n    value: \"1:65536\"\n  - name: \"1:2\"\n    value: \"1:2\""),
    ]
    .concat();
    rejects(
        &yaml,
        &[
            "BGPAdvertisement/bgp: spec.communities[0]: \"65536:1\": \"65536\" is not a 16-bit number (0-65535)",
            "BGPAdvertisement/bgp: spec.communities[1]: \"large:1:2\" is neither `a:b` with 16-bit parts nor `large:a:b:c` with 32-bit parts",
            "BGPAdvertisement/bgp: spec.communities[2]: \"1:2:3\": \"2:3\" is not a 16-bit number (0-65535)",
            "BGPAdvertisement/bgp: spec.communities[3]: \"large:1:2:4294967296\": \"4294967296\" is not a 32-bit number (0-4294967295)",
            "Community/c: spec.communities[0].value: \"1:65536\": \"65536\" is not a 16-bit number (0-65535)",
            "Community/c: spec.communities[1].name: \"1:2\" looks like a community value, not a name",
        ],
    );
    rejects(
        &[
            object("Community", "one", "  communities:\n  - name: dup\n    value: \"1:1\""),
            object("Community", "two", "  communities:\n  - name: dup\n    value: \"1:2\""),
        ]
        .concat(),
        &["Community/two: spec.communities[0].name: alias \"dup\" is already defined in Community/one"],
    );
}

#[test]
fn aggregation_lengths_are_bounded_and_not_shorter_than_the_pools_blocks() {
    let yaml = [
        pool("a", &["192.0.2.0/24", "2001:db8::/120"]),
        object(
            "BGPAdvertisement",
            "range",
            "  aggregationLength: 33\n  aggregationLengthV6: 129",
        ),
        object("BGPAdvertisement", "negative", "  aggregationLength: -1"),
        object(
            "BGPAdvertisement",
            "short",
            "  aggregationLength: 16\n  aggregationLengthV6: 64",
        ),
    ]
    .concat();
    rejects(
        &yaml,
        &[
            "BGPAdvertisement/range: spec.aggregationLength: 33 is out of range 1..=32",
            "BGPAdvertisement/range: spec.aggregationLengthV6: 129 is out of range 0..=128",
            "BGPAdvertisement/negative: spec.aggregationLength: -1 is out of range 1..=32",
            "BGPAdvertisement/short: spec.aggregationLength: 16 is shorter than /24, the largest block of 192.0.2.0-192.0.2.255 in IPAddressPool/a; routes would cover addresses outside the pool",
            "BGPAdvertisement/short: spec.aggregationLengthV6: 64 is shorter than /120, the largest block of 2001:db8::-2001:db8::ff in IPAddressPool/a; routes would cover addresses outside the pool",
        ],
    );
    // A range that is not one CIDR, as MetalLB: no shorter than its largest block (.10-.20
    // splits into .10/31, .12/30, .16/30, .20/32).
    rejects(
        &[pool("r", &["192.0.2.10-192.0.2.20"]), object("BGPAdvertisement", "agg", "  aggregationLength: 29")].concat(),
        &["BGPAdvertisement/agg: spec.aggregationLength: 29 is shorter than /30, the largest block of 192.0.2.10-192.0.2.20 in IPAddressPool/r; routes would cover addresses outside the pool"],
    );
    let over_range = config(
        &[
            pool("r", &["192.0.2.10-192.0.2.20"]),
            object("BGPAdvertisement", "agg", "  aggregationLength: 30"),
        ]
        .concat(),
    );
    assert_eq!(over_range.bgp_advertisements["agg"].aggregation_length, 30);
    let c = config(
        &[
            pool("a", &["192.0.2.0/24"]),
            object("BGPAdvertisement", "agg", "  aggregationLength: 24"),
        ]
        .concat(),
    );
    assert_eq!(c.bgp_advertisements["agg"].aggregation_length, 24);
}

#[test]
fn ebgp_multihop_is_rejected_for_ibgp() {
    rejects(
        &peer(
            "i",
            "  myASN: 64500\n  peerASN: 64500\n  peerAddress: 192.0.2.1\n  ebgpMultiHop: true",
        ),
        &["BGPPeer/i: spec.ebgpMultiHop: is only valid for eBGP peers; this peer is iBGP"],
    );
    rejects(
        &peer("d", "  myASN: 64500\n  dynamicASN: internal\n  peerAddress: 192.0.2.1\n  ebgpMultiHop: true"),
        &["BGPPeer/d: spec.ebgpMultiHop: is only valid for eBGP peers; this peer is iBGP"],
    );
    config(&peer(
        "e",
        "  myASN: 64500\n  peerASN: 64501\n  peerAddress: 192.0.2.1\n  ebgpMultiHop: true",
    ));
}

fn secret(name: &str, type_: &str, data: &str) -> String {
    format!("---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: ferrolb-system\ntype: {type_}\n{data}\n")
}

#[test]
fn password_rules() {
    rejects(
        &peer(
            "p",
            &format!("{PEER_OK}\n  password: x\n  passwordSecret: {{name: s}}"),
        ),
        &["BGPPeer/p: spec.passwordSecret: password and passwordSecret are mutually exclusive"],
    );
    rejects(
        &peer(
            "p",
            &format!("{PEER_OK}\n  passwordSecret: {{name: absent}}"),
        ),
        &["BGPPeer/p: spec.passwordSecret: Secret ferrolb-system/absent does not exist"],
    );
    rejects(
        &[peer("p", &format!("{PEER_OK}\n  passwordSecret: {{name: opaque}}")), secret("opaque", "Opaque", "stringData: {password: x}")].concat(),
        &["BGPPeer/p: spec.passwordSecret: Secret ferrolb-system/opaque has type \"Opaque\"; it must be kubernetes.io/basic-auth"],
    );
    rejects(
        &[peer("p", &format!("{PEER_OK}\n  passwordSecret: {{name: nokey}}")), secret("nokey", "kubernetes.io/basic-auth", "stringData: {username: x}")].concat(),
        &["BGPPeer/p: spec.passwordSecret: Secret ferrolb-system/nokey has no non-empty key \"password\""],
    );
    // data is base64: "s3cret".
    let c = config(
        &[
            peer("p", &format!("{PEER_OK}\n  passwordSecret: {{name: good}}")),
            secret(
                "good",
                "kubernetes.io/basic-auth",
                "data: {password: czNjcmV0}",
            ),
        ]
        .concat(),
    );
    assert_eq!(c.peers["p"].password.as_ref().unwrap().0, "s3cret");
    assert!(
        !format!("{:?}", c.peers["p"]).contains("s3cret"),
        "passwords never reach Debug output"
    );
}

#[test]
fn bfd_ranges_are_checked() {
    rejects(
        &object(
            "BFDProfile",
            "b",
            "  receiveInterval: 9\n  transmitInterval: 60001\n  detectMultiplier: 1\n  echoInterval: 5\n  minimumTtl: 255",
        ),
        &[
            "BFDProfile/b: spec.receiveInterval: 9 is out of range 10..=60000",
            "BFDProfile/b: spec.transmitInterval: 60001 is out of range 10..=60000",
            "BFDProfile/b: spec.detectMultiplier: 1 is out of range 2..=255",
            "BFDProfile/b: spec.echoInterval: 5 is out of range 10..=60000",
            "BFDProfile/b: spec.minimumTtl: 255 is out of range 1..=254",
        ],
    );
    rejects(
        &object("BFDProfile", "b", "  detectMultiplier: -3"),
        &["BFDProfile/b: spec.detectMultiplier: invalid value: integer `-3`, expected u32"],
    );
}

#[test]
fn unknown_fields_are_errors_not_silently_dropped() {
    let yaml = "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: typo\n  labes: {a: b}\nspec:\n  addresses: [192.0.2.0/28]\n  adresses: [192.0.2.16/28]\n  serviceAllocation:\n    namespacez: [x]\n    serviceSelectors:\n    - matchLabel: {a: b}\n";
    rejects(
        yaml,
        &[
            "IPAddressPool/typo: metadata.labes: unknown field (misspelt? the API server would silently drop it)",
            "IPAddressPool/typo: spec.adresses: unknown field (misspelt? the API server would silently drop it)",
            "IPAddressPool/typo: spec.serviceAllocation.namespacez: unknown field (misspelt? the API server would silently drop it)",
            "IPAddressPool/typo: spec.serviceAllocation.serviceSelectors[0].matchLabel: unknown field (misspelt? the API server would silently drop it)",
        ],
    );
    rejects(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: LoadBalancer\n  loadBalancerIp: 192.0.2.1\n",
        &["Service/web: spec.loadBalancerIp: unknown field (misspelt? the API server would silently drop it)"],
    );
}

#[test]
fn wrong_types_name_the_field() {
    rejects(
        &object(
            "IPAddressPool",
            "t",
            "  addresses: [192.0.2.0/28]\n  autoAssign: maybe",
        ),
        &["IPAddressPool/t: spec.autoAssign: invalid type: string \"maybe\", expected a boolean"],
    );
    rejects(
        &object(
            "BGPPeer",
            "t",
            "  myASN: 99999999999\n  peerASN: 1\n  peerAddress: 192.0.2.1",
        ),
        &["BGPPeer/t: spec.myASN: invalid value: integer `99999999999`, expected u32"],
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let yaml = [
        pool("a", &["192.0.2.0/33"]),
        peer(
            "p",
            "  myASN: 64500\n  peerAddress: 192.0.2.1\n  holdTime: 1s\n  peerPort: 0",
        ),
        object("BFDProfile", "b", "  detectMultiplier: 1"),
    ]
    .concat();
    assert_eq!(problems(&yaml).len(), 5, "{:#?}", problems(&yaml));
}

#[test]
fn selectors_are_checked() {
    rejects(
        &object("L2Advertisement", "l", "  nodeSelectors:\n  - matchExpressions:\n    - {key: zone, operator: Near, values: [a]}\n    - {key: zone, operator: In}"),
        &["L2Advertisement/l: spec.nodeSelectors[0]: matchExpressions[0]: unknown operator \"Near\" (In, NotIn, Exists, DoesNotExist)"],
    );
    rejects(
        &object("L2Advertisement", "l", "  nodeSelectors:\n  - matchExpressions:\n    - {key: zone, operator: Exists, values: [a]}"),
        &["L2Advertisement/l: spec.nodeSelectors[0]: matchExpressions[0]: operator Exists takes no values"],
    );
    rejects(
        &object(
            "L2Advertisement",
            "l",
            "  preferredNodeSelectors:\n  - weight: 101\n    preference: {matchLabels: {a: b}}",
        ),
        &["L2Advertisement/l: spec.preferredNodeSelectors[0].weight: 101 is out of range 1..=100"],
    );
}

#[test]
fn duplicate_and_missing_names_are_rejected() {
    rejects(
        &[pool("a", &["192.0.2.0/28"]), pool("a", &["192.0.2.16/28"])].concat(),
        &["IPAddressPool/a: metadata.name: defined more than once"],
    );
    rejects(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {}\nspec: {addresses: [192.0.2.0/28]}\n",
        &["IPAddressPool/<unnamed> (test.yaml#1): metadata.name: is required"],
    );
}

#[test]
fn documents_that_are_not_ferrolb_objects() {
    rejects(
        "apiVersion: metallb.io/v1beta1\nkind: AddressPool\nmetadata: {name: old}\nspec: {addresses: [192.0.2.0/28]}\n",
        &["AddressPool/old: apiVersion: metallb.io/v1beta1 AddressPool is not a MetalLB kind FerroLB reads (metallb.io/v1beta1, and v1beta2 for BGPPeer)"],
    );
    rejects(
        "apiVersion: metallb.io/v1beta2\nkind: IPAddressPool\nmetadata: {name: old}\nspec: {addresses: [192.0.2.0/28]}\n",
        &["IPAddressPool/old: apiVersion: metallb.io/v1beta2 IPAddressPool is not a MetalLB kind FerroLB reads (metallb.io/v1beta1, and v1beta2 for BGPPeer)"],
    );
    let (m, p) = read("apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: old}\nspec: {addresses: [192.0.2.0/28]}\n");
    assert!(p.is_empty(), "{p:?}");
    assert_eq!((m.resources.pools.len(), m.metallb_objects), (1, 1));
    rejects(
        "apiVersion: ferrolb.io/v1\nkind: IPAddressPool\nmetadata: {name: v}\nspec: {addresses: [192.0.2.0/28]}\n",
        &["IPAddressPool/v: apiVersion: ferrolb.io/v1 is not served; FerroLB's API is ferrolb.io/v1beta1"],
    );
    rejects(
        "apiVersion: ferrolb.io/v1beta1\nkind: AddressPool\nmetadata: {name: v}\n",
        &["AddressPool/v: kind: AddressPool is not a kind of ferrolb.io/v1beta1"],
    );
    rejects(
        "- just\n- a list\n",
        &["test.yaml#1: not a Kubernetes object (expected a mapping)"],
    );
    rejects(
        "kind: Thing\n",
        &["test.yaml#1: not a Kubernetes object: apiVersion and kind are required"],
    );
    let (m, p) = read("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n---\n");
    assert!(p.is_empty());
    assert_eq!(m.skipped, ["apps/v1 Deployment/d"]);
    assert_eq!(m.summary(), "read 1 object of another kind");
}

#[test]
fn lists_are_read_item_by_item() {
    let yaml = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: ferrolb.io/v1beta1\n  kind: IPAddressPool\n  metadata: {name: a}\n  spec: {addresses: [192.0.2.0/28]}\n- apiVersion: ferrolb.io/v1beta1\n  kind: IPAddressPool\n  metadata: {name: b}\n  spec: {adresses: [192.0.2.16/28]}\n";
    let (m, p) = read(yaml);
    assert_eq!(m.resources.pools.len(), 1);
    assert_eq!(
        p,
        [
            "IPAddressPool/b: spec.adresses: unknown field (misspelt? the API server would silently drop it)",
            "IPAddressPool/b: spec: missing field `addresses`"
        ]
    );
}

#[test]
fn unnumbered_peers_are_directly_connected() {
    config(&peer(
        "u",
        "  myASN: 64500\n  peerASN: 64501\n  interface: eth0",
    ));
    rejects(
        &peer(
            "u",
            "  myASN: 64500\n  peerASN: 64501\n  interface: eth0\n  ebgpMultiHop: true\n  sourceAddress: 192.0.2.1",
        ),
        &[
            "BGPPeer/u: spec.ebgpMultiHop: an unnumbered peer (interface) is directly connected; leave ebgpMultiHop out",
            "BGPPeer/u: spec.sourceAddress: an unnumbered peer (interface) is reached from the interface's link-local address; leave sourceAddress out",
        ],
    );
    rejects(
        &peer("u", "  myASN: 64500\n  peerASN: 64501\n  interface: eth0/1"),
        &["BGPPeer/u: spec.interface: \"eth0/1\" is not an interface name"],
    );
    rejects(
        &peer(
            "u",
            "  myASN: 64500\n  peerASN: 64501\n  interface: eth0\n  peerAddress: 192.0.2.1",
        ),
        &["BGPPeer/u: spec.peerAddress: peerAddress and interface are mutually exclusive"],
    );
}

#[test]
fn bfd_echo_runs_on_ipv4_single_hop_sessions_only() {
    let echo = object("BFDProfile", "echo", "  echoMode: true\n  echoInterval: 20");
    config(&format!("{echo}{}", peer("v4", PEER_OK_ECHO)));
    for (name, spec, why) in [
        (
            "v6",
            "  myASN: 64500\n  peerASN: 64501\n  peerAddress: \"2001:db8::1\"\n  bfdProfile: echo",
            "an IPv6 session",
        ),
        (
            "unnumbered",
            "  myASN: 64500\n  peerASN: 64501\n  interface: eth0\n  bfdProfile: echo",
            "an IPv6 session",
        ),
        (
            "far",
            "  myASN: 64500\n  peerASN: 64501\n  peerAddress: 192.0.2.1\n  ebgpMultiHop: true\n  bfdProfile: echo",
            "an eBGP multihop session",
        ),
        (
            "red",
            "  myASN: 64500\n  peerASN: 64501\n  peerAddress: 192.0.2.1\n  vrf: red\n  bfdProfile: echo",
            "a session in a VRF",
        ),
    ] {
        rejects(
            &format!("{echo}{}", peer(name, spec)),
            &[&format!("BGPPeer/{name}: spec.bfdProfile: BFDProfile/echo has echoMode, which FerroLB runs on IPv4 single-hop sessions in the default VRF only; this is {why}")],
        );
    }
}

const PEER_OK_ECHO: &str =
    "  myASN: 64500\n  peerASN: 64501\n  peerAddress: 192.0.2.1\n  bfdProfile: echo";

#[test]
fn two_peers_on_one_interface_are_refused() {
    let yaml = format!(
        "{}\n---\n{}",
        peer("a", "  myASN: 64500\n  peerASN: 64501\n  interface: eth0"),
        peer(
            "b",
            "  myASN: 64500\n  dynamicASN: external\n  interface: eth0"
        )
    );
    rejects(
        &yaml,
        &["BGPPeer/b: spec.peerAddress: interface eth0 is already the address of BGPPeer/a on the same nodes; one session per address and node"],
    );
}

#[test]
fn peers_in_vrfs_are_accepted_one_address_per_vrf() {
    let yaml = format!(
        "{}\n---\n{}\n---\n{}",
        peer(
            "red",
            "  myASN: 64500\n  peerASN: 64501\n  peerAddress: 192.0.2.1\n  vrf: red"
        ),
        peer(
            "blue",
            "  myASN: 64500\n  peerASN: 64501\n  peerAddress: 192.0.2.1\n  vrf: blue"
        ),
        peer(
            "default",
            "  myASN: 64500\n  peerASN: 64501\n  peerAddress: 192.0.2.1\n  vrf: \"\""
        )
    );
    config(&yaml);
    rejects(
        &peer("v", "  myASN: 64500\n  peerASN: 64501\n  peerAddress: 192.0.2.1\n  vrf: a-very-long-vrf-name"),
        &["BGPPeer/v: spec.vrf: \"a-very-long-vrf-name\" is not an interface name (1 to 15 bytes)"],
    );
}

#[test]
fn yaml_syntax_errors_are_reported_with_their_position() {
    let p = problems("apiVersion: v1\nkind: [unclosed\n");
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("test.yaml#1: not valid YAML: "),
        "{}",
        p[0]
    );
    assert!(p[0].contains("line"), "{}", p[0]);
}
