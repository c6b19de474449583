//! End-to-end support for FerroLB: the lab (network namespaces, real routing daemons) and the
//! Kubernetes API emulator that the test suite runs the controller and speaker against.

pub mod api_requests;
pub mod emulator;
pub mod lab;
pub mod rbac;
pub mod soak;
