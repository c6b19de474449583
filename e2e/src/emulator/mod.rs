//! The Kubernetes API emulator (see docs/testing.md).
//!
//! An in-memory kube-apiserver stand-in, good enough for kube-rs clients and for running the
//! real FerroLB controller and speaker against it: generic storage for any resource, watches
//! with resumption and bookmarks, optimistic concurrency, the status subresource, server-side
//! apply with field ownership, CRDs with structural-schema validation and CEL rules, and
//! Service clusterIP allocation. [`harness`] starts it for tests, or uses a real cluster.

mod error;
mod events;
mod fields;
pub mod harness;
mod http;
mod patch;
mod registry;
mod schema;
mod selector;
mod services;
mod store;
mod table;
mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use error::{ApiError, FieldError};

/// How to run an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where to listen; port 0 picks a free port. Use loopback, or a documentation address
    /// inside a test network namespace so other namespaces can reach it.
    pub listen: SocketAddr,
    /// Service CIDRs, primary family first (at most one per family).
    pub service_cidrs: Vec<IpNet>,
    /// How many events the watch history keeps; watches from before it get 410 Gone.
    pub history_limit: usize,
    /// How often a watch with allowWatchBookmarks gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// A watch without timeoutSeconds ends after this long.
    pub default_watch_timeout: Duration,
    /// Serve HTTPS with a throwaway CA (written into the kubeconfig) instead of plain HTTP.
    pub tls: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            service_cidrs: default_service_cidrs(),
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(1),
            default_watch_timeout: Duration::from_secs(1800),
            tls: false,
        }
    }
}

/// Documentation ranges, so nothing allocated here can clash with a real network.
pub fn default_service_cidrs() -> Vec<IpNet> {
    vec![
        "198.51.100.0/24".parse().expect("valid CIDR"),
        "2001:db8:5e7::/112".parse().expect("valid CIDR"),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("at most one service CIDR per IP family, and at least one: {0:?}")]
    ServiceCidrs(Vec<IpNet>),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot write kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: std::io::Error,
    },
}

/// A running emulator. Dropping it stops the server.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    config: EmulatorConfig,
    /// The CA, when serving HTTPS.
    ca: Option<tls::TlsMaterial>,
    store: Arc<Mutex<store::Store>>,
    shared: Arc<http::Shared>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    /// While down: the address, bound but not listening (connections are refused), so no
    /// other socket takes the port before [`Emulator::come_back`].
    parked: Option<tokio::net::TcpSocket>,
}

/// A running server: what [`Emulator::serve`] returns.
struct Serving {
    shared: Arc<http::Shared>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Emulator {
    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(config: EmulatorConfig) -> Result<Self, EmulatorError> {
        let v4 = config
            .service_cidrs
            .iter()
            .filter(|c| matches!(c, IpNet::V4(_)))
            .count();
        let v6 = config.service_cidrs.len() - v4;
        if config.service_cidrs.is_empty() || v4 > 1 || v6 > 1 {
            return Err(EmulatorError::ServiceCidrs(config.service_cidrs));
        }
        let listener = bind(config.listen).await?;
        let addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Listen {
                addr: config.listen,
                source,
            })?;
        let store = Arc::new(Mutex::new(store::Store::new(
            config.service_cidrs.clone(),
            config.history_limit,
        )));
        let ca = if config.tls {
            Some(tls::generate(addr.ip())?)
        } else {
            None
        };
        let serving = Self::serve(listener, addr, &config, &store, ca.as_ref())?;
        tracing::info!(%addr, tls = config.tls, "Kubernetes API emulator listening");
        Ok(Self {
            addr,
            config,
            ca,
            store,
            shared: serving.shared,
            shutdown: serving.shutdown,
            task: Some(serving.task),
            parked: None,
        })
    }

