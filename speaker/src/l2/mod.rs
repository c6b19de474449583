//! Layer 2 mode: answering ARP and Neighbor Solicitations for owned addresses, and announcing
//! takeovers. `packet` is pure; socket I/O stays in a thin adapter.

pub mod packet;
