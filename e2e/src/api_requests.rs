//! Kubernetes API requests as RBAC sees them (namespace, API group, resource, verb), read from
//! the log lines kube-client writes for each request at debug level (target
//! `kube_client::client::builder`, message `requesting`). Tests check them against the calls a
//! component declares, so that its RBAC grants every one.

/// One request.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiRequest {
    pub method: String,
    pub url: String,
    /// `None` for cluster-scoped objects and requests across all namespaces.
    pub namespace: Option<String>,
    pub group: String,
    /// Plural resource, with `/subresource` when it is one.
    pub resource: String,
    pub verb: &'static str,
}

/// Every resource request in a text-format log (discovery and other paths are left out).
pub fn from_text_log(log: &str) -> Vec<ApiRequest> {
    log.lines()
        .filter(|l| l.ends_with("requesting"))
        .filter_map(|l| {
            let method = field(l, "http.method=")?;
            let url = field(l, "http.url=")?;
            classify(method, url)
        })
        .collect()
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = &line[line.find(name)? + name.len()..];
    let value = rest.split([' ', '}']).next()?;
    Some(value.trim_matches('"'))
}

/// A request by method and URL; `None` for discovery and other non-resource paths.
pub fn classify(method: &str, url: &str) -> Option<ApiRequest> {
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = &path[path.find('/')?..];
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match *segments.first()? {
        "api" if segments.len() > 2 => ("", &segments[2..]),
        "apis" if segments.len() > 3 => (segments[1], &segments[3..]),
        _ => return None,
    };
    let (namespace, rest) = if rest[0] == "namespaces" && rest.len() >= 3 {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let resource = match rest {
        [resource, _, sub, ..] => format!("{resource}/{sub}"),
        [resource, ..] => resource.to_string(),
        [] => return None,
    };
    let named = rest.len() >= 2;
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    };
    Some(ApiRequest {
        method: method.into(),
        url: url.into(),
        namespace,
        group: group.into(),
        resource,
        verb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_from_log_lines_as_rbac_sees_them() {
        let log = "\
2026-12-01T14:13:56Z DEBUG HTTP{http.method=GET http.url=http://192.0.2.100:1/apis/discovery.k8s.io/v1/endpointslices?&watch=true&labelSelector=x otel.name=\"watch\" otel.kind=\"client\"}: kube_client::client::builder: requesting
2026-12-01T14:13:56Z DEBUG HTTP{http.method=PATCH http.url=http://h/apis/ferrolb.io/v1beta1/namespaces/sys/servicel2statuses/l2-1/status?&fieldManager=m otel.name=\"patch\"}: kube_client::client::builder: requesting
2026-12-01T14:13:56Z DEBUG HTTP{http.method=GET http.url=http://h/api/v1/nodes?&limit=500 otel.name=\"list\"}: kube_client::client::builder: requesting
2026-12-01T14:13:56Z DEBUG HTTP{http.method=GET http.url=http://h/apis otel.name=\"HTTP\"}: kube_client::client::builder: requesting
2026-12-01T14:13:56Z  INFO something else
";
        let got: Vec<(Option<String>, String, String, &str)> = from_text_log(log)
            .into_iter()
            .map(|r| (r.namespace, r.group, r.resource, r.verb))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    None,
                    "discovery.k8s.io".into(),
                    "endpointslices".into(),
                    "watch"
                ),
                (
                    Some("sys".into()),
                    "ferrolb.io".into(),
                    "servicel2statuses/status".into(),
                    "patch"
                ),
                (None, "".into(), "nodes".into(), "list"),
            ]
        );
        let delete = classify("DELETE", "http://h/api/v1/namespaces/a/secrets/s").unwrap();
        assert_eq!(
            (delete.resource.as_str(), delete.verb),
            ("secrets", "delete")
        );
    }
}
