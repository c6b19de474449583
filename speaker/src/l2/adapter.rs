//! The thin I/O side of L2 mode: one packet socket per interface this node may announce on, a
//! task per socket answering ARP requests and Neighbor Solicitations for the addresses owned
//! there, the solicited-node multicast groups of owned IPv6 addresses, and the pre-built
//! announcement frames sent when [`Ownership`] says so. Decisions come from the pure modules;
//! this only moves bytes. Addresses are never added to kernel interfaces.
//!
//! Virtual MACs (`virtualMAC`): an owned address so marked is answered and announced from its
//! virtual MAC, and a macvlan device with that MAC receives its traffic from the node's first
//! announcement until the end of its release grace. During the grace the old owner no longer
//! answers: the new owner's answers carry the same MAC, and the old owner's would only pull the
//! switches' forwarding entry back to it.
//!
//! Multicast groups are joined with IPV6_JOIN_GROUP on a UDP socket: that both opens the NIC's
//! filter for 33:33:ff:xx:xx:xx and sends MLD reports, so switches doing MLD snooping forward
//! the solicitations to us.

use crate::l2::interfaces::{list_interfaces, Exclusions, Interface};
use crate::l2::macvlan::Rtnetlink;
use crate::l2::ownership::{wanted, Key, Ownership};
use crate::l2::packet::{
    answer, gratuitous_arp, parse_query, solicited_node_group, unsolicited_advertisement, MacAddr,
    Query,
};
use crate::l2::schedule::Schedule;
use crate::l2::sys::PacketSocket;
use crate::l2::vmac::{device_name, virtual_mac, DEVICE_PREFIX};
use crate::metrics::{Announced, L2Counters, Metrics, Protocol};
use crate::planner::NodePlan;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

/// Settings of the L2 data plane.
#[derive(Clone, Debug)]
pub struct L2Options {
    pub node: String,
    pub exclusions: Exclusions,
    pub schedule: Schedule,
    /// How long a node keeps answering for an address the plan gave to another node
    /// (make-before-break, see [`Ownership`]).
    pub release_grace: std::time::Duration,
    /// Where interfaces are listed (/sys/class/net).
    pub sys_class_net: PathBuf,
    pub metrics: Arc<Metrics>,
}

/// How one owned address is answered on a link.
#[derive(Clone)]
struct Answering {
    counters: L2Counters,
    /// The interface's MAC, or the address's virtual MAC.
    mac: MacAddr,
}

/// Addresses owned on one interface, read by its answering task.
type OwnedHere = Arc<RwLock<BTreeMap<IpAddr, Answering>>>;

/// What a pair this node ranks for needs at takeover, ready ahead.
struct Prepared {
    frames: Vec<Vec<u8>>,
    counters: L2Counters,
    /// The MAC the frames and answers carry.
    mac: MacAddr,
    /// The plan asks for the virtual MAC (`mac` is the interface's if its device failed).
    virtual_wanted: bool,
}

struct Link {
    iface: Interface,
    socket: Arc<AsyncFd<PacketSocket>>,
    owned: OwnedHere,
    /// For IPV6_JOIN_GROUP; `None` where IPv6 is unavailable.
    groups_socket: Option<socket2::Socket>,
    /// Joined solicited-node groups, with how many owned addresses need each.
    groups: BTreeMap<Ipv6Addr, usize>,
    answering: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.answering.abort();
    }
}

/// The L2 data plane of one node.
pub struct L2Adapter {
    opts: L2Options,
    links: BTreeMap<String, Link>,
    ownership: Ownership,
    /// Announcement frames and counters per pair this node ranks for, built ahead of a takeover.
    frames: BTreeMap<Key, Prepared>,
    /// The last plan applied, to redo the selection when interfaces change.
    plan: Arc<NodePlan>,
    /// Macvlan devices made for virtual MACs, by pair.
    devices: BTreeMap<Key, String>,
    /// Opened at the first virtual MAC.
    rtnetlink: Option<Rtnetlink>,
}

impl std::fmt::Debug for L2Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2Adapter")
            .field("links", &self.links.keys().collect::<Vec<_>>())
            .field("owned", self.ownership.owned())
            .finish()
    }
}

