//! Byte vectors captured from real FRR, used by the codec tests in both directions.
//!
//! Source: two FRR 8.4.4 (Debian 12 package `frr` 8.4.4-1.1~deb12u2) bgpd instances peering
//! in network namespaces, captured with `tcpdump -i <veth> tcp port 179` and split into
//! messages with `tshark -Y bgp -T fields -e tcp.payload`. Speaker A: AS 4200000001,
//! router-id 192.0.2.1, `network 198.51.100.7/32`; speaker B: AS 65002, router-id 192.0.2.2,
//! `bgp graceful-restart`; both `frr defaults datacenter` (hold 9 s) and TCP MD5. The capture
//! script is docs/bgp-capture-frr.sh. The frame numbers below are from its run with the
//! route-map also setting `no-export` (so only the plain /32 went to the eBGP peer), except the
//! two `FRR_UPDATE_*_COMMUNITIES` vectors, which are frame 11 of the run of the script as it is
//! now (communities without `no-export`).

pub(crate) struct Vector {
    pub what: &'static str,
    pub hex: &'static str,
}

/// Frame 4, B -> A: OPEN, AS 65002, hold 9, MP v4+v6, route refresh (Cisco and RFC 2918),
/// enhanced route refresh, 4-octet ASN, extended messages, add-path, FQDN, GR (R and N bits),
/// long-lived GR.
pub(crate) const FRR_OPEN_AS65002: Vector = Vector {
    what: "FRR OPEN AS 65002",
    hex: "ffffffffffffffffffffffffffffffff00780104fdea0009c00002025b02060104000100010206010400020001020280000202020002024600020641040000fdea02020600020a4508000101010002010102054903016200020c400ac07800010100000201000210470e0001018000000000020180000000",
};

/// Frame 6, A -> B: OPEN with My AS = AS_TRANS and 4-octet ASN 4200000001, no GR.
pub(crate) const FRR_OPEN_AS4200000001: Vector = Vector {
    what: "FRR OPEN AS 4200000001",
    hex: "ffffffffffffffffffffffffffffffff007001045ba00009c0000201530206010400010001020601040002000102028000020202000202460002064104fa56ea0102020600020a450800010101000201010205490301610002044002c0780210470e0001018000000000020180000000",
};

/// Frame 8: KEEPALIVE.
pub(crate) const FRR_KEEPALIVE: Vector = Vector {
    what: "FRR KEEPALIVE",
    hex: "ffffffffffffffffffffffffffffffff001304",
};

/// Frame 11, A -> B: UPDATE 198.51.100.7/32, ORIGIN IGP, AS_PATH (extended length)
/// [4200000001], NEXT_HOP 192.0.2.1, MED 0.
pub(crate) const FRR_UPDATE_V4_AS4: Vector = Vector {
    what: "FRR UPDATE /32 from AS 4200000001",
    hex: "ffffffffffffffffffffffffffffffff0038020000001c40010100500200060201fa56ea01400304c00002018004040000000020c6336407",
};

/// Frame 15, B -> A: the same route relayed back, AS_PATH [65002 4200000001].
pub(crate) const FRR_UPDATE_V4_PATH2: Vector = Vector {
    what: "FRR UPDATE /32 relayed by AS 65002",
    hex: "ffffffffffffffffffffffffffffffff00350200000019400101005002000a02020000fdeafa56ea01400304c000020220c6336407",
};

/// Frame 11: End-of-RIB IPv4 unicast (empty UPDATE).
pub(crate) const FRR_EOR_IPV4: Vector = Vector {
    what: "FRR End-of-RIB IPv4",
    hex: "ffffffffffffffffffffffffffffffff00170200000000",
};

/// Frame 13: End-of-RIB IPv6 unicast (empty MP_UNREACH_NLRI).
pub(crate) const FRR_EOR_IPV6: Vector = Vector {
    what: "FRR End-of-RIB IPv6",
    hex: "ffffffffffffffffffffffffffffffff001d0200000006800f03000201",
};

