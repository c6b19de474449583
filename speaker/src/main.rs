//! The `ferrolb-speaker` binary.

mod kube_mode;

use clap::{Parser, Subcommand, ValueEnum};
use kube_mode::KubeMode;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "ferrolb-speaker",
    version = env!("FERROLB_VERSION"),
    about = "FerroLB speaker: announces Service addresses from this node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print what NODE would announce, by which protocol, on which interfaces or to which peers,
    /// and why not otherwise, from manifests (pools, advertisements, peers, Nodes, Services,
    /// EndpointSlices). Every Node in the files counts as having a live speaker unless --live.
    Plan {
        /// A manifest file or a directory of them; may be given more than once.
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
        /// The node to plan for.
        #[arg(long, env = "NODE_NAME")]
        node: String,
        /// Nodes whose speakers are alive (comma-separated).
        #[arg(long, value_delimiter = ',')]
        live: Option<Vec<String>>,
        /// Serve only Services with this spec.loadBalancerClass (default: those without one).
        #[arg(long, env = "FERROLB_LB_CLASS")]
        lb_class: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Run the speaker: plan on every change of the sources or of the live speakers, and answer
    /// ARP / Neighbor Solicitations for (and announce) the addresses this node owns.
    Run {
        /// Where Services, Nodes and FerroLB objects come from: `kube` (the API server, with the
        /// in-cluster configuration or KUBECONFIG) or `file:DIR` (a directory of manifests,
        /// reloaded when a file changes).
        #[arg(long, default_value = "kube")]
        source: String,
        /// Kube mode: the namespace of the FerroLB objects, the membership Secret, the status
        /// objects and this node's ConfigurationState.
        #[arg(long, env = "POD_NAMESPACE", default_value = "ferrolb-system")]
        namespace: String,
        /// Kube mode, MetalLB-compatible: read MetalLB's own objects (metallb.io) in this
        /// namespace, as they are, instead of FerroLB's.
        #[arg(long, env = "FERROLB_METALLB_NAMESPACE")]
        metallb_namespace: Option<String>,
        /// This node's name (as in its Node object).
        #[arg(long, env = "NODE_NAME")]
        node_name: String,
        /// Fixed set of nodes whose speakers count as alive (comma-separated). Default in file
        /// mode: every Node in the files.
        #[arg(long, value_delimiter = ',')]
        live: Option<Vec<String>>,
        /// Serve only Services with this spec.loadBalancerClass (default: those without one).
        #[arg(long, env = "FERROLB_LB_CLASS")]
        lb_class: Option<String>,
        /// Interface name patterns (regular expressions, comma-separated) never used unless an
        /// L2Advertisement names the interface; `--exclude-interfaces=` excludes none.
        #[arg(long, value_delimiter = ',')]
        exclude_interfaces: Option<Vec<String>>,
        /// Run membership without the shared key (unauthenticated; for labs only).
        #[arg(long)]
        insecure_membership: bool,
        /// How often the file source looks for changes, in milliseconds.
        #[arg(long, default_value_t = 200)]
        poll_ms: u64,
        /// Address of /metrics, /healthz and /readyz; empty: not served.
        #[arg(long, env = "FERROLB_METRICS_ADDR", default_value = "0.0.0.0:7472")]
        metrics_addr: String,
        /// How long a speaker that rejoins a running cluster (or comes back after it was cut
        /// off) stands by before it takes addresses back, in milliseconds (0: at once, and no
        /// flap damping either).
        #[arg(long, default_value_t = 3000)]
        rejoin_hold_down_ms: u64,
        /// How long a node keeps answering for an address that moved away, in milliseconds
        /// (make-before-break; keep it below the 2.2 s of the new owner's last burst
        /// announcement).
        #[arg(long, default_value_t = 2000)]
        release_grace_ms: u64,
        /// L2 quorum: with membership, answer by L2 only while this speaker sees a majority of
        /// the speakers (ties broken by a Lease in kube mode, by the first node's name in file
        /// mode), so a partition never leaves two nodes answering for one address. `false`:
        /// every speaker plans from what it sees, as MetalLB does. Default: true in kube mode;
        /// false in file mode, which has no API server to tell a dead majority from a cut-off
        /// one (the last speaker left must take over).
        #[arg(long, env = "FERROLB_L2_QUORUM", action = clap::ArgAction::Set)]
        l2_quorum: Option<bool>,
        /// L2: seconds between the gratuitous ARP / unsolicited NA refreshes of each owned
        /// address after its takeover burst (switch forwarding tables age out, usually after
        /// 300 s); 0: none.
        #[arg(long, env = "FERROLB_L2_REFRESH_SECONDS", default_value_t = 60,
              value_parser = refresh_seconds)]
        l2_refresh_seconds: u64,
        /// L2: at most this many refreshes per second over all addresses (takeovers are never
        /// held back).
        #[arg(long, env = "FERROLB_L2_REFRESH_RATE", default_value_t = ferrolb_speaker::l2::schedule::DEFAULT_REFRESH_RATE,
              value_parser = clap::value_parser!(u32).range(1..=100_000))]
        l2_refresh_rate: u32,
        /// L2 fast failover: milliseconds between heartbeats from each owner to its hot
        /// standbys (1 to 1000; 0: off, failover then waits for membership's verdict, about
        /// 100-150 ms).
        #[arg(long, env = "FERROLB_L2_HEARTBEAT_MS", default_value_t = 4,
              value_parser = clap::value_parser!(u64).range(0..=1000))]
        l2_heartbeat_ms: u64,
        /// L2 fast failover: heartbeat periods without a word before the standby checks the
        /// owner (2 to 50).
        #[arg(long, env = "FERROLB_L2_HEARTBEAT_MISSES", default_value_t = 3,
              value_parser = clap::value_parser!(u32).range(2..=50))]
        l2_heartbeat_misses: u32,
        /// L2 fast failover: milliseconds a check waits for the owner, or another speaker
        /// that heard it, before the owner is taken as down (1 to 1000). A speaker starved of
        /// CPU for heartbeat x misses + this is taken as down too.
        #[arg(long, env = "FERROLB_L2_CONFIRM_MS", default_value_t = 4,
              value_parser = clap::value_parser!(u64).range(1..=1000))]
        l2_confirm_ms: u64,
        /// BGP graceful shutdown (RFC 8326), in seconds: routes this node stops announcing
        /// (a Service moving away, an advertisement or exclusion label no longer selecting
        /// the node, the speaker stopping on a cordoned or deleted node, or any stop for peers
        /// without graceful restart) are first sent again with the GRACEFUL_SHUTDOWN community
        /// (65535:0; LOCAL_PREF 0 to iBGP peers) for this long, so routers move the traffic
        /// first; 0: withdrawn at once, as MetalLB does. Keep it below the Pod's
        /// terminationGracePeriodSeconds.
        #[arg(long, env = "FERROLB_GRACEFUL_SHUTDOWN_SECONDS", default_value_t = 0,
              value_parser = clap::value_parser!(u64).range(0..=300))]
        graceful_shutdown_seconds: u64,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Output {
    Table,
    Json,
}

