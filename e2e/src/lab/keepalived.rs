//! keepalived (VRRPv3, the Debian package) on the L2 lab's nodes: the yardstick FerroLB's L2
//! failover is measured against, in the same harness and run.
//!
//! Each node runs one keepalived with two VRRP instances on `eth0`, one per VIP family, all
//! nodes `BACKUP` with priorities far apart (so the order of takeovers is known), and the
//! advertisement interval given (0.01 s is the shortest keepalived accepts). The master puts
//! the VIP on `eth0`; the lab's `arp_ignore=1` then makes only the master's kernel answer ARP
//! for it (the copy on `vips`, for the echo server, stays silent), and only the master has it
//! on `eth0` for Neighbor Discovery.

use super::l2::L2Lab;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const KEEPALIVED: &str = "/usr/sbin/keepalived";

/// Why keepalived tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    (!Path::new(KEEPALIVED).exists())
        .then(|| "needs keepalived (apt-get install -y keepalived)".to_string())
}

/// One keepalived in a node's namespace, in a process group of its own (it forks a VRRP
/// child: a hard kill must reach both, or the child's SIGTERM handler would resign politely).
pub struct Keepalived {
    child: Option<Child>,
    log_path: PathBuf,
}

/// The configuration of node `i`: priority `priority`, both VIPs, advert every `advert` s.
pub fn config(i: usize, priority: u8, advert: &str, vip4: &str, vip6: &str) -> String {
    format!(
        "global_defs {{\n  router_id node-{i}\n  vrrp_version 3\n}}\n\
         vrrp_instance v4 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  \
         priority {priority}\n  advert_int {advert}\n  virtual_ipaddress {{\n    {vip4}/32 dev eth0\n  }}\n}}\n\
         vrrp_instance v6 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 52\n  \
         priority {priority}\n  advert_int {advert}\n  virtual_ipaddress {{\n    {vip6}/128 dev eth0\n  }}\n}}\n"
    )
}

impl Keepalived {
    pub fn start(lab: &L2Lab, i: usize, conf: &str, dir: &Path) -> Result<Keepalived, String> {
        let conf_path = dir.join(format!("keepalived-{i}.conf"));
        fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let log_path = dir.join(format!("keepalived-{i}.log"));
        let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let pid = |what: &str| dir.join(format!("keepalived-{i}.{what}.pid"));
        let child = Command::new("ip")
            .args(["netns", "exec", lab.node(i).name(), KEEPALIVED])
            .args(["--dont-fork", "--log-console", "--log-detail", "--vrrp"])
            .arg(format!("--use-file={}", conf_path.display()))
            .arg(format!("--pid={}", pid("main").display()))
            .arg(format!("--vrrp_pid={}", pid("vrrp").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("{KEEPALIVED}: {e}"))?;
        Ok(Keepalived {
            child: Some(child),
            log_path,
        })
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits (bounded) until both instances are master here.
    pub fn wait_master(&self, limit: Duration) -> Result<(), String> {
        super::wait_for(limit, Duration::from_millis(20), || {
            let log = self.log();
            let masters = log.matches("Entering MASTER STATE").count();
            (masters >= 2).then_some(())
        })
        .ok_or_else(|| format!("not master within {limit:?}:\n{}", self.log()))
    }

    /// SIGKILL to the whole process group, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let group = format!("-{}", c.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.kill();
    }
}
