//! A small builder around the real binary: `Run::new(dir).args([...]).json()`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Every JSON event the run printed.
    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
            .collect()
    }

    pub fn task_ends(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "task_end")
            .collect()
    }

    /// (host, task) pairs whose status is "changed".
    pub fn changed(&self) -> Vec<(String, String)> {
        self.tasks_where(|e| e["status"] == "changed")
    }

    /// (host, task) pairs of the task ends `pred` accepts, sorted.
    pub fn tasks_where(&self, pred: impl Fn(&Value) -> bool) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .task_ends()
            .iter()
            .filter(|e| pred(e))
            .map(|e| {
                (
                    e["host"].as_str().unwrap().to_string(),
                    e["task"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    }

    pub fn recap(&self) -> Value {
        self.events()
            .into_iter()
            .find(|e| e["event"] == "recap")
            .unwrap_or_else(|| panic!("no recap in output:\n{}\n{}", self.stdout, self.stderr))
    }

    pub fn total(&self, what: &str) -> u64 {
        self.recap()["hosts"]
            .as_object()
            .unwrap()
            .values()
            .map(|c| c[what].as_u64().unwrap())
            .sum()
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            code,
            "exit code\n--- failed tasks\n{}\n--- stderr\n{}\n--- stdout\n{}",
            self.failures(),
            self.stderr,
            self.stdout
        );
        self
    }

    /// The failed task events and the error events, one per line: a CI log keeps only the head
    /// of a long message, so the cause goes first.
    pub fn failures(&self) -> String {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["status"] == "failed" || e["event"] == "error")
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs the binary in `dir`.
pub fn playbook(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_playbook"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("the playbook binary runs");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// How a test's hosts are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    /// The local connection: every host is this machine, each with its own root directory.
    Local,
    /// Real SSH to the lab's light hosts (tests/lab/lab.sh up N): host `a` is h1, `b` is h2…
    Lab,
}

mod skip;
pub use skip::{lab_skip, lab_status, skip, LabStatus, LAB_DIR};

/// Lab tests run one at a time, so "no ssh process is left" is about this test's run only.
static LAB_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The lab's light hosts when the lab is up for this run (see [`lab_status`]), else None (and
/// the caller skips, saying why).
pub fn lab_hosts() -> Option<usize> {
    match lab_status() {
        LabStatus::Up { light, .. } if light > 0 => Some(light),
        _ => None,
    }
}

/// Runs tests/lab/lab.sh with `args`; the caller judges the exit status (also while unwinding).
pub fn lab_sh(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/lab.sh"))
        .args(args)
        .output()
        .expect("lab.sh runs")
}

/// Runs a command inside a lab host's namespaces (no ssh).
/// Runs `script` with sh on the controller: whether it succeeded, and its stdout then stderr.
pub fn sh(script: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn lab_exec(host: &str, script: &str) -> std::process::Output {
    let out = lab_sh(&["exec", host, "sh", "-c", script]);
    assert!(
        out.status.success(),
        "lab exec on {host} failed: {script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Marks every process this test process starts (and their children, such as ssh masters).
const TEST_TAG: &str = "PLAYBOOK_TEST_PROCESS";

fn tag_this_process() {
    static TAGGED: std::sync::Once = std::sync::Once::new();
    TAGGED.call_once(|| std::env::set_var(TEST_TAG, std::process::id().to_string()));
}

/// ssh client processes that are alive (zombies waiting to be reaped do not count).
///
/// Only processes started from this test process count (they inherit `TEST_TAG` in their
/// environment), so other test runs on the same machine do not interfere.
pub fn live_ssh_processes() -> Vec<String> {
    tag_this_process();
    let tag = format!("{TEST_TAG}={}", std::process::id());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ...
        if let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) {
            let comm = &stat[open + 1..close];
            let state = stat[close + 1..].trim_start().chars().next().unwrap_or('?');
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let ours = environ.split(|b| *b == 0).any(|v| v == tag.as_bytes());
            if comm == "ssh" && state != 'Z' && ours {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
            }
        }
    }
    found
}

/// Fails unless every ssh process has ended within a moment (one may still be exiting when the
/// binary returns).
pub fn assert_no_ssh_left() {
    let mut left = live_ssh_processes();
    for _ in 0..30 {
        if left.is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = live_ssh_processes();
    }
    panic!("ssh processes left after the run: {left:?}");
}

/// A project directory for one test: playbooks, templates, an inventory, and the hosts' roots.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub conn: Conn,
    id: String,
    _lab: Option<std::sync::MutexGuard<'static, ()>>,
}

impl Project {
    pub fn new(conn: Conn) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let id = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches('.')
            .to_string();
        let lab = (conn == Conn::Lab).then(|| LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner()));
        Project {
            dir,
            conn,
            id,
            _lab: lab,
        }
    }

    /// A project on the lab, or None when the lab is not up (the caller returns: skipped).
    pub fn lab(test: &str) -> Option<Self> {
        Self::lab_of(test, 3)
    }

    /// A project on the lab when it has at least `light` light hosts.
    pub fn lab_of(test: &str, light: usize) -> Option<Self> {
        tag_this_process();
        match lab_hosts() {
            Some(n) if n >= light => Some(Project::new(Conn::Lab)),
            _ => {
                lab_skip(
                    test,
                    &format!(
                        "needs the lab with {light} light hosts (tests/lab/lab.sh up {light})"
                    ),
                );
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, rel: &str, content: &str) -> &Self {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    /// The lab host behind a test host name: a = h1, b = h2, ...
    pub fn lab_host(host: &str) -> String {
        let i = host.as_bytes()[0] - b'a' + 1;
        format!("h{i}")
    }

    /// The host's root directory as the playbook sees it (the `root` variable).
    pub fn remote_root(&self, host: &str) -> String {
        match self.conn {
            Conn::Local => self.root(host).display().to_string(),
            Conn::Lab => format!("/opt/pbtest-{}", self.id),
        }
    }

    /// The host's root directory as this test process can read it. On the lab that is the
    /// host's overlay upper directory, which holds everything written under /opt.
    pub fn root(&self, host: &str) -> PathBuf {
        match self.conn {
            Conn::Local => self.dir.path().join("targets").join(host),
            Conn::Lab => PathBuf::from(format!(
                "{LAB_DIR}/hosts/{}/ov/opt/upper/pbtest-{}",
                Self::lab_host(host),
                self.id
            )),
        }
    }

    /// An inventory of the hosts, each with its own `root` variable, reached as `conn` says.
    pub fn hosts(&self, hosts: &[&str], groups: &[(&str, &[&str])]) -> &Self {
        let mut inv = match self.conn {
            Conn::Local => String::from("[defaults]\nconnection = \"local\"\n\n"),
            Conn::Lab => format!(
                "[defaults]\nconnection = \"ssh\"\nuser = \"root\"\n\
                 identity_file = \"{LAB_DIR}/keys/id_lab\"\nknown_hosts = \"{LAB_DIR}/known_hosts\"\n\n"
            ),
        };
        for h in hosts {
            inv.push_str(&format!("[hosts.{h}]\n"));
            if self.conn == Conn::Lab {
                let n: u8 = Self::lab_host(h)[1..].parse().unwrap();
                inv.push_str(&format!("address = \"10.77.0.{}\"\n", 10 + n));
            }
            inv.push_str(&format!(
                "vars = {{ root = \"{}\" }}\n\n",
                self.remote_root(h)
            ));
        }
        for (g, members) in groups {
            let list: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
            inv.push_str(&format!("[groups.{g}]\nhosts = [{}]\n\n", list.join(", ")));
        }
        self.file("inventory.toml", &inv)
    }

    /// Creates the host's root directory on the host.
    pub fn mkroot(&self, host: &str) {
        match self.conn {
            Conn::Local => std::fs::create_dir_all(self.root(host)).unwrap(),
            Conn::Lab => {
                lab_exec(
                    &Self::lab_host(host),
                    &format!("mkdir -p {}", self.remote_root(host)),
                );
            }
        }
    }

    /// Writes a file under the host's root, on the host.
    pub fn write(&self, host: &str, rel: &str, content: &str) {
        match self.conn {
            Conn::Local => std::fs::write(self.root(host).join(rel), content).unwrap(),
            Conn::Lab => {
                let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
                let path = format!("{}/{rel}", self.remote_root(host));
                lab_exec(
                    &Self::lab_host(host),
                    &format!("printf %s {} > {}", q(content), q(&path)),
                );
            }
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = playbook(self.path(), args);
        if self.conn == Conn::Lab {
            assert_no_ssh_left();
        }
        out
    }

    /// Runs `playbook run` with JSON output.
    pub fn play(&self, playbook: &str, extra: &[&str]) -> Output {
        let mut args = vec!["run", playbook, "-i", "inventory.toml", "--output", "json"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Path → (mode, sha256 or link target) for everything under the hosts' roots.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        let mut all = BTreeMap::new();
        for h in ["a", "b", "c"] {
            for (k, v) in snapshot(&self.root(h)) {
                all.insert(format!("{h}:{k}"), v);
            }
        }
        all
    }
}

pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    fn walk(p: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return;
        };
        let rel = p.strip_prefix(base).unwrap().display().to_string();
        let kind = if meta.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(p).unwrap().display())
        } else if meta.is_dir() {
            "dir".to_string()
        } else {
            format!("{:x}", Sha256::digest(std::fs::read(p).unwrap()))
        };
        out.insert(rel, format!("{:o} {}", meta.mode() & 0o7777, kind));
        if meta.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, base, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// Like [`snapshot`] (path → mode and sha256 or link target), plus owner and group, for trees
/// that may hold device nodes, FIFOs or sockets: an overlay's upper directory marks deleted
/// files with 0:0 character devices, which cannot be read. Those are recorded by kind and device
/// number instead.
pub fn snapshot_tree(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = BTreeMap::new();
    fn walk(p: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return;
        };
        let rel = p.strip_prefix(base).unwrap().display().to_string();
        let ft = meta.file_type();
        let kind = if ft.is_symlink() {
            format!("link {}", std::fs::read_link(p).unwrap().display())
        } else if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_file() {
            format!("{:x}", Sha256::digest(std::fs::read(p).unwrap()))
        } else if ft.is_char_device() || ft.is_block_device() {
            format!("dev {:x}", meta.rdev())
        } else {
            "special".to_string()
        };
        out.insert(
            rel,
            format!(
                "{:o} {}:{} {}",
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid(),
                kind
            ),
        );
        if ft.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, base, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// The lab's systemd hosts (real systemd as PID 1, from the lab's systemd extension): name and
/// address, `s1`..`sM` at 10.77.0.(200+i). Empty when there are none (the caller skips).
pub fn lab_systemd_hosts() -> Vec<(String, String)> {
    let count = match lab_status() {
        LabStatus::Up { systemd, .. } => systemd,
        _ => 0,
    };
    (1..=count.min(50))
        .map(|i| (format!("s{i}"), format!("10.77.0.{}", 200 + i)))
        .collect()
}
