//! Capabilities advertisement (RFC 5492) and the capabilities we speak.
//!
//! ```text
//! +------------------------------+
//! | Capability Code (1 octet)    |
//! +------------------------------+
//! | Capability Length (1 octet)  |
//! +------------------------------+
//! | Capability Value (variable)  |
//! ~                              ~
//! +------------------------------+
//! ```

use super::{MessageError, Reader};

/// Address family identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Afi(pub u16);
impl Afi {
    pub const IPV4: Afi = Afi(1);
    pub const IPV6: Afi = Afi(2);
}

/// Subsequent address family identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Safi(pub u8);
impl Safi {
    pub const UNICAST: Safi = Safi(1);
}

/// An AFI/SAFI pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Family {
    pub afi: Afi,
    pub safi: Safi,
}

impl Family {
    pub const IPV4_UNICAST: Family = Family {
        afi: Afi::IPV4,
        safi: Safi::UNICAST,
    };
    pub const IPV6_UNICAST: Family = Family {
        afi: Afi::IPV6,
        safi: Safi::UNICAST,
    };
}

/// Capability codes.
pub mod cap_code {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const EXTENDED_NEXT_HOP: u8 = 5;
    pub const EXTENDED_MESSAGE: u8 = 6;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_ASN: u8 = 65;
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
}

/// Per-family graceful restart entry (RFC 4724 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrFamily {
    pub family: Family,
    /// F bit: forwarding state was preserved across the restart.
    pub forwarding_preserved: bool,
}

/// Graceful restart capability (RFC 4724 section 3).
///
/// ```text
/// +--------------------------------------------------+
/// | Restart Flags (4 bits) | Restart Time in seconds |
/// |                        |        (12 bits)        |
/// +--------------------------------------------------+
/// | Address Family Identifier (16 bits)              |
/// +--------------------------------------------------+
/// | Subsequent AFI (8 bits)                          |
/// +--------------------------------------------------+
/// | Flags for Address Family (8 bits)                |
/// +--------------------------------------------------+
/// |                       ...                        |
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestartCap {
    /// R bit: the sender has restarted.
    pub restart_state: bool,
    /// N bit (RFC 8538): graceful restart also applies to NOTIFICATIONs.
    pub notification: bool,
    /// Restart time in seconds (12 bits).
    pub restart_time: u16,
    pub families: Vec<GrFamily>,
}

/// One capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// RFC 4760.
    Multiprotocol(Family),
    /// RFC 2918.
    RouteRefresh,
    /// RFC 8950: (NLRI family, next hop AFI) pairs.
    ExtendedNextHop(Vec<(Family, Afi)>),
    /// RFC 8654.
    ExtendedMessage,
    /// RFC 4724.
    GracefulRestart(GracefulRestartCap),
    /// RFC 6793.
    FourOctetAsn(u32),
    /// RFC 7313.
    EnhancedRouteRefresh,
    /// Anything else; kept so it can be logged. Unknown capabilities are ignored (RFC 5492).
    Unknown { code: u8, value: Vec<u8> },
}

