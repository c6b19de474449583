//! What the soak does to the cluster: Services created, edited and deleted in every shape a
//! user writes (single and dual stack, shared, from a named pool, a requested address, a bad
//! annotation), and the model of what it did, which the checks read to know what to expect.

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Instant;

/// How many Services live at most: fewer than the IPv4 pool's 16 addresses, so a Service that
/// may take any address always finds one.
pub const MAX_SERVICES: usize = 12;

/// What a Service asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One IPv4 address from any pool.
    V4,
    /// An IPv4 and an IPv6 address.
    DualStack,
    /// An IPv4 address it may share with the Services of the same key.
    Shared(u8),
    /// An address from the spare pool (autoAssign false), by name.
    SparePool,
    /// 192.0.2.(64 + n), by annotation (another Service may hold it).
    Requested(u8),
    /// An address from the BGP pool (announced to the router by every node, not by L2).
    Bgp,
    /// An annotation the controller must refuse (no address, ever).
    BadAnnotation,
}

impl Shape {
    fn random(rng: &mut StdRng) -> Shape {
        match rng.random_range(0..12) {
            0..=2 => Shape::V4,
            3..=4 => Shape::DualStack,
            5..=6 => Shape::Shared(rng.random_range(0..2)),
            7 => Shape::SparePool,
            8 => Shape::Requested(rng.random_range(0..16)),
            9..=10 => Shape::Bgp,
            _ => Shape::BadAnnotation,
        }
    }

    /// Whether the Service must have an address once the controller has had time, whatever
    /// else happens (a free address always exists for these).
    pub fn always_served(self) -> bool {
        matches!(
            self,
            Shape::V4 | Shape::DualStack | Shape::Shared(_) | Shape::Bgp
        )
    }

    pub fn sharing_key(self) -> Option<String> {
        match self {
            Shape::Shared(k) => Some(format!("soak-{k}")),
            _ => None,
        }
    }

    fn annotations(self) -> serde_json::Value {
        match self {
            Shape::Shared(_) => json!({"metallb.io/allow-shared-ip": self.sharing_key()}),
            Shape::SparePool => json!({"metallb.io/address-pool": "soak-spare"}),
            Shape::Bgp => json!({"metallb.io/address-pool": "soak-bgp"}),
            Shape::Requested(n) => {
                json!({"metallb.io/loadBalancerIPs": format!("192.0.2.{}", 64 + u32::from(n))})
            }
            Shape::BadAnnotation => json!({"metallb.io/loadBalancerIPs": "192.0.2.not-an-address"}),
            Shape::V4 | Shape::DualStack => json!({}),
        }
    }
}

/// A Service as the soak last wrote it.
#[derive(Clone, Debug)]
pub struct ModelService {
    pub shape: Shape,
    /// Every Service has its own port, so Services of one sharing key may share.
    pub port: u16,
    /// When the soak last created or edited it.
    pub changed_at: Instant,
    /// Created in this shape (not edited into it).
    pub fresh: bool,
}

/// Everything the soak did that the checks need to know.
#[derive(Default)]
pub struct Model {
    pub services: BTreeMap<String, ModelService>,
    /// Services deleted, and when.
    pub deleted: BTreeMap<String, Instant>,
    pub spare_pool: bool,
    /// When the spare pool was last created or deleted.
    pub spare_changed_at: Option<Instant>,
    next: u32,
}

/// One thing to do to the Services.
pub enum ServiceOp {
    Create(String, ModelService),
    Edit(String, ModelService),
    Delete(String),
}

impl Model {
    /// The next Service operation: create when there are few, delete when there are many,
    /// otherwise any of the three.
    pub fn next_op(&mut self, rng: &mut StdRng, now: Instant) -> ServiceOp {
        let n = self.services.len();
        let roll = rng.random_range(0..3);
        if n < 3 || (n < MAX_SERVICES && roll == 0) {
            self.next += 1;
            let shape = Shape::random(rng);
            let port = 1000 + (self.next % 60_000) as u16;
            return ServiceOp::Create(
                format!("svc-{}", self.next),
                ModelService {
                    shape,
                    port,
                    changed_at: now,
                    fresh: true,
                },
            );
        }
        let names: Vec<&String> = self.services.keys().collect();
        let name = names[rng.random_range(0..names.len())].clone();
        if n >= MAX_SERVICES || roll == 1 {
            return ServiceOp::Delete(name);
        }
        let old = &self.services[&name];
        // A dual-stack Service keeps its families (Kubernetes does not let them change
        // freely); it gets a new port. Any other takes another single-stack shape.
        let shape = match old.shape {
            Shape::DualStack => Shape::DualStack,
            _ => loop {
                let s = Shape::random(rng);
                if s != Shape::DualStack {
                    break s;
                }
            },
        };
        self.next += 1;
        ServiceOp::Edit(
            name,
            ModelService {
                shape,
                port: 1000 + (self.next % 60_000) as u16,
                changed_at: now,
                fresh: false,
            },
        )
    }

    /// Records an operation the API server accepted.
    pub fn done(&mut self, op: ServiceOp, now: Instant) {
        match op {
            ServiceOp::Create(name, s) | ServiceOp::Edit(name, s) => {
                self.deleted.remove(&name);
                self.services.insert(name, s);
            }
            ServiceOp::Delete(name) => {
                self.services.remove(&name);
                self.deleted.insert(name, now);
            }
        }
    }
}

/// The Service `name` of class `class` shaped as `s`, and its EndpointSlice (one ready
/// endpoint on each of `nodes`), as YAML documents.
pub fn service_yaml(name: &str, class: &str, s: &ModelService, nodes: &[String]) -> String {
    let families = match s.shape {
        Shape::DualStack => {
            json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]})
        }
        _ => json!({}),
    };
    let mut spec = json!({
        "type": "LoadBalancer",
        "loadBalancerClass": class,
        "ports": [{"port": s.port, "protocol": "UDP"}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), families.as_object()) {
        spec.extend(extra.clone());
    }
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "annotations": s.shape.annotations()},
        "spec": spec,
    });
    let endpoints: Vec<serde_json::Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"addresses": [format!("192.0.2.{}", i + 1)], "nodeName": n, "conditions": {"ready": true}}))
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "endpoints": endpoints,
        "ports": [{"port": s.port, "protocol": "UDP"}],
    });
    format!(
        "{}---\n{}",
        serde_yaml::to_string(&service).unwrap_or_default(),
        serde_yaml::to_string(&slice).unwrap_or_default()
    )
}
