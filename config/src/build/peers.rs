//! BGPPeers: addresses (or the interface of an unnumbered peer), ASNs, timers, passwords
//! (inline or from a Secret), BFD profile, VRF, and the rules MetalLB applies to them.

use super::*;

pub(super) fn build_peers(
    resources: &Resources,
    bfd_profiles: &BTreeMap<String, BfdProfile>,
    context: &Context,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Peer> {
    let mut out = BTreeMap::new();
    for obj in &resources.bgp_peers {
        let name = obj.name_any();
        let mut r = Reporter::new("BGPPeer", &name, errors);
        let s = &obj.spec;
        let before = r.count();

        if s.my_asn == 0 {
            r.error("spec.myASN", "AS 0 is reserved (RFC 7607)");
        }
        let peer_asn = match (s.peer_asn, s.dynamic_asn) {
            (Some(_), Some(_)) => {
                r.error(
                    "spec.peerASN",
                    "peerASN and dynamicASN are mutually exclusive",
                );
                None
            }
            (None, None) => {
                r.error("spec.peerASN", "one of peerASN or dynamicASN must be set");
                None
            }
            (Some(0), None) => {
                r.error("spec.peerASN", "AS 0 is reserved (RFC 7607)");
                None
            }
            (Some(asn), None) => Some(PeerAsn::Fixed(asn)),
            (None, Some(crds::DynamicAsn::Internal)) => Some(PeerAsn::Internal),
            (None, Some(crds::DynamicAsn::External)) => Some(PeerAsn::External),
        };

        if s.local_asn == Some(0) {
            r.error("spec.localASN", "AS 0 is reserved (RFC 7607)");
        }
        let interface = s.interface.as_deref().filter(|i| !i.is_empty());
        if let Some(name) = interface {
            if let Err(why) = check_interface_name(name) {
                r.error("spec.interface", why);
            }
            // Directly connected by definition: the session runs over link-local addresses.
            if s.ebgp_multi_hop {
                r.error(
                    "spec.ebgpMultiHop",
                    "an unnumbered peer (interface) is directly connected; leave ebgpMultiHop out",
                );
            }
            if s.source_address
                .as_deref()
                .is_some_and(|a| !a.trim().is_empty())
            {
                r.error(
                    "spec.sourceAddress",
                    "an unnumbered peer (interface) is reached from the interface's link-local address; leave sourceAddress out",
                );
            }
        }
        let address = match (s.peer_address.trim(), interface) {
            ("", None) => {
                r.error(
                    "spec.peerAddress",
                    "one of peerAddress or interface is required",
                );
                None
            }
            ("", Some(name)) => Some(PeerAddress::Interface(name.to_owned())),
            (_, Some(_)) => {
                r.error(
                    "spec.peerAddress",
                    "peerAddress and interface are mutually exclusive",
                );
                None
            }
            (text, None) => match text.parse::<IpAddr>() {
                Ok(ip) => Some(PeerAddress::Ip(ip)),
                Err(_) => {
                    r.error("spec.peerAddress", format!("{text:?} is not an IP address"));
                    None
                }
            },
        };
        let source_address =
            s.source_address
                .as_ref()
                .and_then(|text| match text.trim().parse::<IpAddr>() {
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        r.error(
                            "spec.sourceAddress",
                            format!("{text:?} is not an IP address"),
                        );
                        None
                    }
                });
        if let (Some(PeerAddress::Ip(a)), Some(src)) = (&address, source_address) {
            if a.is_ipv4() != src.is_ipv4() {
                r.error(
                    "spec.sourceAddress",
                    format!("{src} is not of the same family as peerAddress {a}"),
                );
            }
        }
        let port = match s.peer_port {
            None => defaults::PEER_PORT,
            Some(p) if (limits::PEER_PORT.0..=limits::PEER_PORT.1).contains(&p) => p as u16,
            Some(p) => {
                r.error(
                    "spec.peerPort",
                    format!(
                        "{p} is out of range {}..={}",
                        limits::PEER_PORT.0,
                        limits::PEER_PORT.1
                    ),
                );
                defaults::PEER_PORT
            }
        };

        // Hold and keepalive as MetalLB reads them: a missing one is derived from the other (x3
        // or /3), both are cut to whole seconds, the hold time must then be 0 or at least 3 s,
        // and keepalive may not exceed it. keepaliveTime 0s beside a non-zero hold time (written
        // by MetalLB's converter and its v1beta1 conversion) means the usual hold / 3: a session
        // without keepalives would end at the peer's hold timer.
        let hold = duration(&s.hold_time, "spec.holdTime", &mut r).map(whole);
        let keepalive = duration(&s.keepalive_time, "spec.keepaliveTime", &mut r);
        let (hold_time, keepalive_time) = match (hold, keepalive) {
            (Some(h), Some(k)) => {
                if k > h {
                    r.error(
                        "spec.keepaliveTime",
                        format!("{k:?} is greater than holdTime {h:?}"),
                    );
                }
                let k = whole(k);
                (h, if k.is_zero() { h / 3 } else { k })
            }
            (Some(h), None) => (h, whole(h / 3)),
            (None, Some(k)) => (whole(k * 3), whole(k)),
            (None, None) => (defaults::HOLD_TIME, defaults::HOLD_TIME / 3),
        };
        let hold_time = whole(hold_time);
        // A keepalive cut to 0 beside a hold time: the usual third, as for 0s.
        let keepalive_time = match whole(keepalive_time) {
            k if k.is_zero() => whole(hold_time / 3),
            k => k,
        };
        let hold_field = if hold.is_some() {
            "spec.holdTime"
        } else {
            "spec.keepaliveTime"
        };
        if hold_time > Duration::ZERO && hold_time < Duration::from_secs(3) {
            r.error(
                hold_field,
                format!(
                    "gives a hold time of {hold_time:?}: it must be 0 or at least 3s (RFC 4271)"
                ),
            );
        }
        if hold_time > Duration::from_secs(65535) {
            r.error(hold_field, format!("{hold_time:?} is more than 65535s"));
        }
        let connect_time =
            duration(&s.connect_time, "spec.connectTime", &mut r).unwrap_or(defaults::CONNECT_TIME);
        if s.connect_time.is_some() && connect_time.subsec_nanos() != 0 {
            // As MetalLB's CRD rule: the connect-retry timer is in whole seconds.
            r.error(
                "spec.connectTime",
                format!("{connect_time:?} is not a whole number of seconds"),
            );
        }
        if s.connect_time.is_some()
            && !(Duration::from_secs(1)..=Duration::from_secs(65535)).contains(&connect_time)
        {
            r.error(
                "spec.connectTime",
                format!("{connect_time:?} is out of range 1s..=65535s"),
            );
        }

        let router_id =
            s.router_id
                .as_ref()
                .and_then(|text| match text.trim().parse::<Ipv4Addr>() {
                    Ok(id) if id.is_unspecified() => {
                        r.error("spec.routerID", "0.0.0.0 is not a valid BGP identifier");
                        None
                    }
                    Ok(id) => Some(id),
                    Err(_) => {
                        r.error(
                            "spec.routerID",
                            format!(
                                "{text:?} is not an IPv4 address (a BGP identifier is 4 octets)"
                            ),
                        );
                        None
                    }
                });
        let node_selectors = selectors(&s.node_selectors, "spec.nodeSelectors", &mut r);

        // A passwordSecret without a name is no reference (MetalLB's converter and Go clients
        // write `passwordSecret: {}`).
        let secret_ref = s
            .password_secret
            .as_ref()
            .filter(|r| r.name.as_deref().is_some_and(|n| !n.is_empty()));
        let password = match (&s.password, secret_ref) {
            (Some(_), Some(_)) => {
                r.error(
                    "spec.passwordSecret",
                    "password and passwordSecret are mutually exclusive",
                );
                None
            }
            (Some(p), None) if p.len() > 80 => {
                r.error(
                    "spec.password",
                    "is longer than 80 bytes, the TCP MD5 key limit",
                );
                None
            }
            (Some(p), None) => Some(Password(p.clone())),
            (None, Some(reference)) => secret_password(reference, obj, &resources.secrets, &mut r),
            (None, None) => None,
        };

        if let Some(profile) = &s.bfd_profile {
            if !bfd_profiles.contains_key(profile) {
                let why = if context.is_left_out("BFDProfile", profile) {
                    "is invalid and left out, so this peer is too"
                } else {
                    "does not exist"
                };
                r.error("spec.bfdProfile", format!("BFDProfile/{profile} {why}"));
            }
            // Echo packets go to ourselves through a directly connected IPv4 peer (RFC 5881);
            // RFC 5883 rules echo out for multihop, FRR's IPv6 echo works only between FRRs,
            // and the neighbour table cannot tell a VRF's peer from the default VRF's.
            if bfd_profiles.get(profile).is_some_and(|p| p.echo_mode) {
                let ipv6 = s.interface.as_deref().is_some_and(|i| !i.is_empty())
                    || s.peer_address
                        .trim()
                        .parse::<IpAddr>()
                        .is_ok_and(|a| a.is_ipv6());
                let why = if ipv6 {
                    Some("an IPv6 session")
                } else if s.ebgp_multi_hop {
                    Some("an eBGP multihop session")
                } else if s.vrf.as_deref().is_some_and(|v| !v.is_empty()) {
                    Some("a session in a VRF")
                } else {
                    None
                };
                if let Some(why) = why {
                    r.error(
                        "spec.bfdProfile",
                        format!("BFDProfile/{profile} has echoMode, which FerroLB runs on IPv4 single-hop sessions in the default VRF only; this is {why}"),
                    );
                }
            }
        }
        if s.ebgp_multi_hop {
            let internal = match peer_asn {
                Some(PeerAsn::Fixed(asn)) => asn == s.local_asn.unwrap_or(s.my_asn),
                Some(PeerAsn::Internal) => true,
                _ => false,
            };
            if internal {
                r.error(
                    "spec.ebgpMultiHop",
                    "is only valid for eBGP peers; this peer is iBGP",
                );
            }
        }
        let vrf = s.vrf.as_deref().filter(|v| !v.is_empty());
        if let Some(vrf) = vrf {
            // The name of the node's Linux VRF device the session is bound to.
            if let Err(why) = check_interface_name(vrf) {
                r.error("spec.vrf", why);
            }
        }

        if r.count() == before {
            if let (Some(peer_asn), Some(address)) = (peer_asn, address) {
                out.insert(
                    name.clone(),
                    Peer {
                        name,
                        my_asn: s.my_asn,
                        local_asn: s.local_asn.filter(|asn| *asn != s.my_asn),
                        peer_asn,
                        address,
                        source_address,
                        port,
                        hold_time,
                        keepalive_time,
                        connect_time,
                        router_id,
                        node_selectors,
                        password,
                        bfd_profile: s.bfd_profile.clone(),
                        graceful_restart: s.enable_graceful_restart,
                        ebgp_multihop: s.ebgp_multi_hop,
                        vrf: vrf.map(str::to_owned),
                        dual_stack: s.dual_stack_address_family,
                    },
                );
            }
        }
    }
    out
}

