//! Read-ahead: the probe scripts of a host's next tasks run in one round trip before those tasks
//! (`probe_ahead`), or after a change in the changing script's own round trip (`Follow`), so an
//! unchanged task costs no round trip of its own.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::host::Host;
use crate::module::Prefetched;
use crate::plan::{Action, Condition, TaskId};
use crate::transport::ExecOutput;

use super::resolve::{has_closure, Prepared};
use super::{State, TaskCx};

impl State {
    /// Runs the probe scripts of `tasks` (the host's next tasks, as `next_probes` finds them) in
    /// one round trip and keeps their outputs for the tasks. Returns how many tasks it considered
    /// (those after them are not read ahead).
    pub(super) async fn probe_ahead(
        self: &Arc<Self>,
        host: &str,
        tasks: &[TaskId],
        limit: usize,
    ) -> usize {
        let h = &self.hosts[host];
        if h.dead.load(Ordering::SeqCst) {
            return 0;
        }
        let Ok(conn) = self.connection(host).await else {
            return 0;
        };
        let (batch, considered) = self.next_probes(host, &conn, tasks, limit).await;
        // One probe alone gains nothing from a batch: its task probes as usual.
        if batch.len() < 2 {
            return considered;
        }
        let _permit = self
            .forks
            .acquire()
            .await
            .expect("semaphore is never closed");
        let scripts: Vec<&str> = batch.iter().map(|(_, s)| s.as_str()).collect();
        // A batch that fails leaves every task to probe alone, and to report what went wrong.
        let Ok(outputs) = crate::batch::run(&conn, &scripts).await else {
            return 0;
        };
        let mut pre = h.prefetched.lock().unwrap_or_else(|e| e.into_inner());
        for ((tid, script), output) in batch.into_iter().zip(outputs) {
            pre.insert(tid, Prefetched { script, output });
        }
        considered
    }

    /// The probe scripts of `tasks` (the host's next tasks), up to `limit` of them and
    /// `batch::MAX_SCRIPT_BYTES` in all, with how many tasks they cover. Stops at the first task
    /// whose probe cannot be known now: a custom task, closures, a task waiting for another (the
    /// one running, say), a module whose probe is not one script, arguments that do not render
    /// yet.
    pub(super) async fn next_probes(
        self: &Arc<Self>,
        host: &str,
        conn: &Host,
        tasks: &[TaskId],
        limit: usize,
    ) -> (Vec<(TaskId, String)>, usize) {
        let mut batch: Vec<(TaskId, String)> = Vec::new();
        let mut bytes = 0;
        let mut considered = 0;
        for &tid in tasks {
            if batch.len() >= limit {
                break;
            }
            let task = &self.plan.tasks[tid];
            if !self.selected(tid) {
                considered += 1;
                continue;
            }
            let Action::Module(module) = &task.action else {
                break;
            };
            let finished = |&d: &TaskId| self.finished(d);
            if !module.script_probe()
                || !task.control.is_plain()
                || matches!(task.when, Some(Condition::Closure(_)))
                || has_closure(&task.args)
                || !task.needs.iter().all(finished)
            {
                break;
            }
            if self.tasks[tid].reads.facts && self.gather_facts(host, conn).await.is_err() {
                break;
            }
            let script = match self.prepare(tid, host, conn) {
                Ok(Prepared::Run { args, vars }) => {
                    let tc = TaskCx::new(self, tid, host, conn, vars);
                    module.batch_probe_script(&args, &tc.cx())
                }
                Ok(Prepared::Skip(_)) => None,
                Ok(Prepared::Custom(_)) | Err(_) => break,
            };
            if let Some(script) = script {
                bytes += script.len();
                if bytes > crate::batch::MAX_SCRIPT_BYTES && !batch.is_empty() {
                    break;
                }
                batch.push((tid, script));
            }
            considered += 1;
        }
        (batch, considered)
    }
}

/// The probes of the tasks after the running one on its host, read after its apply in the same
/// round trip: what they read is the host as that change left it. The runner sends them with an
/// apply script (`State::execute`) and keeps what came back here.
pub(super) struct Follow<'a> {
    state: &'a Arc<State>,
    host: &'a str,
    tasks: &'a [TaskId],
    limit: usize,
    /// The probes sent, by task, and how many tasks they cover.
    sent: Mutex<(Vec<(TaskId, String)>, usize)>,
    /// Their outputs (as many as came back whole).
    outputs: Mutex<Vec<ExecOutput>>,
}

impl<'a> Follow<'a> {
    pub(super) fn new(
        state: &'a Arc<State>,
        host: &'a str,
        tasks: &'a [TaskId],
        limit: usize,
    ) -> Self {
        Follow {
            state,
            host,
            tasks,
            limit,
            sent: Mutex::new((Vec::new(), 0)),
            outputs: Mutex::default(),
        }
    }

    /// Keeps the outputs of the scripts sent after the apply.
    pub(super) fn received(&self, outputs: Vec<ExecOutput>) {
        *self.outputs.lock().unwrap_or_else(|e| e.into_inner()) = outputs;
    }

    /// The probe outputs read after the apply, by task, and how many tasks they cover; nothing
    /// when they did not all come back (or none were sent).
    pub(super) fn take(&self) -> (Vec<(TaskId, Prefetched)>, usize) {
        let (sent, considered) =
            std::mem::take(&mut *self.sent.lock().unwrap_or_else(|e| e.into_inner()));
        let outputs = std::mem::take(&mut *self.outputs.lock().unwrap_or_else(|e| e.into_inner()));
        if outputs.len() != sent.len() {
            return (Vec::new(), 0);
        }
        let fresh = sent
            .into_iter()
            .zip(outputs)
            .map(|((tid, script), output)| (tid, Prefetched { script, output }))
            .collect();
        (fresh, considered)
    }
}

impl Follow<'_> {
    /// The probe scripts to send after an apply script, asked only when one is about to be sent.
    pub(super) async fn scripts(&self) -> Vec<String> {
        let Ok(conn) = self.state.connection(self.host).await else {
            return Vec::new();
        };
        let next = self
            .state
            .next_probes(self.host, &conn, self.tasks, self.limit)
            .await;
        let scripts = next.0.iter().map(|(_, s)| s.clone()).collect();
        *self.sent.lock().unwrap_or_else(|e| e.into_inner()) = next;
        scripts
    }
}
