//! ferrolb-bgp: FerroLB's in-house BGP engine.

pub mod fsm;
pub mod packet;
