//! The soak: `ferrolb-lab soak --minutes N`. For N minutes it creates, edits and deletes
//! Services (valid and invalid), adds and removes pools (a valid spare one, one that overlaps,
//! one the schema refuses), hard-kills and restarts speakers (a crash, or the whole node lost
//! with its link) and the controller, and restarts the API server, while it checks the
//! invariants of [`checks`] every two seconds: no address held twice unless sharing allows
//! it, every held address answered on the segment by exactly one node and every free one by
//! none, no address changed without a cause, every servable Service served, no status object
//! left behind for a deleted Service or a stopped speaker, no Lease or Event flood, and every
//! process's memory flat. Then it prints a report; any violation fails the run.
//!
//! Real parts: the controller and speaker binaries, the kernel's network namespaces (three
//! nodes, a client and a router on a bridge), FRR on the router (the speakers peer with it and
//! announce the BGP pool; its table is the judge), the API emulator in this process (in the
//! client's namespace, as the kube-mode tests run it).

pub mod answers;
pub mod checks;
pub mod churn;
pub mod observed;
pub mod world;

use checks::{Calm, Checks};
use churn::{Model, ServiceOp};
use ferrolb_crds::ServiceL2Status;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use world::{pool_yaml, World, POOL_OVERLAPPING, POOL_SPARE};

/// Nodes in the soak's lab (two are killed in turn, the third never).
pub const NODES: usize = 3;
/// How often the invariants are checked.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How often a Service is created, edited or deleted.
const SERVICE_OP_EVERY: Duration = Duration::from_millis(700);
/// How often a disruption (a kill, a pool change, an API restart) starts.
const DISRUPTION_EVERY: Duration = Duration::from_secs(12);
/// Memory samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// No Service changes this long before the API server goes down.
const API_QUIET: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct SoakOptions {
    pub minutes: f64,
    pub tag: String,
    pub seed: u64,
    pub speaker: PathBuf,
    pub controller: PathBuf,
    pub logs: PathBuf,
}

/// The disruptions, in the order they come round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Disruption {
    SpeakerCrash,
    SparePool,
    ControllerKill,
    NodeLost,
    OverlappingPool,
    ApiRestart,
    SchemaInvalidPool,
}

const ROTATION: [Disruption; 7] = [
    Disruption::SpeakerCrash,
    Disruption::SparePool,
    Disruption::ControllerKill,
    Disruption::NodeLost,
    Disruption::OverlappingPool,
    Disruption::ApiRestart,
    Disruption::SchemaInvalidPool,
];

/// Something to undo later.
#[derive(Debug)]
enum Pending {
    StartSpeaker(usize),
    StartController,
    ApiBack,
    DeleteOverlapping,
}

struct Soak {
    world: World,
    model: Model,
    checks: Checks,
    rng: StdRng,
    calm: Calm,
    api_up: bool,
    pending: Vec<(Instant, Pending)>,
    /// What was injected, by kind.
    injected: BTreeMap<String, u64>,
    /// API requests the server refused (counted; a refusal of a valid request while the
    /// API is up is a violation).
    refused: u64,
    observed: observed::Observed,
    statuses_ended: u64,
    /// The router's FRR, read through vtysh.
    router: crate::lab::bgp_router_view::RouterView,
    events_seen: usize,
    leases_seen: usize,
    next_victim: usize,
    api_restarts: u64,
}

