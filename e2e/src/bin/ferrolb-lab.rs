//! `ferrolb-lab up | demo | down`: the L2 lab by hand (as root). `e2e/lab/lab.sh` installs
//! what is missing, builds, and runs this.
//!
//! - `up`: three node namespaces on a bridge, a client on the segment, a router (FRR zebra)
//!   with a client behind it; on each node a UDP echo bound to the VIPs (answering with the
//!   node's name) and `ferrolb-speaker run` with membership among the speakers. Then asks both
//!   VIPs from both clients. Everything stays up after the command ends.
//! - `demo`: streams UDP probes (every 2 ms) to the VIPs, hard-kills the owner of the IPv4 VIP
//!   (SIGKILL of its speaker and its link down), shows the new owner and the measured gap;
//!   then brings the node back and shows that its return costs no probe.
//! - `down`: stops every process in the lab's namespaces by PID, deletes the namespaces and
//!   the files. Safe to run any number of times.
//!
//! - `soak --minutes N [--seed S]`: the soak (`ferrolb_e2e::soak`) in a lab of its own: N
//!   minutes of churn and failures against the real controller and speakers, invariants
//!   checked throughout; prints the report (also written to its logs directory) and fails on
//!   any violation. Removes its lab at the end.
//!
//! Options: `--tag T` (namespaces `flb-T-*`, default `lab`, `soak` for the soak), `--speaker PATH`,
//! `--controller PATH` and `--echo PATH` (default: next to this binary).

use ferrolb_e2e::lab::l2::{node_name, L2Lab, LabProcess};
use ferrolb_e2e::lab::l2_scenario::{
    ask, link_up, owners, start_echo, start_speaker, write_manifests, VIP4, VIP6,
};
use ferrolb_e2e::lab::probe::ProbeStream;
use ferrolb_e2e::lab::{frr, run, wait_for};
use ferrolb_e2e::soak::{self, SoakOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const NODES: usize = 3;

struct Options {
    tag: String,
    speaker: PathBuf,
    controller: PathBuf,
    echo: PathBuf,
    minutes: f64,
    seed: Option<u64>,
}

impl Options {
    fn state_dir(&self) -> PathBuf {
        PathBuf::from("/tmp/ferrolb-lab").join(format!("cmd-{}", self.tag))
    }

    fn config_dir(&self) -> PathBuf {
        self.state_dir().join("config")
    }

    fn namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = ["sw", "c", "r", "fc"]
            .iter()
            .map(|s| format!("flb-{}-{s}", self.tag))
            .collect();
        out.extend((1..=NODES).map(|i| format!("flb-{}-n{i}", self.tag)));
        out
    }
}

/// What `up` left running: the speakers' PIDs by node (to kill one in `demo`) and which nodes
/// are up.
#[derive(Default)]
struct State {
    speakers: BTreeMap<usize, u32>,
    down: Vec<usize>,
}

impl State {
    fn path(o: &Options) -> PathBuf {
        o.state_dir().join("state")
    }

    fn load(o: &Options) -> Result<State, String> {
        let text = std::fs::read_to_string(Self::path(o))
            .map_err(|_| "the lab is not up: run `ferrolb-lab up` first".to_string())?;
        let mut st = State::default();
        for line in text.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["speaker", i, pid] => {
                    let (Ok(i), Ok(pid)) = (i.parse(), pid.parse()) else {
                        continue;
                    };
                    st.speakers.insert(i, pid);
                }
                ["down", i] => st.down.extend(i.parse::<usize>().ok()),
                _ => {}
            }
        }
        Ok(st)
    }

    fn save(&self, o: &Options) -> Result<(), String> {
        let mut text = String::new();
        for (i, pid) in &self.speakers {
            text.push_str(&format!("speaker {i} {pid}\n"));
        }
        for i in &self.down {
            text.push_str(&format!("down {i}\n"));
        }
        std::fs::write(Self::path(o), text).map_err(|e| e.to_string())
    }

    fn alive(&self) -> Vec<usize> {
        (1..=NODES).filter(|i| !self.down.contains(i)).collect()
    }
}

/// Starts a process that outlives this command (its handle is forgotten, not dropped).
fn keep(p: LabProcess) -> u32 {
    let pid = p.pid().unwrap_or_default();
    std::mem::forget(p);
    pid
}

