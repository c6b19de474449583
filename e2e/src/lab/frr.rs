//! FRR (zebra + bgpd, optionally bfdd) as a test peer inside a network namespace, with its own pathspace,
//! queried through `vtysh ... json`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{run, wait_for};

pub const ZEBRA: &str = "/usr/lib/frr/zebra";
pub const BGPD: &str = "/usr/lib/frr/bgpd";
pub const BFDD: &str = "/usr/lib/frr/bfdd";
pub const VTYSH: &str = "/usr/bin/vtysh";

/// Which daemons run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrrDaemons {
    pub zebra: bool,
}

/// A running FRR instance; its daemons are killed by PID on drop.
#[derive(Debug)]
pub struct Frr {
    name: String,
    netns: String,
    dir: PathBuf,
    zebra: Option<Child>,
    bgpd: Option<Child>,
    /// False for a router that needs only zebra (static and connected routes).
    with_bgpd: bool,
    bfdd: Option<Child>,
}

/// Where an instance keeps its files; deterministic so a parent process can clean up after
/// a child that started FRR.
pub fn lab_dir(name: &str) -> PathBuf {
    Path::new("/tmp/ferrolb-lab").join(name)
}

fn chown_frr(path: &Path) {
    let _ = run("chown", &["-R", "frr:frr", &path.to_string_lossy()]);
}

impl Frr {
    /// Starts zebra and bgpd in `netns` with `config` (an frr.conf) and waits until bgpd
    /// answers vtysh.
    pub fn start(netns: &str, name: &str, config: &str) -> Result<Frr, String> {
        Self::start_with(netns, name, config, true)
    }

    /// Starts zebra alone (a router with static and connected routes) and waits until it
    /// answers vtysh.
    pub fn start_zebra(netns: &str, name: &str, config: &str) -> Result<Frr, String> {
        Self::start_with(netns, name, config, false)
    }

