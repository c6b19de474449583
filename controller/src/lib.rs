//! FerroLB controller: the allocator and the reconcile loop, and the offline commands that run
//! the same code on manifests (`validate`, `plan`).

pub mod allocator;
pub mod plan;
pub mod run;
pub mod validate;
