//! ferrolb-bgp
