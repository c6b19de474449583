//! L2 quorum: a speaker takes or keeps layer 2 addresses only while it sees a majority of the
//! speakers, so a speaker cut off from the others (but not from the clients) never answers for
//! an address the others have taken. Pure.
//!
//! The electorate is the set of nodes that should run a speaker, as every speaker reads it
//! from the same source: eligible Nodes (not excluded from load balancers, network available),
//! Ready (or of unknown readiness), not of another OS than Linux and without a NoSchedule or
//! NoExecute taint the speaker DaemonSet does not tolerate (no speaker runs on those). A node that the API server marks NotReady leaves the electorate, on every
//! side that still reads the API: that is how a cluster that lost most of its speakers for
//! real (not by a partition) gets its addresses back, about 40 s later (the node controller's
//! grace period). In file mode the electorate is every Node in the files.
//!
//! With `live` the speakers membership says are alive (this one included):
//! - more than half of the electorate live: a majority, plan as usual;
//! - less than half: a minority, announce nothing by L2 (the other side may hold a majority
//!   and has taken, or will take, every address);
//! - exactly half: a tie. Two halves cannot both be majorities, but both can be halves, so a
//!   tie-breaker decides: the side that holds the tie-breaker Lease (kube mode, consulted only
//!   in a tie, never on the normal takeover path), or without the API (file mode) the side
//!   whose live set holds the first node of the electorate by name.
//!
//! BGP is not affected: routers choose among the nodes that announce, and a node cut off from
//! the other speakers but not from the routers still forwards what it receives.

use crate::view::NodeView;
use std::collections::BTreeSet;

/// The label Kubernetes gives every Node with its operating system.
const OS_LABEL: &str = "kubernetes.io/os";

/// The nodes that vote (module documentation).
pub fn electorate(nodes: &[NodeView]) -> BTreeSet<String> {
    nodes
        .iter()
        .filter(|n| n.eligible() && !n.not_ready && !n.untolerated_taint)
        .filter(|n| n.labels.get(OS_LABEL).is_none_or(|os| os == "linux"))
        .map(|n| n.name.clone())
        .collect()
}

/// Where this speaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// More than half of the electorate is live (or there is no electorate to count).
    Majority,
    /// Exactly half, and this side won the tie-breaker.
    TieWon,
    /// Exactly half, and the other side won it (or nobody could tell).
    TieLost,
    /// Less than half.
    Minority,
    /// Less than half, and this side holds the tie-breaker Lease (kube mode): the others are
    /// gone, not cut off (a majority that sees the cut holds the Lease first).
    MinorityWon,
}

impl Standing {
    /// Whether this speaker may take and keep layer 2 addresses.
    pub fn may_announce(self) -> bool {
        matches!(
            self,
            Standing::Majority | Standing::TieWon | Standing::MinorityWon
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Majority => "majority",
            Standing::TieWon => "tie, won",
            Standing::TieLost => "tie, lost",
            Standing::Minority => "minority",
            Standing::MinorityWon => "minority, holding the Lease",
        }
    }
}

/// How a tie is broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TieBreaker {
    /// The side whose live set holds the first member of the electorate by name.
    FirstByName,
    /// The side whose live set holds this node (the holder of the tie-breaker Lease, as this
    /// speaker last saw it; `None`: unknown or held by nobody).
    Holder(Option<String>),
}

