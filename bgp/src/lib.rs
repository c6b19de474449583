//! ferrolb-bgp: FerroLB's in-house BGP engine.

pub mod fsm;
pub mod packet;
pub mod rib_out;