fn announcement_frames(mac: MacAddr, ip: IpAddr) -> Vec<Vec<u8>> {
    match ip {
        IpAddr::V4(v4) => gratuitous_arp(mac, v4).into(),
        IpAddr::V6(v6) => vec![unsolicited_advertisement(mac, v6)],
    }
}

fn groups_socket(iface: &str) -> Option<socket2::Socket> {
    match socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(interface = iface, error = %e, "no IPv6 socket: IPv6 addresses may not receive solicitations");
            None
        }
    }
}

impl Link {
    fn open(iface: Interface) -> io::Result<Link> {
        let socket = Arc::new(PacketSocket::open_async(iface.index)?);
        let owned: OwnedHere = Arc::default();
        let answering = tokio::spawn(answer_queries(
            iface.name.clone(),
            iface.mac,
            socket.clone(),
            owned.clone(),
        ));
        Ok(Link {
            groups_socket: groups_socket(&iface.name),
            iface,
            socket,
            owned,
            groups: BTreeMap::new(),
            answering,
        })
    }

    /// Answers for `ip` (again: only the MAC changes).
    fn own(&mut self, ip: IpAddr, answering: Answering) {
        if self
            .owned
            .write()
            .expect("lock")
            .insert(ip, answering)
            .is_some()
        {
            return;
        }
        if let IpAddr::V6(v6) = ip {
            let group = solicited_node_group(v6);
            let count = self.groups.entry(group).or_insert(0);
            *count += 1;
            if *count == 1 {
                if let Some(s) = &self.groups_socket {
                    if let Err(e) = s.join_multicast_v6(&group, self.iface.index) {
                        warn!(interface = %self.iface.name, %group, error = %e, "cannot join the solicited-node group");
                    }
                }
            }
        }
    }

    /// Stops answering for `ip`, if it was answered.
    fn disown(&mut self, ip: IpAddr) {
        if self.owned.write().expect("lock").remove(&ip).is_none() {
            return;
        }
        if let IpAddr::V6(v6) = ip {
            let group = solicited_node_group(v6);
            if let Some(count) = self.groups.get_mut(&group) {
                *count -= 1;
                if *count == 0 {
                    self.groups.remove(&group);
                    if let Some(s) = &self.groups_socket {
                        let _ = s.leave_multicast_v6(&group, self.iface.index);
                    }
                }
            }
        }
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.socket.get_ref().send(frame)
    }
}

/// Answers queries on one interface for as long as the link lives.
async fn answer_queries(
    name: String,
    mac: MacAddr,
    socket: Arc<AsyncFd<PacketSocket>>,
    owned: OwnedHere,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let mut guard = match socket.readable().await {
            Ok(g) => g,
            Err(e) => {
                warn!(interface = %name, error = %e, "packet socket failed; no more answers here");
                return;
            }
        };
        let n = match guard.try_io(|s| s.get_ref().recv(&mut buf)) {
            Err(_would_block) => continue,
            Ok(Err(e)) => {
                warn!(interface = %name, error = %e, "receiving");
                continue;
            }
            Ok(Ok(None)) => continue,
            Ok(Ok(Some(n))) => n,
        };
        let Ok(query) = parse_query(&buf[..n]) else {
            continue;
        };
        match query {
            // Another node announcing (a gratuitous request) is not a question.
            Query::Arp {
                sender_ip, target, ..
            } if sender_ip == target => continue,
            Query::Arp { sender_mac, .. }
            | Query::Ndp {
                source_mac: sender_mac,
                ..
            } if sender_mac == mac => continue,
            _ => {}
        }
        let target: IpAddr = match query {
            Query::Arp { target, .. } => target.into(),
            Query::Ndp { target, .. } => target.into(),
        };
        // Counting is an atomic add on the pair's own counter, under the read lock we take
        // anyway; requests for addresses we do not own are not counted (unbounded labels).
        let reply = {
            let owned = owned.read().expect("lock");
            owned.get(&target).map(|a| {
                a.counters.request();
                (answer(&query, a.mac, |_| true), a.counters.clone())
            })
        };
        if let Some((Some(frame), counters)) = reply {
            match socket.get_ref().send(&frame) {
                Ok(()) => {
                    counters.response();
                    debug!(interface = %name, ?query, "answered");
                }
                Err(e) => warn!(interface = %name, error = %e, "sending an answer"),
            }
        }
    }
}

