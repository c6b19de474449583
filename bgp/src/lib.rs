//! # ferrolb-bgp: FerroLB's in-house BGP engine
//!
//! A BGP-4 speaker for announcing service routes (/32 and /128) to routers. It knows nothing
//! of Kubernetes: the caller configures peers and the routes each peer should have.
//!
//! ## Using it
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferrolb_bgp::EngineError> {
//! use ferrolb_bgp::{BgpEngine, EngineConfig, PeerConfig, RouteAttributes, SessionEventKind, ShutdownMode};
//!
//! let (engine, mut events) = BgpEngine::start(EngineConfig {
//!     router_id: "192.0.2.10".parse().unwrap(),
//!     listen: vec!["0.0.0.0:179".parse().unwrap()],
//! }).await?;
//! let router = "192.0.2.1".parse().unwrap();
//! engine.add_peer(PeerConfig::new(router, 64512, 65001))?;
//! engine.set_routes(router, vec![(
//!     "198.51.100.7/32".parse().unwrap(),
//!     RouteAttributes { communities: vec![(64512 << 16) | 100], ..Default::default() },
//! )])?;
//! while let Some(ev) = events.recv().await {
//!     match ev.kind {
//!         SessionEventKind::Up(info) => println!("{} up, hold {}", ev.peer, info.hold_time),
//!         SessionEventKind::Down(reason) => println!("{} down: {reason}", ev.peer),
//!     }
//! #   break;
//! }
//! println!("{:?}", engine.counters(router));
//! engine.shutdown(ShutdownMode::Cease(Some("node drained".into()))).await;
//! # Ok(()) }
//! ```
//!
//! - [`BgpEngine::start`] binds the listeners and returns the engine with the stream of
//!   [`SessionEvent`]s (up with what was negotiated, down with the reason).
//! - [`BgpEngine::add_peer`] / [`BgpEngine::update_peer`] / [`BgpEngine::remove_peer`] manage
//!   peers ([`PeerConfig`]: addresses, ASNs, timers, passive, MD5, multihop / GTSM, families,
//!   graceful restart, next hops).
//! - [`BgpEngine::set_routes`] sets the complete desired route set of a peer (prefix and
//!   [`RouteAttributes`]); the engine sends only the difference, packed by attribute set, and
//!   everything again after a new session or a route refresh.
//! - [`BgpEngine::counters`] gives [`PeerCounters`] for metrics.
//! - [`BgpEngine::shutdown`] ends with a Cease (and RFC 9003 message) or, for a restart with
//!   graceful restart, closes without NOTIFICATION so routers keep our routes.
//!
//! ## Layers
//!
//! - [`packet`]: the codec, sans-IO. Decode errors carry the NOTIFICATION to send; received
//!   UPDATE errors follow RFC 7606.
//! - [`fsm`]: the RFC 4271 state machine, sans-IO: `process(Input) -> Vec<Output>`, timers as
//!   outputs.
//! - [`rib_out`]: the Adj-RIB-Out, sans-IO: desired routes in, packed UPDATE bytes out.
//! - [`engine`]: the thin tokio driver (sockets, timers, tasks).
//! - [`bfd`]: BFD (RFC 5880/5881/5883) tied to the sessions: codec and session FSM sans-IO,
//!   a thin UDP driver; BFD down ends the BGP session with Cease / BFD Down (RFC 9384).
//! - [`unnumbered`]: finding the router on a link from its Router Advertisements (BGP
//!   unnumbered): messages checked sans-IO, one raw ICMPv6 socket per link.
//! - `sockopt`: the one `unsafe` module (TCP MD5, GTSM, received TTL, ICMPv6 filter,
//!   interface indexes).

pub mod bfd;
pub mod config;
pub mod engine;
pub mod fsm;
pub mod packet;
pub mod rib_out;
mod sockopt;
pub mod unnumbered;

pub use bfd::{BfdAuth, BfdChange, BfdConfig, BfdCounters, BfdPorts};
pub use config::{is_link_local, PeerConfig, PeerKey, SessionEvent, SessionEventKind, SessionInfo};
pub use engine::{BgpEngine, EngineConfig, EngineError, PeerCounters, ShutdownMode};
pub use fsm::{DownReason, GracefulRestartConfig, State, StopReason};
pub use packet::{Family, LargeCommunity, Notification, Origin};
pub use rib_out::{RouteAttributes, GRACEFUL_SHUTDOWN};
pub use sockopt::{if_index, if_name};
