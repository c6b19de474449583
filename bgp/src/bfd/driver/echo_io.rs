//! The Echo function's I/O for one session and the receivers shared per interface: packet
//! sockets, because an echo packet is addressed to ourselves (the routing table would keep it
//! on the host) and comes back with our own source address (the IP layer drops it as a
//! martian). Where the peer is comes from the neighbour table; whether this node loops the
//! peer's echo packets back, from the interface's forwarding switch.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, Weak};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::{debug, info_span, Instrument};

use super::{Demux, SessionMsg};
use crate::bfd::echo::{self, ECHO_PORT};
use crate::sockopt;

/// What one session needs to send its echo packets.
pub(super) struct EchoIo {
    sock: OwnedFd,
    ifindex: u32,
    device: String,
    peer: Ipv4Addr,
    mac: [u8; 6],
    local: Ipv4Addr,
    disc: u32,
    ip_id: u16,
}

/// Echo for a session: the sender, the interface (to receive on) and whether this node
/// forwards on it (so the peer's echo packets come back and we may ask for them).
pub(super) struct EchoSetup {
    pub(super) io: EchoIo,
    pub(super) ifindex: u32,
    pub(super) loops_back: bool,
}

/// Sets echo up for the session `disc` with the directly connected `peer`, from `local`.
pub(super) fn setup(peer: Ipv4Addr, local: Ipv4Addr, disc: u32) -> Result<EchoSetup, String> {
    let arp =
        std::fs::read_to_string("/proc/net/arp").map_err(|e| format!("/proc/net/arp: {e}"))?;
    let (mac, device) = echo::neighbour(&arp, peer)
        .ok_or_else(|| format!("no neighbour entry for {peer}: not directly connected?"))?;
    let ifindex = sockopt::if_index(&device).map_err(|e| format!("{device}: {e}"))?;
    let sock = sockopt::ipv4_packet_socket(ifindex, None).map_err(|e| format!("{device}: {e}"))?;
    let forwarding =
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{device}/forwarding"))
            .is_ok_and(|v| v.trim() == "1");
    Ok(EchoSetup {
        io: EchoIo {
            sock,
            ifindex,
            device: device.clone(),
            peer,
            mac,
            local,
            disc,
            ip_id: disc as u16,
        },
        ifindex,
        loops_back: forwarding,
    })
}

impl EchoIo {
    /// Reads the peer's MAC address again (a router replaced, or restarted with a new MAC,
    /// keeps its address): done each time the session comes up, before echo starts.
    pub(super) fn refresh(&mut self) {
        let Ok(arp) = std::fs::read_to_string("/proc/net/arp") else {
            return;
        };
        if let Some(mac) = echo::neighbour_on(&arp, self.peer, &self.device) {
            if mac != self.mac {
                debug!(device = %self.device, "the peer's MAC address changed");
                self.mac = mac;
            }
        }
    }

    pub(super) fn send(&mut self, seq: u64) -> io::Result<()> {
        self.ip_id = self.ip_id.wrapping_add(1);
        let p = echo::echo_packet(self.local, self.disc, seq, self.ip_id);
        sockopt::send_ipv4_to(&self.sock, self.ifindex, self.mac, &p)
    }
}

/// Receivers of returned echo packets, one per interface, started by the first session that
/// needs one.
#[derive(Default)]
pub(super) struct EchoReceivers {
    tasks: Mutex<HashMap<u32, JoinHandle<()>>>,
}

impl Drop for EchoReceivers {
    fn drop(&mut self) {
        let t = self.tasks.get_mut().unwrap_or_else(|e| e.into_inner());
        for task in t.values() {
            task.abort();
        }
    }
}

impl EchoReceivers {
    pub(super) fn ensure(&self, ifindex: u32, demux: Weak<Mutex<Demux>>) -> io::Result<()> {
        let mut t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if t.get(&ifindex).is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        let program = sockopt::udp_port_ttl_filter(ECHO_PORT, 254);
        let fd = sockopt::ipv4_packet_socket(ifindex, Some(&program))?;
        // tokio drives the packet socket as it does any datagram socket.
        let sock = UdpSocket::from_std(std::net::UdpSocket::from(fd))?;
        let span = info_span!("bfd_echo_rx", ifindex);
        t.insert(ifindex, tokio::spawn(receive(sock, demux).instrument(span)));
        Ok(())
    }
}

async fn receive(sock: UdpSocket, demux: Weak<Mutex<Demux>>) {
    let mut buf = [0u8; 128];
    loop {
        let n = match sock.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                debug!(error = %e, "receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(demux) = demux.upgrade() else { return };
        let packet = &buf[..n];
        let Some(src) = packet
            .get(12..16)
            .map(|a| Ipv4Addr::new(a[0], a[1], a[2], a[3]))
        else {
            continue;
        };
        let Some(back) = echo::returned(packet, src) else {
            continue;
        };
        let d = demux.lock().unwrap_or_else(|e| e.into_inner());
        match d.by_disc.get(&back.discriminator) {
            Some(e) if e.echo_local == Some(src) => {
                let _ = e.tx.send(SessionMsg::EchoReturned);
            }
            _ => debug!(%src, disc = back.discriminator, "echo packet of no session"),
        }
    }
}