impl L2Adapter {
    pub fn new(opts: L2Options) -> L2Adapter {
        let ownership = Ownership::with_release_grace(opts.schedule.clone(), opts.release_grace);
        L2Adapter {
            opts,
            links: BTreeMap::new(),
            ownership,
            frames: BTreeMap::new(),
            plan: Arc::default(),
            devices: BTreeMap::new(),
            rtnetlink: None,
        }
    }

    /// Pairs announced now.
    pub fn owned(&self) -> &BTreeSet<Key> {
        self.ownership.owned()
    }

    /// Applies a new plan (and the interfaces as they are now): opens and closes sockets,
    /// answers for gained addresses and announces them at once, stops for lost ones.
    pub fn apply(&mut self, plan: &Arc<NodePlan>, now: Instant) {
        self.plan = Arc::clone(plan);
        self.refresh(now);
    }

    /// Re-reads the interfaces and re-applies the last plan.
    pub fn refresh(&mut self, now: Instant) {
        let interfaces = match list_interfaces(&self.opts.sys_class_net) {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "cannot list interfaces; keeping the current ones");
                return;
            }
        };
        let mut w = wanted(
            &self.plan,
            &self.opts.node,
            &interfaces,
            &self.opts.exclusions,
        );
        // Links: close those no longer needed or changed, open new ones.
        let needed: BTreeMap<&str, &Interface> = interfaces
            .iter()
            .filter(|i| w.interfaces().contains(i.name.as_str()))
            .map(|i| (i.name.as_str(), i))
            .collect();
        let stale: Vec<String> = self
            .links
            .iter()
            .filter(|(name, l)| {
                needed
                    .get(name.as_str())
                    .is_none_or(|i| i.index != l.iface.index || i.mac != l.iface.mac)
            })
            .map(|(name, _)| name.clone())
            .collect();
        if !stale.is_empty() {
            // Drop ownership there first (no grace: the link goes) so a reopened link starts
            // its announcements afresh.
            for key in self.ownership.release_now(|(_, i)| stale.contains(i)) {
                if let Some(link) = self.links.get_mut(&key.1) {
                    link.disown(key.0);
                }
                self.detach_device(&key);
                info!(ip = %key.0, interface = %key.1, "L2: no longer announcing (interface gone)");
            }
            // Frames carry the interface's MAC: built again for the new link.
            self.frames.retain(|k, _| !stale.contains(&k.1));
            for name in &stale {
                info!(interface = %name, "closing the packet socket");
                self.links.remove(name);
            }
        }
        for (name, iface) in &needed {
            if self.links.contains_key(*name) {
                continue;
            }
            match Link::open((*iface).clone()) {
                Ok(link) => {
                    info!(interface = %name, mac = %iface.mac, "listening for ARP and NDP");
                    self.links.insert(name.to_string(), link);
                }
                Err(e) => warn!(interface = %name, error = %e, "cannot open a packet socket"),
            }
        }
        // Only pairs on links we have.
        w.owned.retain(|(_, i)| self.links.contains_key(i));
        w.ranked.retain(|(_, i)| self.links.contains_key(i));
        let metrics = &self.opts.metrics;
        self.frames.retain(|k, _| {
            let keep = w.ranked.contains(k);
            if !keep {
                metrics.forget_l2(k.0, &k.1);
            }
            keep
        });
        // Pairs whose `virtualMAC` changed start over: released now, gained again below.
        let mut switched = Vec::new();
        for key in &w.ranked {
            let virtual_wanted = w.virtual_mac.contains(&key.0);
            match self.frames.get(key) {
                Some(p) if p.virtual_wanted == virtual_wanted => continue,
                Some(_) => switched.push(key.clone()),
                None => {}
            }
            let mac = if virtual_wanted {
                virtual_mac(key.0)
            } else {
                self.links[&key.1].iface.mac
            };
            let prepared = Prepared {
                frames: announcement_frames(mac, key.0),
                counters: metrics.l2_counters(key.0, &key.1),
                mac,
                virtual_wanted,
            };
            self.frames.insert(key.clone(), prepared);
        }
        if !switched.is_empty() {
            let released = self.ownership.release_now(|k| switched.contains(k));
            self.release(&released);
        }
        self.remove_stale_devices(&interfaces);
        self.update_ownership(w.owned, now);
    }

    /// Removes macvlan devices of ours that no pair needs: left by an earlier run of the
    /// speaker (killed before it could remove them).
    fn remove_stale_devices(&mut self, interfaces: &[Interface]) {
        let stale: Vec<&str> = interfaces
            .iter()
            .map(|i| i.name.as_str())
            .filter(|n| n.starts_with(DEVICE_PREFIX))
            .filter(|n| !self.devices.values().any(|d| d == n))
            .collect();
        for name in stale {
            let removed = self.rtnetlink().and_then(|nl| nl.delete_link(name));
            match removed {
                Ok(()) => info!(
                    device = name,
                    "removed a virtual MAC device no address needs"
                ),
                Err(e) => {
                    warn!(device = name, error = %e, "cannot remove a stale virtual MAC device")
                }
            }
        }
    }

    fn rtnetlink(&mut self) -> io::Result<&mut Rtnetlink> {
        if self.rtnetlink.is_none() {
            self.rtnetlink = Some(Rtnetlink::open()?);
        }
        Ok(self.rtnetlink.as_mut().expect("just opened"))
    }

    /// Makes the macvlan device of a virtual-MAC pair before its first announcement. If the
    /// kernel refuses, the pair is answered and announced from the interface's own MAC instead
    /// (reachable, without the virtual MAC's failover), and the error says why.
    fn attach_device(&mut self, key: &Key) {
        let Some(p) = self.frames.get(key) else {
            return;
        };
        if !p.virtual_wanted || self.devices.contains_key(key) {
            return;
        }
        let Some(link) = self.links.get(&key.1) else {
            return;
        };
        let (parent, parent_mac) = (link.iface.index, link.iface.mac);
        let name = device_name(key.0, parent);
        let mac = virtual_mac(key.0);
        let sys_class_net = self.opts.sys_class_net.clone();
        let made = self
            .rtnetlink()
            .and_then(|nl| nl.add_macvlan(&name, parent, mac, &sys_class_net));
        let p = self.frames.get_mut(key).expect("checked above");
        match made {
            Ok(()) => {
                info!(ip = %key.0, interface = %key.1, device = %name, %mac, "virtual MAC device up");
                self.devices.insert(key.clone(), name);
                if p.mac != mac {
                    p.mac = mac;
                    p.frames = announcement_frames(mac, key.0);
                }
            }
            Err(e) => {
                error!(ip = %key.0, interface = %key.1, device = %name, error = %e,
                    "cannot make the virtual MAC device; answering from the interface's MAC");
                p.mac = parent_mac;
                p.frames = announcement_frames(parent_mac, key.0);
            }
        }
    }

    fn detach_device(&mut self, key: &Key) {
        let Some(name) = self.devices.remove(key) else {
            return;
        };
        match self.rtnetlink().and_then(|nl| nl.delete_link(&name)) {
            Ok(()) => {
                debug!(ip = %key.0, interface = %key.1, device = %name, "virtual MAC device removed")
            }
            Err(e) => {
                warn!(ip = %key.0, interface = %key.1, device = %name, error = %e, "cannot remove the virtual MAC device")
            }
        }
    }

    fn answer_for(&mut self, key: &Key) {
        if let (Some(link), Some(p)) = (self.links.get_mut(&key.1), self.frames.get(key)) {
            link.own(
                key.0,
                Answering {
                    counters: p.counters.clone(),
                    mac: p.mac,
                },
            );
        }
    }

    fn update_ownership(&mut self, owned: BTreeSet<Key>, now: Instant) {
        let change = self.ownership.update(owned, now);
        for key @ (ip, iface) in &change.lost {
            if self.devices.contains_key(key) {
                // The new owner answers with the same MAC (module documentation).
                if let Some(link) = self.links.get_mut(iface) {
                    link.disown(*ip);
                }
            }
            info!(%ip, interface = %iface, "L2: no longer announcing");
        }
        self.release(&change.released);
        for key @ (ip, iface) in &change.resumed {
            self.attach_device(key);
            self.answer_for(key);
            info!(%ip, interface = %iface, "L2: announcing (again, still answering)");
        }
        for key @ (ip, iface) in &change.gained {
            self.attach_device(key);
            self.answer_for(key);
            info!(%ip, interface = %iface, "L2: announcing");
        }
        // Also without a change here: the plan may have added a Service to an owned address.
        self.publish_announced();
        if !change.gained.is_empty() || !change.resumed.is_empty() {
            // Takeover: the first announcement goes out now, not at the next loop turn.
            self.send_due(now);
        }
    }

    /// Sets `speaker_announced`: every Service of every owned pair.
    fn publish_announced(&self) {
        let mut interfaces: BTreeMap<IpAddr, Vec<&str>> = BTreeMap::new();
        for (ip, iface) in self.ownership.owned() {
            interfaces.entry(*ip).or_default().push(iface);
        }
        let announced: Vec<Announced> = self
            .plan
            .l2
            .iter()
            .flat_map(|d| {
                let on = interfaces.get(&d.ip).map(Vec::as_slice).unwrap_or_default();
                on.iter().map(move |iface| Announced {
                    service: d.service.clone(),
                    ip: d.ip,
                    interface: (*iface).to_owned(),
                })
            })
            .collect();
        self.opts
            .metrics
            .set_announced(Protocol::Layer2, &self.opts.node, &announced);
    }

    fn release(&mut self, keys: &[Key]) {
        for key @ (ip, iface) in keys {
            if let Some(link) = self.links.get_mut(iface) {
                link.disown(*ip);
            }
            self.detach_device(key);
            info!(%ip, interface = %iface, "L2: no longer answering");
        }
    }

    /// Sends the announcements due at `now` and ends the release graces that are over.
    pub fn send_due(&mut self, now: Instant) {
        let released = self.ownership.due_releases(now);
        self.release(&released);
        for key in self.ownership.due(now) {
            let (Some(link), Some(p)) = (self.links.get(&key.1), self.frames.get(&key)) else {
                continue;
            };
            for frame in &p.frames {
                match link.send(frame) {
                    Ok(()) => p.counters.gratuitous(),
                    // The schedule sends again shortly; a full queue is not worth more.
                    Err(e) => {
                        warn!(ip = %key.0, interface = %key.1, error = %e, "sending an announcement")
                    }
                }
            }
            debug!(ip = %key.0, interface = %key.1, "announced");
        }
    }

    /// When [`L2Adapter::send_due`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.ownership.next_deadline()
    }

    /// Stops answering and announcing everything now, without the release grace; the sockets
    /// stay open (standby).
    pub fn release_all_now(&mut self) {
        let all = self.ownership.release_now(|_| true);
        if !all.is_empty() {
            info!(count = all.len(), "L2: letting go of every address now");
        }
        self.release(&all);
        self.publish_announced();
    }

    /// Announces every owned address again, as on a takeover (see
    /// [`crate::membership::Membership::stalls`]).
    pub fn announce_again(&mut self, now: Instant) {
        if !self.ownership.owned().is_empty() {
            info!(
                count = self.ownership.owned().len(),
                "L2: this node was stalled; announcing its addresses again"
            );
            self.ownership.announce_again(now);
        }
    }

    /// Stops answering for `ips` now, without the release grace: their owner never stopped
    /// answering (it was only taken as down by the fast path), so a grace would be two
    /// answerers for nothing.
    pub fn release_now_of(&mut self, ips: &BTreeSet<IpAddr>) {
        let these = self.ownership.release_now(|(ip, _)| ips.contains(ip));
        if !these.is_empty() {
            info!(
                count = these.len(),
                "L2: handing back at once to an owner that never stopped"
            );
            self.release(&these);
            self.publish_announced();
        }
    }

    /// Stops answering and announcing everything and closes the sockets.
    pub fn shutdown(&mut self) {
        let all = self.ownership.release_now(|_| true);
        self.release(&all);
        self.links.clear();
        self.frames.clear();
    }
}
