use super::*;

const MS: Duration = Duration::from_millis(1);

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn sends(out: &[FastOutput]) -> Vec<(String, FastMsg)> {
    out.iter()
        .filter_map(|o| match o {
            FastOutput::Send { to, msg } => Some((to.clone(), msg.clone())),
            _ => None,
        })
        .collect()
}

fn detector(me: &str, members: &[&str], t0: Instant) -> FastDetector {
    let mut d = FastDetector::new(me, FastTimers::default(), 1_000, 7);
    d.set_members(set(members), t0);
    d
}

#[test]
fn every_message_round_trips_and_bad_bytes_are_errors() {
    let all = vec![
        FastMsg::Heartbeat {
            from: "node-a".into(),
            seq: u64::MAX,
            every_ms: 4,
        },
        FastMsg::Subscribe {
            from: "node-b".into(),
        },
        FastMsg::Check {
            from: "a".into(),
            nonce: 1,
        },
        FastMsg::CheckAck {
            from: "a".into(),
            nonce: 2,
        },
        FastMsg::CheckReq {
            from: "a".into(),
            target: "b".into(),
            nonce: 3,
        },
        FastMsg::CheckOk {
            from: "c".into(),
            target: "b".into(),
            nonce: 4,
        },
    ];
    for m in all {
        let b = m.encode();
        assert_eq!(FastMsg::decode(&b), Ok(m.clone()));
        for cut in 0..b.len() {
            assert!(FastMsg::decode(&b[..cut]).is_err(), "{m:?} cut at {cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(FastMsg::decode(&long), Err(FastCodecError::Trailing(1)));
    }
    assert_eq!(
        FastMsg::decode(&[9, 1, b'a']),
        Err(FastCodecError::BadKind(9))
    );
    assert_eq!(FastMsg::decode(&[2, 0]), Err(FastCodecError::BadName));
    assert_eq!(
        FastMsg::decode(&[2, 2, 0xff, 0xfe]),
        Err(FastCodecError::BadName)
    );
    // A heartbeat, byte for byte.
    let hb = FastMsg::Heartbeat {
        from: "n1".into(),
        seq: 0x0102_0304_0506_0708,
        every_ms: 4,
    };
    assert_eq!(
        hb.encode(),
        vec![1, 2, b'n', b'1', 1, 2, 3, 4, 5, 6, 7, 8, 0, 4]
    );
}

#[test]
fn an_owner_sends_heartbeats_to_its_subscribers_only_while_subscribed() {
    let t0 = Instant::now();
    let mut a = detector("a", &["a", "b", "c"], t0);
    assert!(a.tick(t0).is_empty());
    assert_eq!(
        a.next_deadline(),
        None,
        "nobody to send to, nothing to watch"
    );
    a.receive(FastMsg::Subscribe { from: "b".into() }, t0);
    let mut beats: i64 = 0;
    let mut t = t0;
    while t < t0 + SUBSCRIPTION_LASTS + 100 * MS {
        let Some(due) = a.next_deadline() else {
            break; // the subscription lapsed
        };
        assert!(due >= t);
        t = due;
        for (to, msg) in sends(&a.tick(t)) {
            assert_eq!(to, "b");
            assert!(matches!(msg, FastMsg::Heartbeat { .. }));
            beats += 1;
        }
    }
    // One every heartbeat for the second the subscription lasts, then none.
    let want =
        (SUBSCRIPTION_LASTS.as_millis() / FastTimers::default().heartbeat.as_millis()) as i64;
    assert!(
        (beats - want).abs() <= 1,
        "{beats} heartbeats, {want} expected"
    );
    assert_eq!(a.next_deadline(), None);
}

/// `b` watches `a`; returns b subscribed and fed a heartbeat at t0.
fn standby(t0: Instant) -> FastDetector {
    let mut b = detector("b", &["a", "b", "c", "d", "e"], t0);
    let out = b.set_watched(set(&["a"]), t0);
    assert_eq!(
        sends(&out),
        vec![("a".to_string(), FastMsg::Subscribe { from: "b".into() })]
    );
    // The owner's first heartbeat: from now on it is judged.
    b.receive(
        FastMsg::Heartbeat {
            from: "a".into(),
            seq: 1,
            every_ms: 4,
        },
        t0,
    );
    b
}

fn down_set(d: &FastDetector) -> BTreeSet<String> {
    d.down().cloned().collect()
}

#[test]
fn a_silent_owner_is_checked_then_taken_down() {
    let t0 = Instant::now();
    let mut b = standby(t0);
    // Helpers heard from most recently first.
    b.heard("d", t0 + MS);
    b.heard("c", t0 + 2 * MS);
    let silence = FastTimers::default().silence();
    assert_eq!(b.next_deadline(), Some(t0 + silence));
    assert!(b.tick(t0 + silence - MS).is_empty());
    let out = b.tick(t0 + silence);
    let s = sends(&out);
    let nonce = match &s[0] {
        (to, FastMsg::Check { nonce, .. }) if to == "a" => *nonce,
        other => panic!("{other:?}"),
    };
    let asked: Vec<&str> = s[1..]
        .iter()
        .map(|(to, m)| {
            assert_eq!(
                m,
                &FastMsg::CheckReq {
                    from: "b".into(),
                    target: "a".into(),
                    nonce
                }
            );
            to.as_str()
        })
        .collect();
    assert_eq!(
        asked,
        vec!["c", "d", "e"],
        "three helpers, latest heard first"
    );
    let confirm = FastTimers::default().confirm;
    assert_eq!(b.next_deadline(), Some(t0 + silence + confirm));
    assert!(b.tick(t0 + silence + confirm - MS).is_empty());
    assert_eq!(
        b.tick(t0 + silence + confirm),
        vec![FastOutput::Down("a".into())]
    );
    assert_eq!(down_set(&b), set(&["a"]));
    // Taken down once; the next tick says nothing more.
    assert!(b
        .tick(t0 + silence + confirm + 10 * MS)
        .iter()
        .all(|o| !matches!(o, FastOutput::Down(_))));
    // Anything from it brings it back.
    assert_eq!(
        b.heard("a", t0 + 100 * MS),
        vec![FastOutput::Back("a".into())]
    );
    assert!(down_set(&b).is_empty());
}

#[test]
fn heartbeats_and_a_lost_one_or_two_keep_the_owner() {
    let t0 = Instant::now();
    let mut b = standby(t0);
    let mut seq = 10;
    let mut t = t0;
    // 2 of every 3 heartbeats lost for a second: never silent for 3 periods.
    let every = FastTimers::default().heartbeat;
    for i in 0..250u32 {
        t = t0 + every * i;
        if i % 3 == 0 {
            seq += 1;
            b.receive(
                FastMsg::Heartbeat {
                    from: "a".into(),
                    seq,
                    every_ms: 4,
                },
                t,
            );
        }
        for o in b.tick(t) {
            assert!(
                matches!(
                    &o,
                    FastOutput::Send {
                        msg: FastMsg::Subscribe { .. },
                        ..
                    }
                ),
                "at {i}: {o:?}"
            );
        }
    }
    assert!(down_set(&b).is_empty(), "{t:?}");
}

#[test]
fn the_owner_answering_or_a_helper_vouching_keeps_it() {
    for helper_says in [false, true] {
        let t0 = Instant::now();
        let mut b = standby(t0);
        let silence = FastTimers::default().silence();
        let s = sends(&b.tick(t0 + silence));
        let FastMsg::Check { nonce, .. } = s[0].1 else {
            panic!("{s:?}")
        };
        let reply = if helper_says {
            FastMsg::CheckOk {
                from: "c".into(),
                target: "a".into(),
                nonce,
            }
        } else {
            FastMsg::CheckAck {
                from: "a".into(),
                nonce,
            }
        };
        b.receive(reply, t0 + silence + MS);
        let later = b.tick(t0 + silence + FastTimers::default().confirm);
        assert!(
            !later.iter().any(|o| matches!(o, FastOutput::Down(_))),
            "{later:?}"
        );
        assert!(down_set(&b).is_empty());
        // A stale vouch (wrong nonce) is not one.
        let s = sends(&b.tick(t0 + 2 * silence + MS));
        assert!(matches!(s[0].1, FastMsg::Check { .. }), "{s:?}");
        b.receive(
            FastMsg::CheckOk {
                from: "c".into(),
                target: "a".into(),
                nonce: nonce ^ 1,
            },
            t0 + 2 * silence + 2 * MS,
        );
        let end = b.tick(t0 + 2 * silence + MS + FastTimers::default().confirm);
        assert_eq!(end, vec![FastOutput::Down("a".into())]);
    }
}

#[test]
fn a_helper_vouches_at_once_or_checks_and_relays() {
    let t0 = Instant::now();
    let mut c = detector("c", &["a", "b", "c"], t0);
    // Heard a just now: vouches at once.
    c.heard("a", t0);
    let out = c.receive(
        FastMsg::CheckReq {
            from: "b".into(),
            target: "a".into(),
            nonce: 5,
        },
        t0 + MS,
    );
    assert_eq!(
        sends(&out),
        vec![(
            "b".to_string(),
            FastMsg::CheckOk {
                from: "c".into(),
                target: "a".into(),
                nonce: 5
            }
        )]
    );
    // Not heard for a while: checks a itself, and relays a's answer.
    let later = t0 + 100 * MS;
    let out = c.receive(
        FastMsg::CheckReq {
            from: "b".into(),
            target: "a".into(),
            nonce: 6,
        },
        later,
    );
    let s = sends(&out);
    let FastMsg::Check { nonce: ours, .. } = s[0].1 else {
        panic!("{s:?}")
    };
    assert_eq!(s[0].0, "a");
    let out = c.receive(
        FastMsg::CheckAck {
            from: "a".into(),
            nonce: ours,
        },
        later + MS,
    );
    assert_eq!(
        sends(&out),
        vec![(
            "b".to_string(),
            FastMsg::CheckOk {
                from: "c".into(),
                target: "a".into(),
                nonce: 6
            }
        )]
    );
    // The target itself answers a CheckReq about itself; a Check is acked.
    let mut a = detector("a", &["a", "b"], t0);
    let out = a.receive(
        FastMsg::CheckReq {
            from: "b".into(),
            target: "a".into(),
            nonce: 8,
        },
        t0,
    );
    assert_eq!(
        sends(&out),
        vec![(
            "b".to_string(),
            FastMsg::CheckAck {
                from: "a".into(),
                nonce: 8
            }
        )]
    );
}

#[test]
fn replays_strangers_and_dropped_members_are_no_sign_of_life() {
    let t0 = Instant::now();
    let mut b = standby(t0);
    b.receive(
        FastMsg::Heartbeat {
            from: "a".into(),
            seq: 50,
            every_ms: 4,
        },
        t0,
    );
    let silence = FastTimers::default().silence();
    let confirm = FastTimers::default().confirm;
    // The same heartbeat again, and one from a non-member, change nothing.
    b.receive(
        FastMsg::Heartbeat {
            from: "a".into(),
            seq: 50,
            every_ms: 4,
        },
        t0 + silence - MS,
    );
    b.receive(FastMsg::Subscribe { from: "x".into() }, t0 + MS);
    b.tick(t0 + silence);
    assert_eq!(
        b.tick(t0 + silence + confirm),
        vec![FastOutput::Down("a".into())]
    );
    // Membership dropping it: forgotten, and no longer checked.
    b.set_members(set(&["b", "c", "d", "e"]), t0 + 50 * MS);
    assert!(down_set(&b).is_empty());
    assert_eq!(b.tick(t0 + 200 * MS), vec![]);
}

/// A simulated segment: `n` speakers; node 0 owns and everyone else watches it; every
/// datagram is delivered after 0.2 ms unless `lose` says otherwise. Returns when each watcher
/// took node 0 down (if it did).
fn simulate(
    n: usize,
    run: Duration,
    dead_from: Option<Duration>,
    mut lose: impl FnMut() -> bool,
) -> Vec<Option<Duration>> {
    let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
    let all: BTreeSet<String> = names.iter().cloned().collect();
    let t0 = Instant::now();
    let mut ds: Vec<FastDetector> = names
        .iter()
        .enumerate()
        .map(|(i, me)| {
            let mut d = FastDetector::new(me, FastTimers::default(), 0, i as u64 * 77);
            d.set_members(all.clone(), t0);
            d
        })
        .collect();
    let mut queue: Vec<(Instant, usize, FastMsg)> = Vec::new();
    let mut downs = vec![None; n];
    let index = |name: &str| names.iter().position(|x| x == name).unwrap();
    for (i, d) in ds.iter_mut().enumerate().skip(1) {
        let out = d.set_watched([names[0].clone()].into(), t0);
        for o in out {
            if let FastOutput::Send { to, msg } = o {
                queue.push((t0 + Duration::from_micros(200), index(&to), msg));
            }
        }
        let _ = i;
    }
    let step = Duration::from_micros(500);
    let mut t = t0;
    while t < t0 + run {
        t += step;
        let dead = dead_from.is_some_and(|d| t >= t0 + d);
        let mut outs: Vec<(usize, FastOutput)> = Vec::new();
        let (due, rest): (Vec<_>, Vec<_>) = queue.into_iter().partition(|(at, _, _)| *at <= t);
        queue = rest;
        for (_, to, msg) in due {
            if dead && to == 0 {
                continue;
            }
            let from = index(msg.from());
            for o in ds[to].heard(&names[from], t) {
                outs.push((to, o));
            }
            for o in ds[to].receive(msg, t) {
                outs.push((to, o));
            }
        }
        for (i, d) in ds.iter_mut().enumerate() {
            if dead && i == 0 {
                continue;
            }
            if d.next_deadline().is_some_and(|at| at <= t) {
                for o in d.tick(t) {
                    outs.push((i, o));
                }
            }
        }
        for (i, o) in outs {
            match o {
                FastOutput::Send { to, msg } => {
                    if !lose() {
                        queue.push((t + Duration::from_micros(200), index(&to), msg));
                    }
                }
                FastOutput::Down(who) => {
                    assert_eq!(who, names[0]);
                    downs[i].get_or_insert(t - t0);
                }
                FastOutput::Back(_) => {}
            }
        }
    }
    downs.into_iter().skip(1).collect()
}

#[test]
fn a_dead_owner_is_taken_down_by_every_watcher_within_silence_plus_confirm() {
    let died = Duration::from_millis(500);
    let downs = simulate(4, Duration::from_secs(1), Some(died), || false);
    let bound = FastTimers::default().silence() + FastTimers::default().confirm + 2 * MS;
    for d in downs {
        let d = d.expect("taken down");
        assert!(d > died && d - died <= bound, "{:?}", d - died);
    }
}

#[test]
fn one_percent_loss_for_a_minute_takes_nobody_down() {
    // A fixed xorshift stream: deterministic, about 1% of datagrams lost.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let downs = simulate(4, Duration::from_secs(60), None, || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x.is_multiple_of(100)
    });
    assert_eq!(downs, vec![None; 3]);
}