/// How long a minority waits before it tries the tie-breaker Lease: a majority that sees the same
/// cut tries at once, so it always holds the Lease first.
pub const MINORITY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Where a speaker stands and whether it takes part in the tie-breaker Lease (kube mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseDecision {
    pub standing: Standing,
    /// Read, take and renew the Lease now.
    pub contend: bool,
}

/// Whether `live` sees less than half of `electorate`.
pub fn is_minority(electorate: &BTreeSet<String>, live: &BTreeSet<String>) -> bool {
    2 * electorate.intersection(live).count() < electorate.len()
}

/// Kube mode, with the Lease as the API server's word for every side without a majority:
/// - a majority announces, and while some voter is missing it holds the Lease too, so that the
///   voters it cannot see, if they are alive on the other side of a cut, cannot win it;
/// - a tie: both sides contend at once, the holder's side announces;
/// - a minority waits [`MINORITY_WAIT`] (`minority_for`: how long it has been one), then
///   contends, and announces only while its side holds the Lease: when the majority is dead
///   rather than cut off, nobody else takes it. A majority that cannot reach the API server
///   while the minority can is the case this cannot tell (docs/operating.md).
///
/// `holder`: the Lease's holder as this speaker last read it.
pub fn decide_with_lease(
    electorate: &BTreeSet<String>,
    live: &BTreeSet<String>,
    holder: Option<&str>,
    minority_for: std::time::Duration,
) -> LeaseDecision {
    let standing_now = standing(
        electorate,
        live,
        &TieBreaker::Holder(holder.map(str::to_owned)),
    );
    match standing_now {
        Standing::Majority => LeaseDecision {
            standing: standing_now,
            contend: !electorate.is_subset(live),
        },
        Standing::TieWon | Standing::TieLost => LeaseDecision {
            standing: standing_now,
            contend: true,
        },
        Standing::Minority | Standing::MinorityWon => {
            let may_try = minority_for >= MINORITY_WAIT;
            let ours = holder.is_some_and(|h| electorate.contains(h) && live.contains(h));
            LeaseDecision {
                standing: if may_try && ours {
                    Standing::MinorityWon
                } else {
                    Standing::Minority
                },
                contend: may_try,
            }
        }
    }
}

/// Where a speaker with live set `live` stands in `electorate`.
pub fn standing(
    electorate: &BTreeSet<String>,
    live: &BTreeSet<String>,
    tie: &TieBreaker,
) -> Standing {
    if electorate.is_empty() {
        return Standing::Majority;
    }
    let live_voters = electorate.intersection(live).count();
    match (2 * live_voters).cmp(&electorate.len()) {
        std::cmp::Ordering::Greater => Standing::Majority,
        std::cmp::Ordering::Less => Standing::Minority,
        std::cmp::Ordering::Equal => {
            let winner = match tie {
                TieBreaker::FirstByName => electorate.first(),
                TieBreaker::Holder(holder) => holder.as_ref().filter(|h| electorate.contains(*h)),
            };
            if winner.is_some_and(|w| live.contains(w)) {
                Standing::TieWon
            } else {
                Standing::TieLost
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_electorate_is_the_eligible_ready_linux_nodes() {
        let node = |name: &str| NodeView {
            name: name.into(),
            labels: Default::default(),
            network_unavailable: false,
            excluded: false,
            unschedulable: false,
            not_ready: false,
            untolerated_taint: false,
        };
        let mut windows = node("win");
        windows.labels.insert(OS_LABEL.into(), "windows".into());
        let mut linux = node("lin");
        linux.labels.insert(OS_LABEL.into(), "linux".into());
        let mut excluded = node("ex");
        excluded.excluded = true;
        let mut down = node("down");
        down.not_ready = true;
        // Cordoned nodes still run their speaker: they vote.
        let mut cordoned = node("cordoned");
        cordoned.unschedulable = true;
        let mut gpu = node("gpu");
        gpu.untolerated_taint = true;
        let nodes = [node("plain"), windows, linux, excluded, down, cordoned, gpu];
        assert_eq!(electorate(&nodes), set(&["cordoned", "lin", "plain"]));
    }

    #[test]
    fn taints_the_daemonset_does_not_tolerate_keep_a_node_out() {
        let of = |taints: &str| {
            let node: k8s_openapi::api::core::v1::Node = serde_json::from_str(&format!(
                r#"{{"metadata": {{"name": "n"}}, "spec": {{"taints": [{taints}]}}}}"#
            ))
            .unwrap();
            NodeView::of(&node).untolerated_taint
        };
        assert!(of(
            r#"{"key": "gpu", "value": "yes", "effect": "NoSchedule"}"#
        ));
        assert!(of(r#"{"key": "dedicated", "effect": "NoExecute"}"#));
        assert!(!of(r#"{"key": "gpu", "effect": "PreferNoSchedule"}"#));
        assert!(!of(
            r#"{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}"#
        ));
        assert!(!of(
            r#"{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}"#
        ));
        assert!(!of(""));
    }

    #[test]
    fn an_isolated_speaker_is_a_minority_and_the_others_a_majority() {
        let e = set(&["n1", "n2", "n3"]);
        let tie = TieBreaker::FirstByName;
        assert_eq!(standing(&e, &set(&["n1"]), &tie), Standing::Minority);
        assert_eq!(standing(&e, &set(&["n2", "n3"]), &tie), Standing::Majority);
        assert_eq!(standing(&e, &e, &tie), Standing::Majority);
        assert!(!Standing::Minority.may_announce());
        assert!(Standing::Majority.may_announce());
    }

    #[test]
    fn in_a_two_two_split_exactly_one_side_wins() {
        let e = set(&["n1", "n2", "n3", "n4"]);
        for tie in [
            TieBreaker::FirstByName,
            TieBreaker::Holder(Some("n4".into())),
        ] {
            let a = standing(&e, &set(&["n1", "n2"]), &tie);
            let b = standing(&e, &set(&["n3", "n4"]), &tie);
            assert_ne!(a.may_announce(), b.may_announce(), "{tie:?}: {a:?} {b:?}");
        }
        // Nobody holds the Lease: nobody wins (the sides try to take it).
        let none = TieBreaker::Holder(None);
        assert_eq!(standing(&e, &set(&["n1", "n2"]), &none), Standing::TieLost);
        // A holder that is not a voter does not count.
        let stranger = TieBreaker::Holder(Some("gone".into()));
        assert_eq!(
            standing(&e, &set(&["n1", "n2", "gone"]), &stranger),
            Standing::TieLost
        );
    }

    #[test]
    fn two_nodes_fall_back_on_the_tie_breaker() {
        let e = set(&["n1", "n2"]);
        assert_eq!(
            standing(&e, &set(&["n1"]), &TieBreaker::FirstByName),
            Standing::TieWon
        );
        assert_eq!(
            standing(&e, &set(&["n2"]), &TieBreaker::FirstByName),
            Standing::TieLost
        );
        // With the Lease, the survivor of a real death wins once it holds it.
        let n2 = TieBreaker::Holder(Some("n2".into()));
        assert_eq!(standing(&e, &set(&["n2"]), &n2), Standing::TieWon);
    }

    #[test]
    fn live_speakers_outside_the_electorate_do_not_vote() {
        let e = set(&["n1", "n2", "n3"]);
        let live = set(&["n1", "x", "y"]);
        assert_eq!(
            standing(&e, &live, &TieBreaker::FirstByName),
            Standing::Minority
        );
        assert_eq!(
            standing(&BTreeSet::new(), &live, &TieBreaker::FirstByName),
            Standing::Majority
        );
    }

    #[test]
    fn with_the_lease_a_majority_holds_it_while_voters_are_missing() {
        let e = set(&["n1", "n2", "n3"]);
        let wait = MINORITY_WAIT;
        // Everyone there: nobody touches the Lease.
        let all = decide_with_lease(&e, &e, None, Duration::ZERO);
        assert_eq!((all.standing, all.contend), (Standing::Majority, false));
        // n3 cut off: the majority announces at once and contends.
        let two = decide_with_lease(&e, &set(&["n1", "n2"]), None, Duration::ZERO);
        assert_eq!((two.standing, two.contend), (Standing::Majority, true));
        // n3 alone: it waits, then contends; the Lease is the majority's, so it stays down.
        let lone = set(&["n3"]);
        let early = decide_with_lease(&e, &lone, None, wait / 2);
        assert_eq!((early.standing, early.contend), (Standing::Minority, false));
        let held = decide_with_lease(&e, &lone, Some("n1"), wait);
        assert_eq!((held.standing, held.contend), (Standing::Minority, true));
        // n1 and n2 dead for real: n3 takes the Lease and announces.
        let won = decide_with_lease(&e, &lone, Some("n3"), wait);
        assert_eq!((won.standing, won.contend), (Standing::MinorityWon, true));
        assert!(won.standing.may_announce());
        // A holder outside the electorate wins nothing.
        let odd = decide_with_lease(&e, &set(&["n3", "x"]), Some("x"), wait);
        assert_eq!(odd.standing, Standing::Minority);
    }

    /// Every split of 2 to 5 named speakers into two disjoint live sets: (electorate, a, b).
    fn splits() -> Vec<(BTreeSet<String>, BTreeSet<String>, BTreeSet<String>)> {
        let names = ["n1", "n2", "n3", "n4", "n5"];
        let mut out = Vec::new();
        for size in 2..=5 {
            let e: BTreeSet<String> = names[..size].iter().map(|s| s.to_string()).collect();
            for mask in 0u32..(1 << size) {
                let a: BTreeSet<String> = (0..size)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| names[i].to_string())
                    .collect();
                let b: BTreeSet<String> = e.difference(&a).cloned().collect();
                out.push((e.clone(), a, b));
            }
        }
        out
    }

    #[test]
    fn with_the_lease_disjoint_sides_never_both_announce() {
        // Whoever holds the Lease, two disjoint sides that read the same holder never both
        // announce, provided a majority holds it whenever it misses voters (its contending).
        for (e, a, b) in splits() {
            // The holder: one of the majority's if there is one, else anyone.
            let majority = [&a, &b].into_iter().find(|s| 2 * s.len() > e.len());
            let holders: Vec<Option<&str>> = match majority {
                Some(m) => m.iter().map(|h| Some(h.as_str())).collect(),
                None => e.iter().map(|h| Some(h.as_str())).chain([None]).collect(),
            };
            for holder in holders {
                let da = decide_with_lease(&e, &a, holder, MINORITY_WAIT);
                let db = decide_with_lease(&e, &b, holder, MINORITY_WAIT);
                assert!(
                    !(da.standing.may_announce() && db.standing.may_announce()),
                    "{a:?} {da:?} | {b:?} {db:?} holder {holder:?}"
                );
            }
        }
    }

    #[test]
    fn disjoint_sides_never_both_announce() {
        // Every split of up to five named speakers into two disjoint live sets, with either
        // breaker.
        for (e, a, b) in splits() {
            for tie in [
                TieBreaker::FirstByName,
                TieBreaker::Holder(Some("n2".into())),
            ] {
                let (sa, sb) = (standing(&e, &a, &tie), standing(&e, &b, &tie));
                assert!(
                    !(sa.may_announce() && sb.may_announce()),
                    "{a:?} {sa:?} | {b:?} {sb:?}"
                );
            }
        }
    }
}
