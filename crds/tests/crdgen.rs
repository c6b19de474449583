//! The committed CRDs must be exactly what `crdgen` prints, and the schema must carry the same
//! bounds the configuration validator enforces.

use ferrolb_crds::{all_crds, all_crds_yaml, limits};
use serde_json::Value;

#[test]
fn committed_crds_match_crdgen() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/crds/ferrolb.io.yaml"
    );
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == all_crds_yaml(),
        "deploy/crds/ferrolb.io.yaml is stale: run \
         `cargo run -q -p ferrolb-crds --bin crdgen > deploy/crds/ferrolb.io.yaml`"
    );
}

fn spec_property(kind: &str, field: &str) -> Value {
    let crd = all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    let crd = serde_json::to_value(crd).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        [field]
        .clone()
}

fn bounds(kind: &str, field: &str) -> (i64, i64) {
    let p = spec_property(kind, field);
    (
        p["minimum"].as_f64().unwrap() as i64,
        p["maximum"].as_f64().unwrap() as i64,
    )
}

#[test]
fn schema_bounds_match_the_validator() {
    let widen = |(a, b): (u32, u32)| (i64::from(a), i64::from(b));
    for field in ["receiveInterval", "transmitInterval", "echoInterval"] {
        assert_eq!(bounds("BFDProfile", field), widen(limits::BFD_INTERVAL_MS));
    }
    assert_eq!(
        bounds("BFDProfile", "detectMultiplier"),
        widen(limits::BFD_MULTIPLIER)
    );
    assert_eq!(
        bounds("BFDProfile", "minimumTtl"),
        widen(limits::BFD_MINIMUM_TTL)
    );
    let widen = |(a, b): (i32, i32)| (i64::from(a), i64::from(b));
    assert_eq!(bounds("BGPPeer", "peerPort"), widen(limits::PEER_PORT));
    assert_eq!(
        bounds("BGPAdvertisement", "aggregationLength"),
        widen(limits::AGGREGATION_LENGTH_V4)
    );
    assert_eq!(
        bounds("BGPAdvertisement", "aggregationLengthV6"),
        widen(limits::AGGREGATION_LENGTH_V6)
    );
}

#[test]
fn every_kind_is_in_the_group_with_a_short_name_and_category() {
    let crds = all_crds();
    assert_eq!(crds.len(), 9);
    for crd in crds {
        assert_eq!(crd.spec.group, ferrolb_crds::GROUP);
        assert_eq!(crd.spec.versions[0].name, ferrolb_crds::VERSION);
        assert!(crd
            .spec
            .names
            .short_names
            .as_ref()
            .is_some_and(|s| !s.is_empty()));
        assert_eq!(crd.spec.names.categories, Some(vec!["ferrolb".to_string()]));
    }
}

#[test]
fn kinds_with_status_have_the_status_subresource() {
    for crd in all_crds() {
        let version = &crd.spec.versions[0];
        let schema = serde_json::to_value(&version.schema).unwrap();
        let has_status = !schema["openAPIV3Schema"]["properties"]["status"].is_null();
        let has_subresource = version
            .subresources
            .as_ref()
            .is_some_and(|s| s.status.is_some());
        assert_eq!(has_status, has_subresource, "{}", crd.spec.names.kind);
    }
}

#[test]
fn bgppeer_schema_carries_its_cel_rules() {
    let crd = all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "BGPPeer")
        .unwrap();
    let text = serde_json::to_string(&crd).unwrap();
    assert!(text.contains("peerASN and dynamicASN are mutually exclusive"));
    assert!(text.contains("one of peerASN or dynamicASN must be set"));
    assert!(text.contains("password and passwordSecret are mutually exclusive"));
}
