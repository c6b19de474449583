//! An exact address count that survives JSON.
//!
//! The API server stores integers as int64 and turns anything larger into a lossy float, so
//! MetalLB's int64 counters saturate or go negative for IPv6 /64 pools. `AddressCount` is written
//! as an integer while it fits in an int64 and as a decimal string beyond, under an
//! `x-kubernetes-int-or-string` schema: small pools look exactly as they do in MetalLB, large ones
//! stay exact.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

/// A number of addresses, exact up to 2^128 - 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressCount(pub u128);

impl fmt::Display for AddressCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u128> for AddressCount {
    fn from(value: u128) -> Self {
        Self(value)
    }
}

impl Serialize for AddressCount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match i64::try_from(self.0) {
            Ok(small) => serializer.serialize_i64(small),
            Err(_) => serializer.collect_str(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for AddressCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl de::Visitor<'_> for CountVisitor {
            type Value = AddressCount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer, or one written as a decimal string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(AddressCount(v.into()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u128::try_from(v)
                    .map(AddressCount)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
                Ok(AddressCount(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse()
                    .map(AddressCount)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_any(CountVisitor)
    }
}

impl JsonSchema for AddressCount {
    fn schema_name() -> Cow<'static, str> {
        "AddressCount".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "x-kubernetes-int-or-string": true })
    }

    fn inline_schema() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_counts_are_integers_and_large_ones_strings() {
        assert_eq!(serde_json::to_string(&AddressCount(254)).unwrap(), "254");
        let slash64 = AddressCount(1u128 << 64);
        assert_eq!(
            serde_json::to_string(&slash64).unwrap(),
            "\"18446744073709551616\""
        );
        let max_i64 = AddressCount(i64::MAX as u128);
        assert_eq!(
            serde_json::to_string(&max_i64).unwrap(),
            i64::MAX.to_string()
        );
    }

    #[test]
    fn both_spellings_read_back_exactly() {
        for n in [0u128, 1, i64::MAX as u128, 1 << 64, u128::MAX] {
            let text = serde_json::to_string(&AddressCount(n)).unwrap();
            let back: AddressCount = serde_json::from_str(&text).unwrap();
            assert_eq!(back.0, n);
        }
        assert!(serde_json::from_str::<AddressCount>("-1").is_err());
        assert!(serde_json::from_str::<AddressCount>("\"12a\"").is_err());
    }
}
