//! Kube mode of `ferrolb-speaker run`: the API client, the kube source, membership from what
//! it reads, and the status writer beside the run loop.

use crate::{terminated, RunArgs};

/// Kube mode: the API client and what the kube source feeds.
pub struct KubeMode {
    client: kube::Client,
    pub feeds: ferrolb_speaker::source::KubeFeeds,
    namespace: String,
}

impl KubeMode {
    pub async fn start(args: &RunArgs) -> anyhow::Result<KubeMode> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| anyhow::anyhow!("Kubernetes API client: {e}"))?;
        let mut source =
            ferrolb_speaker::source::KubeSource::new(&args.namespace, args.lb_class.clone());
        source.metallb_namespace = args.metallb_namespace.clone();
        let feeds = source.spawn(client.clone());
        Ok(KubeMode {
            client,
            feeds,
            namespace: args.namespace.clone(),
        })
    }

    /// Membership from the Nodes' InternalIPs and the Secret `ferrolb-memberlist` in the
    /// speaker's namespace, once the caches are filled (or until SIGTERM).
    pub async fn start_membership(
        &self,
        args: &RunArgs,
    ) -> anyhow::Result<ferrolb_speaker::membership::Membership> {
        use ferrolb_speaker::membership::secret::{key_from_secret, SECRET_NAME};
        use ferrolb_speaker::membership::{Membership, MembershipConfig, Security};
        let mut cluster = self.feeds.cluster.clone();
        tracing::info!(namespace = %self.namespace, "waiting for the API server's Nodes and Secrets");
        let info = tokio::select! {
            r = cluster.wait_for(Option::is_some) => r
                .map_err(|_| anyhow::anyhow!("the kube source stopped"))?
                .clone()
                .expect("waited for Some"),
            _ = terminated() => anyhow::bail!("stopped before the API server answered"),
        };
        let Some(ip) = info.node_ips.get(&args.node_name).copied() else {
            anyhow::bail!(
                "Node/{} has no InternalIP: membership needs it (status.addresses), or give --live",
                args.node_name
            );
        };
        let key = match info
            .secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(SECRET_NAME))
        {
            Some(s) => Some(key_from_secret(s).map_err(|e| {
                anyhow::anyhow!("membership key in namespace {}: {e}", self.namespace)
            })?),
            None => None,
        };
        // The namespace is the speaker's (not always ferrolb-system), so the message names it.
        let security = Security::choose(key, args.insecure_membership).map_err(|_| {
            anyhow::anyhow!(
                "no membership key: create the Secret {}/{SECRET_NAME} (key secretkey), or pass --insecure-membership",
                self.namespace
            )
        })?;
        let mut config = MembershipConfig::new(&args.node_name, ip, security);
        config.peers = info
            .node_ips
            .iter()
            .filter(|(name, _)| **name != args.node_name)
            .map(|(name, ip)| ferrolb_speaker::membership::Peer {
                name: name.clone(),
                ip: *ip,
            })
            .collect();
        config.fast = args.fast;
        let m = Membership::start_dedicated(config)?;
        tracing::info!(%ip, peers = info.node_ips.len().saturating_sub(1), "membership started");
        Ok(m)
    }

    /// The run loop with the status writer beside it; the writer gets up to 2 s after the loop
    /// stops to delete this node's status objects.
    pub async fn run(
        self,
        opts: ferrolb_speaker::runtime::RunOptions,
        snapshots: tokio::sync::watch::Receiver<
            Option<std::sync::Arc<ferrolb_speaker::source::Snapshot>>,
        >,
        liveness: ferrolb_speaker::runtime::Liveness,
        shutdown: impl std::future::Future<Output = ()>,
        node: &str,
    ) {
        use ferrolb_speaker::status::writer::{PodOwner, StatusWriter};
        let (announced, announced_rx) = tokio::sync::watch::channel(Default::default());
        let mut writer = StatusWriter::new(&self.namespace, node);
        if let (Ok(name), Ok(uid)) = (std::env::var("POD_NAME"), std::env::var("POD_UID")) {
            writer.owner = Some(PodOwner { name, uid });
        }
        // The configuration's validity, and what of it this node cannot set up.
        let report = ferrolb_speaker::status::merge_node_problems(
            self.feeds.config.clone(),
            opts.bgp_status.problems(),
        );
        let sampled = report.clone();
        opts.health.on_scrape(move |m| {
            m.set_config_problems(match &*sampled.borrow() {
                ferrolb_speaker::source::ConfigReport::Invalid(problems) => problems.len(),
                _ => 0,
            })
        });
        let writing = writer.spawn(self.client.clone(), announced_rx, report);
        // With membership, L2 follows the quorum; its ties are broken by a Lease.
        let mut opts = opts;
        if opts.l2_quorum && matches!(liveness, ferrolb_speaker::runtime::Liveness::Members { .. })
        {
            let (tie_break, _task) = ferrolb_speaker::tiebreak::spawn(
                kube::Api::namespaced(self.client.clone(), &self.namespace),
                node.to_owned(),
                ferrolb_speaker::tiebreak::DEFAULT_DURATION,
            );
            opts.tie_break = Some(tie_break);
        }
        ferrolb_speaker::runtime::run_observed(
            opts,
            snapshots,
            liveness,
            shutdown,
            Some(announced),
        )
        .await;
        if tokio::time::timeout(std::time::Duration::from_secs(2), writing)
            .await
            .is_err()
        {
            tracing::warn!("status objects not cleaned up within 2 s");
        }
    }
}
