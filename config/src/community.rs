//! BGP communities as written in BGPAdvertisement and Community objects.

use std::fmt;
use std::str::FromStr;

/// A community attached to announced routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Community {
    /// RFC 1997: two 16-bit halves, `a:b`, kept as one 32-bit value.
    Standard(u32),
    /// RFC 8092: three 32-bit parts, `large:a:b:c`.
    Large(u32, u32, u32),
}

/// Why a community string was not understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommunityError {
    #[error("{0:?} is neither `a:b` with 16-bit parts nor `large:a:b:c` with 32-bit parts")]
    Malformed(String),
    #[error("{text:?}: {part:?} is not a 16-bit number (0-65535)")]
    Not16Bit { text: String, part: String },
    #[error("{text:?}: {part:?} is not a 32-bit number (0-4294967295)")]
    Not32Bit { text: String, part: String },
}

impl FromStr for Community {
    type Err = CommunityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        if let Some(rest) = trimmed.strip_prefix("large:") {
            let parts: Vec<&str> = rest.split(':').collect();
            if parts.len() != 3 {
                return Err(CommunityError::Malformed(text.to_string()));
            }
            let mut values = [0u32; 3];
            for (value, part) in values.iter_mut().zip(&parts) {
                *value = part.parse().map_err(|_| CommunityError::Not32Bit {
                    text: text.to_string(),
                    part: part.to_string(),
                })?;
            }
            return Ok(Community::Large(values[0], values[1], values[2]));
        }
        let (high, low) = trimmed
            .split_once(':')
            .ok_or_else(|| CommunityError::Malformed(text.to_string()))?;
        let half = |part: &str| {
            part.parse::<u16>().map_err(|_| CommunityError::Not16Bit {
                text: text.to_string(),
                part: part.to_string(),
            })
        };
        let (high, low) = (half(high)?, half(low)?);
        Ok(Community::Standard(u32::from(high) << 16 | u32::from(low)))
    }
}

impl Community {
    /// Whether `text` is meant as a literal community rather than an alias name: it has the
    /// shape of one (digits and colons, or the `large:` prefix), valid or not.
    pub fn looks_literal(text: &str) -> bool {
        let t = text.trim();
        t.starts_with("large:")
            || (t.contains(':') && t.chars().all(|c| c.is_ascii_digit() || c == ':'))
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Community::Standard(v) => write!(f, "{}:{}", v >> 16, v & 0xffff),
            Community::Large(a, b, c) => write!(f, "large:{a}:{b}:{c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_kinds() {
        let c: Community = "65535:65282".parse().unwrap();
        assert_eq!(c, Community::Standard(0xffff_ff02));
        assert_eq!(c.to_string(), "65535:65282");
        let c: Community = "large:4200000000:1:2".parse().unwrap();
        assert_eq!(c, Community::Large(4_200_000_000, 1, 2));
        assert_eq!(c.to_string(), "large:4200000000:1:2");
    }

    #[test]
    fn rejects_out_of_range_parts() {
        assert!(matches!(
            "65536:1".parse::<Community>(),
            Err(CommunityError::Not16Bit { .. })
        ));
        assert!(matches!(
            "1:-1".parse::<Community>(),
            Err(CommunityError::Not16Bit { .. })
        ));
        assert!(matches!(
            "large:1:2:4294967296".parse::<Community>(),
            Err(CommunityError::Not32Bit { .. })
        ));
        assert!(matches!(
            "large:1:2".parse::<Community>(),
            Err(CommunityError::Malformed(_))
        ));
        assert!(matches!(
            "1:2:3".parse::<Community>(),
            Err(CommunityError::Not16Bit { .. })
        ));
        assert!(matches!(
            "nope".parse::<Community>(),
            Err(CommunityError::Malformed(_))
        ));
    }

    #[test]
    fn tells_literals_from_alias_names() {
        assert!(Community::looks_literal("65536:1"));
        assert!(Community::looks_literal("large:x"));
        assert!(!Community::looks_literal("no-advertise"));
        assert!(!Community::looks_literal("vpn:blue"));
    }
}
