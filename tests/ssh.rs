//! Whole runs over real SSH against the lab (tests/lab/lab.sh up 10), about what only a real
//! network and real sshd can show: ten hosts converging on real system paths with a truthful
//! check mode, unreachable hosts (sshd stopped, sshd killed mid-run), host key checking, sudo with
//! a password that is never shown, Ctrl-C, and arguments that reach the host byte for byte.
//!
//! Every test skips (and says so) when the lab is not up; the ten-host test also when fewer than
//! ten hosts are up. Files written on the hosts are removed again when a test ends. Two tests
//! are ignored because they show engine bugs (see their reasons); run them with `--ignored`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{
    assert_no_ssh_left, lab_exec, lab_hosts, snapshot_tree, Output, Project, LAB_DIR,
};

const LAB_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/lab.sh");

/// A name unique to this test's project (its temporary directory's name), safe in paths.
fn unique(p: &Project) -> String {
    p.path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches('.')
        .to_string()
}

/// A lab host's overlay upper directory for `dir` (etc, opt, usr, var, home).
fn upper(host: &str, dir: &str) -> PathBuf {
    PathBuf::from(format!("{LAB_DIR}/hosts/{host}/ov/{dir}/upper"))
}

/// `/etc/x` on `host`, as this process can read it (only what the host wrote is there).
fn on_host(host: &str, path: &str) -> PathBuf {
    let rel = path.trim_start_matches('/');
    let (dir, rest) = rel.split_once('/').unwrap();
    upper(host, dir).join(rest)
}

fn address(host: &str) -> String {
    let n: u8 = host[1..].parse().unwrap();
    format!("10.77.0.{}", 10 + n)
}

/// A double-quoted string literal that TOML (a basic string) and Rhai both read back as `s`.
fn literal(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes `inventory.toml`: the lab hosts by their own names (h1, h2…) at their addresses, with
/// `defaults` lines added to `[defaults]` (after connection, identity and, unless given,
/// user root and the lab's known_hosts) and `rest` appended (vars, groups).
fn lab_inventory(p: &Project, hosts: &[&str], defaults: &str, rest: &str) {
    let mut inv = String::from("[defaults]\nconnection = \"ssh\"\n");
    inv.push_str(&format!("identity_file = \"{LAB_DIR}/keys/id_lab\"\n"));
    if !defaults.contains("user =") {
        inv.push_str("user = \"root\"\n");
    }
    if !defaults.contains("known_hosts =") {
        inv.push_str(&format!("known_hosts = \"{LAB_DIR}/known_hosts\"\n"));
    }
    inv.push_str(defaults);
    inv.push('\n');
    for h in hosts {
        inv.push_str(&format!("[hosts.{h}]\naddress = \"{}\"\n\n", address(h)));
    }
    inv.push_str(rest);
    p.file("inventory.toml", &inv);
}

/// Removes paths from lab hosts when dropped (also when the test panicked). The paths exist only
/// in the hosts' upper directories, so removing them leaves no overlay whiteout behind.
struct Cleanup {
    hosts: Vec<String>,
    paths: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = Command::new("bash")
                .arg(LAB_SH)
                .args(["exec", h, "rm", "-rf", "--"])
                .args(self.paths.iter())
                .output();
        }
    }
}

fn cleanup(hosts: &[&str], paths: &[String]) -> Cleanup {
    Cleanup {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        paths: paths.to_vec(),
    }
}

/// Stops sshd on a host, and starts it again when dropped (also when the test panicked).
struct SshdStopped(&'static str);

impl SshdStopped {
    fn stop(host: &'static str) -> Self {
        let guard = SshdStopped(host);
        let out = Command::new("bash")
            .arg(LAB_SH)
            .args(["stop-sshd", host])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lab.sh stop-sshd {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        guard
    }
}

impl Drop for SshdStopped {
    fn drop(&mut self) {
        start_sshd(self.0);
    }
}

fn start_sshd(host: &str) {
    let out = Command::new("bash")
        .arg(LAB_SH)
        .args(["start-sshd", host])
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "lab.sh start-sshd {host} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The binary running in the background, its stdout read line by line; killed if dropped while
/// it still runs.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Background {
    fn spawn(dir: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_playbook"))
            .args(args)
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the playbook binary starts");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        Background {
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// Waits for a JSON event for which `want` is true; panics after `limit`.
    fn wait_for_event(&mut self, limit: Duration, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if want(&v) {
                            return v;
                        }
                    }
                }
                Err(_) => panic!(
                    "the awaited event did not come within {limit:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the process to end (at most `limit`), then returns everything it printed and
    /// how long it took to end.
    fn finish(mut self, limit: Duration) -> (Output, Duration) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the run did not end within {limit:?}; output so far:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = started.elapsed();
        // The reader thread ends at EOF and drops the sender.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let stderr = self
            .stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        let out = Output {
            code: status.code().unwrap_or(-1),
            stdout: self.seen.join("\n") + "\n",
            stderr,
        };
        (out, took)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the binary with `input` on its stdin (a pipe, not a terminal).
fn run_with_stdin(dir: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_playbook"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the playbook binary starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_no_ssh_left();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn task_end_on<'a>(out: &'a [Value], host: &str, task: &str) -> Option<&'a Value> {
    out.iter()
        .find(|e| e["event"] == "task_end" && e["host"] == host && e["task"] == task)
}

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every path under a host's upper directories whose file name starts with `.playbook.` (the
/// engine's temporary files).
fn temp_files_on(host: &str) -> Vec<PathBuf> {
    fn walk(p: &Path, found: &mut Vec<PathBuf>) {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return;
        };
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".playbook."))
        {
            found.push(p.to_path_buf());
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                walk(&e.path(), found);
            }
        }
    }
    let mut found = Vec::new();
    for e in std::fs::read_dir(format!("{LAB_DIR}/hosts/{host}/ov"))
        .unwrap()
        .flatten()
    {
        walk(&e.path().join("upper"), &mut found);
    }
    found
}

