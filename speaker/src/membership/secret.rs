//! The membership key from the Secret `ferrolb-memberlist` (key `secretkey`) in namespace
//! `ferrolb-system`; the same in kube mode (from the API) and in file mode (from the files).

use super::auth::{KeyError, MembershipKey};
use k8s_openapi::api::core::v1::Secret;

pub const SECRET_NAMESPACE: &str = "ferrolb-system";
pub const SECRET_NAME: &str = "ferrolb-memberlist";
pub const SECRET_KEY: &str = "secretkey";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("Secret {SECRET_NAMESPACE}/{SECRET_NAME} has no key {SECRET_KEY:?}")]
    MissingKey,
    #[error("Secret {SECRET_NAMESPACE}/{SECRET_NAME}: {0}")]
    Key(#[from] KeyError),
}

/// Is this the membership Secret?
pub fn is_membership_secret(s: &Secret) -> bool {
    s.metadata.name.as_deref() == Some(SECRET_NAME)
        && s.metadata.namespace.as_deref().unwrap_or("default") == SECRET_NAMESPACE
}

/// The key in the Secret: `data.secretkey` (bytes, already base64-decoded by the client), or
/// `stringData.secretkey` as written in a file that was never applied. The key material is
/// used as is, whatever its encoding, exactly as every speaker reads the same bytes.
pub fn key_from_secret(s: &Secret) -> Result<MembershipKey, SecretError> {
    if let Some(v) = s.data.as_ref().and_then(|d| d.get(SECRET_KEY)) {
        return Ok(MembershipKey::new(v.0.clone())?);
    }
    if let Some(v) = s.string_data.as_ref().and_then(|d| d.get(SECRET_KEY)) {
        return Ok(MembershipKey::new(v.as_bytes().to_vec())?);
    }
    Err(SecretError::MissingKey)
}

/// The key from the first membership Secret among `secrets`; `Ok(None)` when there is none
/// (the caller then refuses to start unless `--insecure-membership`).
pub fn find_key<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
) -> Result<Option<MembershipKey>, SecretError> {
    match secrets.into_iter().find(|s| is_membership_secret(s)) {
        Some(s) => key_from_secret(s).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(ns: &str, name: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.namespace = Some(ns.into());
        s.metadata.name = Some(name.into());
        s
    }

    #[test]
    fn data_and_string_data_both_work() {
        let mut s = secret(SECRET_NAMESPACE, SECRET_NAME);
        s.data = Some(BTreeMap::from([(
            SECRET_KEY.to_owned(),
            ByteString(vec![9; 32]),
        )]));
        assert_eq!(
            find_key([&s]).unwrap(),
            Some(MembershipKey::new(vec![9; 32]).unwrap())
        );
        let mut s = secret(SECRET_NAMESPACE, SECRET_NAME);
        s.string_data = Some(BTreeMap::from([(
            SECRET_KEY.to_owned(),
            "a-long-enough-shared-key".to_owned(),
        )]));
        assert!(key_from_secret(&s).is_ok());
    }

    #[test]
    fn other_secrets_are_ignored_and_problems_are_clear() {
        let other_ns = secret("default", SECRET_NAME);
        let other_name = secret(SECRET_NAMESPACE, "something");
        assert_eq!(find_key([&other_ns, &other_name]).unwrap(), None);
        let empty = secret(SECRET_NAMESPACE, SECRET_NAME);
        assert_eq!(find_key([&empty]), Err(SecretError::MissingKey));
        let mut short = secret(SECRET_NAMESPACE, SECRET_NAME);
        short.data = Some(BTreeMap::from([(
            SECRET_KEY.to_owned(),
            ByteString(vec![1; 4]),
        )]));
        let e = find_key([&short]).unwrap_err();
        assert!(e.to_string().contains("at least 16"), "{e}");
    }
}