fn show_answers(lab: &L2Lab, o: &Options) {
    for vip in [VIP4, VIP6] {
        for (who, ns) in [
            ("client on the segment", &lab.client),
            ("client behind the router", lab.far_client()),
        ] {
            let answer = ask(ns, &o.echo, vip).unwrap_or_else(|e| format!("no answer ({e})"));
            println!("  {vip:<15} from the {who:<25} answered by {answer}");
        }
    }
}

fn up(o: &Options) -> Result<(), String> {
    down(o, true)?;
    for bin in [&o.speaker, &o.echo] {
        if !bin.exists() {
            return Err(format!(
                "{} is missing: build it first (e2e/lab/lab.sh does)",
                bin.display()
            ));
        }
    }
    let logs = o.state_dir().join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(o.config_dir()).map_err(|e| e.to_string())?;
    println!("Building the topology: flb-{0}-n1..n{NODES} (nodes), flb-{0}-c (client), flb-{0}-r (router, FRR zebra), flb-{0}-fc (client behind the router), flb-{0}-sw (bridge)", o.tag);
    let lab = L2Lab::with_router(&o.tag, NODES)?;
    lab.add_vip(&format!("{VIP4}/32"))?;
    lab.add_vip(&format!("{VIP6}/128"))?;
    let all: Vec<usize> = (1..=NODES).collect();
    write_manifests(&o.config_dir(), &all)?;
    let mut state = State::default();
    let mut echoes = Vec::new();
    let mut speakers = BTreeMap::new();
    for &i in &all {
        echoes.push(start_echo(&lab, &o.echo, i, &logs)?);
        speakers.insert(
            i,
            start_speaker(&lab, &o.speaker, &o.config_dir(), i, &logs, &[])?,
        );
    }
    let owner = owners(&o.speaker, &o.config_dir(), &all)?;
    for (vip, i) in &owner {
        speakers[i].wait_log(&format!("L2: announcing ip={vip}"), Duration::from_secs(10))?;
    }
    println!("Speakers running on every node; the Service's VIPs {VIP4} and {VIP6}:");
    show_answers(&lab, o);
    for (i, p) in speakers {
        state.speakers.insert(i, keep(p));
    }
    for p in echoes {
        keep(p);
    }
    state.save(o)?;
    // Namespaces and zebra stay: `down` removes them by name and PID.
    std::mem::forget(lab);
    println!(
        "Lab up. Logs: {}. Next: `ferrolb-lab demo`, and `ferrolb-lab down` to remove it.",
        logs.display()
    );
    Ok(())
}

fn kill_speaker(pid: u32) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() == "ferrolb-speaker" {
        let _ = run("kill", &["-KILL", &pid.to_string()]);
    }
}