impl Capability {
    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol(_) => cap_code::MULTIPROTOCOL,
            Capability::RouteRefresh => cap_code::ROUTE_REFRESH,
            Capability::ExtendedNextHop(_) => cap_code::EXTENDED_NEXT_HOP,
            Capability::ExtendedMessage => cap_code::EXTENDED_MESSAGE,
            Capability::GracefulRestart(_) => cap_code::GRACEFUL_RESTART,
            Capability::FourOctetAsn(_) => cap_code::FOUR_OCTET_ASN,
            Capability::EnhancedRouteRefresh => cap_code::ENHANCED_ROUTE_REFRESH,
            Capability::Unknown { code, .. } => *code,
        }
    }

    /// Decodes one capability value. Malformed known capabilities are an OPEN error
    /// (RFC 5492 does not allow guessing).
    pub(crate) fn decode(code: u8, value: &[u8]) -> Result<Capability, MessageError> {
        let bad = || {
            let mut data = vec![code, value.len() as u8];
            data.extend_from_slice(value);
            MessageError::open(
                super::codes::UNSUPPORTED_OPTIONAL_PARAMETER,
                Vec::new(),
                "malformed capability",
            )
            .with_data(data)
        };
        let mut r = Reader::new(value);
        let cap = match code {
            cap_code::MULTIPROTOCOL => {
                if value.len() != 4 {
                    return Err(bad());
                }
                let afi = r.u16().ok_or_else(bad)?;
                let _reserved = r.u8();
                let safi = r.u8().ok_or_else(bad)?;
                Capability::Multiprotocol(Family {
                    afi: Afi(afi),
                    safi: Safi(safi),
                })
            }
            cap_code::ROUTE_REFRESH if value.is_empty() => Capability::RouteRefresh,
            cap_code::EXTENDED_MESSAGE if value.is_empty() => Capability::ExtendedMessage,
            cap_code::ENHANCED_ROUTE_REFRESH if value.is_empty() => {
                Capability::EnhancedRouteRefresh
            }
            cap_code::ROUTE_REFRESH
            | cap_code::EXTENDED_MESSAGE
            | cap_code::ENHANCED_ROUTE_REFRESH => return Err(bad()),
            cap_code::FOUR_OCTET_ASN => {
                if value.len() != 4 {
                    return Err(bad());
                }
                Capability::FourOctetAsn(r.u32().ok_or_else(bad)?)
            }
            cap_code::EXTENDED_NEXT_HOP => {
                if !value.len().is_multiple_of(6) {
                    return Err(bad());
                }
                let mut entries = Vec::new();
                while !r.is_empty() {
                    let afi = r.u16().ok_or_else(bad)?;
                    let safi = r.u16().ok_or_else(bad)?;
                    let nh = r.u16().ok_or_else(bad)?;
                    // SAFI is 16 bits here (RFC 8950), but only 8-bit values exist.
                    let Ok(safi) = u8::try_from(safi) else {
                        continue;
                    };
                    entries.push((
                        Family {
                            afi: Afi(afi),
                            safi: Safi(safi),
                        },
                        Afi(nh),
                    ));
                }
                Capability::ExtendedNextHop(entries)
            }
            cap_code::GRACEFUL_RESTART => {
                if value.len() < 2 || !(value.len() - 2).is_multiple_of(4) {
                    return Err(bad());
                }
                let head = r.u16().ok_or_else(bad)?;
                let mut families = Vec::new();
                while !r.is_empty() {
                    let afi = r.u16().ok_or_else(bad)?;
                    let safi = r.u8().ok_or_else(bad)?;
                    let flags = r.u8().ok_or_else(bad)?;
                    families.push(GrFamily {
                        family: Family {
                            afi: Afi(afi),
                            safi: Safi(safi),
                        },
                        forwarding_preserved: flags & 0x80 != 0,
                    });
                }
                Capability::GracefulRestart(GracefulRestartCap {
                    restart_state: head & 0x8000 != 0,
                    notification: head & 0x4000 != 0,
                    restart_time: head & 0x0fff,
                    families,
                })
            }
            _ => Capability::Unknown {
                code,
                value: value.to_vec(),
            },
        };
        Ok(cap)
    }

    /// Appends code, length and value.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.code());
        let len_at = out.len();
        out.push(0);
        match self {
            Capability::Multiprotocol(f) => {
                out.extend_from_slice(&f.afi.0.to_be_bytes());
                out.push(0);
                out.push(f.safi.0);
            }
            Capability::RouteRefresh
            | Capability::ExtendedMessage
            | Capability::EnhancedRouteRefresh => {}
            Capability::ExtendedNextHop(entries) => {
                for (f, nh) in entries {
                    out.extend_from_slice(&f.afi.0.to_be_bytes());
                    out.extend_from_slice(&(f.safi.0 as u16).to_be_bytes());
                    out.extend_from_slice(&nh.0.to_be_bytes());
                }
            }
            Capability::GracefulRestart(gr) => {
                let mut head = gr.restart_time & 0x0fff;
                if gr.restart_state {
                    head |= 0x8000;
                }
                if gr.notification {
                    head |= 0x4000;
                }
                out.extend_from_slice(&head.to_be_bytes());
                for f in &gr.families {
                    out.extend_from_slice(&f.family.afi.0.to_be_bytes());
                    out.push(f.family.safi.0);
                    out.push(if f.forwarding_preserved { 0x80 } else { 0 });
                }
            }
            Capability::FourOctetAsn(asn) => out.extend_from_slice(&asn.to_be_bytes()),
            Capability::Unknown { value, .. } => out.extend_from_slice(value),
        }
        // Values are bounded by the OPEN size checks; clamp rather than panic.
        out[len_at] = (out.len() - len_at - 1).min(255) as u8;
    }
}

impl MessageError {
    pub(crate) fn with_data(mut self, data: Vec<u8>) -> Self {
        self.data = data;
        self
    }
}
