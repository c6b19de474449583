//! Who answers an address on the segment, seen from the client: the client asks (a broadcast
//! ARP request, a Neighbor Solicitation to the solicited-node group, through a packet socket)
//! and a `tcpdump` reads every ARP reply and Neighbor Advertisement sent to the client's MAC.
//! Every MAC that answers counts, so two nodes answering for one address are seen, which the
//! client's neighbour table would hide.

use crate::lab::l2::{client_arp_request, client_solicitation, ifindex, CLIENT_MAC};
use ferrolb_speaker::l2::sys::PacketSocket;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Replies read so far: when read, for which address, from which MAC.
type Seen = Arc<Mutex<Vec<(Instant, IpAddr, String)>>>;

pub struct Answers {
    tcpdump: Child,
    seen: Seen,
    socket: PacketSocket,
}

impl Answers {
    /// Starts the capture on `eth0` of the current namespace (the client's) and opens the
    /// socket the questions go out of.
    pub fn start() -> Result<Answers, String> {
        let client_mac = crate::lab::l2::mac_text(CLIENT_MAC);
        let mut tcpdump = Command::new("tcpdump")
            .args(["-l", "-n", "-e", "--immediate-mode", "-i", "eth0"])
            .args(["ether", "dst", &client_mac, "and", "(arp", "or", "icmp6)"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("tcpdump: {e}"))?;
        let stdout = tcpdump.stdout.take().ok_or("tcpdump: no stdout")?;
        let stderr = tcpdump.stderr.take().ok_or("tcpdump: no stderr")?;
        let seen: Seen = Arc::default();
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((ip, mac)) = parse_reply(&line) {
                    let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                    s.push((Instant::now(), ip, mac));
                    // Only recent replies matter; the list stays short in a long run.
                    if s.len() > 100_000 {
                        s.drain(..50_000);
                    }
                }
            }
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = ready_tx.send(());
                }
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = tcpdump.kill();
            let _ = tcpdump.wait();
            return Err("tcpdump did not start listening within 10 s".into());
        }
        let socket =
            PacketSocket::open(ifindex("eth0")?).map_err(|e| format!("packet socket: {e}"))?;
        Ok(Answers {
            tcpdump,
            seen,
            socket,
        })
    }

    /// Asks for every address of `ips` once and waits `wait` for the replies: the MACs that
    /// answered each one (an address nobody answered has an empty set).
    pub async fn ask(
        &self,
        ips: &BTreeSet<IpAddr>,
        wait: Duration,
    ) -> BTreeMap<IpAddr, BTreeSet<String>> {
        let asked = Instant::now();
        for ip in ips {
            let frame = match ip {
                IpAddr::V4(v4) => client_arp_request(*v4),
                IpAddr::V6(v6) => client_solicitation(*v6, false),
            };
            // A full device queue loses a question; the address then reads as unanswered
            // and the check says so, with the address.
            for _ in 0..10 {
                match self.socket.send(&frame) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    _ => break,
                }
            }
        }
        tokio::time::sleep(wait).await;
        let mut out: BTreeMap<IpAddr, BTreeSet<String>> =
            ips.iter().map(|ip| (*ip, BTreeSet::new())).collect();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for (at, ip, mac) in seen.iter().rev() {
            if *at < asked {
                break;
            }
            if let Some(macs) = out.get_mut(ip) {
                macs.insert(mac.clone());
            }
        }
        out
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        let _ = self.tcpdump.kill();
        let _ = self.tcpdump.wait();
    }
}

/// An answer in a `tcpdump -n -e` line: an ARP reply (`Reply IP is-at MAC`) or a Neighbor
/// Advertisement (`neighbor advertisement, tgt is IP`, from the frame's source MAC).
fn parse_reply(line: &str) -> Option<(IpAddr, String)> {
    if let Some(rest) = line.split("Reply ").nth(1) {
        let mut w = rest.split_whitespace();
        let ip = w.next()?.parse().ok()?;
        (w.next()? == "is-at").then_some(())?;
        let mac = w.next()?.trim_end_matches(',');
        return Some((ip, mac.to_owned()));
    }
    let rest = line.split("neighbor advertisement, tgt is ").nth(1)?;
    let ip = rest.split(',').next()?.trim().parse().ok()?;
    // `HH:MM:SS.frac SRC > DST, ...`
    let source = line.split_whitespace().nth(1)?;
    Some((ip, source.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::parse_reply;

    #[test]
    fn reads_arp_replies_and_neighbor_advertisements() {
        let arp = "18:50:01.123456 02:00:00:00:00:01 > 02:00:00:00:00:64, ethertype ARP (0x0806), length 42: Reply 192.0.2.70 is-at 02:00:00:00:00:01, length 28";
        assert_eq!(
            parse_reply(arp),
            Some(("192.0.2.70".parse().unwrap(), "02:00:00:00:00:01".into()))
        );
        let na = "18:50:01.123456 02:00:00:00:00:02 > 02:00:00:00:00:64, ethertype IPv6 (0x86dd), length 86: 2001:db8::70 > 2001:db8::100: ICMP6, neighbor advertisement, tgt is 2001:db8::1:5, length 32";
        assert_eq!(
            parse_reply(na),
            Some(("2001:db8::1:5".parse().unwrap(), "02:00:00:00:00:02".into()))
        );
        let request = "18:50:01.123456 02:00:00:00:00:64 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 192.0.2.70 tell 192.0.2.100, length 28";
        assert_eq!(parse_reply(request), None);
    }
}