/// Runs the soak inside the client's namespace of a lab built as `flb-<tag>-*`; the report.
pub async fn run(o: &SoakOptions) -> Result<Report, String> {
    std::fs::create_dir_all(&o.logs).map_err(|e| format!("{}: {e}", o.logs.display()))?;
    let world = World::start(&o.tag, NODES, &o.speaker, &o.controller, &o.logs).await?;
    let answers = answers::Answers::start()?;
    let observed = observed::Observed::start(
        &world.cluster.client(),
        &world.space.apps,
        &world.space.system,
    );
    let mut soak = Soak {
        world,
        model: Model::default(),
        checks: Checks::default(),
        rng: StdRng::seed_from_u64(o.seed),
        calm: Calm {
            node_event: Some(Instant::now()),
            control_event: Some(Instant::now()),
            api_down: false,
            api_back: None,
            stopped: BTreeMap::new(),
        },
        api_up: true,
        pending: Vec::new(),
        injected: BTreeMap::new(),
        refused: 0,
        observed,
        statuses_ended: 0,
        router: crate::lab::bgp_router_view::RouterView::at(
            &format!("flb-{}-r", o.tag),
            &format!("flb-{}-r", o.tag),
        ),
        events_seen: 0,
        leases_seen: 0,
        next_victim: 1,
        api_restarts: 0,
    };
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(o.minutes * 60.0);
    let mut next_op = started + Duration::from_secs(3);
    let mut next_disruption = started + DISRUPTION_EVERY;
    let mut next_check = started + CHECK_EVERY;
    let mut next_sample = started;
    let mut turn = 0usize;
    let pool_addresses = checks::pool_addresses();
    println!(
        "soak: {} min, seed {}, {} nodes; logs in {}",
        o.minutes,
        o.seed,
        NODES,
        o.logs.display()
    );
    while Instant::now() < end {
        let now = Instant::now();
        soak.undo_due(now).await;
        // The API server goes down only after a quiet moment: a change made just before the
        // cut reaches some watchers and not others, and speakers that disagree on the
        // Services can disagree on the owners until it is back (docs/testing.md). The soak
        // checks what an outage does to speakers that agree.
        let api_next = ROTATION[turn % ROTATION.len()] == Disruption::ApiRestart
            && now + API_QUIET >= next_disruption;
        if now >= next_op && soak.api_up && !api_next {
            soak.service_op(now).await;
            next_op = now + SERVICE_OP_EVERY;
        }
        if now >= next_disruption && soak.pending.is_empty() {
            let d = ROTATION[turn % ROTATION.len()];
            turn += 1;
            // A disruption that cannot be made is reported; the run goes on to its report.
            if let Err(e) = soak.disrupt(d, now).await {
                soak.checks
                    .violations
                    .push(format!("{d:?} could not be made: {e}"));
            }
            next_disruption = now + DISRUPTION_EVERY;
        }
        if now >= next_sample {
            for crash in soak.world.sample() {
                soak.checks.violations.push(crash);
            }
            if let Err(e) = soak.restart_crashed() {
                soak.checks
                    .violations
                    .push(format!("a crashed process could not be started again: {e}"));
            }
            next_sample = now + SAMPLE_EVERY;
        }
        if now >= next_check {
            soak.check(&answers, &pool_addresses).await;
            next_check = now + CHECK_EVERY;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The end: everything back, the cluster left to settle, a last strict check; then every
    // Service deleted, and nothing may be left answered or reported.
    let churn_ended = Instant::now();
    while let Some((_, p)) = soak.pending.pop() {
        soak.undo(p).await;
    }
    let settle = checks::CONTROL_SETTLE.max(checks::NODE_SETTLE) + CHECK_EVERY;
    let settled = Instant::now() + settle;
    while Instant::now() < settled {
        soak.check(&answers, &pool_addresses).await;
        tokio::time::sleep(CHECK_EVERY).await;
    }
    soak.delete_all().await;
    let drained = Instant::now() + checks::CLEANUP + CHECK_EVERY;
    while Instant::now() < drained {
        tokio::time::sleep(CHECK_EVERY).await;
        soak.check(&answers, &pool_addresses).await;
    }
    soak.final_state().await;
    let _ = soak.world.sample();
    let report = soak.report(o, started, churn_ended);
    soak.world.stop();
    Ok(report)
}

impl Soak {
    fn inject(&mut self, what: &str) {
        *self.injected.entry(what.to_owned()).or_default() += 1;
    }

    fn node_names(&self) -> Vec<String> {
        (1..=self.world.nodes)
            .map(crate::lab::l2::node_name)
            .collect()
    }

    async fn service_op(&mut self, now: Instant) {
        let op = self.model.next_op(&mut self.rng, now);
        let apps = self.world.space.apps.clone();
        let result = match &op {
            ServiceOp::Create(name, s) | ServiceOp::Edit(name, s) => {
                let yaml =
                    churn::service_yaml(name, &self.world.space.class, s, &self.node_names());
                self.world.apply(&yaml, &apps).await
            }
            ServiceOp::Delete(name) => {
                let client = self.world.cluster.client();
                let services: Api<Service> = Api::namespaced(client.clone(), &apps);
                let slices: Api<EndpointSlice> = Api::namespaced(client, &apps);
                let r = services
                    .delete(name, &DeleteParams::default())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let _ = slices
                    .delete(&format!("{name}-1"), &DeleteParams::default())
                    .await;
                r
            }
        };
        let kind = match &op {
            ServiceOp::Create(_, s) => format!("Service created ({:?})", s.shape),
            ServiceOp::Edit(_, s) => format!("Service edited (to {:?})", s.shape),
            ServiceOp::Delete(_) => "Service deleted".into(),
        };
        match result {
            Ok(()) => {
                self.inject(&kind);
                self.model.done(op, now);
            }
            Err(e) => {
                // Only an outage excuses a refusal: every Service the soak writes is valid
                // for the API server (the bad annotation is the controller's to refuse).
                self.refused += 1;
                if self.api_up {
                    self.checks
                        .violations
                        .push(format!("the API server refused {kind}: {e}"));
                }
            }
        }
    }

    async fn disrupt(&mut self, d: Disruption, now: Instant) -> Result<(), String> {
        let system = self.world.space.system.clone();
        match d {
            Disruption::SpeakerCrash | Disruption::NodeLost => {
                // The last node is never killed: its speaker lives the whole run, the witness
                // of memory over time.
                let i = self.next_victim;
                self.next_victim = self.next_victim % (self.world.nodes - 1) + 1;
                let lost = d == Disruption::NodeLost;
                self.world.kill_speaker(i, lost)?;
                self.calm.node_event = Some(now);
                self.calm.stopped.insert(i, now);
                let down = if lost {
                    Duration::from_millis(self.rng.random_range(8_000..12_000))
                } else {
                    Duration::from_millis(self.rng.random_range(1_000..3_000))
                };
                self.pending.push((now + down, Pending::StartSpeaker(i)));
                self.inject(if lost {
                    "node lost (link down, speaker SIGKILL)"
                } else {
                    "speaker SIGKILL"
                });
            }
            Disruption::ControllerKill => {
                self.world.kill_controller();
                self.calm.control_event = Some(now);
                let down = Duration::from_millis(self.rng.random_range(500..2_000));
                self.pending.push((now + down, Pending::StartController));
                self.inject("controller SIGKILL");
            }
            Disruption::ApiRestart if self.world.cluster.emulator().is_some() => {
                self.api_restarts += 1;
                // Mostly short outages, every third a long one.
                let down = if self.api_restarts.is_multiple_of(3) {
                    Duration::from_millis(self.rng.random_range(15_000..20_000))
                } else {
                    Duration::from_millis(self.rng.random_range(3_000..8_000))
                };
                if let Some(e) = self.world.cluster.emulator_mut() {
                    e.go_down().await;
                }
                self.api_up = false;
                self.calm.api_down = true;
                self.calm.control_event = Some(now);
                self.pending.push((now + down, Pending::ApiBack));
                self.inject("API server restart");
            }
            Disruption::ApiRestart => {}
            Disruption::SparePool if self.api_up => {
                let r = if self.model.spare_pool {
                    let pools: Api<ferrolb_crds::IPAddressPool> =
                        Api::namespaced(self.world.cluster.client(), &system);
                    pools
                        .delete("soak-spare", &DeleteParams::default())
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                } else {
                    self.world
                        .apply(&pool_yaml("soak-spare", POOL_SPARE, false), &system)
                        .await
                };
                match r {
                    Ok(()) => {
                        self.model.spare_pool = !self.model.spare_pool;
                        self.model.spare_changed_at = Some(now);
                        self.inject(if self.model.spare_pool {
                            "spare pool created"
                        } else {
                            "spare pool deleted"
                        });
                    }
                    Err(e) => self
                        .checks
                        .violations
                        .push(format!("the API server refused the spare pool: {e}")),
                }
            }
            Disruption::OverlappingPool if self.api_up => {
                // Valid for the schema, invalid as configuration: left out and reported,
                // nothing else may change.
                match self
                    .world
                    .apply(
                        &pool_yaml("soak-overlapping", POOL_OVERLAPPING, true),
                        &system,
                    )
                    .await
                {
                    Ok(()) => {
                        self.pending
                            .push((now + Duration::from_secs(6), Pending::DeleteOverlapping));
                        self.inject("overlapping pool created (invalid configuration)");
                    }
                    Err(e) => self.checks.violations.push(format!(
                        "the API server refused a pool the schema allows: {e}"
                    )),
                }
            }
            Disruption::SchemaInvalidPool if self.api_up => {
                let bad = pool_yaml("soak-not-an-address", "192.0.2.300/33", true);
                match self.world.apply(&bad, &system).await {
                    Err(_) => self.inject("pool the schema refuses (refused by the API server)"),
                    Ok(()) => {
                        self.checks.violations.push(
                            "the API server accepted an IPAddressPool with 192.0.2.300/33".into(),
                        );
                        let pools: Api<ferrolb_crds::IPAddressPool> =
                            Api::namespaced(self.world.cluster.client(), &system);
                        let _ = pools
                            .delete("soak-not-an-address", &DeleteParams::default())
                            .await;
                    }
                }
            }
            Disruption::SparePool | Disruption::OverlappingPool | Disruption::SchemaInvalidPool => {
            }
        }
        Ok(())
    }

    async fn undo_due(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.pending = later;
        for (_, p) in due {
            self.undo(p).await;
        }
    }

    async fn undo(&mut self, p: Pending) {
        let now = Instant::now();
        let result = match p {
            Pending::StartSpeaker(i) => {
                self.calm.node_event = Some(now);
                self.calm.stopped.remove(&i);
                self.world.start_speaker(i)
            }
            Pending::StartController => {
                self.calm.control_event = Some(now);
                self.world.start_controller()
            }
            Pending::ApiBack => {
                self.calm.control_event = Some(now);
                self.calm.api_down = false;
                self.calm.api_back = Some(now);
                self.api_up = true;
                match self.world.cluster.emulator_mut() {
                    Some(e) => e.come_back().await.map_err(|e| e.to_string()),
                    None => Ok(()),
                }
            }
            Pending::DeleteOverlapping => {
                let pools: Api<ferrolb_crds::IPAddressPool> =
                    Api::namespaced(self.world.cluster.client(), &self.world.space.system);
                if self.api_up {
                    let _ = pools
                        .delete("soak-overlapping", &DeleteParams::default())
                        .await;
                    Ok(())
                } else {
                    // Again once the API server is back.
                    self.pending
                        .push((now + Duration::from_secs(1), Pending::DeleteOverlapping));
                    Ok(())
                }
            }
        };
        if let Err(e) = result {
            self.checks.violations.push(format!("could not undo: {e}"));
        }
    }

    /// A process that ended by itself is started again (and was reported).
    fn restart_crashed(&mut self) -> Result<(), String> {
        if self
            .world
            .controller
            .as_mut()
            .is_some_and(|c| c.process.exited().is_some())
        {
            self.world.kill_controller();
            self.world.start_controller()?;
            self.calm.control_event = Some(Instant::now());
        }
        for i in 1..=self.world.nodes {
            let crashed = self.world.speakers[i - 1]
                .as_mut()
                .is_some_and(|s| s.process.exited().is_some());
            if crashed {
                self.world.kill_speaker(i, false)?;
                self.world.start_speaker(i)?;
                self.calm.node_event = Some(Instant::now());
            }
        }
        Ok(())
    }

    /// Every Service of the soak (name and addresses) and every ServiceL2Status (Service,
    /// node), read from the API server.
    async fn listed(&self) -> Result<(Vec<String>, Vec<(String, String)>), kube::Error> {
        let client = self.world.cluster.client();
        let services: Api<Service> = Api::namespaced(client.clone(), &self.world.space.apps);
        let l2: Api<ServiceL2Status> = Api::namespaced(client, &self.world.space.system);
        let names = services
            .list(&ListParams::default())
            .await?
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        let statuses = l2
            .list(&ListParams::default())
            .await?
            .into_iter()
            .filter_map(|o| {
                let st = o.status?;
                Some((st.service_name?, st.node?))
            })
            .collect();
        Ok((names, statuses))
    }

    async fn check(&mut self, answers: &answers::Answers, pool: &BTreeSet<IpAddr>) {
        let now = Instant::now();
        let snap = self.observed.snapshot(now);
        self.checks.observe(now, &snap, &self.model, &self.calm);
        let answered = answers.ask(pool, Duration::from_millis(300)).await;
        // Judged against what is held after the question, once this process's watch has
        // caught up with what the speakers may have acted on during it: an address whose
        // holders changed meanwhile reads as just changed, and is not judged.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = Instant::now();
        let snap = self.observed.snapshot(now);
        self.checks
            .answers(now, &answered, &snap, self.world.nodes, &self.calm);
        match self.router.rib("ipv4") {
            Ok(rib) => {
                self.checks
                    .routes(Instant::now(), &rib, &snap, self.world.nodes, &self.calm)
            }
            Err(e) => self
                .checks
                .violations
                .push(format!("the router's table could not be read: {e}")),
        }
        self.statuses_ended = snap.statuses_ended;
        if self.api_up {
            self.watch_counts().await;
        }
    }

    /// Leases and Events: bounded, whatever the churn.
    async fn watch_counts(&mut self) {
        let client = self.world.cluster.client();
        let leases: Api<Lease> = Api::namespaced(client.clone(), &self.world.space.system);
        if let Ok(l) = leases.list(&ListParams::default()).await {
            self.leases_seen = self.leases_seen.max(l.items.len());
            *self
                .checks
                .made
                .entry("Leases bounded (controller, tie-breaker)")
                .or_default() += 1;
            if l.items.len() > 2 {
                let names: Vec<String> = l
                    .items
                    .into_iter()
                    .filter_map(|l| l.metadata.name)
                    .collect();
                self.checks.violations.push(format!(
                    "more Leases than the controller's and the tie-breaker: {names:?}"
                ));
            }
        }
        let mut events = 0;
        for ns in [&self.world.space.apps, &self.world.space.system] {
            let api: Api<Event> = Api::namespaced(client.clone(), ns);
            if let Ok(l) = api.list(&ListParams::default()).await {
                events += l.items.len();
            }
        }
        self.events_seen = events;
    }

    async fn delete_all(&mut self) {
        let names: Vec<String> = self.model.services.keys().cloned().collect();
        let client = self.world.cluster.client();
        let services: Api<Service> = Api::namespaced(client.clone(), &self.world.space.apps);
        let slices: Api<EndpointSlice> = Api::namespaced(client, &self.world.space.apps);
        let now = Instant::now();
        for name in names {
            if services
                .delete(&name, &DeleteParams::default())
                .await
                .is_ok()
            {
                let _ = slices
                    .delete(&format!("{name}-1"), &DeleteParams::default())
                    .await;
                self.model.done(ServiceOp::Delete(name), now);
                self.inject("Service deleted (end)");
            }
        }
    }

    /// After every Service is gone: no status object, nothing held.
    async fn final_state(&mut self) {
        match self.listed().await {
            Ok((services, statuses)) => {
                *self
                    .checks
                    .made
                    .entry("nothing left at the end")
                    .or_default() += 1;
                if !services.is_empty() || !statuses.is_empty() {
                    self.checks.violations.push(format!(
                        "left at the end: Services {services:?}, ServiceL2Status {statuses:?}"
                    ));
                }
            }
            Err(e) => self
                .checks
                .violations
                .push(format!("the final state could not be read: {e}")),
        }
    }

    fn report(&mut self, o: &SoakOptions, started: Instant, churn_ended: Instant) -> Report {
        let mut memory = Vec::new();
        for p in self.world.incarnations() {
            if let Some(m) = MemoryTrend::of(&p.name, &p.rss) {
                memory.push(m);
            }
        }
        for m in &memory {
            if let Some(v) = m.growth_violation() {
                self.checks.violations.push(v);
            }
        }
        // Processes restarted often live too short for a trend: their peak per incarnation,
        // first against last, says whether what they load grows over the run.
        let mut peaks: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for p in self.world.incarnations() {
            if let Some(peak) = p.rss.iter().map(|(_, k)| *k).max() {
                peaks.entry(p.name.clone()).or_default().push(peak);
            }
        }
        // An Event flood: more than a few per thing the soak did.
        let injected: u64 = self.injected.values().sum();
        if self.events_seen as u64 > 20 * injected + 200 {
            self.checks.violations.push(format!(
                "{} Events for {injected} injected changes",
                self.events_seen
            ));
        }
        Report {
            minutes: o.minutes,
            seed: o.seed,
            ran: churn_ended.duration_since(started),
            injected: self.injected.clone(),
            checks: self.checks.made.clone(),
            violations: self.checks.violations.clone(),
            figures: {
                let mut f = self.checks.figures.clone();
                f.insert(
                    "ServiceL2Status objects ended (hand-overs, Services deleted)",
                    self.statuses_ended,
                );
                f
            },
            memory,
            refused: self.refused,
            events: self.events_seen,
            leases: self.leases_seen,
            peaks,
        }
    }
}

/// One process's resident memory over its life.
#[derive(Clone, Debug)]
pub struct MemoryTrend {
    pub name: String,
    pub lived: f64,
    pub samples: usize,
    /// Median of the samples in the first and in the last third of its life (after a 20 s
    /// warm-up), KiB.
    pub early_kib: u64,
    pub late_kib: u64,
    pub max_kib: u64,
}

impl MemoryTrend {
    fn of(name: &str, rss: &[(f64, u64)]) -> Option<MemoryTrend> {
        let lived = rss.last()?.0;
        let warm: Vec<&(f64, u64)> = rss.iter().filter(|(t, _)| *t >= 20.0).collect();
        if lived < 60.0 || warm.len() < 6 {
            return None;
        }
        let third = warm.len() / 3;
        let median = |s: &[&(f64, u64)]| {
            let mut v: Vec<u64> = s.iter().map(|(_, k)| *k).collect();
            v.sort_unstable();
            v[v.len() / 2]
        };
        Some(MemoryTrend {
            name: name.to_owned(),
            lived,
            samples: rss.len(),
            early_kib: median(&warm[..third]),
            late_kib: median(&warm[warm.len() - third..]),
            max_kib: rss.iter().map(|(_, k)| *k).max().unwrap_or_default(),
        })
    }

    /// Flat: the last third at most 25 % and 8 MiB above the first (allocator noise and
    /// caches that fill once are not growth).
    fn growth_violation(&self) -> Option<String> {
        let allowed = self.early_kib + (self.early_kib / 4).max(8 * 1024);
        (self.late_kib > allowed).then(|| {
            format!(
                "{}: memory grew from {} to {} MiB over {:.0} s",
                self.name,
                self.early_kib / 1024,
                self.late_kib / 1024,
                self.lived
            )
        })
    }
}

/// What a soak did and found.
pub struct Report {
    pub minutes: f64,
    pub seed: u64,
    pub ran: Duration,
    pub injected: BTreeMap<String, u64>,
    pub checks: BTreeMap<&'static str, u64>,
    pub violations: Vec<String>,
    pub figures: BTreeMap<&'static str, u64>,
    pub memory: Vec<MemoryTrend>,
    pub refused: u64,
    pub events: usize,
    pub leases: usize,
    /// Peak resident KiB of each incarnation, by process, in order.
    pub peaks: BTreeMap<String, Vec<u64>>,
}

impl Report {
    pub fn text(&self) -> String {
        let mut t = String::new();
        let injected: u64 = self.injected.values().sum();
        let checks: u64 = self.checks.values().sum();
        let _ = writeln!(
            t,
            "SOAK REPORT: {:.1} min of churn (seed {}): {injected} changes injected, {checks} invariant checks, {} violations",
            self.ran.as_secs_f64() / 60.0,
            self.seed,
            self.violations.len()
        );
        let _ = writeln!(t, "injected:");
        for (k, n) in &self.injected {
            let _ = writeln!(t, "  {n:>6}  {k}");
        }
        let _ = writeln!(t, "checked:");
        for (k, n) in &self.checks {
            let _ = writeln!(t, "  {n:>6}  {k}");
        }
        for (k, n) in &self.figures {
            let _ = writeln!(t, "seen: {k}: {n}");
        }
        let _ = writeln!(
            t,
            "requests refused during API outages: {}; Events at the end: {}; Leases at most: {}",
            self.refused, self.events, self.leases
        );
        let _ = writeln!(
            t,
            "memory (resident, MiB; processes that lived 60 s or more):"
        );
        for m in &self.memory {
            let _ = writeln!(
                t,
                "  {:<22} {:>5.0} s  {:>4} samples  early {:>5.1}  late {:>5.1}  max {:>5.1}",
                m.name,
                m.lived,
                m.samples,
                m.early_kib as f64 / 1024.0,
                m.late_kib as f64 / 1024.0,
                m.max_kib as f64 / 1024.0
            );
        }
        let _ = writeln!(
            t,
            "peak resident memory per incarnation (MiB): first, last, highest"
        );
        for (name, peaks) in &self.peaks {
            let mib = |k: u64| k as f64 / 1024.0;
            let _ = writeln!(
                t,
                "  {name:<22} {:>3} incarnations  {:>5.1}  {:>5.1}  {:>5.1}",
                peaks.len(),
                mib(peaks.first().copied().unwrap_or_default()),
                mib(peaks.last().copied().unwrap_or_default()),
                mib(peaks.iter().copied().max().unwrap_or_default())
            );
        }
        if !self.violations.is_empty() {
            let _ = writeln!(t, "violations:");
            for v in self.violations.iter().take(50) {
                let _ = writeln!(t, "  {v}");
            }
        }
        t
    }
}