fn demo(o: &Options) -> Result<(), String> {
    let mut state = State::load(o)?;
    let lab = L2Lab::existing(&o.tag, NODES, true)?;
    let logs = o.state_dir().join("logs");
    let alive = state.alive();
    if alive.len() < 2 {
        return Err("fewer than two nodes up: run `ferrolb-lab up` again".into());
    }
    let owner = owners(&o.speaker, &o.config_dir(), &alive)?;
    println!("Who answers now:");
    show_answers(&lab, o);
    // The owners of both VIPs die at once (one node or two).
    let mut victims: Vec<usize> = owner.values().copied().collect();
    victims.sort();
    victims.dedup();
    if victims.len() >= alive.len() {
        return Err("no node would be left to take over".into());
    }
    let probe = |ns, vip, ms| {
        ProbeStream::start(
            ns,
            &o.echo,
            vip,
            Duration::from_millis(2),
            Duration::from_millis(ms),
        )
    };
    let streams = |ms| -> Result<Vec<(String, &str, ProbeStream)>, String> {
        let mut out = Vec::new();
        for vip in [VIP4, VIP6] {
            for (who, ns) in [
                ("client on the segment", &lab.client),
                ("client behind the router", lab.far_client()),
            ] {
                out.push((format!("{vip} from the {who}"), vip, probe(ns, vip, ms)?));
            }
        }
        Ok(out)
    };
    let running = streams(2000)?;
    std::thread::sleep(Duration::from_millis(700));
    let names: Vec<String> = victims.iter().map(|&i| node_name(i)).collect();
    println!(
        "\nHard kill of {} (owning the VIPs): SIGKILL of the speaker and the link down; probes every 2 ms...",
        names.join(" and ")
    );
    for &v in &victims {
        kill_speaker(state.speakers[&v]);
        lab.node(v).ip(&["link", "set", "eth0", "down"])?;
        state.down.push(v);
    }
    state.save(o)?;
    for (what, vip, s) in running {
        let log = s.finish()?;
        let old = node_name(owner[vip]);
        match log.failover_from(&old) {
            Some(f) => println!(
                "  {what:<50} {} -> {}: {:.0} ms without answers ({} of {} probes lost)",
                f.from,
                f.to,
                f.outage.as_secs_f64() * 1000.0,
                f.lost,
                log.sent
            ),
            None => println!(
                "  {what:<50} no move seen; last answer from {}",
                log.last_node().unwrap_or("nobody")
            ),
        }
    }
    println!("After the failover:");
    show_answers(&lab, o);

    println!(
        "\n{} back (link up, speaker restarted): stands by for the rejoin hold-down (3 s), then takes its VIPs back, make-before-break...",
        names.join(" and ")
    );
    let running = streams(6000)?;
    for &v in &victims {
        link_up(&lab, v)?;
        let p = start_speaker(&lab, &o.speaker, &o.config_dir(), v, &logs, &[])?;
        state.speakers.insert(v, keep(p));
        state.down.retain(|&i| i != v);
    }
    state.save(o)?;
    for (what, _, s) in running {
        let log = s.finish()?;
        let moves: Vec<String> = log
            .failovers()
            .iter()
            .map(|f| format!("{} -> {} ({} lost)", f.from, f.to, f.lost))
            .collect();
        println!(
            "  {what:<50} {} of {} probes lost; moves: {}",
            log.sent - log.answers.len() as u64,
            log.sent,
            if moves.is_empty() {
                "none".into()
            } else {
                moves.join(", ")
            }
        );
    }
    println!("Now:");
    show_answers(&lab, o);
    Ok(())
}

/// Removes the lab: processes in its namespaces (by PID), the namespaces, zebra's files and
/// the state. Quiet when there is nothing to remove.
fn down(o: &Options, quiet: bool) -> Result<(), String> {
    let existing = run("ip", &["netns", "list"])?;
    let mut removed = Vec::new();
    for name in o.namespaces() {
        if !existing
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&name))
        {
            continue;
        }
        let pids = run("ip", &["netns", "pids", &name]).unwrap_or_default();
        for pid in pids.split_whitespace() {
            let _ = run("kill", &["-KILL", pid]);
        }
        // The processes must be gone before the namespace, or their links linger.
        wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
            run("ip", &["netns", "pids", &name])
                .ok()
                .filter(|p| p.trim().is_empty())
                .map(|_| ())
        });
        run("ip", &["netns", "del", &name])?;
        removed.push(name);
    }
    let router = format!("flb-{}-r", o.tag);
    frr::kill_leftovers(&router);
    for dir in [
        PathBuf::from(format!("/etc/frr/{router}")),
        PathBuf::from(format!("/var/run/frr/{router}")),
        frr::lab_dir(&router),
        o.state_dir(),
    ] {
        let _ = std::fs::remove_dir_all(dir);
    }
    if !quiet {
        if removed.is_empty() {
            println!("Nothing to remove: the lab is down.");
        } else {
            println!("Removed {} and every process in them.", removed.join(", "));
        }
    }
    Ok(())
}

/// The soak's part inside the client's namespace (started by `soak`, not by hand).
const SOAK_INSIDE: &str = "soak-inside";

fn soak_options(o: &Options) -> SoakOptions {
    SoakOptions {
        minutes: o.minutes,
        tag: o.tag.clone(),
        seed: o.seed.unwrap_or(0),
        speaker: o.speaker.clone(),
        controller: o.controller.clone(),
        logs: PathBuf::from("/tmp/ferrolb-lab").join(format!("soak-{}", o.tag)),
    }
}

