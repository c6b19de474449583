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
