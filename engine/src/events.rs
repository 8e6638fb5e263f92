//! What a run reports, as it happens. The text reporter, the JSON-lines reporter and the tests
//! all consume the same events.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::diff::FileDiff;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Ok,
    Changed,
    Failed,
    Skipped,
    Unreachable,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Ok => "ok",
            TaskStatus::Changed => "changed",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Unreachable => "unreachable",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskEnd {
    pub phase: String,
    pub task: String,
    pub task_id: usize,
    pub host: String,
    pub module: String,
    pub status: TaskStatus,
    pub changed: bool,
    /// In check mode: this is a prediction, nothing was changed.
    pub check: bool,
    pub handler: bool,
    /// A failed task whose failure the playbook said to ignore.
    pub ignored: bool,
    /// A failed task of a block whose rescue tasks then run (Ansible's `rescued`).
    pub rescued: bool,
    /// The change in one line ("create /etc/x").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// A failure's reason, a skip's reason, or a debug message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<FileDiff>,
    /// A failure's (or an unreachable host's) kind and where it belongs; its message is `msg`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Box<crate::error::RuntimeError>>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostCounts {
    pub ok: usize,
    pub changed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub unreachable: usize,
    pub ignored: usize,
    /// Failures in a block's body that its rescue tasks handled.
    pub rescued: usize,
    /// Remote commands run on the host (each one SSH channel: probes, changes, fact gathering):
    /// the cost a run pays per host, shown in the JSON recap.
    pub round_trips: usize,
}

impl HostCounts {
    pub fn add(&mut self, e: &TaskEnd) {
        match e.status {
            TaskStatus::Ok => self.ok += 1,
            TaskStatus::Changed => self.changed += 1,
            TaskStatus::Failed | TaskStatus::Unreachable if e.ignored => self.ignored += 1,
            TaskStatus::Failed if e.rescued => self.rescued += 1,
            TaskStatus::Failed => self.failed += 1,
            TaskStatus::Skipped => self.skipped += 1,
            TaskStatus::Unreachable => self.unreachable += 1,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStart {
        playbook: String,
        hosts: usize,
        tasks: usize,
        check: bool,
    },
    PhaseStart {
        phase: String,
        hosts: usize,
        tasks: usize,
        /// Task runs the phase will make (each task once per host it targets; handlers apart):
        /// the progress total from the start.
        runs: usize,
    },
    /// A rolling phase (`serial`, `max_fail_percentage`, `any_errors_fatal`) starts a batch:
    /// its tasks and handlers on these hosts before the next batch.
    BatchStart {
        phase: String,
        /// 1 for the first.
        batch: usize,
        batches: usize,
        hosts: Vec<String>,
    },
    /// A rolling phase's batch ended with failures that stop the run: no later batch or phase
    /// runs.
    RolloutStop {
        phase: String,
        batch: usize,
        batches: usize,
        failed: Vec<String>,
        not_reached: Vec<String>,
        reason: String,
    },
    TaskStart {
        phase: String,
        task: String,
        task_id: usize,
        host: String,
    },
    TaskEnd(TaskEnd),
    /// An attempt of a task with `retries`/`until` did not succeed; the task runs again after
    /// `delay_s` seconds. `attempts` is the most it will make.
    TaskRetry {
        phase: String,
        task: String,
        task_id: usize,
        host: String,
        attempt: u32,
        attempts: u32,
        delay_s: u64,
        msg: String,
    },
    /// `print` from the playbook, at planning time (no host) or inside a closure on a host.
    Print {
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        text: String,
    },
    Recap {
        hosts: BTreeMap<String, HostCounts>,
        check: bool,
        interrupted: bool,
        /// Hosts of a rolling phase's batches that never started: the run stopped before them.
        not_reached: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stopped: Option<String>,
        duration_ms: u64,
    },
    /// Bad input (the command line, inventory, playbook, a template): nothing was run. `file`,
    /// `line` and `column` where the error points into a file.
    Error {
        kind: String,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        line: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        column: Option<usize>,
    },
}

pub trait EventSink: Send + Sync {
    fn emit(&self, event: &Event);
}

/// Keeps every event; for tests and for callers that render afterwards.
#[derive(Default)]
pub struct Collector {
    pub events: Mutex<Vec<Event>>,
}

impl EventSink for Collector {
    fn emit(&self, event: &Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event.clone());
    }
}

impl Collector {
    pub fn task_ends(&self) -> Vec<TaskEnd> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|e| match e {
                Event::TaskEnd(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Sends every event to several sinks.
pub struct Tee(pub Vec<std::sync::Arc<dyn EventSink>>);

impl EventSink for Tee {
    fn emit(&self, event: &Event) {
        for s in &self.0 {
            s.emit(event);
        }
    }
}

/// Replaces every registered secret in what an event shows before passing it on.
pub struct Redacting {
    pub inner: std::sync::Arc<dyn EventSink>,
    pub secrets: std::sync::Arc<crate::secret::Redactor>,
}

impl EventSink for Redacting {
    fn emit(&self, event: &Event) {
        if self.secrets.is_empty() {
            return self.inner.emit(event);
        }
        let r = |s: &String| self.secrets.redact(s);
        let mut e = event.clone();
        match &mut e {
            Event::TaskStart { task, phase, .. } => {
                *task = r(task);
                *phase = r(phase);
            }
            Event::TaskEnd(t) => {
                t.task = r(&t.task);
                t.phase = r(&t.phase);
                t.msg = t.msg.as_ref().map(r);
                t.summary = t.summary.as_ref().map(r);
                if let Some(d) = &mut t.diff {
                    d.before = d.before.as_ref().map(r);
                    d.after = d.after.as_ref().map(r);
                }
                if let Some(err) = &mut t.error {
                    err.task = r(&err.task);
                    err.template = err.template.as_ref().map(r);
                }
            }
            Event::Print { text, .. } => *text = r(text),
            Event::TaskRetry {
                task, msg, phase, ..
            } => {
                *task = r(task);
                *msg = r(msg);
                *phase = r(phase);
            }
            Event::Error { message, .. } => *message = r(message),
            Event::PhaseStart { phase, .. } | Event::BatchStart { phase, .. } => *phase = r(phase),
            Event::RolloutStop { phase, reason, .. } => {
                *phase = r(phase);
                *reason = r(reason);
            }
            Event::RunStart { .. } | Event::Recap { .. } => {}
        }
        self.inner.emit(&e);
    }
}