/// Writes to stdout; a closed pipe is not worth a panic.
fn say(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            }
        }
        _ => {
            tracing::warn!("cannot catch signals; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

struct RunArgs {
    source: String,
    namespace: String,
    metallb_namespace: Option<String>,
    node_name: String,
    live: Option<Vec<String>>,
    lb_class: Option<String>,
    exclude_interfaces: Option<Vec<String>>,
    insecure_membership: bool,
    poll_ms: u64,
    metrics_addr: String,
    rejoin_hold_down_ms: u64,
    release_grace_ms: u64,
    l2_quorum: Option<bool>,
    l2_refresh_seconds: u64,
    l2_refresh_rate: u32,
    /// The fast path's timers; None: off.
    fast: Option<ferrolb_speaker::membership::fast::FastTimers>,
    graceful_shutdown_seconds: u64,
}

/// 0 (no refresh) or 5 to 3600 seconds.
fn refresh_seconds(text: &str) -> Result<u64, String> {
    let n: u64 = text.parse().map_err(|e| format!("{e}"))?;
    if n == 0 || (5..=3600).contains(&n) {
        Ok(n)
    } else {
        Err("0 (no refresh) or 5 to 3600".into())
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    use ferrolb_speaker::l2::adapter::L2Options;
    use ferrolb_speaker::l2::interfaces::Exclusions;
    use ferrolb_speaker::runtime::{Liveness, RunOptions};
    use ferrolb_speaker::source::FileSource;

    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let source = match args.source.as_str() {
        "kube" => Source::Kube,
        other => match other.strip_prefix("file:") {
            Some(dir) if !dir.is_empty() => Source::File(dir.into()),
            _ => anyhow::bail!("--source {other}: expected kube or file:DIR"),
        },
    };
    if args.node_name.is_empty() {
        anyhow::bail!("--node-name (or NODE_NAME) is empty");
    }
    let exclusions = match &args.exclude_interfaces {
        None => Exclusions::default_list(),
        Some(patterns) => {
            let patterns: Vec<&String> = patterns.iter().filter(|p| !p.is_empty()).collect();
            Exclusions::new(&patterns).map_err(|e| anyhow::anyhow!("--exclude-interfaces: {e}"))?
        }
    };
    let health = std::sync::Arc::new(ferrolb_speaker::metrics::Health::default());
    // Bound before anything else starts, so a taken port stops the speaker with a clear error.
    let metrics_listener = match args.metrics_addr.as_str() {
        "" => None,
        addr => {
            let parsed: std::net::SocketAddr = addr
                .parse()
                .map_err(|e| anyhow::anyhow!("--metrics-addr {addr:?}: {e}"))?;
            Some(
                ferrolb_speaker::metrics::bind(parsed)
                    .map_err(|e| anyhow::anyhow!("--metrics-addr {addr}: {e}"))?,
            )
        }
    };
    if args.insecure_membership {
        tracing::warn!("--insecure-membership: membership messages are not authenticated");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let kube = match &source {
        Source::Kube => Some(runtime.block_on(KubeMode::start(&args))?),
        Source::File(_) => None,
    };
    // The live set: fixed with --live (tests, labs), else from membership among the speakers,
    // found through the Nodes' InternalIPs and authenticated with the shared key.
    let membership = match (&args.live, &source, &kube) {
        (Some(_), _, _) => None,
        (None, Source::File(dir), _) => Some(start_membership(dir, &args)?),
        (None, Source::Kube, Some(k)) => Some(runtime.block_on(k.start_membership(&args))?),
        (None, Source::Kube, None) => unreachable!("kube mode started above"),
    };
    let liveness = match (args.live, &membership) {
        (Some(names), _) => Liveness::fixed(names.into_iter().collect()),
        (None, Some(m)) => Liveness::Members {
            members: m.members(),
            hold_down: std::time::Duration::from_millis(args.rejoin_hold_down_ms),
            watcher: Some(m.watcher()),
        },
        (None, None) => Liveness::EveryNode,
    };
    if let Some(m) = &membership {
        let (stats, live) = (m.stats(), m.live());
        health.on_scrape(move |metrics| {
            use ferrolb_speaker::membership::Stats;
            metrics.set_membership(&ferrolb_speaker::metrics::MembershipSample {
                joins: Stats::get(&stats.member_up),
                deaths: Stats::get(&stats.member_down),
                suspicions: Stats::get(&stats.suspicions),
                fast_downs: Stats::get(&stats.fast_downs),
                fast_backs: Stats::get(&stats.fast_backs),
                live_members: live.borrow().len() as u64,
                dropped: [
                    ("malformed", Stats::get(&stats.dropped_malformed)),
                    (
                        "unauthenticated",
                        Stats::get(&stats.dropped_unauthenticated),
                    ),
                    ("stale", Stats::get(&stats.dropped_stale)),
                    ("replay", Stats::get(&stats.dropped_replay)),
                    ("protocol", Stats::get(&stats.dropped_protocol)),
                ],
            })
        });
    }
    let opts = RunOptions {
        l2: L2Options {
            node: args.node_name.clone(),
            exclusions,
            schedule: ferrolb_speaker::l2::schedule::Schedule {
                refresh: std::time::Duration::from_secs(args.l2_refresh_seconds),
                refresh_rate: args.l2_refresh_rate,
                ..Default::default()
            },
            release_grace: std::time::Duration::from_millis(args.release_grace_ms),
            sys_class_net: "/sys/class/net".into(),
            metrics: health.metrics.clone(),
        },
        interface_rescan: std::time::Duration::from_secs(5),
        health: health.clone(),
        bgp_status: Default::default(),
        bgp_graceful_shutdown: std::time::Duration::from_secs(args.graceful_shutdown_seconds),
        tie_break: None,
        l2_quorum: args.l2_quorum.unwrap_or(matches!(source, Source::Kube)),
    };
    runtime.block_on(async move {
        tracing::info!(node = %args.node_name, source = %args.source, "ferrolb-speaker starting");
        if let Some(listener) = metrics_listener {
            let addr = listener.local_addr()?;
            ferrolb_speaker::metrics::serve(listener, health)?;
            tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
        }
        let snapshots = match (source, &kube) {
            (Source::File(dir), _) => FileSource {
                dir,
                lb_class: args.lb_class,
                poll: std::time::Duration::from_millis(args.poll_ms.max(10)),
            }
            .spawn(),
            (Source::Kube, Some(k)) => k.feeds.snapshots.clone(),
            (Source::Kube, None) => unreachable!("kube mode started above"),
        };
        let node = args.node_name.clone();
        let node_name = node.clone();
        let mut peer_updates = snapshots.clone();
        // Until SIGTERM, keep membership's peers in step with the Nodes; then leave, so the
        // others take over at once, before this speaker stops answering.
        let shutdown = async move {
            let term = terminated();
            tokio::pin!(term);
            loop {
                tokio::select! {
                    _ = &mut term => break,
                    changed = peer_updates.changed() => {
                        if changed.is_err() {
                            term.as_mut().await;
                            break;
                        }
                        let snapshot = peer_updates.borrow_and_update().clone();
                        if let (Some(m), Some(s)) = (&membership, snapshot) {
                            m.set_peers(peers_of(&s, &node));
                        }
                    }
                }
            }
            if let Some(m) = membership {
                m.leave().await;
                tracing::info!("left membership");
            }
        };
        match kube {
            Some(k) => k.run(opts, snapshots, liveness, shutdown, &node_name).await,
            None => ferrolb_speaker::runtime::run(opts, snapshots, liveness, shutdown).await,
        }
        anyhow::Ok(())
    })?;
    tracing::info!("stopped");
    Ok(())
}

enum Source {
    File(PathBuf),
    Kube,
}

/// Every other node's speaker, by its InternalIP.
fn peers_of(
    snapshot: &ferrolb_speaker::source::Snapshot,
    this_node: &str,
) -> Vec<ferrolb_speaker::membership::Peer> {
    snapshot
        .node_ips
        .iter()
        .filter(|(name, _)| name.as_str() != this_node)
        .map(|(name, ip)| ferrolb_speaker::membership::Peer {
            name: name.clone(),
            ip: *ip,
        })
        .collect()
}

/// Starts membership from the source's first valid snapshot: this node's InternalIP, the
/// other Nodes as peers, the key from the Secret ferrolb-system/ferrolb-memberlist.
fn start_membership(
    dir: &std::path::Path,
    args: &RunArgs,
) -> anyhow::Result<ferrolb_speaker::membership::Membership> {
    use ferrolb_speaker::membership::{find_key, Membership, MembershipConfig, Security};
    let snapshot = ferrolb_speaker::source::load_dir(
        dir,
        args.lb_class.as_deref(),
        &ferrolb_config::Resources::default(),
    )
    .map_err(|errors| anyhow::anyhow!("{}: {}", dir.display(), errors.join("; ")))?
    .snapshot;
    let Some(ip) = snapshot.node_ips.get(&args.node_name).copied() else {
        anyhow::bail!(
            "Node/{} has no InternalIP in {}: membership needs it (status.addresses), or give --live",
            args.node_name,
            dir.display()
        );
    };
    let key = find_key(&snapshot.secrets).map_err(|e| anyhow::anyhow!("membership key: {e}"))?;
    let security = Security::choose(key, args.insecure_membership).map_err(|e| {
        anyhow::anyhow!("{e} (Secret ferrolb-system/ferrolb-memberlist, key secretkey)")
    })?;
    let mut config = MembershipConfig::new(&args.node_name, ip, security);
    config.peers = peers_of(&snapshot, &args.node_name);
    config.fast = args.fast;
    let m = Membership::start_dedicated(config)?;
    tracing::info!(%ip, peers = snapshot.node_ips.len().saturating_sub(1), "membership started");
    Ok(m)
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            source,
            namespace,
            metallb_namespace,
            node_name,
            live,
            lb_class,
            exclude_interfaces,
            insecure_membership,
            poll_ms,
            metrics_addr,
            rejoin_hold_down_ms,
            release_grace_ms,
            l2_quorum,
            l2_refresh_seconds,
            l2_refresh_rate,
            l2_heartbeat_ms,
            l2_heartbeat_misses,
            l2_confirm_ms,
            graceful_shutdown_seconds,
        } => match run(RunArgs {
            source,
            namespace,
            metallb_namespace: metallb_namespace.filter(|n| !n.is_empty()),
            node_name,
            live,
            lb_class,
            exclude_interfaces,
            insecure_membership,
            poll_ms,
            metrics_addr,
            rejoin_hold_down_ms,
            release_grace_ms,
            l2_quorum,
            l2_refresh_seconds,
            l2_refresh_rate,
            fast: (l2_heartbeat_ms > 0).then(|| ferrolb_speaker::membership::fast::FastTimers {
                heartbeat: std::time::Duration::from_millis(l2_heartbeat_ms),
                misses: l2_heartbeat_misses,
                confirm: std::time::Duration::from_millis(l2_confirm_ms),
            }),
            graceful_shutdown_seconds,
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ferrolb-speaker: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Plan {
            paths,
            node,
            live,
            lb_class,
            output,
        } => {
            match ferrolb_speaker::offline::offline_plan(
                &paths,
                &node,
                live.as_deref(),
                lb_class.as_deref(),
            ) {
                Ok(plan) => {
                    match output {
                        Output::Table => say(&ferrolb_speaker::offline::to_table(&plan, &node)),
                        Output::Json => say(&format!(
                            "{}\n",
                            serde_json::to_string_pretty(&ferrolb_speaker::offline::to_json(
                                &plan, &node
                            ))
                            .expect("JSON values serialise")
                        )),
                    }
                    ExitCode::SUCCESS
                }
                Err(problems) => {
                    for p in problems {
                        say(&format!("{p}\n"));
                    }
                    ExitCode::FAILURE
                }
            }
        }
    }
}