#[test]
fn a_cut_off_member_is_seen_down_by_the_others_and_sees_them_down() {
    // Three speakers, each watching the other two; at 500 ms node 2 is cut off both ways.
    let names: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
    let all: BTreeSet<String> = names.iter().cloned().collect();
    let t0 = Instant::now();
    let mut ds: Vec<FastDetector> = names
        .iter()
        .enumerate()
        .map(|(i, me)| {
            let mut d = FastDetector::new(me, FastTimers::default(), 0, i as u64 * 77);
            d.set_members(all.clone(), t0);
            d
        })
        .collect();
    let index = |name: &str| names.iter().position(|x| x == name).unwrap();
    let mut queue: Vec<(Instant, usize, usize, FastMsg)> = Vec::new();
    let mut pending: Vec<(usize, FastOutput)> = Vec::new();
    for (i, d) in ds.iter_mut().enumerate() {
        let others: BTreeSet<String> = all.iter().filter(|n| **n != names[i]).cloned().collect();
        pending.extend(d.set_watched(others, t0).into_iter().map(|o| (i, o)));
    }
    let mut downs: BTreeMap<(usize, usize), Duration> = BTreeMap::new();
    let cut_at = t0 + Duration::from_millis(500);
    let step = Duration::from_micros(500);
    let mut t = t0;
    while t < t0 + Duration::from_secs(1) {
        for (i, o) in pending.drain(..) {
            match o {
                FastOutput::Send { to, msg } => {
                    queue.push((t + Duration::from_micros(200), i, index(&to), msg))
                }
                FastOutput::Down(who) => {
                    downs.entry((i, index(&who))).or_insert(t - cut_at.min(t));
                }
                FastOutput::Back(_) => {}
            }
        }
        t += step;
        let cut = t >= cut_at;
        let (due, rest): (Vec<_>, Vec<_>) = queue.into_iter().partition(|q| q.0 <= t);
        queue = rest;
        for (_, from, to, msg) in due {
            if cut && (from == 2 || to == 2) {
                continue;
            }
            pending.extend(ds[to].heard(&names[from], t).into_iter().map(|o| (to, o)));
            pending.extend(ds[to].receive(msg, t).into_iter().map(|o| (to, o)));
        }
        for (i, d) in ds.iter_mut().enumerate() {
            if d.next_deadline().is_some_and(|at| at <= t) {
                pending.extend(d.tick(t).into_iter().map(|o| (i, o)));
            }
        }
    }
    let bound = FastTimers::default().silence() + FastTimers::default().confirm + 2 * MS;
    for pair in [(0, 2), (1, 2), (2, 0), (2, 1)] {
        let took = downs.get(&pair).copied();
        assert!(
            took.is_some_and(|d| d <= bound),
            "{pair:?}: {took:?} {downs:?}"
        );
    }
    assert_eq!(downs.len(), 4, "{downs:?}");
}

