//! Layer 2 mode: answering ARP and Neighbor Solicitations for owned addresses, and announcing
//! takeovers. `packet`, `schedule`, `interfaces` (selection), `ownership` and `vmac` are pure;
//! `adapter` is the thin I/O layer, over the packet socket of `sys` (the crate's one `unsafe`
//! module) and the macvlan devices of `macvlan` (virtual MACs).

pub mod adapter;
pub mod interfaces;
pub mod macvlan;
pub mod ownership;
pub mod packet;
pub mod schedule;
/// Public so lab tests can put hand-made frames on a link (tests/ in `e2e`).
pub mod sys;
pub mod vmac;
