//! BIRD 2 (Debian `bird2`) as a test peer or a reference sender, in a network namespace.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{run, wait_for};

pub const BIRD: &str = "/usr/sbin/bird";
pub const BIRDC: &str = "/usr/sbin/birdc";

/// A running BIRD, killed by PID on drop.
#[derive(Debug)]
pub struct Bird {
    dir: PathBuf,
    child: Option<Child>,
}

impl Bird {
    /// Starts `bird -f` in `netns` with `config`; waits until birdc answers.
    pub fn start(netns: &str, name: &str, config: &str) -> Result<Bird, String> {
        let dir = PathBuf::from("/tmp/ferrolb-lab").join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        fs::write(dir.join("bird.conf"), config).map_err(|e| e.to_string())?;
        let log = fs::File::create(dir.join("bird.out")).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", netns, BIRD, "-f", "-c"])
            .arg(dir.join("bird.conf"))
            .arg("-s")
            .arg(dir.join("bird.ctl"))
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("bird: {e}"))?;
        let bird = Bird {
            dir,
            child: Some(child),
        };
        wait_for(Duration::from_secs(30), Duration::from_millis(20), || {
            bird.birdc("show status")
                .ok()
                .filter(|s| s.contains("Daemon is up"))
        })
        .ok_or_else(|| format!("bird did not come up: {}", bird.log()))?;
        Ok(bird)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("bird.out")).unwrap_or_default()
    }

    pub fn birdc(&self, cmd: &str) -> Result<String, String> {
        let ctl = self.dir.join("bird.ctl").to_string_lossy().into_owned();
        let mut args = vec!["-s", &ctl];
        args.extend(cmd.split_whitespace());
        run(BIRDC, &args)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Kills a BIRD of instance `name` left behind by a child that was killed (by the PID in its
/// pid file, and only if that process still is bird).
pub fn kill_leftovers(name: &str) {
    let dir = PathBuf::from("/tmp/ferrolb-lab").join(name);
    let Ok(pid) = fs::read_to_string(dir.join("bird.pid")) else {
        return;
    };
    let pid = pid.trim();
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() == "bird" {
        let _ = run("kill", &["-9", pid]);
    }
}