#[test]
fn a_vouch_is_not_passed_on() {
    // b's check of a ends with c's word, but b did not hear a itself: asked by d, b does not
    // vouch for a, it checks a.
    let t0 = Instant::now();
    let mut b = standby(t0);
    let silence = FastTimers::default().silence();
    let s = sends(&b.tick(t0 + silence));
    let FastMsg::Check { nonce, .. } = s[0].1 else {
        panic!("{s:?}")
    };
    b.receive(
        FastMsg::CheckOk {
            from: "c".into(),
            target: "a".into(),
            nonce,
        },
        t0 + silence + MS,
    );
    let out = b.receive(
        FastMsg::CheckReq {
            from: "d".into(),
            target: "a".into(),
            nonce: 99,
        },
        t0 + silence + 2 * MS,
    );
    let s = sends(&out);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].0, "a");
    assert!(matches!(s[0].1, FastMsg::Check { .. }), "{s:?}");
}

#[test]
fn an_owner_that_sends_no_heartbeats_is_never_judged() {
    // The fast path off there (or an older speaker): subscribed, but nothing comes. No check,
    // no verdict, ever; membership alone decides.
    let t0 = Instant::now();
    let mut b = detector("b", &["a", "b", "c"], t0);
    b.set_watched(set(&["a"]), t0);
    for ms in (0..3000u64).step_by(2) {
        for o in b.tick(t0 + Duration::from_millis(ms)) {
            assert!(
                matches!(
                    &o,
                    FastOutput::Send {
                        msg: FastMsg::Subscribe { .. },
                        ..
                    }
                ),
                "at {ms} ms: {o:?}"
            );
        }
    }
}

