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
        let mut v: Vec<(String, String)> = self
            .task_ends()
            .iter()
            .filter(|e| e["status"] == "changed")
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
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
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

/// A project directory for one test: playbooks, templates, an inventory, and target roots.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Self {
        Project {
            dir: tempfile::tempdir().unwrap(),
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

    /// An inventory of local hosts, each with its own `root` directory under the project.
    pub fn local_hosts(&self, hosts: &[&str], groups: &[(&str, &[&str])]) -> &Self {
        let mut inv = String::from("[defaults]\nconnection = \"local\"\n\n");
        for h in hosts {
            let root = self.root(h);
            inv.push_str(&format!(
                "[hosts.{h}]\nvars = {{ root = \"{}\" }}\n\n",
                root.display()
            ));
        }
        for (g, members) in groups {
            let list: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
            inv.push_str(&format!("[groups.{g}]\nhosts = [{}]\n\n", list.join(", ")));
        }
        self.file("inventory.toml", &inv)
    }

    pub fn root(&self, host: &str) -> PathBuf {
        self.dir.path().join("targets").join(host)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        playbook(self.path(), args)
    }

    /// Runs `playbook run` with JSON output.
    pub fn play(&self, playbook: &str, extra: &[&str]) -> Output {
        let mut args = vec!["run", playbook, "-i", "inventory.toml", "--output", "json"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Path → (mode, sha256 or link target) for everything under the target roots.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        snapshot(&self.dir.path().join("targets"))
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
