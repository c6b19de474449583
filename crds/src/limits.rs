//! Bounds of numeric fields, shared by the CRD schema (checked by a test against the generated
//! schema) and the configuration validator, so `kubectl apply` and `ferrolb-controller validate`
//! reject the same values.

/// BFD intervals, in milliseconds (receiveInterval, transmitInterval, echoInterval).
pub const BFD_INTERVAL_MS: (u32, u32) = (10, 60_000);
/// BFD detectMultiplier.
pub const BFD_MULTIPLIER: (u32, u32) = (2, 255);
/// BFD minimumTtl.
pub const BFD_MINIMUM_TTL: (u32, u32) = (1, 254);
/// BGPPeer peerPort.
pub const PEER_PORT: (i32, i32) = (1, 65_535);
/// BGPAdvertisement aggregationLength.
pub const AGGREGATION_LENGTH_V4: (i32, i32) = (1, 32);
/// BGPAdvertisement aggregationLengthV6.
pub const AGGREGATION_LENGTH_V6: (i32, i32) = (0, 128);

/// What the API server lets through as an IPAddressPool address entry (`spec.addresses[*]`): a
/// CIDR, a `start-end` range (spaces allowed around the dash, as MetalLB trims them) or a single
/// address, IPv4 or IPv6. A schema pattern, so `kubectl apply` refuses `not-an-ip` on every
/// Kubernetes version (the CEL IP/CIDR library needs 1.31); what a pattern cannot judge (a
/// reversed range, an overlap) is the configuration's to refuse, object by object.
pub const POOL_ADDRESS_PATTERN: &str = concat!(
    r"^ *(",
    // IPv4, /len
    r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(/(3[0-2]|[12][0-9]|[0-9]))?",
    r"|",
    // IPv4 - IPv4
    r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]) *- *((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
    r"|",
    // IPv6, /len (hex groups, colons, an embedded IPv4)
    r"[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?",
    r"|",
    // IPv6 - IPv6
    r"[0-9A-Fa-f.]*:[0-9A-Fa-f:.]* *- *[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*",
    r") *$"
);
