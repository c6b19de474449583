//! Whatever the bytes, reading manifests and building a configuration never panics.

use ferrolb_config::build;
use ferrolb_config::manifest::Manifests;
use proptest::prelude::*;

fn read_and_build(bytes: &[u8]) {
    let mut m = Manifests::default();
    let _ = m.add_bytes(bytes, "fuzz.yaml");
    let _ = build(&m.resources);
    let _ = m.summary();
}

/// Fragments that steer random text towards the shapes the reader takes apart.
const FRAGMENTS: &[&str] = &[
    "apiVersion: ferrolb.io/v1beta1\n",
    "apiVersion: v1\n",
    "kind: IPAddressPool\n",
    "kind: BGPPeer\n",
    "kind: L2Advertisement\n",
    "kind: BGPAdvertisement\n",
    "kind: Community\n",
    "kind: BFDProfile\n",
    "kind: Service\n",
    "kind: Secret\n",
    "kind: List\n",
    "items:\n- ",
    "metadata:\n  name: x\n",
    "spec:\n",
    "  addresses:\n  - 192.0.2.0/24\n",
    "  - 2001:db8::/64\n",
    "  - 192.0.2.9-192.0.2.1\n",
    "  myASN: 64500\n",
    "  peerASN: 4294967296\n",
    "  holdTime: 1s\n",
    "  peerAddress: 192.0.2.1\n",
    "  aggregationLength: 99\n",
    "  communities: [\"1:1\", \"large:1:2:3\", x]\n",
    "---\n",
    "&a [*a]\n",
    "  passwordSecret: {name: s}\n",
    "type: kubernetes.io/basic-auth\n",
    "data: {password: '!!'}\n",
    "  ipAddressPools: [x]\n",
    "  nodeSelectors:\n  - matchExpressions: [{key: k, operator: In}]\n",
    "\u{0}",
    "\t",
    "{",
    "]",
    ":",
    "- - -",
    "'",
    "\"",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        read_and_build(&bytes);
    }

    #[test]
    fn arbitrary_manifest_shaped_text_never_panics(parts in proptest::collection::vec(0..FRAGMENTS.len(), 0..40)) {
        let text: String = parts.iter().map(|&i| FRAGMENTS[i]).collect();
        read_and_build(text.as_bytes());
    }
}

#[test]
fn deep_nesting_and_alias_bombs_are_refused_not_fatal() {
    let deep = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    read_and_build(deep.as_bytes());
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
    for i in 0..20 {
        let prev = if i == 0 {
            "a".to_string()
        } else {
            format!("b{}", i - 1)
        };
        bomb.push_str(&format!("b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    read_and_build(bomb.as_bytes());
}
