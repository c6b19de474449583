//! The Kubernetes API side that the controller and the speaker share, so they read the same
//! objects the same way:
//!
//! - [`api_calls`]: how a component declares every API call it makes (its RBAC must grant
//!   exactly those), and the calls of the configuration watch below;
//! - [`reflect`]: a watch into a store that keeps its objects while the API server is away;
//! - [`config_watch`]: the configuration kinds and Secrets of one namespace, from FerroLB's API
//!   group or, in MetalLB-compatible mode, from MetalLB's objects as they are;
//! - [`reconnect`]: every watch's retry policy, fast after an API server restart.

pub mod api_calls;
pub mod config_watch;
pub mod reconnect;
pub mod reflect;

pub use config_watch::{ConfigApi, ConfigObjects, ConfigWatch};
