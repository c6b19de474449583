//! API errors in the shape kube-apiserver sends them: a `meta.k8s.io/v1` `Status` with the
//! matching HTTP code, reason and, for validation failures, one cause per field.

use serde_json::{json, Value};

/// One invalid field, rendered like the apiserver's `field.Error`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Dotted path, e.g. `spec.addresses[0]`.
    pub field: String,
    /// Machine-readable cause reason, e.g. `FieldValueRequired`.
    pub reason: &'static str,
    /// Human-readable text after the field path.
    pub detail: String,
}

/// Renders a value the way the apiserver quotes it in messages: strings quoted, the rest as JSON.
pub fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

impl FieldError {
    pub fn required(field: &str) -> Self {
        Self {
            field: field.into(),
            reason: "FieldValueRequired",
            detail: "Required value".into(),
        }
    }

    pub fn invalid(field: &str, value: &Value, why: &str) -> Self {
        Self {
            field: field.into(),
            reason: "FieldValueInvalid",
            detail: format!("Invalid value: {}: {why}", show(value)),
        }
    }

    pub fn not_supported(field: &str, value: &Value, allowed: &[Value]) -> Self {
        let allowed: Vec<String> = allowed.iter().map(show).collect();
        Self {
            field: field.into(),
            reason: "FieldValueNotSupported",
            detail: format!(
                "Unsupported value: {}: supported values: {}",
                show(value),
                allowed.join(", ")
            ),
        }
    }

    pub fn forbidden(field: &str, why: &str) -> Self {
        Self {
            field: field.into(),
            reason: "FieldValueForbidden",
            detail: format!("Forbidden: {why}"),
        }
    }

    pub fn duplicate(field: &str, value: &Value) -> Self {
        Self {
            field: field.into(),
            reason: "FieldValueDuplicate",
            detail: format!("Duplicate value: {}", show(value)),
        }
    }

    pub fn too_many(field: &str, count: usize, max: u64) -> Self {
        Self {
            field: field.into(),
            reason: "FieldValueTooMany",
            detail: format!("Too many: {count}: must have at most {max} items"),
        }
    }

    pub fn too_long(field: &str, max: u64) -> Self {
        Self {
            field: field.into(),
            reason: "FieldValueTooLong",
            detail: format!("Too long: may not be more than {max} bytes"),
        }
    }

    pub fn immutable(field: &str, value: &Value) -> Self {
        Self::invalid(field, value, "field is immutable")
    }

    /// `spec.x: Invalid value: ...` as the apiserver prints it.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.detail)
    }
}

/// An error answered to the client as a `Status` object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// Identifies what an error is about: `services` in the core group, or `ipaddresspools.ferrolb.io`.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub group: &'a str,
    pub plural: &'a str,
    pub kind: &'a str,
}

impl Subject<'_> {
    /// `leases.coordination.k8s.io`, or just `services` for the core group.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    fn details(&self, name: &str) -> Value {
        json!({"name": name, "group": self.group, "kind": self.plural})
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn not_found_path(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn not_found(subject: Subject<'_>, name: &str) -> Self {
        Self {
            details: Some(subject.details(name)),
            ..Self::new(
                404,
                "NotFound",
                format!("{} {name:?} not found", subject.qualified_resource()),
            )
        }
    }

    pub fn already_exists(subject: Subject<'_>, name: &str) -> Self {
        Self {
            details: Some(subject.details(name)),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} {name:?} already exists", subject.qualified_resource()),
            )
        }
    }

    pub fn conflict(subject: Subject<'_>, name: &str, why: &str) -> Self {
        Self {
            details: Some(subject.details(name)),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} {name:?}: {why}",
                    subject.qualified_resource()
                ),
            )
        }
    }

    /// The optimistic-concurrency failure every controller retries on.
    pub fn stale(subject: Subject<'_>, name: &str) -> Self {
        Self::conflict(
            subject,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// A server-side apply conflict between field managers.
    pub fn apply_conflicts(
        subject: Subject<'_>,
        name: &str,
        conflicts: &[(String, String)],
    ) -> Self {
        let mut message = format!(
            "Apply failed with {} conflict{}: ",
            conflicts.len(),
            if conflicts.len() == 1 { "" } else { "s" }
        );
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(manager, field)| format!("conflict with {manager:?}: {field}"))
            .collect();
        message.push_str(&lines.join("\n"));
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, field)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with {manager:?}"), "field": field})
            })
            .collect();
        let mut details = subject.details(name);
        details["causes"] = Value::Array(causes);
        Self {
            details: Some(details),
            ..Self::new(409, "Conflict", message)
        }
    }

    /// 422 Invalid, listing every field error like the apiserver does.
    pub fn invalid(subject: Subject<'_>, name: &str, errors: &[FieldError]) -> Self {
        let messages: Vec<String> = errors.iter().map(FieldError::message).collect();
        let joined = if messages.len() == 1 {
            messages[0].clone()
        } else {
            format!("[{}]", messages.join(", "))
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason, "message": e.detail, "field": e.field}))
            .collect();
        Self {
            details: Some(
                json!({"name": name, "group": subject.group, "kind": subject.kind, "causes": causes}),
            ),
            ..Self::new(
                422,
                "Invalid",
                format!("{} {name:?} is invalid: {joined}", subject.qualified_kind()),
            )
        }
    }

    /// 410 Gone: the requested resourceVersion has left the event history.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    /// The `Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