/// Frame 41: withdrawal of 198.51.100.7/32 after `no network`.
pub(crate) const FRR_WITHDRAW_V4: Vector = Vector {
    what: "FRR withdraw /32",
    hex: "ffffffffffffffffffffffffffffffff001c02000520c63364070000",
};

/// Frame 24: ROUTE-REFRESH IPv4 unicast after `clear bgp * soft in`.
pub(crate) const FRR_ROUTE_REFRESH_IPV4: Vector = Vector {
    what: "FRR ROUTE-REFRESH IPv4",
    hex: "ffffffffffffffffffffffffffffffff00170500010001",
};

/// Frame 25: enhanced route refresh BoRR IPv4 unicast.
pub(crate) const FRR_BORR_IPV4: Vector = Vector {
    what: "FRR BoRR IPv4",
    hex: "ffffffffffffffffffffffffffffffff00170500010101",
};

/// Frame 32: enhanced route refresh EoRR IPv6 unicast.
pub(crate) const FRR_EORR_IPV6: Vector = Vector {
    what: "FRR EoRR IPv6",
    hex: "ffffffffffffffffffffffffffffffff00170500020201",
};

/// Frame 45, A -> B, after `neighbor 192.0.2.2 shutdown message "maintenance window"`:
/// Cease / Hard Reset (RFC 8538, because both sides set the GR N bit) wrapping
/// Cease / Administrative Shutdown with the RFC 9003 message `"maintenance window"`.
pub(crate) const FRR_NOTIFICATION_SHUTDOWN: Vector = Vector {
    what: "FRR NOTIFICATION hard reset / shutdown",
    hex: "ffffffffffffffffffffffffffffffff002c030609060214226d61696e74656e616e63652077696e646f7722",
};

/// Frame 11 (second capture), A -> B: 198.51.100.0/24 with MED 77, COMMUNITIES 65001:100
/// 65001:200, LARGE_COMMUNITIES 4200000001:1:2, EXTENDED_COMMUNITIES rt 65001:5. FRR orders
/// the attributes 8, 32, 16.
pub(crate) const FRR_UPDATE_V4_COMMUNITIES: Vector = Vector {
    what: "FRR UPDATE /24 with communities",
    hex: "ffffffffffffffffffffffffffffffff005c020000004140010100500200060201fa56ea01400304c00002018004040000004dc00808fde90064fde900c8c0200cfa56ea010000000100000002c010080002fde90000000518c63364",
};

/// Frame 11 (second capture), A -> B: MP_REACH_NLRI IPv6 unicast 2001:db8:100::/48, 32-octet
/// next hop (global 2001:db8::1 and link-local), same communities; MP_REACH with the extended
/// length flag.
pub(crate) const FRR_UPDATE_V6_COMMUNITIES: Vector = Vector {
    what: "FRR UPDATE IPv6 /48 with communities",
    hex: "ffffffffffffffffffffffffffffffff0081020000006a900e002c0002012020010db8000000000000000000000001fe800000000000008c4036fffe2996ef003020010db8010040010100500200060201fa56ea018004040000004dc00808fde90064fde900c8c0200cfa56ea010000000100000002c010080002fde900000005",
};

pub(crate) const ALL: &[&Vector] = &[
    &FRR_UPDATE_V4_COMMUNITIES,
    &FRR_UPDATE_V6_COMMUNITIES,
    &FRR_OPEN_AS65002,
    &FRR_OPEN_AS4200000001,
    &FRR_KEEPALIVE,
    &FRR_UPDATE_V4_AS4,
    &FRR_UPDATE_V4_PATH2,
    &FRR_EOR_IPV4,
    &FRR_EOR_IPV6,
    &FRR_WITHDRAW_V4,
    &FRR_ROUTE_REFRESH_IPV4,
    &FRR_BORR_IPV4,
    &FRR_EORR_IPV6,
    &FRR_NOTIFICATION_SHUTDOWN,
];
