//! Hand-made frames the lab's client puts on its link, shared by the L2 tests that need them.

use ferrolb_e2e::lab::l2::{CLIENT_MAC, CLIENT_V6};
use ferrolb_speaker::l2::packet::{checksum, solicited_node_group, MacAddr};
use std::net::Ipv6Addr;

/// A Neighbor Solicitation from the client for `target`, to its solicited-node group, with a
/// Hop-by-Hop and a Destination Options header (PadN) before the ICMPv6 message when
/// `extension_headers`.
pub fn client_solicitation(target: Ipv6Addr, extension_headers: bool) -> Vec<u8> {
    let source: Ipv6Addr = CLIENT_V6.parse().unwrap();
    let destination = solicited_node_group(target);
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&CLIENT_MAC);
    let sum = checksum(source, destination, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let chain: Vec<u8> = if extension_headers {
        // Hop-by-Hop (next: Destination Options), PadN 4; Destination Options (next: ICMPv6).
        vec![60, 0, 1, 4, 0, 0, 0, 0, 58, 0, 1, 4, 0, 0, 0, 0]
    } else {
        vec![]
    };
    let mut frame = MacAddr::ipv6_multicast(destination).0.to_vec();
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    frame.extend_from_slice(&((chain.len() + icmp.len()) as u16).to_be_bytes());
    frame.push(if extension_headers { 0 } else { 58 });
    frame.push(255);
    frame.extend_from_slice(&source.octets());
    frame.extend_from_slice(&destination.octets());
    frame.extend_from_slice(&chain);
    frame.extend_from_slice(&icmp);
    frame
}
