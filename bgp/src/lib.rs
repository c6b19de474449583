//! ferrolb-bgp: FerroLB's in-house BGP engine.

pub mod packet;
