use super::*;

/// The value of the exact series `series` (name and labels as exposed), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn l2_counters_count_per_address_and_interface_and_vanish_when_forgotten() {
    let m = Metrics::new();
    let a = m.l2_counters(ip("192.0.2.200"), "eth0");
    let b = m.l2_counters(ip("2001:db8::200"), "eth0");
    for _ in 0..3 {
        a.request();
    }
    a.response();
    a.response();
    b.request();
    b.gratuitous();
    // A second handle on the same pair shares the series.
    m.l2_counters(ip("192.0.2.200"), "eth0").gratuitous();
    let text = m.encode();
    let v4 = "{ip=\"192.0.2.200\",interface=\"eth0\"}";
    let v6 = "{ip=\"2001:db8::200\",interface=\"eth0\"}";
    assert_eq!(
        value(
            &text,
            &format!("ferrolb_layer2_requests_received_total{v4}")
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &format!("ferrolb_layer2_responses_sent_total{v4}")),
        Some(2.0)
    );
    assert_eq!(
        value(&text, &format!("ferrolb_layer2_gratuitous_sent_total{v4}")),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("ferrolb_layer2_requests_received_total{v6}")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, &format!("ferrolb_layer2_responses_sent_total{v6}")),
        Some(0.0)
    );
    assert!(text.contains("# TYPE ferrolb_layer2_requests_received counter"));
    m.forget_l2(ip("192.0.2.200"), "eth0");
    let text = m.encode();
    assert!(!text.contains("192.0.2.200"), "{text}");
    assert!(text.contains("2001:db8::200"));
}

