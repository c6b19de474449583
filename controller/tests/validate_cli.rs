//! `ferrolb-controller validate` as a user runs it: exit codes, one line per problem, a summary.

use std::path::Path;
use std::process::Command;

fn validate(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrolb-controller"))
        .arg("validate")
        .args(args)
        .output()
        .expect("run ferrolb-controller");
    assert!(
        out.stderr.is_empty() || out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8(out.stdout).unwrap(),
    )
}

fn examples() -> String {
    format!("{}/../examples", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_examples_are_valid() {
    for file in ["l2.yaml", "bgp.yaml"] {
        let path = format!("{}/{file}", examples());
        let (code, out) = validate(&["-f", &path]);
        assert_eq!(code, 0, "{file}: {out}");
        assert!(out.starts_with("valid; read "), "{out}");
    }
    let (code, out) = validate(&["-f", &examples()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 1);
}

#[test]
fn problems_are_printed_one_per_line_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: a}\nspec:\n  adresses: [192.0.2.0/24]\n  addresses: [192.0.2.0/33]\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: p}\nspec: {myASN: 64500, peerASN: 64501, dynamicASN: external, peerAddress: 192.0.2.1, holdTime: 2s}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ignored.txt"),
        "not read: not a manifest extension",
    )
    .unwrap();
    let (code, out) = validate(&["-f", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "IPAddressPool/a: spec.adresses: unknown field (misspelt? the API server would silently drop it)",
            "BGPPeer/p: spec.holdTime: gives a hold time of 2s: it must be 0 or at least 3s (RFC 4271)",
            "BGPPeer/p: spec.peerASN: peerASN and dynamicASN are mutually exclusive",
            "IPAddressPool/a: spec.addresses[0]: \"192.0.2.0/33\" is not a valid CIDR: invalid IP address syntax",
            "invalid: 4 problems; read 1 IPAddressPool, 1 BGPPeer",
        ]
    );
}

#[test]
fn services_are_checked_against_the_pools() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("svc.yaml");
    std::fs::write(
        &path,
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: a}\nspec: {addresses: [192.0.2.0/28]}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  namespace: app\n  annotations: {metallb.universe.tf/address-pool: b, metallb.io/loadBalancerIPs: 198.51.100.1}\nspec: {type: LoadBalancer}\n",
    )
    .unwrap();
    let (code, out) = validate(&["-f", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "Service/app/s: metadata.annotations[ferrolb.io/address-pool]: IPAddressPool/b does not exist",
            "Service/app/s: metadata.annotations[ferrolb.io/loadBalancerIPs]: 198.51.100.1 is in no IPAddressPool",
            "invalid: 2 problems; read 1 IPAddressPool, 1 Service",
        ]
    );
}

#[test]
fn unreadable_paths_and_garbage_are_problems_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.yaml");
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, bytes).unwrap();
    let missing = dir.path().join("missing.yaml");
    let (code, out) = validate(&[
        "-f",
        garbage.to_str().unwrap(),
        "-f",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("garbage.yaml: not UTF-8 text"), "{out}");
    assert!(out.contains("missing.yaml: cannot read"), "{out}");
    assert!(Path::new(&garbage).exists());
}

#[test]
fn recursive_reads_subdirectories_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(
        dir.path().join("sub/pool.yaml"),
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: a}\nspec: {addresses: [192.0.2.0/28]}\n",
    )
    .unwrap();
    let root = dir.path().to_str().unwrap();
    assert_eq!(validate(&["-f", root]).1, "valid; read no objects\n");
    assert_eq!(
        validate(&["-R", "-f", root]).1,
        "valid; read 1 IPAddressPool\n"
    );
}

#[test]
fn migrate_prints_manifests_that_validate_and_fails_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("metallb.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config, namespace: metallb-system}\ndata:\n  config: |\n    address-pools:\n    - name: Office_LAN\n      protocol: layer2\n      addresses: [192.0.2.0/28]\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: extra, namespace: metallb-system}\nspec: {addresses: [198.51.100.0/28]}\n",
    )
    .unwrap();
    let run = |path: &Path| {
        Command::new(env!("CARGO_BIN_EXE_ferrolb-controller"))
            .args(["migrate", "-f"])
            .arg(path)
            .output()
            .expect("run ferrolb-controller migrate")
    };
    let out = run(dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let notes = String::from_utf8(out.stderr).unwrap();
    assert!(notes.contains("\"office-lan\""), "{notes}");
    let migrated = dir.path().join("ferrolb.yaml.out");
    std::fs::write(&migrated, &out.stdout).unwrap();
    let again = run(dir.path());
    assert_eq!(out.stdout, again.stdout, "migrate is deterministic");
    let check = tempfile::tempdir().unwrap();
    std::fs::copy(&migrated, check.path().join("ferrolb.yaml")).unwrap();
    let (code, text) = validate(&["-f", check.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with("valid; read 2 IPAddressPools, 1 L2Advertisement"),
        "{text}"
    );

    std::fs::write(
        dir.path().join("metallb.yaml"),
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [192.0.2.0/28], autoassign: true}\n",
    )
    .unwrap();
    let failed = run(&dir.path().join("metallb.yaml"));
    assert_eq!(failed.status.code(), Some(1));
    assert!(failed.stdout.is_empty());
    let errors = String::from_utf8(failed.stderr).unwrap();
    assert!(
        errors.contains("IPAddressPool/p: spec.autoassign: unknown field"),
        "{errors}"
    );
}

#[test]
fn objects_where_the_components_do_not_read_them_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ns.yaml"),
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: left-behind, namespace: metallb-system}\nspec: {addresses: [192.0.2.0/28]}\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: theirs, namespace: metallb-system}\nspec: {addresses: [192.0.2.16/28]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: unplaced}\nspec: {addresses: [192.0.2.32/28]}\n",
    )
    .unwrap();
    let (code, out) = validate(&["-f", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(
        out.lines().next().unwrap(),
        "IPAddressPool/left-behind: metadata.namespace: metallb-system: ferrolb.io objects are read in ferrolb-system; this one would be ignored"
    );
    let (code, out) = validate(&[
        "-f",
        dir.path().to_str().unwrap(),
        "--namespace",
        "metallb-system",
    ]);
    assert_eq!(code, 0, "{out}");
}
