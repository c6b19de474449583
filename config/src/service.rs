//! What a Service asks of FerroLB, read from its spec and annotations.

use crate::addresses::Family;
use crate::error::ConfigError;
use ferrolb_crds::annotations;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use std::net::IpAddr;

/// The FerroLB-relevant requests of one Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRequest {
    /// Addresses asked for, at most one per family, in the order given.
    pub requested_ips: Vec<IpAddr>,
    /// Take addresses from this pool only.
    pub pool: Option<String>,
    /// Services with the same key may share an address.
    pub sharing_key: Option<String>,
}

/// `Service/namespace/name`, as errors and logs name a Service.
pub fn service_id(svc: &Service) -> String {
    format!(
        "Service/{}/{}",
        svc.namespace().unwrap_or_else(|| "default".into()),
        svc.name_any()
    )
}

/// The value of annotation `key` under any accepted spelling. Two spellings with different
/// values are an error: which one the user meant cannot be guessed.
pub fn annotation<'a>(svc: &'a Service, key: &str) -> Result<Option<&'a str>, ConfigError> {
    let Some(all) = svc.metadata.annotations.as_ref() else {
        return Ok(None);
    };
    let mut found: Option<(String, &str)> = None;
    for spelling in annotations::spellings(key) {
        if let Some(value) = all.get(&spelling) {
            match &found {
                Some((first, v)) if *v != value.as_str() => {
                    return Err(ConfigError::new(
                        service_id(svc),
                        format!("metadata.annotations[{spelling}]"),
                        format!("{value:?} contradicts {first}={v:?}"),
                    ))
                }
                Some(_) => {}
                None => found = Some((spelling, value.as_str())),
            }
        }
    }
    Ok(found.map(|(_, v)| v))
}

