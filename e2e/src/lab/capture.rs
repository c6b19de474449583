//! Packet captures with tcpdump in a namespace, read back with tshark.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{run, wait_for};

/// A running `tcpdump -w`; stopped with SIGINT (so the file is complete) on [`Capture::stop`]
/// or drop.
#[derive(Debug)]
pub struct Capture {
    path: PathBuf,
    child: Option<Child>,
}

impl Capture {
    /// Captures `filter` on `ifname` in `netns` into `path`.
    pub fn start(netns: &str, ifname: &str, filter: &str, path: &Path) -> Result<Capture, String> {
        let _ = std::fs::remove_file(path);
        let mut args = vec![
            "netns",
            "exec",
            netns,
            "tcpdump",
            "-i",
            ifname,
            "--immediate-mode",
            "-B",
            "65536",
            "-U",
            "-w",
        ];
        let p = path.to_string_lossy().into_owned();
        args.push(&p);
        args.extend(filter.split_whitespace());
        let log = std::fs::File::create(path.with_extension("log")).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("tcpdump: {e}"))?;
        wait_for(Duration::from_secs(10), Duration::from_millis(10), || {
            path.exists().then_some(())
        })
        .ok_or("tcpdump did not start")?;
        // tcpdump creates the file just before the capture is armed.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Capture {
            path: path.to_owned(),
            child: Some(child),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops tcpdump and waits (bounded) for it to write the file out.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = run("kill", &["-INT", &c.id().to_string()]);
            let done = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
                c.try_wait().ok().flatten()
            });
            if done.is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// `tshark -r <file> -T fields -e ...` lines, fields tab-separated.
    pub fn fields(
        &self,
        display_filter: &str,
        fields: &[&str],
    ) -> Result<Vec<Vec<String>>, String> {
        self.tshark(display_filter, fields, true)
    }

    /// Like [`Capture::fields`] with TCP reassembly off: one row per segment, so
    /// `tcp.payload` is that segment's bytes.
    pub fn fields_raw(
        &self,
        display_filter: &str,
        fields: &[&str],
    ) -> Result<Vec<Vec<String>>, String> {
        self.tshark(display_filter, fields, false)
    }

    fn tshark(
        &self,
        display_filter: &str,
        fields: &[&str],
        reassemble: bool,
    ) -> Result<Vec<Vec<String>>, String> {
        let p = self.path.to_string_lossy().into_owned();
        let mut args = vec!["-r", &p, "-T", "fields"];
        if !reassemble {
            args.extend(["-o", "tcp.desegment_tcp_streams:FALSE"]);
        }
        if !display_filter.is_empty() {
            args.push("-Y");
            args.push(display_filter);
        }
        for f in fields {
            args.push("-e");
            args.push(f);
        }
        let out = run("tshark", &args)?;
        Ok(out
            .lines()
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}
