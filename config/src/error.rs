//! One configuration problem, named by object and field.

use std::fmt;

/// A problem with one object: `Kind/name: field.path: message`.
///
/// `object` is `Kind/name` for an object that could be identified, or `FILE#N` (the N-th YAML
/// document of a file) for one that could not. `field` is a path such as `spec.addresses[1]`, or
/// empty when the problem is with the object as a whole.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub struct ConfigError {
    pub object: String,
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(
        object: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            object: object.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.object, self.message)
        } else {
            write!(f, "{}: {}: {}", self.object, self.field, self.message)
        }
    }
}

/// Collects errors for one object, so every rule can report without stopping the others.
#[derive(Debug)]
pub(crate) struct Reporter<'a> {
    object: String,
    errors: &'a mut Vec<ConfigError>,
    count: usize,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(kind: &str, name: &str, errors: &'a mut Vec<ConfigError>) -> Self {
        Self {
            object: format!("{kind}/{name}"),
            errors,
            count: 0,
        }
    }

    pub(crate) fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors
            .push(ConfigError::new(self.object.clone(), field, message));
        self.count += 1;
    }

    /// Errors reported through this reporter so far.
    pub(crate) fn count(&self) -> usize {
        self.count
    }
}
