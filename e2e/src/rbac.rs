//! RBAC rules as the set of single grants they make, so a test can compare a manifest's Roles
//! with the API calls a binary declares (controller and speaker alike).

use k8s_openapi::api::rbac::v1::PolicyRule;
use std::collections::BTreeSet;

/// One granted (scope, API group, resource, verb).
pub type Grant<S> = (S, String, String, String);

/// Every single grant `rules` make, tagged with `scope`. Panics (it serves tests) on rules by
/// resource name or URL and on wildcards, which FerroLB's manifests never use.
pub fn grants<S: Ord + Copy>(rules: &[PolicyRule], scope: S) -> BTreeSet<Grant<S>> {
    let mut out = BTreeSet::new();
    for rule in rules {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "rules are by resource only: {rule:?}"
        );
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    assert_ne!(verb, "*", "no wildcard verbs");
                    assert_ne!(resource, "*", "no wildcard resources");
                    out.insert((scope, group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}