    fn serve(
        listener: TcpListener,
        addr: SocketAddr,
        config: &EmulatorConfig,
        store: &Arc<Mutex<store::Store>>,
        ca: Option<&tls::TlsMaterial>,
    ) -> Result<Serving, EmulatorError> {
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let shared = Arc::new(http::Shared {
            store: store.clone(),
            bookmark_interval: config.bookmark_interval,
            default_watch_timeout: config.default_watch_timeout,
            shutdown: shutdown_rx.clone(),
            disconnect: tokio::sync::watch::channel(0).0,
            server_address: addr.to_string(),
        });
        let router = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let mut stop = shutdown_rx.clone();
        let stopped = async move {
            let _ = stop.changed().await;
        };
        let task = match ca {
            Some(material) => {
                let listener = tls::TlsListener::new(listener, material, shutdown_rx)?;
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, router)
                        .with_graceful_shutdown(stopped)
                        .await
                    {
                        tracing::warn!(error = %e, "emulator server stopped");
                    }
                })
            }
            None => tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router)
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::warn!(error = %e, "emulator server stopped");
                }
            }),
        };
        Ok(Serving {
            shared,
            shutdown,
            task,
        })
    }

    /// The API server goes away as in a control-plane restart: its port closes (connections
    /// are refused) and every watch ends; the objects stay (etcd keeps them).
    pub async fn go_down(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                // Connections that did not end are cut: a stopped server serves nothing.
                task.abort();
                let _ = task.await;
            }
        }
        self.parked = park(self.addr).ok();
    }

    /// Serves again on the same address with the same objects. Like a restarted kube-apiserver,
    /// whose watch cache starts anew, it has no history: a watch resumed from an earlier
    /// resourceVersion gets 410 Gone and the client must list again.
    pub async fn come_back(&mut self) -> Result<(), EmulatorError> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .forget_history();
        let listener = match self.parked.take() {
            Some(socket) => socket
                .listen(1024)
                .map_err(|source| EmulatorError::Listen {
                    addr: self.addr,
                    source,
                })?,
            None => bind(self.addr).await?,
        };
        let serving = Self::serve(
            listener,
            self.addr,
            &self.config,
            &self.store,
            self.ca.as_ref(),
        )?;
        self.shared = serving.shared;
        self.shutdown = serving.shutdown;
        self.task = Some(serving.task);
        tracing::info!(addr = %self.addr, "Kubernetes API emulator back");
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA certificate (PEM) clients must trust, when serving HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_ref().map(|m| m.ca_pem.as_str())
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().resource_version()
    }

    /// Ends every open watch stream, as an apiserver restart or a load balancer would.
    /// Clients resume from their last resourceVersion (and get 410 if it left the history).
    pub fn disconnect_watches(&self) {
        self.shared.disconnect.send_modify(|n| *n += 1);
    }

    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(&self.url(), self.ca_pem())
    }

    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), EmulatorError> {
        std::fs::write(path, self.kubeconfig_yaml()).map_err(|source| EmulatorError::Kubeconfig {
            path: path.display().to_string(),
            source,
        })
    }

    /// A kube client for this emulator.
    pub fn client(&self) -> Result<kube::Client, kube::Error> {
        let mut config = kube::Config::new(self.url().parse().expect("emulator URL is valid"));
        config.root_cert = self.ca.as_ref().map(|m| vec![m.ca_der.clone()]);
        kube::Client::try_from(config)
    }

    /// Stops serving and waits for the server (and its open watches) to finish.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// A kubeconfig pointing at `server`. Over HTTPS it carries the CA and a bearer token (which
/// the emulator accepts without checking), so clients take their production TLS and auth path.
pub fn kubeconfig_yaml(server: &str, ca_pem: Option<&str>) -> String {
    use base64::Engine;
    let (ca, user) = match ca_pem {
        Some(pem) => (
            format!(
                "\n    certificate-authority-data: {}",
                base64::engine::general_purpose::STANDARD.encode(pem)
            ),
            "\n    token: ferrolb-emulator-token-not-checked".to_string(),
        ),
        None => (String::new(), " {}".to_string()),
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: ferrolb-emulator
  cluster:
    server: {server}{ca}
contexts:
- name: ferrolb-emulator
  context:
    cluster: ferrolb-emulator
    user: ferrolb-emulator
    namespace: default
current-context: ferrolb-emulator
users:
- name: ferrolb-emulator
  user:{user}
"
    )
}

/// Binds `addr` (SO_REUSEADDR, as std does on Unix, so a restart can take its port back).
async fn bind(addr: SocketAddr) -> Result<TcpListener, EmulatorError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| EmulatorError::Listen { addr, source })
}

/// `addr` bound without listening: the port stays ours while connections to it are refused.
fn park(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}
