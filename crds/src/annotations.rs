//! Service annotations FerroLB reads and writes.
//!
//! Each key exists in FerroLB's own spelling (`ferrolb.io/...`); the MetalLB spellings
//! (`metallb.io/...` and the older `metallb.universe.tf/...`) are read as aliases so that a user
//! migrating from MetalLB keeps their Services as they are.

/// Requested addresses, comma-separated, at most one per IP family.
pub const LOAD_BALANCER_IPS: &str = "ferrolb.io/loadBalancerIPs";
/// Allocate from this pool only.
pub const ADDRESS_POOL: &str = "ferrolb.io/address-pool";
/// Sharing key: Services with the same key may share an address.
pub const ALLOW_SHARED_IP: &str = "ferrolb.io/allow-shared-ip";
/// Written by the controller: the pool the Service's addresses came from.
pub const IP_ALLOCATED_FROM_POOL: &str = "ferrolb.io/ip-allocated-from-pool";

/// Our own prefix.
pub const PREFIX: &str = "ferrolb.io/";
/// Prefixes read as aliases of [`PREFIX`], in the order they are consulted after it.
pub const ALIAS_PREFIXES: [&str; 2] = ["metallb.io/", "metallb.universe.tf/"];

/// The key without its prefix, e.g. `loadBalancerIPs` for [`LOAD_BALANCER_IPS`].
pub fn suffix(key: &str) -> &str {
    key.strip_prefix(PREFIX).unwrap_or(key)
}

/// Every spelling of `key` that is read, FerroLB's own first.
pub fn spellings(key: &str) -> [String; 3] {
    let suffix = suffix(key);
    [
        format!("{PREFIX}{suffix}"),
        format!("{}{suffix}", ALIAS_PREFIXES[0]),
        format!("{}{suffix}", ALIAS_PREFIXES[1]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_put_ours_first() {
        assert_eq!(
            spellings(ADDRESS_POOL),
            [
                "ferrolb.io/address-pool".to_string(),
                "metallb.io/address-pool".to_string(),
                "metallb.universe.tf/address-pool".to_string()
            ]
        );
    }
}