#[test]
fn an_owner_is_judged_at_its_own_slower_pace() {
    // Its heartbeats come every 20 ms: silence is 60 ms for it, not our 12.
    let t0 = Instant::now();
    let mut b = detector("b", &["a", "b", "c"], t0);
    b.set_watched(set(&["a"]), t0);
    for k in 0..10u64 {
        let t = t0 + Duration::from_millis(20 * k);
        b.receive(
            FastMsg::Heartbeat {
                from: "a".into(),
                seq: k + 1,
                every_ms: 20,
            },
            t,
        );
        for step in 0..20u64 {
            let out = b.tick(t + Duration::from_millis(step));
            assert!(
                !out.iter().any(|o| matches!(
                    o,
                    FastOutput::Send {
                        msg: FastMsg::Check { .. },
                        ..
                    }
                )),
                "{out:?}"
            );
        }
    }
}

#[test]
fn an_owner_down_behind_a_broken_path_is_checked_again_and_given_back() {
    let t0 = Instant::now();
    let mut b = standby(t0);
    let silence = FastTimers::default().silence();
    let confirm = FastTimers::default().confirm;
    b.tick(t0 + silence);
    assert_eq!(
        b.tick(t0 + silence + confirm),
        vec![FastOutput::Down("a".into())]
    );
    // The plan no longer ranks a: the watch set drops it, but it stays watched while down.
    b.set_watched(BTreeSet::new(), t0 + silence + confirm);
    // One silence later it is checked again, and a helper vouches this time: back.
    let t = t0 + 2 * silence + confirm;
    let s = sends(&b.tick(t));
    let nonce = s
        .iter()
        .find_map(|(to, m)| match m {
            FastMsg::Check { nonce, .. } if to == "a" => Some(*nonce),
            _ => None,
        })
        .expect("checked again");
    let out = b.receive(
        FastMsg::CheckOk {
            from: "c".into(),
            target: "a".into(),
            nonce,
        },
        t + MS,
    );
    assert_eq!(out, vec![FastOutput::Back("a".into())]);
    assert!(down_set(&b).is_empty());
}