#[test]
fn announced_series_are_replaced_per_protocol() {
    let m = Metrics::new();
    let l2 = |service: &str, addr: &str, interface: &str| Announced {
        service: service.into(),
        ip: ip(addr),
        interface: interface.into(),
    };
    m.set_announced(
        Protocol::Layer2,
        "node-1",
        &[
            l2("default/web", "192.0.2.200", "eth0"),
            l2("default/dns", "192.0.2.200", "eth0"),
        ],
    );
    m.set_announced(
        Protocol::Bgp,
        "node-1",
        &[l2("default/web", "203.0.113.7", "")],
    );
    let text = m.encode();
    assert_eq!(
        value(
            &text,
            "ferrolb_speaker_announced{service=\"default/web\",protocol=\"layer2\",node=\"node-1\",ip=\"192.0.2.200\",interface=\"eth0\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(text.matches("ferrolb_speaker_announced{").count(), 3);
    // The L2 set shrinks; the BGP series stays.
    m.set_announced(
        Protocol::Layer2,
        "node-1",
        &[l2("default/web", "192.0.2.200", "eth0")],
    );
    let text = m.encode();
    assert!(!text.contains("default/dns"), "{text}");
    assert!(text.contains("protocol=\"bgp\""));
    m.set_announced(Protocol::Layer2, "node-1", &[]);
    assert_eq!(m.encode().matches("ferrolb_speaker_announced{").count(), 1);
}

#[test]
fn membership_totals_are_copied_and_never_go_back() {
    let m = Metrics::new();
    let mut s = MembershipSample {
        joins: 2,
        deaths: 1,
        suspicions: 3,
        live_members: 2,
        ..Default::default()
    };
    s.dropped[1].1 = 7;
    m.set_membership(&s);
    s.live_members = 1;
    s.deaths = 0; // a stale sample must not lower a counter
    m.set_membership(&s);
    let text = m.encode();
    assert_eq!(value(&text, "ferrolb_membership_joins_total"), Some(2.0));
    assert_eq!(value(&text, "ferrolb_membership_deaths_total"), Some(1.0));
    assert_eq!(
        value(&text, "ferrolb_membership_suspicions_total"),
        Some(3.0)
    );
    assert_eq!(value(&text, "ferrolb_membership_live_members"), Some(1.0));
    assert_eq!(
        value(
            &text,
            "ferrolb_membership_datagrams_dropped_total{reason=\"unauthenticated\"}"
        ),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "ferrolb_membership_datagrams_dropped_total{reason=\"replay\"}"
        ),
        Some(0.0)
    );
}

#[test]
fn bgp_and_bfd_samples_set_their_families_and_a_restarted_peer_starts_again() {
    let m = Metrics::new();
    let mut peer = BgpPeerSample {
        peer: "192.0.2.2".into(),
        session_up: true,
        updates_sent: 10,
        updates_received: 4,
        announced_prefixes: 7,
    };
    m.set_bgp_peer(&peer);
    peer.updates_sent = 12;
    m.set_bgp_peer(&peer);
    let p = "{peer=\"192.0.2.2\"}";
    let text = m.encode();
    assert_eq!(
        value(&text, &format!("ferrolb_bgp_session_up{p}")),
        Some(1.0)
    );
    assert_eq!(
        value(&text, &format!("ferrolb_bgp_updates_sent_total{p}")),
        Some(12.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &format!("ferrolb_bgp_updates_received_total{p}")),
        Some(4.0)
    );
    assert_eq!(
        value(&text, &format!("ferrolb_bgp_announced_prefixes_total{p}")),
        Some(7.0)
    );
    // The peer was re-added in the engine: its counts restart from a smaller total.
    peer.session_up = false;
    peer.updates_sent = 1;
    m.set_bgp_peer(&peer);
    let text = m.encode();
    assert_eq!(
        value(&text, &format!("ferrolb_bgp_updates_sent_total{p}")),
        Some(1.0)
    );
    assert_eq!(
        value(&text, &format!("ferrolb_bgp_session_up{p}")),
        Some(0.0)
    );
    m.remove_bgp_peer("192.0.2.2");
    assert!(!m.encode().contains("192.0.2.2"));

    m.set_bfd_session(&BfdSessionSample {
        peer: "2001:db8::2".into(),
        session_up: true,
        control_packets_in: 100,
        control_packets_out: 101,
        up_events: 1,
        down_events: 0,
        echo_packets_in: 7,
        echo_packets_out: 9,
    });
    let p = "{peer=\"2001:db8::2\"}";
    let text = m.encode();
    for (name, v) in [
        ("ferrolb_bfd_session_up", 1.0),
        ("ferrolb_bfd_control_packet_input_total", 100.0),
        ("ferrolb_bfd_control_packet_output_total", 101.0),
        ("ferrolb_bfd_session_up_events_total", 1.0),
        ("ferrolb_bfd_session_down_events_total", 0.0),
        ("ferrolb_bfd_echo_packet_input_total", 7.0),
        ("ferrolb_bfd_echo_packet_output_total", 9.0),
    ] {
        assert_eq!(
            value(&text, &format!("{name}{p}")),
            Some(v),
            "{name}: {text}"
        );
    }
    m.remove_bfd_session("2001:db8::2");
    assert!(!m.encode().contains("2001:db8::2"));
}

#[test]
fn readiness_needs_a_configuration_and_the_data_plane_and_liveness_a_turning_loop() {
    let h = Health::new(Duration::from_millis(50));
    assert_eq!(h.readiness(), Err("no valid configuration loaded yet"));
    h.set_config_loaded(true);
    assert_eq!(h.readiness(), Err("the data plane is not running"));
    h.set_data_plane_running(true);
    assert_eq!(h.readiness(), Ok(()));
    h.tick();
    assert!(h.liveness().is_ok());
    std::thread::sleep(Duration::from_millis(120));
    let err = h.liveness().unwrap_err();
    assert!(err.contains("has not turned"), "{err}");
    h.tick();
    assert!(h.liveness().is_ok());
}

#[test]
fn scrape_runs_the_samplers_first() {
    let h = Health::default();
    let total = Arc::new(AtomicU64::new(0));
    let seen = total.clone();
    h.on_scrape(move |m| {
        m.set_membership(&MembershipSample {
            joins: seen.load(Ordering::Relaxed),
            live_members: 1,
            ..Default::default()
        })
    });
    total.store(5, Ordering::Relaxed);
    assert_eq!(
        value(&h.scrape(), "ferrolb_membership_joins_total"),
        Some(5.0)
    );
}

/// GET `path` over plain HTTP/1.0: (status code, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (code, body)
}

#[tokio::test]
async fn the_endpoints_answer_over_http() {
    let h = Arc::new(Health::default());
    h.tick();
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = serve(listener, h.clone()).unwrap();
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!(
        (code, body.as_str()),
        (503, "no valid configuration loaded yet\n")
    );
    h.set_config_loaded(true);
    h.set_data_plane_running(true);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    h.metrics.l2_counters(ip("192.0.2.9"), "eth1").request();
    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(
        value(
            &body,
            "ferrolb_layer2_requests_received_total{ip=\"192.0.2.9\",interface=\"eth1\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"));
    server.abort();
}

#[test]
fn a_bgp_sample_comes_straight_from_the_engine_counters() {
    let c = ferrolb_bgp::PeerCounters {
        state: Some(ferrolb_bgp::State::Established),
        updates_sent: 3,
        updates_received: 2,
        ..Default::default()
    };
    let s = BgpPeerSample::from_engine(&ip("2001:db8::2").into(), &c, 9);
    assert_eq!(
        s,
        BgpPeerSample {
            peer: "2001:db8::2".into(),
            session_up: true,
            updates_sent: 3,
            updates_received: 2,
            announced_prefixes: 9,
        }
    );
    let idle = ferrolb_bgp::PeerCounters {
        state: Some(ferrolb_bgp::State::Active),
        ..Default::default()
    };
    assert!(!BgpPeerSample::from_engine(&ip("192.0.2.2").into(), &idle, 0).session_up);
}