// ---------------------------------------------------------------------------------------------
// 1. Ten hosts, real system paths, truthful check mode, idempotency.

const TEN: [&str; 10] = ["h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9", "h10"];

/// Path → state for everything under the etc, opt and usr upper directories of all ten hosts.
fn ten_host_state() -> State {
    let mut all = State::new();
    for h in TEN {
        for d in ["etc", "opt", "usr"] {
            for (k, v) in snapshot_tree(&upper(h, d)) {
                all.insert(format!("{h}:{d}:{k}"), v);
            }
        }
    }
    all
}

type State = std::collections::BTreeMap<String, String>;

/// Fails when `after` differs from `before` in a path this run could have written: its own paths
/// (`pbtest-UNIQUE`) or the engine's temporary files (`.playbook.*`) anywhere. The lab is shared
/// (other test processes, benchmarks) and other users' paths may change meanwhile: those
/// differences are listed on stderr but do not fail the test. With nobody else on the lab, the
/// trees must be identical.
fn assert_same_state(before: &State, after: &State, u: &str, what: &str) {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let (mut ours, mut foreign) = (Vec::new(), Vec::new());
    for k in keys {
        let (b, a) = (before.get(k), after.get(k));
        if b != a {
            let line = format!("{k}: {b:?} -> {a:?}");
            if k.contains(&format!("pbtest-{u}"))
                || k.contains("/.playbook.")
                || k.contains(":.playbook.")
            {
                ours.push(line);
            } else {
                foreign.push(line);
            }
        }
    }
    if !foreign.is_empty() {
        eprintln!(
            "{what}: {} path(s) of other lab users changed meanwhile (not ours, ignored):\n{}",
            foreign.len(),
            foreign
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        ours.is_empty(),
        "{what}: the hosts changed:\n{}",
        ours.join("\n")
    );
}

#[test]
fn ten_hosts_converge_idempotently_and_check_mode_is_truthful() {
    let Some(p) = Project::lab("ten_hosts_converge_idempotently_and_check_mode_is_truthful") else {
        return;
    };
    match lab_hosts() {
        Some(n) if n >= 10 => {}
        other => {
            crate::support::lab_skip(
                "ten_hosts_converge_idempotently_and_check_mode_is_truthful",
                &format!(
                    "needs the lab with 10 light hosts (tests/lab/lab.sh up 10), found {other:?}"
                ),
            );
            return;
        }
    }
    let u = unique(&p);
    let _clean = cleanup(
        &TEN,
        &[
            format!("/etc/pbtest-{u}"),
            format!("/usr/local/bin/pbtest-{u}"),
            format!("/opt/pbtest-{u}"),
        ],
    );
    lab_inventory(
        &p,
        &TEN,
        "",
        &format!(
            "[vars]\nuid = \"{u}\"\n\n\
             [groups.web]\nhosts = [\"h1\", \"h2\", \"h3\", \"h4\", \"h5\"]\nvars = {{ tier = \"web\" }}\n\n\
             [groups.db]\nhosts = [\"h6\", \"h7\", \"h8\", \"h9\", \"h10\"]\nvars = {{ tier = \"db\" }}\n"
        ),
    );
    p.file(
        "templates/app.conf.j2",
        "# managed by playbook\nhost = {{ inventory_hostname }}\ntier = {{ tier }}\nrun = {{ uid }}\n",
    );
    p.file(
        "site.rhai",
        r##"
let d = "/etc/pbtest-" + vars().uid;
let bin = "/usr/local/bin/pbtest-" + vars().uid;
let opt = "/opt/pbtest-" + vars().uid;
on("all", [
    file(#{ path: d, state: "directory", mode: "0755" }).name("etc dir"),
    file_template(#{ src: "templates/app.conf.j2", dest: d + "/app.conf", mode: "0640" }).name("app.conf"),
    copy(#{ content: "#!/bin/sh\necho pbtest on {{ inventory_hostname }}\n", dest: bin, mode: "0755" }).name("bin"),
    lineinfile(#{ path: d + "/conf", line: "tier={{ tier }}", create: true, mode: "0644" }).name("conf line"),
    file(#{ path: opt, state: "directory", mode: "0750" }).name("opt dir"),
    copy(#{ content: "{{ inventory_hostname }} {{ tier }}\n", dest: opt + "/data", mode: "0600" }).name("opt data"),
    command(#{ argv: ["touch", opt + "/stamp"], creates: opt + "/stamp" }).name("stamp"),
]);
"##,
    );
    const TASKS: usize = 7;

    // Check mode on fresh hosts: predicts every task on every host, changes no byte.
    let before = ten_host_state();
    assert!(
        !before.keys().any(|k| k.contains(&u)),
        "the hosts are not fresh"
    );
    let check = p.play("site.rhai", &["--check"]);
    check.assert_code(0);
    assert_same_state(&before, &ten_host_state(), &u, "check mode on fresh hosts");
    let predicted = check.changed();
    assert_eq!(
        predicted.len(),
        TEN.len() * TASKS,
        "check should predict every task on every fresh host:\n{}",
        check.stdout
    );
    assert_eq!(check.total("failed") + check.total("unreachable"), 0);

    // The real run does exactly what check predicted.
    let real = p.play("site.rhai", &[]);
    real.assert_code(0);
    assert_eq!(
        real.changed(),
        predicted,
        "check predicted:\n{}\nreal:\n{}",
        check.stdout,
        real.stdout
    );
    let hosts_in_recap: BTreeSet<String> = real.recap()["hosts"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(hosts_in_recap.len(), 10);
    for (i, h) in TEN.iter().enumerate() {
        let tier = if i < 5 { "web" } else { "db" };
        let d = format!("/etc/pbtest-{u}");
        let conf = on_host(h, &format!("{d}/app.conf"));
        assert_eq!(
            std::fs::read_to_string(&conf).unwrap(),
            format!("# managed by playbook\nhost = {h}\ntier = {tier}\nrun = {u}\n")
        );
        assert_eq!(mode_of(&conf), 0o640);
        assert_eq!(mode_of(&on_host(h, &d)), 0o755);
        assert_eq!(
            std::fs::read_to_string(on_host(h, &format!("{d}/conf"))).unwrap(),
            format!("tier={tier}\n")
        );
        let bin = on_host(h, &format!("/usr/local/bin/pbtest-{u}"));
        assert_eq!(
            std::fs::read_to_string(&bin).unwrap(),
            format!("#!/bin/sh\necho pbtest on {h}\n")
        );
        assert_eq!(mode_of(&bin), 0o755);
        let opt = format!("/opt/pbtest-{u}");
        assert_eq!(mode_of(&on_host(h, &opt)), 0o750);
        let data = on_host(h, &format!("{opt}/data"));
        assert_eq!(
            std::fs::read_to_string(&data).unwrap(),
            format!("{h} {tier}\n")
        );
        assert_eq!(mode_of(&data), 0o600);
        assert!(on_host(h, &format!("{opt}/stamp")).is_file());
        // The script the playbook installed runs on the host.
        let ran = lab_exec(h, &format!("/usr/local/bin/pbtest-{u}"));
        assert_eq!(
            String::from_utf8_lossy(&ran.stdout),
            format!("pbtest on {h}\n")
        );
    }
    let converged = ten_host_state();
    for h in TEN {
        let ours = converged
            .keys()
            .filter(|k| k.starts_with(&format!("{h}:")) && k.contains(&u))
            .count();
        // etc: the directory, app.conf, conf; usr: the script; opt: the directory, data, stamp.
        assert_eq!(ours, 7, "{h}: the snapshot sees what the run wrote");
    }

    // Second real run: nothing to do, nothing rewritten.
    let again = p.play("site.rhai", &[]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "{}", again.stdout);
    assert_eq!(again.total("ok") + again.total("skipped"), 70);
    assert_same_state(&converged, &ten_host_state(), &u, "second real run");

    // Check mode on converged hosts: no change predicted, none made.
    let check2 = p.play("site.rhai", &["--check"]);
    check2.assert_code(0);
    assert_eq!(check2.total("changed"), 0, "{}", check2.stdout);
    assert_same_state(
        &converged,
        &ten_host_state(),
        &u,
        "check mode on converged hosts",
    );
}

// ---------------------------------------------------------------------------------------------
// 2. sshd stopped before the run.

#[test]
fn a_host_with_sshd_stopped_is_unreachable_and_the_others_finish() {
    let Some(p) = Project::lab("a_host_with_sshd_stopped_is_unreachable_and_the_others_finish")
    else {
        return;
    };
    p.hosts(&["a", "b", "c"], &[]);
    let _clean = cleanup(&["h1", "h2", "h3"], &[p.remote_root("a")]);
    p.file(
        "site.rhai",
        r#"
on("all", file(#{ path: "{{ root }}", state: "directory" }).name("root"));
on("all", copy(#{ dest: "{{ root }}/hello", content: "hello {{ inventory_hostname }}\n" }).name("hello"));
"#,
    );
    let _sshd = SshdStopped::stop("h2");
    let out = p.play("site.rhai", &[]);
    out.assert_code(3);
    let events = out.events();
    let e = task_end_on(&events, "b", "root").expect("b's first task ends");
    assert_eq!(e["status"], "unreachable", "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(msg.contains("Connection refused"), "ssh's reason: {msg}");
    assert!(msg.contains("10.77.0.12"), "names the address: {msg}");
    assert!(
        task_end_on(&events, "b", "hello").is_none(),
        "no task runs on an unreachable host"
    );
    let recap = out.recap();
    let b = &recap["hosts"]["b"];
    assert_eq!(b["unreachable"], 1, "{recap}");
    assert_eq!(b["changed"], 0, "{recap}");
    assert_eq!(b["ok"], 0, "{recap}");
    for h in ["a", "c"] {
        let c = &recap["hosts"][h];
        assert_eq!(c["changed"], 2, "{recap}");
        assert_eq!(c["unreachable"], 0, "{recap}");
        assert_eq!(c["failed"], 0, "{recap}");
        assert_eq!(
            std::fs::read_to_string(p.root(h).join("hello")).unwrap(),
            format!("hello {h}\n")
        );
    }
    assert!(!p.root("b").exists(), "nothing was written on h2");
    // The text output says it too.
    let text = p.run(&["run", "site.rhai", "-i", "inventory.toml"]);
    text.assert_code(3);
    assert!(text.stdout.contains("UNREACHABLE"), "{}", text.stdout);
    assert!(
        text.stdout.contains("Connection refused"),
        "{}",
        text.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// 3. sshd killed in the middle of a run.

/// About 5 MiB of text, different on every line.
fn big_content() -> Vec<u8> {
    let mut v = Vec::with_capacity(5 << 20);
    let mut i = 0u64;
    while v.len() < 5 << 20 {
        v.extend_from_slice(
            format!(
                "line {i:08} {:016x} the quick brown fox jumps\n",
                i.wrapping_mul(0x9E3779B97F4A7C15)
            )
            .as_bytes(),
        );
        i += 1;
    }
    v
}

#[test]
fn sshd_dying_mid_run_is_reported_and_leaves_no_half_written_file() {
    let Some(p) = Project::lab("sshd_dying_mid_run_is_reported_and_leaves_no_half_written_file")
    else {
        return;
    };
    p.hosts(&["a", "b", "c"], &[]);
    let _clean = cleanup(&["h1", "h2", "h3"], &[p.remote_root("a")]);
    for h in ["a", "b", "c"] {
        p.mkroot(h);
    }
    let big = big_content();
    std::fs::write(p.path().join("big.txt"), &big).unwrap();
    p.file(
        "site.rhai",
        r#"
on("all", shell(#{ cmd: "sleep 2" }).name("nap"));
on("all", copy(#{ src: "big.txt", dest: "{{ root }}/big.txt" }).name("big copy"));
"#,
    );
    let before_h2 = temp_files_on("h2");
    assert!(before_h2.is_empty(), "leftovers on h2: {before_h2:?}");
    let mut run = Background::spawn(
        p.path(),
        &[
            "run",
            "site.rhai",
            "-i",
            "inventory.toml",
            "--output",
            "json",
        ],
    );
    run.wait_for_event(Duration::from_secs(15), |e| {
        e["event"] == "task_start" && e["task"] == "nap" && e["host"] == "b"
    });
    std::thread::sleep(Duration::from_secs(1));
    // Restarted at the end, whatever happens.
    struct Restart;
    impl Drop for Restart {
        fn drop(&mut self) {
            start_sshd("h2");
        }
    }
    let _restart = Restart;
    lab_exec("h2", "pkill -KILL -x sshd");
    let (out, _) = run.finish(Duration::from_secs(60));
    assert_no_ssh_left();
    // The master connection died with its sshd: the engine says the host is unreachable (3),
    // not that a task failed (2).
    out.assert_code(3);
    let events = out.events();
    let nap = task_end_on(&events, "b", "nap").expect("the nap on b ends");
    assert_eq!(nap["status"], "unreachable", "{nap}");
    assert!(
        !nap["msg"].as_str().unwrap_or("").trim().is_empty(),
        "with a reason: {nap}"
    );
    assert!(
        task_end_on(&events, "b", "big copy").is_none(),
        "nothing more runs on b"
    );
    for h in ["a", "c"] {
        assert_eq!(
            task_end_on(&events, h, "big copy").unwrap()["status"],
            "changed"
        );
        let got = std::fs::read(p.root(h).join("big.txt")).unwrap();
        assert_eq!(got.len(), big.len());
        assert_eq!(sha256_hex(&got), sha256_hex(&big));
    }
    assert_eq!(out.recap()["hosts"]["b"]["unreachable"], 1);
    let left = temp_files_on("h2");
    assert!(left.is_empty(), "temporary files left on h2: {left:?}");
    match std::fs::read(p.root("b").join("big.txt")) {
        Err(_) => {}
        Ok(got) => assert_eq!(sha256_hex(&got), sha256_hex(&big), "a half-written file"),
    }
}

/// Removes a tc qdisc from the machine's side of a lab host's veth when dropped.
struct Throttled(String);

impl Drop for Throttled {
    fn drop(&mut self) {
        let _ = Command::new("tc")
            .args(["qdisc", "del", "dev", &self.0, "root"])
            .output();
    }
}

/// Like the test above, but sshd dies while the big file is on its way: the connection to h2 is
/// slowed to 8 Mbit/s (tc on the machine's end of h2's veth) so that the copy takes ~5 s, and sshd
/// is killed as soon as the engine's temporary file appears on h2.
#[test]
fn sshd_dying_during_a_large_copy_leaves_no_truncated_destination() {
    let Some(p) = Project::lab("sshd_dying_during_a_large_copy_leaves_no_truncated_destination")
    else {
        return;
    };
    if Command::new("tc").arg("-V").output().is_err() {
        crate::support::skip(
            "no tc on this machine",
            "sshd_dying_during_a_large_copy_leaves_no_truncated_destination",
            "needs tc (iproute2) to slow the link",
        );
        return;
    }
    p.hosts(&["b"], &[]);
    let _clean = cleanup(&["h2"], &[p.remote_root("b")]);
    p.mkroot("b");
    let big = big_content();
    std::fs::write(p.path().join("big.txt"), &big).unwrap();
    p.file(
        "site.rhai",
        r#"on("all", copy(#{ src: "big.txt", dest: "{{ root }}/big.txt" }).name("big copy"));"#,
    );
    let tc = Command::new("tc")
        .args([
            "qdisc", "add", "dev", "vlab-h2", "root", "tbf", "rate", "8mbit", "burst", "32kbit",
            "latency", "400ms",
        ])
        .output()
        .unwrap();
    assert!(
        tc.status.success(),
        "tc: {}",
        String::from_utf8_lossy(&tc.stderr)
    );
    let _throttle = Throttled("vlab-h2".into());
    struct Restart;
    impl Drop for Restart {
        fn drop(&mut self) {
            start_sshd("h2");
        }
    }
    let _restart = Restart;
    let mut run = Background::spawn(
        p.path(),
        &[
            "run",
            "site.rhai",
            "-i",
            "inventory.toml",
            "--output",
            "json",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let temp = loop {
        let found: Vec<PathBuf> = std::fs::read_dir(p.root("b"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|e| {
                e.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".playbook.")
            })
            .collect();
        if let Some(t) = found.into_iter().next() {
            break t;
        }
        assert!(Instant::now() < deadline, "the copy never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(500));
    let partial = std::fs::metadata(&temp).map(|m| m.len()).unwrap_or(0);
    lab_exec("h2", "pkill -KILL -x sshd");
    let _ = run.wait_for_event(Duration::from_secs(30), |e| e["event"] == "recap");
    let (out, _) = run.finish(Duration::from_secs(30));
    assert_ne!(out.code, 0, "{}", out.stdout);
    let end = task_end_on(&out.events(), "b", "big copy")
        .cloned()
        .expect("the copy on b ends");
    assert_ne!(end["status"], "changed", "{end}");
    // Give the remote shell, which outlives its sshd, a moment to finish what it does.
    std::thread::sleep(Duration::from_secs(1));
    let left = temp_files_on("h2");
    assert!(left.is_empty(), "temporary files left on h2: {left:?}");
    match std::fs::read(p.root("b").join("big.txt")) {
        Err(_) => {}
        Ok(got) => assert!(
            got == big,
            "h2 has a truncated big.txt: {} of {} bytes (the temporary file had {partial} \
             bytes when sshd was killed; the run said: {end})",
            got.len(),
            big.len()
        ),
    }
    assert_no_ssh_left();
}

// ---------------------------------------------------------------------------------------------
// 4. Host keys.

/// h1's host key (type and base64) from the lab's known_hosts.
fn lab_host_key(host: &str) -> String {
    let known = std::fs::read_to_string(format!("{LAB_DIR}/known_hosts")).unwrap();
    let line = known
        .lines()
        .find(|l| l.split(',').next() == Some(host))
        .unwrap_or_else(|| panic!("{host} not in the lab's known_hosts"));
    line.split_whitespace()
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ")
}

fn key_check_playbook(p: &Project) {
    p.file(
        "site.rhai",
        r#"on("all", copy(#{ dest: "{{ root }}/reached", content: "yes" }).name("reach"));"#,
    );
}

/// An inventory of h1 (test host `a`) with its own known_hosts file.
fn key_inventory(p: &Project, known_hosts: &Path) {
    lab_inventory(
        p,
        &["h1"],
        &format!("known_hosts = \"{}\"", known_hosts.display()),
        &format!("[hosts.h1.vars]\nroot = \"{}\"\n", p.remote_root("a")),
    );
}

#[test]
fn a_changed_host_key_is_refused() {
    let Some(p) = Project::lab("a_changed_host_key_is_refused") else {
        return;
    };
    let _clean = cleanup(&["h1"], &[p.remote_root("a")]);
    p.mkroot("a");
    key_check_playbook(&p);
    // h2's key, claimed for h1's address.
    let wrong = format!("10.77.0.11 {}\n", lab_host_key("h2"));
    let kh = p.path().join("known_hosts");
    std::fs::write(&kh, &wrong).unwrap();
    key_inventory(&p, &kh);
    for flags in [&[][..], &["--accept-new-host-keys"][..]] {
        let out = p.play("site.rhai", flags);
        out.assert_code(3);
        let events = out.events();
        let e = task_end_on(&events, "h1", "reach").expect("the task ends");
        assert_eq!(e["status"], "unreachable", "{flags:?}: {e}");
        let msg = e["msg"].as_str().unwrap();
        assert!(
            msg.contains("Host key verification failed")
                || msg.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
            "{flags:?}: {msg}"
        );
        assert!(!p.root("a").join("reached").exists(), "{flags:?}");
        assert_eq!(
            std::fs::read_to_string(&kh).unwrap(),
            wrong,
            "{flags:?}: known_hosts must not be touched for a changed key"
        );
    }
}

#[test]
fn accept_new_host_keys_records_an_unknown_key() {
    let Some(p) = Project::lab("accept_new_host_keys_records_an_unknown_key") else {
        return;
    };
    let _clean = cleanup(&["h1"], &[p.remote_root("a")]);
    p.mkroot("a");
    key_check_playbook(&p);
    let kh = p.path().join("known_hosts");
    std::fs::write(&kh, "").unwrap();
    key_inventory(&p, &kh);

    let refused = p.play("site.rhai", &[]);
    refused.assert_code(3);
    let events = refused.events();
    let e = task_end_on(&events, "h1", "reach").expect("the task ends");
    assert_eq!(e["status"], "unreachable", "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("Host key verification failed"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), "");
    assert!(!p.root("a").join("reached").exists());

    let accepted = p.play("site.rhai", &["--accept-new-host-keys"]);
    accepted.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(p.root("a").join("reached")).unwrap(),
        "yes"
    );
    // ssh may hash the host name (HashKnownHosts): ask ssh-keygen, and compare the key itself.
    let found = Command::new("ssh-keygen")
        .args(["-F", "10.77.0.11", "-f"])
        .arg(&kh)
        .output()
        .unwrap();
    let found = String::from_utf8_lossy(&found.stdout);
    let recorded: Vec<&str> = found.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        recorded.len(),
        1,
        "one line for 10.77.0.11 in {}:\n{}",
        kh.display(),
        std::fs::read_to_string(&kh).unwrap()
    );
    assert!(
        recorded[0].ends_with(&lab_host_key("h1")),
        "the recorded key is h1's: {}",
        recorded[0]
    );
    // The recorded key is trusted from now on, without the flag.
    let strict = p.play("site.rhai", &[]);
    strict.assert_code(0);
    assert_eq!(strict.total("changed"), 0);
}

// ---------------------------------------------------------------------------------------------
// 5. sudo with a password.

fn assert_no_secret(out: &Output, secrets: &[&str], what: &str) {
    for s in secrets {
        assert!(
            !out.stdout.contains(s),
            "{what}: the password is in stdout:\n{}",
            out.stdout
        );
        assert!(
            !out.stderr.contains(s),
            "{what}: the password is in stderr:\n{}",
            out.stderr
        );
    }
}

#[test]
fn become_with_a_password_works_and_the_password_is_never_shown() {
    let Some(p) = Project::lab("become_with_a_password_works_and_the_password_is_never_shown")
    else {
        return;
    };
    let pw = std::fs::read_to_string(format!("{LAB_DIR}/become_password")).unwrap();
    assert!(
        pw.len() >= 8,
        "the lab's password is long enough to search for"
    );
    let u = unique(&p);
    let dest = format!("/etc/pbtest-become-{u}");
    let dest_k = format!("/etc/pbtest-become-{u}-k");
    let dest_wrong = format!("/etc/pbtest-become-{u}-wrong");
    let _clean = cleanup(&["h1"], &[dest.clone(), dest_k.clone(), dest_wrong.clone()]);
    p.file(
        "become.rhai",
        r#"
on("all", copy(#{ dest: vars().dest, content: "written as {{ inventory_hostname }}\n", mode: "0640" }).name("write"));
on("all", command(#{ argv: ["id", "-un"], changed_when: false }).register("who").name("who"));
on("all", assert(#{ that: ["who.stdout == 'root'"] }).name("is root"));
"#,
    );
    let with_pw = |pw: &str| {
        format!(
            "user = \"deploy\"\nbecome = true\nbecome_password = {}\n",
            literal(pw)
        )
    };
    let vars = |d: &str| format!("[vars]\ndest = \"{d}\"\n");

    // The password in the inventory; text and JSON output, verbose, with diffs.
    lab_inventory(&p, &["h1"], &with_pw(&pw), &vars(&dest));
    let text = p.run(&["run", "become.rhai", "-i", "inventory.toml", "-v", "--diff"]);
    text.assert_code(0);
    assert_no_secret(&text, &[&pw], "text -v --diff");
    assert!(text.stdout.contains("+written as h1"), "{}", text.stdout);
    let file = on_host("h1", &dest);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "owned by root");
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "written as h1\n");
    // Without become, deploy may not write there: the test would show a missing sudo.
    let denied = lab_exec(
        "h1",
        &format!("su deploy -s /bin/sh -c 'touch {dest}' 2>&1; echo rc=$?"),
    );
    assert!(
        !String::from_utf8_lossy(&denied.stdout).contains("rc=0"),
        "deploy itself can write {dest}"
    );
    let json = p.play("become.rhai", &["-v", "--diff"]);
    json.assert_code(0);
    assert_no_secret(&json, &[&pw], "json -v --diff");
    assert_eq!(json.total("changed"), 0, "{}", json.stdout);
    assert_eq!(json.total("ok"), 3, "{}", json.stdout);

    // -K: the password from stdin (the first line), none in the inventory.
    lab_inventory(
        &p,
        &["h1"],
        "user = \"deploy\"\nbecome = true\n",
        &vars(&dest_k),
    );
    for output in ["text", "json"] {
        let out = run_with_stdin(
            p.path(),
            &[
                "run",
                "become.rhai",
                "-i",
                "inventory.toml",
                "-K",
                "-v",
                "--diff",
                "--output",
                output,
            ],
            &format!("{pw}\n"),
        );
        out.assert_code(0);
        assert_no_secret(&out, &[&pw], &format!("-K --output {output}"));
    }
    let meta = std::fs::metadata(on_host("h1", &dest_k)).unwrap();
    assert_eq!(meta.uid(), 0);
    // Without -K and without a password, sudo -n refuses: the task fails, nothing hangs.
    let no_pw = p.play("become.rhai", &[]);
    no_pw.assert_code(2);

    // A wrong password: sudo's own error, no password of either kind in the output.
    let wrong = format!("wrong-{u}-Pw");
    lab_inventory(&p, &["h1"], &with_pw(&wrong), &vars(&dest_wrong));
    let bad_text = p.run(&["run", "become.rhai", "-i", "inventory.toml", "-v", "--diff"]);
    bad_text.assert_code(2);
    assert!(
        bad_text.stdout.contains("incorrect password"),
        "{}",
        bad_text.stdout
    );
    assert_no_secret(&bad_text, &[&wrong, &pw], "wrong password, text");
    let bad_json = p.play("become.rhai", &["-v", "--diff"]);
    bad_json.assert_code(2);
    assert_no_secret(&bad_json, &[&wrong, &pw], "wrong password, json");
    let events = bad_json.events();
    let e = task_end_on(&events, "h1", "write").expect("the write ends");
    assert_eq!(e["status"], "failed", "{e}");
    assert!(
        e["msg"].as_str().unwrap().contains("sudo"),
        "sudo's error: {e}"
    );
    assert!(!on_host("h1", &dest_wrong).exists());
}

/// `-u`, `--private-key`, `-b` and `--become-user` fill in what the inventory leaves unset, and
/// the inventory's own settings win, as in Ansible.
#[test]
fn command_line_user_key_and_become_apply_where_the_inventory_is_silent() {
    let Some(p) =
        Project::lab("command_line_user_key_and_become_apply_where_the_inventory_is_silent")
    else {
        return;
    };
    p.file(
        "who.rhai",
        "on(\"all\", command(#{ argv: [\"id\", \"-un\"], changed_when: false }).register(\"who\").name(\"who\"));\n\
         on(\"all\", assert(#{ that: [\"who.stdout == expected\"] }).name(\"as expected\"));\n",
    );
    let bare = format!(
        "[defaults]\nconnection = \"ssh\"\nknown_hosts = \"{LAB_DIR}/known_hosts\"\n\n[hosts.h1]\naddress = \"{}\"\n",
        address("h1")
    );
    let key = format!("{LAB_DIR}/keys/id_lab");
    let runs_as = |inventory: &str, expected: &str, args: &[&str]| {
        p.file("inventory.toml", inventory);
        let expect = format!("expected={expected}");
        let mut all = vec!["-e", &expect];
        all.extend_from_slice(args);
        p.play("who.rhai", &all).assert_code(0);
    };
    runs_as(&bare, "deploy", &["-u", "deploy", "--private-key", &key]);
    runs_as(
        &bare,
        "deploy",
        &[
            "-u",
            "root",
            "--private-key",
            &key,
            "-b",
            "--become-user",
            "deploy",
        ],
    );
    let with_user = bare.replace(
        "[defaults]\n",
        &format!("[defaults]\nuser = \"root\"\nidentity_file = \"{key}\"\n"),
    );
    // The inventory's user and key win over -u and --private-key.
    runs_as(
        &with_user,
        "root",
        &["-u", "deploy", "--private-key", "/nonexistent"],
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Ctrl-C.

/// The ssh processes (masters) of the run with PID `run`: their command line names the run's
/// control directory, `/tmp/playbook-ssh-PID-…`. Read while they are running normally: a master
/// that was told to stop listening retitles itself `ssh: [stopped mux]`, which overwrites both its
/// command line and its environment as /proc shows them.
fn masters_of(run: u32) -> Vec<u32> {
    let needle = format!("/playbook-ssh-{run}-");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if comm.trim_end() == "ssh" && String::from_utf8_lossy(&cmdline).contains(&needle) {
            found.push(pid);
        }
    }
    found
}

/// Those of `pids` that are still a live (not zombie) ssh process, with their titles.
fn still_alive(pids: &[u32]) -> Vec<String> {
    pids.iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (open, close) = (stat.find('(')?, stat.rfind(')')?);
            let state = stat[close + 1..].trim_start().chars().next()?;
            (&stat[open + 1..close] == "ssh" && state != 'Z').then(|| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                format!(
                    "{pid}: {}",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ").trim()
                )
            })
        })
        .collect()
}

/// Waits up to 3 s for the processes to end; returns those still alive then.
fn wait_gone(pids: &[u32]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = still_alive(pids);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ends the remote `sleep 31` commands a test left running on h1..h3 when dropped (also when the
/// test panicked), then waits for the run's ssh masters, which may wait for those commands, so
/// that the tests after this one do not meet them.
struct RemoteSleeps(Vec<u32>);

impl RemoteSleeps {
    fn end(&self) {
        for h in ["h1", "h2", "h3"] {
            let _ = Command::new("bash")
                .arg(LAB_SH)
                .args(["exec", h, "pkill", "-x", "-f", "sleep 31"])
                .output();
        }
    }
}

impl Drop for RemoteSleeps {
    fn drop(&mut self) {
        self.end();
        wait_gone(&self.0);
    }
}

/// Interrupts a run while a 31 s command runs on three hosts: exit 130 within seconds, a recap
/// saying "interrupted", no later task started, the remote commands ended (the mux protocol
/// cannot signal them: the run finds them by their marker) and none of the run's ssh processes
/// left.
fn interrupt_a_run(p: &Project) {
    stop_a_run(p, "-INT", 130);
}

/// Like [`interrupt_a_run`], by `signal` (a `kill` option), expecting exit code `code`.
fn stop_a_run(p: &Project, signal: &str, code: i32) {
    let mut sleeps = RemoteSleeps(Vec::new());
    let mut run = Background::spawn(
        p.path(),
        &[
            "run",
            "site.rhai",
            "-i",
            "inventory.toml",
            "--output",
            "json",
        ],
    );
    let mut started = BTreeSet::new();
    while started.len() < 3 {
        let e = run.wait_for_event(Duration::from_secs(15), |e| {
            e["event"] == "task_start" && e["task"] == "long sleep"
        });
        started.insert(e["host"].as_str().unwrap().to_string());
    }
    // Let the three commands really start on the hosts.
    std::thread::sleep(Duration::from_millis(500));
    let masters = masters_of(run.child.id());
    assert_eq!(masters.len(), 3, "one ssh master per host: {masters:?}");
    sleeps.0 = masters.clone();
    let kill = Command::new("kill")
        .args([signal, &run.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let (out, took) = run.finish(Duration::from_secs(20));
    // Well before the 30 s the remote commands would take, even on a loaded machine.
    assert!(took < Duration::from_secs(15), "took {took:?} to stop");
    out.assert_code(code);
    let recap = out.recap();
    assert_eq!(recap["interrupted"], true, "{recap}");
    let events = out.events();
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "task_start" && e["task"] == "after"),
        "no task starts after Ctrl-C:\n{}",
        out.stdout
    );
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "task_end" && e["task"] == "long sleep"),
        "the interrupted tasks are abandoned, not reported as finished:\n{}",
        out.stdout
    );
    for h in ["a", "b", "c"] {
        assert!(!p.root(h).join("after").exists());
    }
    let running: Vec<&str> = ["h1", "h2", "h3"]
        .into_iter()
        .filter(|h| {
            Command::new("bash")
                .arg(LAB_SH)
                .args(["exec", h, "pgrep", "-x", "-f", "sleep 31"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    assert!(
        running.is_empty(),
        "the interrupted command still runs on {running:?} after the run ended"
    );
    let left = wait_gone(&masters);
    assert!(
        left.is_empty(),
        "ssh masters left 3 s after the interrupted run ended: {left:?}"
    );
    assert_no_ssh_left();
}

fn interrupt_project(test: &str) -> Option<(Project, Cleanup)> {
    let p = Project::lab(test)?;
    p.hosts(&["a", "b", "c"], &[]);
    let clean = cleanup(&["h1", "h2", "h3"], &[p.remote_root("a")]);
    p.file(
        "site.rhai",
        r#"
on("all", shell(#{ cmd: "sleep 31" }).name("long sleep"));
on("all", copy(#{ dest: "{{ root }}/after", content: "too late" }).name("after"));
"#,
    );
    Some((p, clean))
}

#[test]
fn ctrl_c_stops_the_run_within_seconds() {
    let Some((p, _clean)) = interrupt_project("ctrl_c_stops_the_run_within_seconds") else {
        return;
    };
    interrupt_a_run(&p);
}

/// SIGTERM (a service manager, `timeout`) stops a run as Ctrl-C does, recap included; exit 143.
#[test]
fn sigterm_stops_the_run_like_ctrl_c() {
    let Some((p, _clean)) = interrupt_project("sigterm_stops_the_run_like_ctrl_c") else {
        return;
    };
    stop_a_run(&p, "-TERM", 143);
}

/// The same three times: masters once leaked in a race (a stopping master renames itself).
#[test]
fn ctrl_c_stops_the_run_and_leaves_no_ssh_process() {
    let Some((p, _clean)) = interrupt_project("ctrl_c_stops_the_run_and_leaves_no_ssh_process")
    else {
        return;
    };
    for _ in 0..3 {
        interrupt_a_run(&p);
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Arguments arrive byte for byte.

/// xorshift64*: a small deterministic generator, so a failure names a reproducible string.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Strings that shells, quoting, templates and encodings like to mangle. `{{` and `{%` never
/// occur: in task arguments they are template syntax by design (they would be rendered), so they
/// cannot be literal text there; single braces, `{#` and `%}` do occur.
fn nasty_strings() -> Vec<String> {
    let mut out: Vec<String> = [
        "",
        "plain",
        "'",
        "\"",
        "\\",
        "it's \"quoted\" and \\escaped\\",
        "$(touch /tmp/pwned) `touch /tmp/pwned` $HOME ${HOME} $1 \"$@\" $$",
        "trailing newline\n",
        "\n\nlines\n\n",
        "\ttabs\tand  spaces  ",
        "-n",
        "--",
        "%s %d %% \\n \\0 \\x41",
        "ü 日本 🦀 e\u{301} \u{200b}",
        "; rm -rf / | cat & wait < /dev/null > /dev/null * ? ~ # !",
        "{ } {# } %} }} ${x}",
        "crlf\r\nline",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let tokens = [
        "'", "\"", "$(id)", "`id`", "$HOME", "${HOME}", "\\", "\\n", "\n", "\t", " ", "  ", ";",
        "|", "&", "&&", "<", ">", ">>", "*", "?", "~", "#", "!", "ü", "日本", "🦀", "%s", "%", "{",
        "}", "[", "]", "(", ")", "=", "a", "Z", "0", "-", "--x", "$", "\\'", "'\\''",
    ];
    let mut rng = Rng(0x5EED_1234_ABCD_0042);
    while out.len() < 30 {
        let n = 1 + rng.below(14);
        let s: String = (0..n).map(|_| tokens[rng.below(tokens.len())]).collect();
        if !s.contains("{{") && !s.contains("{%") && !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Reads the files `DIR/s0..` a method wrote on h1 and compares them with the strings.
fn assert_arrived(p: &Project, method: &str, strings: &[String]) {
    let mut wrong = Vec::new();
    for (i, s) in strings.iter().enumerate() {
        let path = p.root("a").join(method).join(format!("s{i}"));
        match std::fs::read(&path) {
            Ok(got) if got == s.as_bytes() => {}
            Ok(got) => wrong.push(format!(
                "s{i}: sent {s:?}, got {:?}",
                String::from_utf8_lossy(&got)
            )),
            Err(e) => wrong.push(format!("s{i}: sent {s:?}, {}: {e}", path.display())),
        }
    }
    assert!(
        wrong.is_empty(),
        "{method}: {} of {} strings did not arrive intact:\n{}",
        wrong.len(),
        strings.len(),
        wrong.join("\n")
    );
}

#[test]
fn arguments_arrive_byte_for_byte() {
    let Some(p) = Project::lab("arguments_arrive_byte_for_byte") else {
        return;
    };
    p.hosts(&["a"], &[]);
    let _clean = cleanup(&["h1"], &[p.remote_root("a")]);
    let strings = nasty_strings();
    let list: Vec<String> = strings.iter().map(|s| literal(s)).collect();
    let array = format!("let ss = [\n    {}\n];\n", list.join(",\n    "));

    // copy with the string as content, from a Rhai literal.
    p.file(
        "copy.rhai",
        &format!(
            "{array}on(\"all\", file(#{{ path: \"{{{{ root }}}}/copy\", state: \"directory\" }}));\n\
             for i in 0..ss.len() {{\n    \
                 on(\"all\", copy(#{{ content: ss[i], dest: \"{{{{ root }}}}/copy/s\" + i }}).name(\"copy s\" + i));\n\
             }}\n"
        ),
    );
    // command with the string as one argv element, written by the remote printf.
    p.file(
        "command.rhai",
        &format!(
            "{array}on(\"all\", file(#{{ path: \"{{{{ root }}}}/command\", state: \"directory\" }}));\n\
             for i in 0..ss.len() {{\n    \
                 on(\"all\", command(#{{ argv: [\"sh\", \"-c\", \"printf %s \\\"$1\\\" > \\\"$2\\\"\", \"sh\", ss[i], \"{{{{ root }}}}/command/s\" + i] }}).name(\"command s\" + i));\n\
             }}\n"
        ),
    );
    // file_template rendering `{{ sN }}`, the string given with -e @vars.toml.
    let mut vars = String::new();
    for (i, s) in strings.iter().enumerate() {
        vars.push_str(&format!("s{i} = {}\n", literal(s)));
        p.file(&format!("templates/s{i}.j2"), &format!("{{{{ s{i} }}}}"));
    }
    p.file("vars.toml", &vars);
    p.file(
        "template.rhai",
        &format!(
            "on(\"all\", file(#{{ path: \"{{{{ root }}}}/template\", state: \"directory\" }}));\n\
             for i in 0..{n} {{\n    \
                 on(\"all\", file_template(#{{ src: \"templates/s\" + i + \".j2\", dest: \"{{{{ root }}}}/template/s\" + i }}).name(\"template s\" + i));\n\
             }}\n",
            n = strings.len()
        ),
    );

    let n = strings.len() as u64;
    let copy = p.play("copy.rhai", &[]);
    copy.assert_code(0);
    assert_eq!(copy.total("changed"), n + 1, "{}", copy.stdout);
    assert_arrived(&p, "copy", &strings);

    let command = p.play("command.rhai", &[]);
    command.assert_code(0);
    assert_eq!(command.total("changed"), n + 1, "{}", command.stdout);
    assert_arrived(&p, "command", &strings);

    let template = p.play("template.rhai", &["-e", "@vars.toml"]);
    template.assert_code(0);
    assert_eq!(template.total("changed"), n + 1, "{}", template.stdout);
    assert_arrived(&p, "template", &strings);

    // What arrived is what the engine compares with: the same strings change nothing.
    let again = p.play("copy.rhai", &[]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "{}", again.stdout);
    let again = p.play("template.rhai", &["-e", "@vars.toml"]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "{}", again.stdout);
    // Nothing in the strings was executed on the host.
    assert!(
        lab_exec("h1", "test ! -e /tmp/pwned && echo clean")
            .stdout
            .starts_with(b"clean"),
        "a string was run by a shell"
    );
}
