//! `ferrolb-controller validate`: checks manifests as the controller would load them.

use ferrolb_config::files::read_manifests;
use ferrolb_config::service::check_services;
use std::path::PathBuf;

/// What `validate` found: every problem as `Kind/name: field.path: message`, and a summary.
#[derive(Debug)]
pub struct Report {
    pub problems: Vec<String>,
    pub summary: String,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Where the components read their objects: FerroLB's namespace, and MetalLB's for metallb.io
/// objects (MetalLB-compatible mode).
#[derive(Clone, Debug)]
pub struct Namespaces {
    pub ferrolb: String,
    pub metallb: String,
}

impl Default for Namespaces {
    fn default() -> Self {
        Self {
            ferrolb: "ferrolb-system".into(),
            metallb: "metallb-system".into(),
        }
    }
}

/// Reads and validates the manifests under `paths`.
pub fn validate(paths: &[PathBuf], recursive: bool) -> Report {
    validate_in(paths, recursive, &Namespaces::default())
}

/// [`validate`], with the namespaces the components read.
pub fn validate_in(paths: &[PathBuf], recursive: bool, namespaces: &Namespaces) -> Report {
    let (manifests, mut errors) = read_manifests(paths, recursive);
    errors.extend(manifests.namespace_problems(&namespaces.ferrolb, &namespaces.metallb));
    match ferrolb_config::build(&manifests.resources) {
        Ok(config) => errors.extend(check_services(&config, &manifests.services)),
        Err(build_errors) => errors.extend(build_errors),
    }
    let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let verdict = match problems.len() {
        0 => "valid".to_string(),
        1 => "invalid: 1 problem".to_string(),
        n => format!("invalid: {n} problems"),
    };
    Report {
        summary: format!("{verdict}; {}", manifests.summary()),
        problems,
    }
}