/// Reads the Service's requests; every problem is reported.
pub fn service_request(svc: &Service) -> Result<ServiceRequest, Vec<ConfigError>> {
    let id = service_id(svc);
    let mut errors = Vec::new();
    let mut request = ServiceRequest::default();

    let get = |key: &str, errors: &mut Vec<ConfigError>| match annotation(svc, key) {
        Ok(v) => v.map(str::trim).filter(|v| !v.is_empty()),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let ips_annotation = get(annotations::LOAD_BALANCER_IPS, &mut errors);
    request.pool = get(annotations::ADDRESS_POOL, &mut errors).map(str::to_string);
    request.sharing_key = get(annotations::ALLOW_SHARED_IP, &mut errors).map(str::to_string);

    let spec_ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let field = format!("metadata.annotations[{}]", annotations::LOAD_BALANCER_IPS);
    match (ips_annotation, spec_ip) {
        (Some(_), Some(_)) => errors.push(ConfigError::new(
            &id,
            "spec.loadBalancerIP",
            format!(
                "cannot be set together with the {} annotation",
                annotations::LOAD_BALANCER_IPS
            ),
        )),
        (Some(list), None) => {
            for part in list.split(',') {
                let part = part.trim();
                match part.parse::<IpAddr>() {
                    Ok(ip) => {
                        if request
                            .requested_ips
                            .iter()
                            .any(|x| Family::of(*x) == Family::of(ip))
                        {
                            errors.push(ConfigError::new(
                                &id,
                                &field,
                                format!("asks for more than one {} address", Family::of(ip)),
                            ));
                        } else {
                            request.requested_ips.push(ip);
                        }
                    }
                    Err(_) => errors.push(ConfigError::new(
                        &id,
                        &field,
                        format!("{part:?} is not an IP address"),
                    )),
                }
            }
        }
        (None, Some(one)) => match one.parse::<IpAddr>() {
            Ok(ip) => request.requested_ips.push(ip),
            Err(_) => errors.push(ConfigError::new(
                &id,
                "spec.loadBalancerIP",
                format!("{one:?} is not an IP address"),
            )),
        },
        (None, None) => {}
    }

    if errors.is_empty() {
        Ok(request)
    } else {
        Err(errors)
    }
}

/// The addresses in the Service's `status.loadBalancer.ingress`.
pub fn status_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ingress| {
            ingress
                .iter()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks what Services ask of the configuration that `validate` can judge without allocating:
/// annotations readable, the named pool existing, requested addresses inside some pool.
pub fn check_services(config: &crate::Config, services: &[Service]) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for svc in services {
        let request = match service_request(svc) {
            Ok(r) => r,
            Err(mut e) => {
                errors.append(&mut e);
                continue;
            }
        };
        let id = service_id(svc);
        if let Some(pool) = &request.pool {
            if !config.pools.contains_key(pool) {
                errors.push(ConfigError::new(
                    &id,
                    format!("metadata.annotations[{}]", annotations::ADDRESS_POOL),
                    format!("IPAddressPool/{pool} does not exist"),
                ));
            }
        }
        for ip in &request.requested_ips {
            match config.pool_of(*ip) {
                None => errors.push(ConfigError::new(
                    &id,
                    requested_field(svc),
                    format!("{ip} is in no IPAddressPool"),
                )),
                Some(p) if request.pool.as_ref().is_some_and(|want| want != &p.name) => errors
                    .push(ConfigError::new(
                        &id,
                        requested_field(svc),
                        format!(
                            "{ip} is in IPAddressPool/{}, not in the pool the Service names",
                            p.name
                        ),
                    )),
                Some(_) => {}
            }
        }
    }
    errors
}

fn requested_field(svc: &Service) -> String {
    let from_spec = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .is_some_and(|s| !s.trim().is_empty());
    if from_spec {
        "spec.loadBalancerIP".into()
    } else {
        format!("metadata.annotations[{}]", annotations::LOAD_BALANCER_IPS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;
    use std::collections::BTreeMap;

    fn svc(annotations: &[(&str, &str)], lb_ip: Option<&str>) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some("web".into());
        s.metadata.namespace = Some("shop".into());
        s.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        s.spec = Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            load_balancer_ip: lb_ip.map(str::to_string),
            ..Default::default()
        });
        s
    }

    #[test]
    fn reads_all_three_spellings() {
        for prefix in ["ferrolb.io", "metallb.io", "metallb.universe.tf"] {
            let s = svc(
                &[
                    (
                        &format!("{prefix}/loadBalancerIPs"),
                        "192.0.2.10, 2001:db8::10",
                    ),
                    (&format!("{prefix}/address-pool"), "blue"),
                    (&format!("{prefix}/allow-shared-ip"), "key1"),
                ],
                None,
            );
            let r = service_request(&s).unwrap();
            assert_eq!(
                r.requested_ips,
                vec![
                    "192.0.2.10".parse::<IpAddr>().unwrap(),
                    "2001:db8::10".parse().unwrap()
                ]
            );
            assert_eq!(r.pool.as_deref(), Some("blue"));
            assert_eq!(r.sharing_key.as_deref(), Some("key1"));
        }
    }

    #[test]
    fn spec_load_balancer_ip_is_honoured() {
        let r = service_request(&svc(&[], Some("192.0.2.7"))).unwrap();
        assert_eq!(
            r.requested_ips,
            vec!["192.0.2.7".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn rejects_both_ip_sources_bad_ips_and_two_of_a_family() {
        let e = service_request(&svc(
            &[("ferrolb.io/loadBalancerIPs", "192.0.2.1")],
            Some("192.0.2.1"),
        ))
        .unwrap_err();
        assert_eq!(e[0].to_string(), "Service/shop/web: spec.loadBalancerIP: cannot be set together with the ferrolb.io/loadBalancerIPs annotation");
        let e = service_request(&svc(
            &[("ferrolb.io/loadBalancerIPs", "192.0.2.1,192.0.2.2,nope")],
            None,
        ))
        .unwrap_err();
        assert_eq!(e.len(), 2);
        assert!(e[0].message.contains("more than one IPv4"));
        assert!(e[1].message.contains("\"nope\" is not an IP address"));
    }

    #[test]
    fn contradicting_spellings_are_an_error_and_agreeing_ones_are_fine() {
        let e = service_request(&svc(
            &[
                ("ferrolb.io/address-pool", "a"),
                ("metallb.universe.tf/address-pool", "b"),
            ],
            None,
        ))
        .unwrap_err();
        assert!(e[0]
            .to_string()
            .contains("metallb.universe.tf/address-pool"));
        let r = service_request(&svc(
            &[
                ("ferrolb.io/address-pool", "a"),
                ("metallb.io/address-pool", "a"),
            ],
            None,
        ))
        .unwrap();
        assert_eq!(r.pool.as_deref(), Some("a"));
    }
}
