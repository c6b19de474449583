//! Failover as a client sees it: a stream of sequence-numbered UDP probes to a VIP's echo
//! (`ferrolb-lab-echo probe`, run in a client namespace), each answer naming the node that
//! answered. The analysis here is pure: it reads the probe's output.
//!
//! Output format: `SENT <count> <start unix ns> <interval us>`, then one `A <seq> <sent unix
//! ns> <received unix ns> <node>` per answer.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::netns::NetNs;

/// One answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub seq: u64,
    pub sent_ns: u128,
    pub recv_ns: u128,
    pub node: String,
}

/// A whole stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeLog {
    pub sent: u64,
    pub start_ns: u128,
    pub interval: Duration,
    /// Sorted by sequence number.
    pub answers: Vec<Answer>,
}

/// A move of the answering node, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failover {
    pub from: String,
    pub to: String,
    /// From the last answer of `from` to the first answer of `to` (both as received).
    pub outage: Duration,
    /// Probes sent in between that got no answer.
    pub lost: u64,
}

fn field<T: std::str::FromStr>(w: Option<&str>, line: &str) -> Result<T, String> {
    w.and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("bad probe line {line:?}"))
}

impl ProbeLog {
    pub fn parse(text: &str) -> Result<ProbeLog, String> {
        let mut log = ProbeLog::default();
        let mut seen_sent = false;
        for line in text.lines() {
            let mut w = line.split_whitespace();
            match w.next() {
                Some("SENT") => {
                    log.sent = field(w.next(), line)?;
                    log.start_ns = field(w.next(), line)?;
                    log.interval = Duration::from_micros(field(w.next(), line)?);
                    seen_sent = true;
                }
                Some("A") => log.answers.push(Answer {
                    seq: field(w.next(), line)?,
                    sent_ns: field(w.next(), line)?,
                    recv_ns: field(w.next(), line)?,
                    node: field(w.next(), line)?,
                }),
                _ => {}
            }
        }
        if !seen_sent {
            return Err(format!("no SENT line in the probe output:\n{text}"));
        }
        log.answers.sort_by_key(|a| a.seq);
        log.answers.dedup_by_key(|a| a.seq);
        Ok(log)
    }

    /// Every change of the answering node, in sending order.
    pub fn failovers(&self) -> Vec<Failover> {
        let mut out = Vec::new();
        for w in self.answers.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            if a.node != b.node {
                out.push(Failover {
                    from: a.node.clone(),
                    to: b.node.clone(),
                    outage: ns(b.recv_ns.saturating_sub(a.recv_ns)),
                    lost: b.seq - a.seq - 1,
                });
            }
        }
        out
    }

    /// The move away from `old` (its last answer to the next other node's first).
    pub fn failover_from(&self, old: &str) -> Option<Failover> {
        let last = self.answers.iter().rposition(|a| a.node == old)?;
        let next = self.answers[last + 1..].iter().find(|a| a.node != old)?;
        let last = &self.answers[last];
        Some(Failover {
            from: old.to_owned(),
            to: next.node.clone(),
            outage: ns(next.recv_ns.saturating_sub(last.recv_ns)),
            lost: next.seq - last.seq - 1,
        })
    }

    /// Probes due in `[from_ns, to_ns)` (by the stream's fixed schedule) that got no answer.
    /// Counted by sequence number, so a send that ran late on a loaded machine still counts
    /// in the window it was due in.
    pub fn lost_between(&self, from_ns: u128, to_ns: u128) -> u64 {
        let step = self.interval.as_nanos().max(1);
        let first = from_ns.saturating_sub(self.start_ns).div_ceil(step) as u64;
        let last = (to_ns.saturating_sub(self.start_ns).div_ceil(step) as u64).min(self.sent);
        let answered = self
            .answers
            .iter()
            .filter(|a| a.seq >= first && a.seq < last)
            .count() as u64;
        last.saturating_sub(first).saturating_sub(answered)
    }

    /// The longest time without any answer among probes sent in `[from_ns, to_ns)`.
    pub fn longest_silence(&self, from_ns: u128, to_ns: u128) -> Duration {
        let recv: Vec<u128> = self
            .answers
            .iter()
            .filter(|a| a.sent_ns >= from_ns && a.sent_ns < to_ns)
            .map(|a| a.recv_ns)
            .collect();
        recv.windows(2)
            .map(|w| ns(w[1].saturating_sub(w[0])))
            .max()
            .unwrap_or_default()
    }

    /// The node that answered last.
    pub fn last_node(&self) -> Option<&str> {
        self.answers.last().map(|a| a.node.as_str())
    }
}

