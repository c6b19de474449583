//! `kubectl ferrolb`: asks the live cluster what FerroLB does — every pool's use, every
//! LoadBalancer Service's addresses and who announces them — and why one Service has no address
//! or is not announced. Read-only; the reasons are computed by the code the components run.

pub mod report;
pub mod snapshot;
