//! FerroLB configuration: API objects in, a validated model out. Pure: no I/O, no clock.
//!
//! - [`build`] turns pools, advertisements, peers, BFD profiles, communities and Secrets into a
//!   [`Config`], or returns every problem found, each naming `Kind/name` and the field path.
//! - [`manifest`] reads the YAML a user would `kubectl apply` (for `validate`, `plan` and the
//!   speaker's file source), rejecting unknown fields, which the API server would prune.
//! - [`in_force`] is what the running components use: every valid object, the last valid
//!   version of one that turned invalid, the rest left out and reported.
//! - [`migrate`] turns MetalLB's configuration (metallb.io objects, the legacy ConfigMap)
//!   into FerroLB's manifests.
//! - [`files`] reads manifest files and directories (the crate's only I/O).
//! - [`service`] reads what a Service asks of FerroLB (requested IPs, pool, sharing key).

pub mod addresses;
mod build;
pub mod community;
mod error;
pub mod files;
mod in_force;
pub mod manifest;
pub mod migrate;
pub mod model;
pub mod service;

pub use build::{build, Resources};
pub use error::ConfigError;
pub use in_force::{carry_transition_times, in_force, state_conditions, InForce};
pub use model::Config;
