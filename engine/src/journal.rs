//! The run journal: every real run appends what it changed, one JSON object per changed task
//! and host, to `.playbook/INVENTORY.journal.jsonl` beside the inventory, so "what did last
//! Tuesday's run change on m2" has an answer (`playbook history`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::events::{Event, EventSink, TaskStatus};

/// One change: a task that changed a host in a real run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When the change was reported (RFC 3339, UTC).
    pub ts: String,
    /// When its run started: the entries of one run share it.
    pub run: String,
    pub playbook: String,
    pub host: String,
    pub phase: String,
    pub task: String,
    pub module: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default)]
    pub handler: bool,
}

pub fn path_beside(inventory: &Path) -> PathBuf {
    crate::pending::state_file(inventory, "journal.jsonl")
}

/// Appends the changes of a run as they are reported. Put it behind the run's redaction, so
/// no secret reaches the file.
pub struct Journal {
    path: PathBuf,
    state: Mutex<(Option<String>, Option<String>)>,
}

impl Journal {
    pub fn new(path: PathBuf) -> Self {
        Journal {
            path,
            state: Mutex::new((None, None)),
        }
    }

    fn append(&self, entry: &Entry) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut line = serde_json::to_string(entry).expect("plain JSON");
        line.push('\n');
        // One write per line in append mode: concurrent runs do not interleave within a line.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?
            .write_all(line.as_bytes())
    }
}

impl EventSink for Journal {
    fn emit(&self, event: &Event) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::RunStart {
                playbook, check, ..
            } => {
                // Check mode changes nothing: it has nothing to record.
                *state = if *check {
                    (None, None)
                } else {
                    (Some(crate::report::now_rfc3339()), Some(playbook.clone()))
                };
            }
            Event::TaskEnd(e) if e.status == TaskStatus::Changed && !e.check => {
                let (Some(run), Some(playbook)) = &*state else {
                    return;
                };
                let entry = Entry {
                    ts: crate::report::now_rfc3339(),
                    run: run.clone(),
                    playbook: playbook.clone(),
                    host: e.host.clone(),
                    phase: e.phase.clone(),
                    task: e.task.clone(),
                    module: e.module.clone(),
                    summary: e.summary.clone(),
                    handler: e.handler,
                };
                if let Err(err) = self.append(&entry) {
                    eprintln!(
                        "warning: cannot append to the run journal {}: {err}",
                        self.path.display()
                    );
                }
            }
            _ => {}
        }
    }
}

/// The journal's entries for `host` (all hosts when None) reported at or after `since` (a
/// date `2026-12-01` or an RFC 3339 time, UTC), oldest first. A missing journal is empty.
pub fn read(path: &Path, host: Option<&str>, since: Option<&str>) -> Result<Vec<Entry>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let entry: Entry = serde_json::from_str(line)
            .map_err(|e| format!("{}:{}: not a journal entry: {e}", path.display(), i + 1))?;
        // RFC 3339 times in UTC sort as text; a bare date is the start of its day.
        let recent = since.is_none_or(|s| entry.ts.as_str() >= s);
        if recent && host.is_none_or(|h| entry.host == h) {
            out.push(entry);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::TaskEnd;

    fn end(host: &str, status: TaskStatus, check: bool) -> Event {
        Event::TaskEnd(TaskEnd {
            phase: "p".into(),
            task: format!("t-{host}"),
            task_id: 0,
            host: host.into(),
            module: "copy".into(),
            status,
            changed: status == TaskStatus::Changed,
            check,
            handler: false,
            ignored: false,
            rescued: false,
            summary: Some("create /x".into()),
            msg: None,
            diff: None,
            error: None,
            duration_ms: 1,
        })
    }

    fn start(check: bool) -> Event {
        Event::RunStart {
            playbook: "site.rhai".into(),
            hosts: 2,
            tasks: 1,
            check,
        }
    }

    #[test]
    fn real_changes_are_appended_and_read_back_by_host_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_beside(&dir.path().join("inv.toml"));
        let j = Journal::new(path.clone());
        j.emit(&start(true));
        j.emit(&end("a", TaskStatus::Changed, true));
        assert!(!path.exists(), "check mode records nothing");
        j.emit(&start(false));
        j.emit(&end("a", TaskStatus::Changed, false));
        j.emit(&end("b", TaskStatus::Ok, false));
        j.emit(&end("b", TaskStatus::Changed, false));
        let all = read(&path, None, None).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].run, all[1].run);
        assert_eq!(all[1].summary.as_deref(), Some("create /x"));
        assert_eq!(read(&path, Some("b"), None).unwrap().len(), 1);
        assert_eq!(read(&path, None, Some("2999-01-01")).unwrap().len(), 0);
        assert_eq!(read(&path, None, Some("2000-01-01")).unwrap().len(), 2);
        assert!(path.ends_with(".playbook/inv.toml.journal.jsonl"));
    }
}