fn ns(n: u128) -> Duration {
    Duration::from_nanos(n.min(u64::MAX as u128) as u64)
}

/// Unix time in ns, the probe's clock.
pub fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A probe stream running in a client namespace.
#[derive(Debug)]
pub struct ProbeStream {
    child: Option<std::process::Child>,
}

impl ProbeStream {
    /// Starts `echo probe` from `ns` to `vip`, port 7, every `interval` for `duration`.
    pub fn start(
        ns: &NetNs,
        echo: &Path,
        vip: &str,
        interval: Duration,
        duration: Duration,
    ) -> Result<ProbeStream, String> {
        let addr = if vip.contains(':') {
            format!("[{vip}]:7")
        } else {
            format!("{vip}:7")
        };
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(echo)
            .args([
                "probe",
                &addr,
                &interval.as_micros().to_string(),
                &duration.as_millis().to_string(),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", echo.display()))?;
        Ok(ProbeStream { child: Some(child) })
    }

    /// Waits for the end of the stream (it ends by itself) and parses it.
    pub fn finish(mut self) -> Result<ProbeLog, String> {
        let child = self.child.take().ok_or("already finished")?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "probe failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        ProbeLog::parse(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Drop for ProbeStream {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Percentile `p` (0-100) of sorted samples, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u128 = 1_000_000;

    fn stream(answers: &[(u64, &str)], sent: u64) -> ProbeLog {
        // Probes every 2 ms from t=0, answered 1 ms after sending.
        let mut text = format!("SENT {sent} 0 2000\n");
        for (seq, node) in answers {
            let s = *seq as u128 * 2 * MS;
            text.push_str(&format!("A {seq} {s} {} {node}\n", s + MS));
        }
        ProbeLog::parse(&text).unwrap()
    }

    #[test]
    fn a_failover_is_the_gap_between_the_old_and_the_new_node() {
        let mut answers: Vec<(u64, &str)> = (0..10).map(|s| (s, "node-1")).collect();
        answers.extend((60..70).map(|s| (s, "node-2")));
        let log = stream(&answers, 70);
        let f = log.failover_from("node-1").unwrap();
        assert_eq!(f.to, "node-2");
        assert_eq!(f.outage, Duration::from_millis(102));
        assert_eq!(f.lost, 50);
        assert_eq!(log.failovers(), vec![f]);
        assert_eq!(log.lost_between(0, 140 * MS), 50);
        assert_eq!(log.lost_between(0, 20 * MS), 0);
        assert_eq!(log.longest_silence(0, 140 * MS), Duration::from_millis(102));
        assert_eq!(log.last_node(), Some("node-2"));
    }

    #[test]
    fn a_steady_stream_has_no_failover_and_bad_output_is_an_error() {
        let log = stream(&(0..100).map(|s| (s, "node-3")).collect::<Vec<_>>(), 100);
        assert!(log.failovers().is_empty());
        assert_eq!(log.failover_from("node-3"), None);
        assert_eq!(log.lost_between(0, u128::MAX), 0);
        assert!(ProbeLog::parse("A 1 2 3 x\n").is_err(), "no SENT line");
        assert!(ProbeLog::parse("SENT x 0 2000\n").is_err());
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&s, 99.0), Duration::from_millis(99));
    }
}