#[test]
fn a_verdict_membership_does_not_confirm_lapses() {
    // Nobody can reach a, yet membership still counts it: after DOWN_AT_MOST, given back.
    let t0 = Instant::now();
    let mut b = standby(t0);
    let silence = FastTimers::default().silence();
    let confirm = FastTimers::default().confirm;
    b.tick(t0 + silence);
    let down_at = t0 + silence + confirm;
    assert_eq!(b.tick(down_at), vec![FastOutput::Down("a".into())]);
    let mut back = None;
    let mut t = down_at;
    while t < down_at + DOWN_AT_MOST + 100 * MS {
        t += MS;
        if b.tick(t).contains(&FastOutput::Back("a".into())) {
            back = Some(t);
            break;
        }
    }
    assert_eq!(back, Some(down_at + DOWN_AT_MOST));
}

#[test]
fn requests_and_replays_are_no_sign_of_life() {
    let t0 = Instant::now();
    let mut b = standby(t0);
    let silence = FastTimers::default().silence();
    let confirm = FastTimers::default().confirm;
    b.tick(t0 + silence);
    assert_eq!(
        b.tick(t0 + silence + confirm),
        vec![FastOutput::Down("a".into())]
    );
    // A replayed Subscribe, Check or CheckReq "from a", or an ack to a nonce we never sent:
    // a stays down.
    let t = t0 + silence + confirm + MS;
    for msg in [
        FastMsg::Subscribe { from: "a".into() },
        FastMsg::Check {
            from: "a".into(),
            nonce: 5,
        },
        FastMsg::CheckReq {
            from: "a".into(),
            target: "c".into(),
            nonce: 6,
        },
        FastMsg::CheckAck {
            from: "a".into(),
            nonce: 12345,
        },
        FastMsg::Heartbeat {
            from: "a".into(),
            seq: 1,
            every_ms: 4,
        },
    ] {
        let out = b.receive(msg.clone(), t);
        assert!(
            !out.iter().any(|o| matches!(o, FastOutput::Back(_))),
            "{msg:?}: {out:?}"
        );
    }
    assert_eq!(down_set(&b), set(&["a"]));
}