    fn start_with(netns: &str, name: &str, config: &str, with_bgpd: bool) -> Result<Frr, String> {
        let dir = lab_dir(name);
        kill_leftovers(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        fs::write(dir.join("frr.conf"), config).map_err(|e| e.to_string())?;
        // vtysh and the daemons' -N pathspace look here.
        for d in [format!("/etc/frr/{name}"), format!("/var/run/frr/{name}")] {
            let _ = fs::create_dir_all(&d);
            chown_frr(Path::new(&d));
        }
        let _ = fs::write(format!("/etc/frr/{name}/vtysh.conf"), "");
        chown_frr(&dir);
        let mut frr = Frr {
            name: name.to_owned(),
            netns: netns.to_owned(),
            dir,
            zebra: None,
            bgpd: None,
            with_bgpd,
            bfdd: None,
        };
        frr.start_daemons()?;
        Ok(frr)
    }

    fn spawn(&self, binary: &str, daemon: &str) -> Result<Child, String> {
        let d = &self.dir;
        let log = fs::File::create(d.join(format!("{daemon}.out"))).map_err(|e| e.to_string())?;
        let conf = d.join("frr.conf");
        let pid = d.join(format!("{daemon}.pid"));
        let zserv = d.join("zserv.api");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, binary, "-N", &self.name]);
        if daemon == "bfdd" {
            // Its control socket, else shared by every instance on the host.
            cmd.arg("--bfdctl").arg(d.join("bfdd.sock"));
        }
        cmd.arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(&pid)
            .arg("--vty_socket")
            .arg(d)
            .arg("-z")
            .arg(&zserv)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{binary}: {e}"))
    }

    fn start_daemons(&mut self) -> Result<(), String> {
        let zebra = self.spawn(ZEBRA, "zebra")?;
        self.zebra = Some(zebra);
        let zserv = self.dir.join("zserv.api");
        wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
            zserv.exists().then_some(())
        })
        .ok_or("zebra did not create its zserv socket in 10 s")?;
        if !self.with_bgpd {
            let vty = self.dir.join("zebra.vty");
            wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
                (vty.exists() && self.vtysh("show version").is_ok()).then_some(())
            })
            .ok_or_else(|| format!("zebra did not answer in 10 s: {}", self.log("zebra")))?;
            return Ok(());
        }
        let bgpd = self.spawn(BGPD, "bgpd")?;
        self.bgpd = Some(bgpd);
        let vty = self.dir.join("bgpd.vty");
        wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
            (vty.exists() && self.vtysh("show version").is_ok()).then_some(())
        })
        .ok_or_else(|| format!("bgpd did not answer in 10 s: {}", self.log("bgpd")))?;
        Ok(())
    }

    /// PIDs of the running daemons (for a lab that outlives this process).
    pub fn pids(&self) -> Vec<u32> {
        [&self.zebra, &self.bgpd, &self.bfdd]
            .into_iter()
            .flatten()
            .map(Child::id)
            .collect()
    }

    /// Also starts bfdd (BFD for bgpd's `neighbor ... bfd`), with the same configuration, and
    /// waits until it answers vtysh.
    pub fn start_bfdd(&mut self) -> Result<(), String> {
        let bfdd = self.spawn(BFDD, "bfdd")?;
        self.bfdd = Some(bfdd);
        let vty = self.dir.join("bfdd.vty");
        wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
            (vty.exists() && self.vtysh("show bfd peers").is_ok()).then_some(())
        })
        .ok_or_else(|| format!("bfdd did not answer in 10 s: {}", self.log("bfdd")))?;
        Ok(())
    }

    /// A daemon's output so far (for failure messages).
    pub fn log(&self, daemon: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{daemon}.out"))).unwrap_or_default()
    }

    /// Runs vtysh commands (each one a `-c`), returns stdout.
    pub fn vtysh_many(&self, cmds: &[&str]) -> Result<String, String> {
        let dir = self.dir.to_string_lossy().into_owned();
        let mut args = vec!["--vty_socket", &dir];
        for c in cmds {
            args.push("-c");
            args.push(c);
        }
        run(VTYSH, &args)
    }

    pub fn vtysh(&self, cmd: &str) -> Result<String, String> {
        self.vtysh_many(&[cmd])
    }

    /// Runs a `... json` command and parses the answer.
    pub fn json(&self, cmd: &str) -> Result<Value, String> {
        let out = self.vtysh(cmd)?;
        serde_json::from_str(&out).map_err(|e| format!("{cmd}: {e}: {out}"))
    }

    /// Applies configuration lines under `configure terminal`.
    pub fn configure(&self, lines: &[&str]) -> Result<(), String> {
        let mut cmds = vec!["configure terminal"];
        cmds.extend_from_slice(lines);
        self.vtysh_many(&cmds).map(|_| ())
    }

    /// The neighbor's BGP state ("Established", "Active", ...).
    pub fn neighbor_state(&self, peer: &str) -> Option<String> {
        let v = self.json(&format!("show bgp neighbors {peer} json")).ok()?;
        v.get(peer)?.get("bgpState")?.as_str().map(str::to_owned)
    }

    /// Waits until the neighbor is in `state`.
    pub fn wait_state(&self, peer: &str, state: &str, limit: Duration) -> Result<(), String> {
        wait_for(limit, Duration::from_millis(50), || {
            (self.neighbor_state(peer).as_deref() == Some(state)).then_some(())
        })
        .ok_or_else(|| {
            format!(
                "neighbor {peer} not {state} within {limit:?} (now {:?})",
                self.neighbor_state(peer)
            )
        })
    }

    /// Number of prefixes received from `peer` in `afi` ("ipv4" / "ipv6") unicast.
    pub fn received_count(&self, afi: &str, peer: &str) -> Option<u64> {
        let v = self
            .json(&format!("show bgp {afi} unicast summary json"))
            .ok()?;
        v.get("peers")?.get(peer)?.get("pfxRcd")?.as_u64()
    }

    /// Waits until `count` prefixes are received from `peer`.
    pub fn wait_received(
        &self,
        afi: &str,
        peer: &str,
        count: u64,
        limit: Duration,
    ) -> Result<(), String> {
        wait_for(limit, Duration::from_millis(50), || {
            (self.received_count(afi, peer) == Some(count)).then_some(())
        })
        .ok_or_else(|| {
            format!(
                "{afi}: {count} prefixes from {peer} not reached in {limit:?} (now {:?})",
                self.received_count(afi, peer)
            )
        })
    }

    /// The first path of a prefix in the BGP table, as FRR's JSON shows it.
    pub fn path(&self, afi: &str, prefix: &str) -> Option<Value> {
        let v = self
            .json(&format!("show bgp {afi} unicast {prefix} json"))
            .ok()?;
        v.get("paths")?.get(0).cloned()
    }

    /// Kills bgpd and zebra (SIGKILL, by PID) — a crash as far as peers can tell.
    pub fn kill(&mut self) {
        for child in [self.bfdd.take(), self.bgpd.take(), self.zebra.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_file(self.dir.join("zserv.api"));
        let _ = fs::remove_file(self.dir.join("bgpd.vty"));
        let _ = fs::remove_file(self.dir.join("zebra.vty"));
        let _ = fs::remove_file(self.dir.join("bfdd.vty"));
    }

    /// Kills and starts the daemons again with the same configuration.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.start_daemons()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(format!("/etc/frr/{}", self.name));
        let _ = fs::remove_dir_all(format!("/var/run/frr/{}", self.name));
        // Keep the daemons' logs when a test fails, for the post-mortem.
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Kills daemons of instance `name` left behind by an aborted run (by the PIDs in their
/// pid files), so a crashed child never leaves FRR running.
pub fn kill_leftovers(name: &str) {
    let dir = lab_dir(name);
    for daemon in ["bfdd", "bgpd", "zebra"] {
        let Ok(pid) = fs::read_to_string(dir.join(format!("{daemon}.pid"))) else {
            continue;
        };
        let pid = pid.trim();
        // Only kill it if it still is that daemon.
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == daemon {
            let _ = run("kill", &["-9", pid]);
        }
    }
}
