//! Handlers notified in a run that did not run them (the host failed, the run stopped or was
//! interrupted), remembered on the controller so that the next run of the playbook runs them:
//! a change whose restart was lost to a failure is not forgotten (ansible/ansible#15563).
//!
//! One JSON file per inventory, `.playbook/<inventory file name>.handlers.json` beside the
//! inventory: by playbook, then by host, the (phase, handler) pairs still owed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pending {
    pub phase: String,
    pub handler: String,
}

/// Pending handlers by host.
pub type ByHost = BTreeMap<String, Vec<Pending>>;

/// The state file of one inventory, read and written for one playbook.
#[derive(Clone, Debug)]
pub struct PendingHandlers {
    pub path: PathBuf,
    playbook: String,
}

/// A file the controller keeps about the runs on one inventory (`kind`: `handlers.json`,
/// `journal.jsonl`): `.playbook/INVENTORY.KIND` beside the inventory, so that it goes with the
/// inventory, whoever runs it.
pub fn state_file(inventory: &Path, kind: &str) -> PathBuf {
    let dir = inventory.parent().unwrap_or(Path::new("."));
    let name = inventory
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "inventory".into());
    dir.join(".playbook").join(format!("{name}.{kind}"))
}

impl PendingHandlers {
    pub fn beside(inventory: &Path, playbook: &Path) -> Self {
        let playbook = playbook
            .canonicalize()
            .unwrap_or_else(|_| playbook.to_path_buf());
        PendingHandlers {
            path: state_file(inventory, "handlers.json"),
            playbook: playbook.display().to_string(),
        }
    }

    fn read_all(&self) -> Result<BTreeMap<String, ByHost>, String> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| format!("{}: not a pending-handlers file: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    /// The handlers this playbook still owes, by host.
    pub fn load(&self) -> Result<ByHost, String> {
        Ok(self.read_all()?.remove(&self.playbook).unwrap_or_default())
    }

    /// Replaces what is owed on `hosts` (the run's hosts; others keep theirs). Written to a
    /// temporary file and renamed, so a crash leaves the old file or the new one.
    pub fn save(&self, hosts: ByHost) -> Result<(), String> {
        let mut all = self.read_all()?;
        let mine = all.entry(self.playbook.clone()).or_default();
        for (host, owed) in hosts {
            if owed.is_empty() {
                mine.remove(&host);
            } else {
                mine.insert(host, owed);
            }
        }
        if mine.is_empty() {
            all.remove(&self.playbook);
        }
        if all.is_empty() && !self.path.exists() {
            return Ok(());
        }
        let fail = |e: std::io::Error| format!("cannot write {}: {e}", self.path.display());
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(fail)?;
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&all).expect("plain JSON");
        std::fs::write(&tmp, text + "\n").map_err(fail)?;
        std::fs::rename(&tmp, &self.path).map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_handlers_are_kept_per_playbook_and_host() {
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("inv.toml");
        let one = PendingHandlers::beside(&inv, &dir.path().join("one.rhai"));
        let two = PendingHandlers::beside(&inv, &dir.path().join("two.rhai"));
        let owed = |h: &str| Pending {
            phase: "p".into(),
            handler: h.into(),
        };
        assert!(one.load().unwrap().is_empty());
        one.save(ByHost::from([("a".into(), vec![owed("restart")])]))
            .unwrap();
        two.save(ByHost::from([("a".into(), vec![owed("reload")])]))
            .unwrap();
        one.save(ByHost::from([("b".into(), vec![owed("restart")])]))
            .unwrap();
        assert_eq!(one.load().unwrap().len(), 2, "a run on b leaves a's alone");
        one.save(ByHost::from([("a".into(), vec![]), ("b".into(), vec![])]))
            .unwrap();
        assert!(one.load().unwrap().is_empty());
        assert_eq!(two.load().unwrap()["a"], [owed("reload")]);
        assert!(one.path.ends_with(".playbook/inv.toml.handlers.json"));
    }
}