/// Builds the soak's lab (three nodes, a client and a router with FRR on a bridge), runs the
/// soak inside the client's namespace (where the API emulator listens for the nodes), removes
/// the lab.
fn soak(o: &Options) -> Result<(), String> {
    for bin in [&o.speaker, &o.controller] {
        if !bin.exists() {
            return Err(format!("{} is missing: build it first", bin.display()));
        }
    }
    down(o, true)?;
    let seed = o.seed.unwrap_or_else(rand::random);
    let lab = L2Lab::with_bgp_router(
        &o.tag,
        soak::NODES,
        &soak::world::router_bgp_config(soak::NODES),
    )?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let minutes = o.minutes.to_string();
    let seed_text = seed.to_string();
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", lab.client.name()])
        .arg(&exe)
        .args([
            SOAK_INSIDE,
            "--tag",
            &o.tag,
            "--minutes",
            &minutes,
            "--seed",
            &seed_text,
        ])
        .arg("--speaker")
        .arg(&o.speaker)
        .arg("--controller")
        .arg(&o.controller)
        .spawn()
        .map_err(|e| e.to_string())?;
    // The churn, the settling and the last checks, with room to spare; then it is killed.
    let limit = Duration::from_secs_f64(o.minutes * 60.0 + 240.0);
    let status = wait_for(limit, Duration::from_millis(200), || {
        child.try_wait().ok().flatten()
    });
    let result = match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!("the soak failed ({s})")),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("the soak did not end within {limit:?}"))
        }
    };
    // Every process in the lab's namespaces (the soak's controller, speakers and tcpdump
    // outlive a killed soak) by PID, then the namespaces.
    down(o, true)?;
    drop(lab);
    result
}

fn soak_inside(o: &Options) -> Result<(), String> {
    let options = soak_options(o);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let report = runtime.block_on(soak::run(&options))?;
    let text = report.text();
    println!("{text}");
    let path = options.logs.join("report.txt");
    std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    if report.violations.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} violations (report: {})",
            report.violations.len(),
            path.display()
        ))
    }
}

fn next_to_me(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn parse(args: &[String]) -> Result<(String, Options), String> {
    let mut command = None;
    let mut o = Options {
        tag: "lab".into(),
        speaker: next_to_me("ferrolb-speaker"),
        controller: next_to_me("ferrolb-controller"),
        echo: next_to_me("ferrolb-lab-echo"),
        minutes: 2.0,
        seed: None,
    };
    let mut tag_given = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match a.as_str() {
            "--tag" => {
                o.tag = value("--tag")?;
                tag_given = true;
            }
            "--speaker" => o.speaker = PathBuf::from(value("--speaker")?),
            "--echo" => o.echo = PathBuf::from(value("--echo")?),
            "--controller" => o.controller = PathBuf::from(value("--controller")?),
            "--minutes" => {
                let v = value("--minutes")?;
                o.minutes = v
                    .parse()
                    .ok()
                    .filter(|m: &f64| (0.5..=24.0 * 60.0).contains(m))
                    .ok_or_else(|| format!("--minutes {v:?}: a number from 0.5 to 1440"))?;
            }
            "--seed" => {
                let v = value("--seed")?;
                o.seed = Some(
                    v.parse()
                        .map_err(|_| format!("--seed {v:?}: a whole number"))?,
                );
            }
            "up" | "demo" | "down" | "soak" | SOAK_INSIDE if command.is_none() => {
                command = Some(a.clone())
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    // The soak builds and removes a lab of its own: never `up`'s, unless asked.
    if !tag_given && matches!(command.as_deref(), Some("soak" | SOAK_INSIDE)) {
        o.tag = "soak".into();
    }
    if o.tag.is_empty() || !o.tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!("--tag {:?}: letters, digits and '-' only", o.tag));
    }
    Ok((command.ok_or("no command")?, o))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, o) = match parse(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ferrolb-lab: {e}\nusage: ferrolb-lab up|demo|down|soak [--tag T] [--minutes N] [--seed S] [--speaker PATH] [--controller PATH] [--echo PATH]");
            return ExitCode::from(2);
        }
    };
    if run("id", &["-u"]).map(|u| u.trim() == "0") != Ok(true) {
        eprintln!("ferrolb-lab: run as root (it creates network namespaces)");
        return ExitCode::from(2);
    }
    let result = match command.as_str() {
        "up" => up(&o),
        "demo" => demo(&o),
        "soak" => soak(&o),
        SOAK_INSIDE => soak_inside(&o),
        _ => down(&o, false),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrolb-lab {command}: {e}");
            ExitCode::FAILURE
        }
    }
}