fn secret_password(
    reference: &k8s_openapi::api::core::v1::SecretReference,
    peer: &crds::BGPPeer,
    secrets: &[Secret],
    r: &mut Reporter<'_>,
) -> Option<Password> {
    let Some(name) = reference.name.as_deref().filter(|n| !n.is_empty()) else {
        r.error("spec.passwordSecret.name", "is required");
        return None;
    };
    // Like a Pod's secret reference, the namespace defaults to the referring object's.
    let namespace = reference
        .namespace
        .clone()
        .or_else(|| peer.namespace())
        .unwrap_or_default();
    // A Secret read from a manifest without a namespace matches any namespace.
    let found = secrets.iter().find(|s| {
        s.name_any() == name
            && s.namespace()
                .is_none_or(|ns| namespace.is_empty() || ns == namespace)
    });
    let Some(secret) = found else {
        r.error(
            "spec.passwordSecret",
            format!("Secret {namespace}/{name} does not exist"),
        );
        return None;
    };
    if secret.type_.as_deref() != Some("kubernetes.io/basic-auth") {
        r.error(
            "spec.passwordSecret",
            format!(
                "Secret {namespace}/{name} has type {:?}; it must be kubernetes.io/basic-auth",
                secret.type_.as_deref().unwrap_or("Opaque")
            ),
        );
        return None;
    }
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get("password"))
        .map(|b| String::from_utf8(b.0.clone()));
    let from_string_data = secret
        .string_data
        .as_ref()
        .and_then(|d| d.get("password"))
        .cloned();
    match (from_data, from_string_data) {
        (Some(Ok(p)), _) | (None, Some(p)) if !p.is_empty() && p.len() <= 80 => Some(Password(p)),
        (Some(Ok(p)), _) | (None, Some(p)) if p.len() > 80 => {
            r.error(
                "spec.passwordSecret",
                format!("Secret {namespace}/{name}: password is longer than 80 bytes, the TCP MD5 key limit"),
            );
            None
        }
        (Some(Err(_)), _) => {
            r.error(
                "spec.passwordSecret",
                format!("Secret {namespace}/{name}: password is not UTF-8"),
            );
            None
        }
        _ => {
            r.error(
                "spec.passwordSecret",
                format!("Secret {namespace}/{name} has no non-empty key \"password\""),
            );
            None
        }
    }
}
