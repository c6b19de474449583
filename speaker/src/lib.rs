//! FerroLB speaker: decides which Service addresses this node announces, and announces them.
//!
//! - [`view`] reduces Kubernetes objects to what the decisions need (pure).
//! - [`planner`] decides, for one node, what it announces by L2 and by BGP and why not otherwise
//!   (pure), including the deterministic ranking of candidate nodes that every speaker computes
//!   alike for each L2 address.
//! - [`rejoin`] decides which returning speakers are still in their hold-down (pure), so a
//!   node that comes back (or flaps) takes nothing over until it has been live a while.
//! - [`source`] reads the manifests (file mode) and [`runtime`] runs `ferrolb-speaker run`:
//!   plans on every change and drives the [`l2`] data plane and the BGP sessions
//!   ([`bgp_mode::driver`]; [`bgp_mode::driver::BgpStatus`] is their read side for metrics).

pub mod bgp_mode;
pub mod l2;
pub mod membership;
pub mod metrics;
pub mod offline;
pub mod planner;
pub mod rejoin;
pub mod runtime;
pub mod source;
pub mod view;
