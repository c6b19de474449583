//! FerroLB speaker: decides which Service addresses this node announces, and announces them.
//!
//! - [`view`] reduces Kubernetes objects to what the decisions need (pure).
//! - [`planner`] decides, for one node, what it announces by L2 and by BGP and why not otherwise
//!   (pure), including the deterministic ranking of candidate nodes that every speaker computes
//!   alike for each L2 address.
//! - [`rejoin`] decides which returning speakers are still in their hold-down (pure), so a
//!   node that comes back (or flaps) takes nothing over until it has been live a while.
//! - [`source`] reads the cluster (kube mode, through reflectors) or the manifests (file mode)
//!   and [`runtime`] runs `ferrolb-speaker run`: plans on every change and drives the [`l2`]
//!   data plane and the BGP sessions ([`bgp_mode::driver`]; [`bgp_mode::driver::BgpStatus`] is
//!   their read side for metrics).
//! - [`status`] tells the cluster what this node announces (ServiceL2Status, ServiceBGPStatus,
//!   takeover Events, ConfigurationState), off the takeover path; [`api_calls`] lists every
//!   API call, which deploy/speaker/rbac.yaml grants.

pub mod api_calls;
pub mod bgp_mode;
pub mod l2;
pub mod membership;
pub mod metrics;
pub mod offline;
pub mod planner;
pub mod quorum;
pub mod rejoin;
pub mod runtime;
pub mod source;
pub mod status;
pub mod tiebreak;
pub mod view;
pub mod wait;
