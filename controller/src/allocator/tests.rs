use super::*;
use ferrolb_config::manifest::config_from_yaml;
use ferrolb_config::service::ServiceRequest;
use proptest::prelude::*;

fn config(yaml: &str) -> Config {
    config_from_yaml(yaml).unwrap_or_else(|e| panic!("{e:#?}"))
}

fn pool(name: &str, addresses: &str, extra: &str) -> String {
    format!("---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}}}\nspec:\n  addresses: [{addresses}]\n{extra}\n")
}

fn svc(name: &str) -> ServiceInfo {
    ServiceInfo {
        key: ServiceKey::new("default", name),
        labels: Labels::new(),
        request: ServiceRequest::default(),
        families: vec![Family::V4],
        policy: FamilyPolicy::SingleStack,
        ports: vec![("TCP".into(), 80)],
        local_traffic: false,
        selector: BTreeMap::new(),
        current_ips: vec![],
        allocated_from: None,
        created: String::new(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(a: &Result<Assignment, AllocError>) -> Vec<String> {
    a.as_ref()
        .unwrap()
        .ips
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn lowest_free_address_in_name_order_of_auto_assign_pools() {
    let c = config(
        &[
            pool("b", "192.0.2.0/30", ""),
            pool("a", "198.51.100.8/30", ""),
            pool("manual", "203.0.113.0/30", "  autoAssign: false"),
        ]
        .concat(),
    );
    let mut a = Allocator::new(&c);
    assert_eq!(ips(&a.allocate(&svc("one"))), ["198.51.100.8"]);
    assert_eq!(ips(&a.allocate(&svc("two"))), ["198.51.100.9"]);
    a.release(&ServiceKey::new("default", "one"));
    assert_eq!(ips(&a.allocate(&svc("three"))), ["198.51.100.8"]);
    for n in 0..2 {
        a.allocate(&svc(&format!("fill{n}"))).unwrap();
    }
    // Pool a is full; b is next by name; the autoAssign=false pool is never used unasked.
    assert_eq!(ips(&a.allocate(&svc("four"))), ["192.0.2.0"]);
    let counts = a.counts("a").unwrap();
    assert_eq!((counts.assigned_v4, counts.available_v4), (4, 0));
}

#[test]
fn requested_addresses_and_the_conflict_rule() {
    let c = config(&pool("p", "192.0.2.0/28", ""));
    let mut a = Allocator::new(&c);
    let mut first = svc("first");
    first.request.requested_ips = vec![ip("192.0.2.5")];
    let mut second = svc("second");
    second.request.requested_ips = vec![ip("192.0.2.5")];
    assert_eq!(ips(&a.allocate(&first)), ["192.0.2.5"]);
    let err = a.allocate(&second).unwrap_err();
    assert_eq!(
        err.to_string(),
        "address 192.0.2.5 is in use by default/first"
    );
    assert_eq!(
        a.assignment(&first.key).unwrap().ips,
        [ip("192.0.2.5")],
        "the first holder is untouched"
    );
    // Once the first is gone the second gets it (MetalLB #321 leaves it stuck).
    a.release(&first.key);
    assert_eq!(ips(&a.allocate(&second)), ["192.0.2.5"]);
    let mut outside = svc("outside");
    outside.request.requested_ips = vec![ip("203.0.113.1")];
    assert_eq!(
        a.allocate(&outside).unwrap_err(),
        AllocError::NotInAnyPool(ip("203.0.113.1"))
    );
    let mut v6 = svc("v6");
    v6.request.requested_ips = vec![ip("2001:db8::1")];
    assert!(matches!(
        a.allocate(&v6),
        Err(AllocError::WrongFamily { .. })
    ));
}

#[test]
fn address_pool_annotation_uses_manual_pools_and_nothing_else() {
    let c = config(
        &[
            pool("auto", "192.0.2.0/30", ""),
            pool("manual", "203.0.113.0/31", "  autoAssign: false"),
        ]
        .concat(),
    );
    let mut a = Allocator::new(&c);
    let mut s = svc("s");
    s.request.pool = Some("manual".into());
    assert_eq!(ips(&a.allocate(&s)), ["203.0.113.0"]);
    let mut t = svc("t");
    t.request.pool = Some("manual".into());
    a.allocate(&t).unwrap();
    let mut u = svc("u");
    u.request.pool = Some("manual".into());
    assert!(
        matches!(a.allocate(&u), Err(AllocError::NoFreeAddress { .. })),
        "does not fall back to other pools"
    );
    u.request.pool = Some("nope".into());
    assert_eq!(
        a.allocate(&u).unwrap_err().to_string(),
        "IPAddressPool/nope does not exist"
    );
    let mut wrong = svc("w");
    wrong.request.pool = Some("manual".into());
    wrong.request.requested_ips = vec![ip("192.0.2.1")];
    assert!(matches!(
        a.allocate(&wrong),
        Err(AllocError::NotInNamedPool { .. })
    ));
}

#[test]
fn service_allocation_priority_namespaces_and_selectors() {
    let c = config(
        &[
            pool("open", "192.0.2.0/28", ""),
            pool("zz-high", "198.51.100.0/28", "  serviceAllocation:\n    priority: 10\n    namespaces: [shop]"),
            pool("aa-low", "198.51.100.16/28", "  serviceAllocation:\n    priority: 20\n    namespaces: [shop]"),
            pool("tie-b", "203.0.113.16/28", "  serviceAllocation:\n    priority: 5\n    namespaceSelectors: [{matchLabels: {team: red}}]"),
            pool("tie-a", "203.0.113.0/28", "  serviceAllocation:\n    priority: 5\n    serviceSelectors: [{matchLabels: {tier: web}}]"),
        ]
        .concat(),
    );
    let mut a = Allocator::new(&c);
    let mut shop = svc("s");
    shop.key.namespace = "shop".into();
    assert_eq!(
        a.allocate(&shop).unwrap().pool,
        "zz-high",
        "priority beats name"
    );
    let other = svc("o");
    assert_eq!(
        a.allocate(&other).unwrap().pool,
        "open",
        "pinned pools serve only what they select"
    );
    a.set_namespace_labels("red", [("team".to_string(), "red".to_string())].into());
    let mut red = svc("r");
    red.key.namespace = "red".into();
    red.labels.insert("tier".into(), "web".into());
    assert_eq!(
        a.allocate(&red).unwrap().pool,
        "tie-a",
        "equal priorities: by name"
    );
    let mut red2 = svc("r2");
    red2.key.namespace = "red".into();
    assert_eq!(a.allocate(&red2).unwrap().pool, "tie-b");
}

#[test]
fn avoid_buggy_ips() {
    let c = config(&pool("p", "192.0.2.255-192.0.3.1", "  avoidBuggyIPs: true"));
    let mut a = Allocator::new(&c);
    assert_eq!(ips(&a.allocate(&svc("one"))), ["192.0.3.1"]);
    assert!(a.allocate(&svc("two")).is_err());
    let mut asked = svc("asked");
    asked.request.requested_ips = vec![ip("192.0.3.0")];
    assert_eq!(
        a.allocate(&asked).unwrap_err(),
        AllocError::BuggyAddress(ip("192.0.3.0"))
    );
    assert_eq!(a.counts("p").unwrap().available_v4, 0);
}

#[test]
fn sharing_follows_the_rules() {
    let c = config(&pool("p", "192.0.2.0/28", ""));
    let mut a = Allocator::new(&c);
    let shared = |name: &str, proto: &str, port: i32| {
        let mut s = svc(name);
        s.request.sharing_key = Some("dns".into());
        s.ports = vec![(proto.into(), port)];
        s
    };
    let tcp = shared("tcp", "TCP", 53);
    let udp = shared("udp", "UDP", 53);
    assert_eq!(ips(&a.allocate(&tcp)), ["192.0.2.0"]);
    assert_eq!(
        ips(&a.allocate(&udp)),
        ["192.0.2.0"],
        "same key, disjoint ports: shared"
    );
    let clash = shared("clash", "TCP", 53);
    assert_eq!(
        ips(&a.allocate(&clash)),
        ["192.0.2.1"],
        "a port clash gets its own address"
    );
    let mut asked = shared("asked", "TCP", 53);
    asked.request.requested_ips = vec![ip("192.0.2.0")];
    assert_eq!(
        a.allocate(&asked).unwrap_err().to_string(),
        "address 192.0.2.0 is in use by default/tcp, and both use TCP port 53"
    );
    let mut local = shared("local", "TCP", 8080);
    local.local_traffic = true;
    local.request.requested_ips = vec![ip("192.0.2.0")];
    assert!(a
        .allocate(&local)
        .unwrap_err()
        .to_string()
        .contains("externalTrafficPolicy Local"));
    // The address goes back to the pool only with its last holder.
    a.release(&tcp.key);
    assert_eq!(a.counts("p").unwrap().assigned_v4, 2);
    a.release(&udp.key);
    assert_eq!(a.counts("p").unwrap().assigned_v4, 1);
}

#[test]
fn dual_stack_policies() {
    let c = config(
        &[
            pool("a-v4only", "192.0.2.0/30", ""),
            pool("b-dual", "198.51.100.0/30, 2001:db8::/126", ""),
        ]
        .concat(),
    );
    let mut a = Allocator::new(&c);
    let mut require = svc("req");
    require.families = vec![Family::V6, Family::V4];
    require.policy = FamilyPolicy::RequireDualStack;
    let got = a.allocate(&require).unwrap();
    assert_eq!(got.pool, "b-dual");
    assert_eq!(
        got.ips,
        [ip("2001:db8::"), ip("198.51.100.0")],
        "in the Service's family order"
    );
    let mut v6 = svc("v6");
    v6.families = vec![Family::V6];
    assert_eq!(ips(&a.allocate(&v6)), ["2001:db8::1"]);
    // Prefer: both if one pool has both, else one family.
    let mut prefer = svc("prefer");
    prefer.families = vec![Family::V4, Family::V6];
    prefer.policy = FamilyPolicy::PreferDualStack;
    assert_eq!(a.allocate(&prefer).unwrap().ips.len(), 2);
    let mut fill = svc("v6fill");
    fill.families = vec![Family::V6];
    a.allocate(&fill).unwrap();
    let mut prefer2 = svc("prefer2");
    prefer2.families = vec![Family::V4, Family::V6];
    prefer2.policy = FamilyPolicy::PreferDualStack;
    assert_eq!(ips(&a.allocate(&prefer2)), ["192.0.2.0"]);
    let mut require2 = require.clone();
    require2.key.name = "req2".into();
    assert!(matches!(
        a.allocate(&require2),
        Err(AllocError::NoFreeAddress { .. })
    ));
}

#[test]
fn ipv6_slash_64_counts_are_exact_and_cheap() {
    let c = config(&pool("big", "2001:db8::/64, 2001:db8:1::/48", ""));
    let mut a = Allocator::new(&c);
    let mut s = svc("s");
    s.families = vec![Family::V6];
    a.allocate(&s).unwrap();
    let counts = a.counts("big").unwrap();
    assert_eq!(counts.assigned_v6, 1);
    assert_eq!(counts.available_v6, (1u128 << 64) + (1u128 << 80) - 1);
}

#[test]
fn a_pool_edit_moves_only_services_whose_address_left_it() {
    let before = config(
        &[
            pool("p", "192.0.2.0/29", ""),
            pool("q", "198.51.100.0/29", ""),
        ]
        .concat(),
    );
    let mut a = Allocator::new(&before);
    for n in 0..4 {
        a.allocate(&svc(&format!("s{n}"))).unwrap();
    }
    let mut pinned = svc("pinned");
    pinned.request.requested_ips = vec![ip("198.51.100.3")];
    a.allocate(&pinned).unwrap();
    // Shrink p to its first two addresses and delete q.
    let after = config(&pool("p", "192.0.2.0/31", ""));
    let dropped = a.set_config(&after);
    assert_eq!(
        dropped,
        [
            ServiceKey::new("default", "pinned"),
            ServiceKey::new("default", "s2"),
            ServiceKey::new("default", "s3")
        ]
    );
    assert_eq!(
        a.assignment(&ServiceKey::new("default", "s0")).unwrap().ips,
        [ip("192.0.2.0")]
    );
    assert_eq!(
        a.assignment(&ServiceKey::new("default", "s1")).unwrap().ips,
        [ip("192.0.2.1")]
    );
    assert_eq!(a.counts("p").unwrap().available_v4, 0);
    assert!(a.counts("q").is_none());
}

#[test]
fn plan_keeps_status_before_serving_new_services() {
    let c = config(&pool("p", "192.0.2.0/30", ""));
    // "aaa-new" sorts first and is older, but must not take the address "zzz-old" holds.
    let mut new = svc("aaa-new");
    new.created = "2020-01-01T00:00:00Z".into();
    let mut old = svc("zzz-old");
    old.current_ips = vec![ip("192.0.2.0")];
    old.created = "2026-01-01T00:00:00Z".into();
    let (_, plan) = plan(&c, &BTreeMap::new(), &[new.clone(), old.clone()]);
    assert_eq!(ips(&plan.results[&old.key]), ["192.0.2.0"]);
    assert_eq!(ips(&plan.results[&new.key]), ["192.0.2.1"]);
}

/// A random population of Services over a few pools.
fn population() -> impl Strategy<Value = Vec<ServiceInfo>> {
    proptest::collection::vec(
        (
            0u8..4,
            0u8..3,
            0u8..3,
            proptest::option::of(0u8..2),
            0u8..20,
        ),
        1..40,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (fam, policy, port, key, want))| {
                let mut s = svc(&format!("svc{i:02}"));
                s.families = match fam {
                    0 => vec![Family::V4],
                    1 => vec![Family::V6],
                    2 => vec![Family::V4, Family::V6],
                    _ => vec![Family::V6, Family::V4],
                };
                s.policy = [
                    FamilyPolicy::SingleStack,
                    FamilyPolicy::PreferDualStack,
                    FamilyPolicy::RequireDualStack,
                ][policy as usize];
                if s.policy == FamilyPolicy::SingleStack {
                    s.families.truncate(1);
                }
                s.ports = vec![("TCP".into(), 80 + i32::from(port))];
                s.request.sharing_key = key.map(|k| format!("k{k}"));
                if want == 0 {
                    s.request.requested_ips = vec![ip("192.0.2.3")];
                    s.families = vec![Family::V4];
                    s.policy = FamilyPolicy::SingleStack;
                }
                s
            })
            .collect()
    })
}

fn prop_config() -> Config {
    config(
        &[
            pool("a", "192.0.2.0/29", ""),
            pool("b", "198.51.100.0/30, 2001:db8::/126", ""),
            pool("c", "2001:db8:1::/125", "  avoidBuggyIPs: true"),
        ]
        .concat(),
    )
}

proptest! {
    #[test]
    fn no_address_is_held_twice_unless_sharing_allows(services in population()) {
        let (_, plan) = plan(&prop_config(), &BTreeMap::new(), &services);
        let by_key: BTreeMap<_, _> = services.iter().map(|s| (s.key.clone(), s)).collect();
        let mut holders: BTreeMap<IpAddr, Vec<&ServiceKey>> = BTreeMap::new();
        for (key, result) in &plan.results {
            if let Ok(a) = result {
                for ip in &a.ips {
                    holders.entry(*ip).or_default().push(key);
                }
                let families: Vec<Family> = a.ips.iter().map(|i| Family::of(*i)).collect();
                prop_assert!(families.iter().all(|f| by_key[key].families.contains(f)), "families honoured");
            }
        }
        for (ip, keys) in holders {
            for (i, a) in keys.iter().enumerate() {
                for b in &keys[i + 1..] {
                    prop_assert!(sharing_conflict(by_key[*a], by_key[*b]).is_none(), "{ip} held by {a} and {b}");
                }
            }
        }
    }

    #[test]
    fn loading_status_then_planning_again_changes_nothing(services in population()) {
        let (_, first) = plan(&prop_config(), &BTreeMap::new(), &services);
        let restarted: Vec<ServiceInfo> = services.iter().cloned().map(|mut s| {
            s.current_ips = first.results[&s.key].as_ref().map(|a| a.ips.clone()).unwrap_or_default();
            s
        }).collect();
        let (_, second) = plan(&prop_config(), &BTreeMap::new(), &restarted);
        for (key, result) in &first.results {
            if let Ok(a) = result {
                prop_assert_eq!(second.results[key].as_ref().ok(), Some(a));
            }
        }
    }

    #[test]
    fn the_same_input_gives_the_same_plan(services in population()) {
        let (_, one) = plan(&prop_config(), &BTreeMap::new(), &services);
        let mut reversed = services.clone();
        reversed.reverse();
        let (_, two) = plan(&prop_config(), &BTreeMap::new(), &reversed);
        prop_assert_eq!(one, two);
    }
}
