//! Runs a plan: phase by phase; inside a phase every host at once, each host's tasks in the
//! order of the graph; handlers at the end of a phase. Values that tasks pass to each other are
//! read here, when the consuming task runs.
//!
//! This file schedules and records; `readahead` batches probes into fewer round trips and
//! `resolve` computes what a task runs with on one host.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Map, Value};
use tokio::sync::{watch, OnceCell, Semaphore};

use crate::error::{ErrorKind, Failure, RuntimeError};
use crate::events::{Event, EventSink, HostCounts, TaskEnd, TaskStatus};
use crate::facts::SystemFacts;
use crate::host::Host;
use crate::inventory::{HostEntry, Inventory};
use crate::module::{ModuleContext, ModuleError, Outcome, Prefetched, Status, Step};
use crate::plan::{Action, Condition, Plan, TaskId};
use crate::template::TemplateEngine;
use crate::transport::{Connector, TransportError};

mod blocks;
mod readahead;
mod resolve;
mod rollout;
#[cfg(test)]
mod tests;

use readahead::Follow;
use resolve::{has_closure, HostTemplates, Prepared, Reads};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub check: bool,
    pub diff: bool,
    pub forks: usize,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    /// `--start-at-task`: tasks declared before this one are not run (handlers still are).
    pub start_at: Option<TaskId>,
    pub extra_vars: Map<String, Value>,
    /// The sudo password given at the prompt (--ask-become-pass); wins over the inventory's.
    pub become_password: Option<crate::secret::Secret>,
    /// Secrets of this run: never shown in any event.
    pub secrets: Arc<crate::secret::Redactor>,
    /// `--keep-output`: bytes kept per stream of a command's output (head and tail).
    pub keep_output: usize,
    /// Where handlers owed by a host that failed are kept for the next run (not in check mode).
    pub pending_handlers: Option<crate::pending::PendingHandlers>,
    /// Run notified handlers on failed hosts too, and after any_errors_fatal (Ansible's
    /// --force-handlers).
    pub force_handlers: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            check: false,
            diff: false,
            forks: 50,
            tags: vec![],
            skip_tags: vec![],
            start_at: None,
            extra_vars: Map::new(),
            become_password: None,
            secrets: Arc::default(),
            keep_output: crate::transport::DEFAULT_KEEP_OUTPUT,
            pending_handlers: None,
            force_handlers: false,
        }
    }
}

/// Per-host totals of a finished run.
#[derive(Debug, Clone, Default)]
pub struct Recap {
    pub hosts: BTreeMap<String, HostCounts>,
    /// The run was stopped (Ctrl-C) before it finished.
    pub interrupted: bool,
    /// Hosts a rolling phase never reached: the run stopped after an earlier batch.
    pub not_reached: Vec<String>,
    /// Why the run stopped before its last phase (a rolling phase's failures).
    pub stopped: Option<String>,
}

impl Recap {
    /// 0 when everything worked, 3 when a host was unreachable, else 2 when a task failed;
    /// 130 when interrupted.
    pub fn exit_code(&self) -> i32 {
        if self.interrupted {
            130
        } else if self.hosts.values().any(|c| c.unreachable > 0) {
            3
        } else if self.hosts.values().any(|c| c.failed > 0) {
            2
        } else {
            0
        }
    }
    pub fn changed(&self) -> usize {
        self.hosts.values().map(|c| c.changed).sum()
    }
}

/// How a task ended on one host, as later tasks see it.
#[derive(Debug, Clone)]
enum Done {
    /// Ran (or was skipped by its condition); the value is what `register` stores.
    Ran(Value),
    /// Check mode predicted a change: there is no real result to read.
    Predicted,
    Failed,
    /// Not run: the host had failed earlier, or the task was not selected by tags.
    NotRun {
        selected: bool,
    },
}

struct HostRt {
    entry: HostEntry,
    vars: Map<String, Value>,
    /// set_fact values and registered results on this host.
    facts: Mutex<Map<String, Value>>,
    conn: OnceCell<Result<Host, String>>,
    dead: AtomicBool,
    /// Check mode: an earlier task on this host would have changed something.
    predicted_change: AtomicBool,
    /// Handlers owed: (phase, name), notified in this run or left from an earlier one.
    notified: Mutex<BTreeSet<(usize, String)>>,
    /// System facts, gathered when a task first needs them.
    gathered: Arc<OnceCell<Value>>,
    /// Remote commands run on this host so far.
    round_trips: Arc<AtomicUsize>,
    /// Probe outputs read ahead in a batch, by task; dropped when the host may have changed.
    prefetched: Mutex<HashMap<TaskId, Prefetched>>,
    /// The block the host is in, and what failed in it.
    block: Mutex<Option<blocks::BlockRun>>,
}

struct TaskRt {
    finished: watch::Sender<usize>,
    reads: Reads,
    /// Whether the task only checks in this run (--check, or the task's own `check_mode`).
    checks: bool,
    /// `throttle`: the hosts that may run the task at once.
    throttle: Option<Semaphore>,
}

struct State {
    plan: Arc<Plan>,
    inventory: Arc<Inventory>,
    opts: RunOptions,
    sink: Arc<dyn EventSink>,
    templates: TemplateEngine,
    connector: Arc<dyn Connector>,
    hosts: BTreeMap<String, HostRt>,
    tasks: Vec<TaskRt>,
    done: Mutex<HashMap<(TaskId, String), Done>>,
    forks: Semaphore,
    counts: Mutex<BTreeMap<String, HostCounts>>,
    batch: Mutex<rollout::Batch>,
    /// any_errors_fatal: why no task may start any more.
    halt: Mutex<Option<String>>,
    /// Task names as each host's lines show them, rendered once (see `shown_name`).
    shown_names: Mutex<HashMap<(TaskId, String), String>>,
    stopped: Mutex<Option<rollout::Stopped>>,
}

/// An error while running one task on one host.
enum TaskError {
    Failed(Failure),
    Unreachable(String),
    /// Check mode could not decide because an earlier change was only predicted.
    DependsOnChange(String),
}

impl TaskError {
    fn failed(kind: ErrorKind, message: impl Into<String>) -> Self {
        TaskError::Failed(Failure::new(kind, message))
    }
}

impl From<ModuleError> for TaskError {
    fn from(e: ModuleError) -> Self {
        match e {
            ModuleError::Transport(TransportError::Unreachable(m)) => TaskError::Unreachable(m),
            other => TaskError::Failed(Failure::from(other)),
        }
    }
}

impl From<TransportError> for TaskError {
    fn from(e: TransportError) -> Self {
        TaskError::from(ModuleError::Transport(e))
    }
}

/// Runs `plan` and returns the per-host totals. Emits every event to `sink`.
pub async fn run(
    plan: Arc<Plan>,
    inventory: Arc<Inventory>,
    connector: Arc<dyn Connector>,
    opts: RunOptions,
    sink: Arc<dyn EventSink>,
) -> Recap {
    run_until(
        plan,
        inventory,
        connector,
        opts,
        sink,
        std::future::pending(),
    )
    .await
}

/// Like [`run`], but stops when `interrupt` completes (Ctrl-C): tasks in flight are abandoned,
/// no new task starts, and every connection is closed before it returns.
pub async fn run_until(
    plan: Arc<Plan>,
    inventory: Arc<Inventory>,
    connector: Arc<dyn Connector>,
    opts: RunOptions,
    sink: Arc<dyn EventSink>,
    interrupt: impl std::future::Future<Output = ()>,
) -> Recap {
    let started = Instant::now();
    for e in inventory.hosts() {
        if let Some(pw) = &e.become_password {
            opts.secrets.add(pw.expose());
        }
    }
    if let Some(pw) = &opts.become_password {
        opts.secrets.add(pw.expose());
    }
    let sink: Arc<dyn EventSink> = Arc::new(crate::events::Redacting {
        inner: sink,
        secrets: opts.secrets.clone(),
    });
    let mut hosts = BTreeMap::new();
    let targets = plan.hosts();
    for name in targets.iter().chain(&plan.delegates()) {
        if hosts.contains_key(name) {
            continue;
        }
        let Some(entry) = inventory.host(name) else {
            continue;
        };
        let vars = inventory.host_vars(name, &plan.defaults, &opts.extra_vars);
        hosts.insert(
            name.clone(),
            HostRt {
                entry: entry.clone(),
                vars,
                facts: Mutex::new(Map::new()),
                conn: OnceCell::new(),
                dead: AtomicBool::new(false),
                predicted_change: AtomicBool::new(false),
                notified: Mutex::new(BTreeSet::new()),
                gathered: Arc::new(OnceCell::new()),
                round_trips: Arc::default(),
                prefetched: Mutex::default(),
                block: Mutex::default(),
            },
        );
    }
    // Hosts only delegated to run no task of their own: not in the recap.
    let counts = targets
        .iter()
        .filter(|h| hosts.contains_key(*h))
        .map(|h| (h.clone(), HostCounts::default()))
        .collect();
    let templates = TemplateEngine::new(&plan.script.dir);
    let tasks = plan
        .tasks
        .iter()
        .map(|t| TaskRt {
            finished: watch::channel(0).0,
            reads: Reads::of(t, &templates, &plan.templated),
            checks: t.checks(opts.check),
            throttle: t.throttle.map(Semaphore::new),
        })
        .collect();
    let state = Arc::new(State {
        templates,
        forks: Semaphore::new(opts.forks.max(1)),
        plan: plan.clone(),
        inventory,
        opts,
        sink,
        connector,
        hosts,
        tasks,
        done: Mutex::new(HashMap::new()),
        counts: Mutex::new(counts),
        batch: Mutex::default(),
        halt: Mutex::default(),
        shown_names: Mutex::default(),
        stopped: Mutex::default(),
    });
    state.load_pending_handlers();
    state.sink.emit(&Event::RunStart {
        playbook: plan.file.clone(),
        hosts: state.hosts.len(),
        tasks: plan.tasks.iter().filter(|t| !t.is_handler).count(),
        check: state.opts.check,
    });
    let phases = async {
        for pi in 0..plan.phases.len() {
            if !state.run_phase(pi).await {
                break;
            }
        }
    };
    let interrupted = tokio::select! {
        _ = phases => false,
        _ = interrupt => true,
    };
    if interrupted {
        // Over connections still open: the commands in flight go on running on the targets
        // otherwise (a `sleep 30` would finish 30 s later).
        crate::host::stop_in_flight(std::time::Duration::from_secs(5)).await;
    }
    // Every connection at once: closing one waits for its ssh master to exit, so one after the
    // other they add up (~30 ms each).
    let mut closing = tokio::task::JoinSet::new();
    for h in state.hosts.values() {
        if let Some(Ok(host)) = h.conn.get() {
            let transport = host.transport().clone();
            closing.spawn(async move { transport.close().await });
        }
    }
    while closing.join_next().await.is_some() {}
    let mut counts = state
        .counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (name, c) in counts.iter_mut() {
        c.round_trips = state.hosts[name].round_trips.load(Ordering::Relaxed);
    }
    state.save_pending_handlers();
    let stopped = state
        .stopped
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default();
    let stop_reason = (!stopped.reason.is_empty()).then_some(stopped.reason);
    state.sink.emit(&Event::Recap {
        hosts: counts.clone(),
        check: state.opts.check,
        interrupted,
        not_reached: stopped.not_reached.clone(),
        stopped: stop_reason.clone(),
        duration_ms: started.elapsed().as_millis() as u64,
    });
    Recap {
        hosts: counts,
        interrupted,
        not_reached: stopped.not_reached,
        stopped: stop_reason,
    }
}

impl State {
    /// Runs the host's tasks of the phase in order, reading their probes ahead in batches (one
    /// round trip for many tasks) while nothing changes the host, and after a change in the
    /// change's own round trip.
    async fn run_host_phase(
        self: &Arc<Self>,
        phase: usize,
        part: std::ops::Range<usize>,
        host: &str,
    ) {
        let plan = self.plan.clone();
        let tasks: Vec<TaskId> = plan.phases[phase].tasks[part]
            .iter()
            .copied()
            .filter(|&t| plan.tasks[t].hosts.iter().any(|h| h == host))
            .collect();
        let h = &self.hosts[host];
        // How many probes a batch reads ahead: all until something changes the host; after a
        // change, twice as many as ran since without one. On a fresh host nearly every task
        // changes it, and probes read ahead there would only be read again.
        let mut ahead = usize::MAX;
        // Tasks run since the last change.
        let mut quiet = 0;
        // Tasks before this index were already considered by the last batch.
        let mut covered = 0;
        for (i, &tid) in tasks.iter().enumerate() {
            if i >= covered && ahead > 1 {
                covered = self.probe_ahead(host, &tasks[i..], ahead).await + i;
            }
            covered = covered.max(i + 1);
            // Should this task change the host, the next ones probe after it in its round trip
            // (as many as a batch would read then, and at least one).
            let follow = Follow::new(self, host, &tasks[i + 1..], (2 * quiet).max(1));
            match self.run_task(tid, host, Some(&follow)).await {
                true => {
                    let (fresh, considered) = follow.take();
                    let mut pre = h.prefetched.lock().unwrap_or_else(|e| e.into_inner());
                    pre.clear();
                    pre.extend(fresh);
                    covered = i + 1 + considered;
                    quiet = 0;
                    ahead = 1;
                }
                false => {
                    quiet += 1;
                    if ahead != usize::MAX {
                        ahead = 2 * quiet;
                    }
                }
            }
        }
        h.prefetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.settle_block(host, None);
    }

    async fn run_handlers(self: &Arc<Self>, phase: usize) {
        let plan = self.plan.clone();
        for &hid in &plan.phases[phase].handlers {
            let task = &plan.tasks[hid];
            // In inventory order: a throttled handler rolls over the hosts in that order.
            let notified: Vec<String> = task
                .hosts
                .iter()
                .filter(|hname| {
                    let Some(h) = self.hosts.get(hname.as_str()) else {
                        return false;
                    };
                    // A failed host keeps what it owes for the next run, unless forced; a
                    // host of a later batch keeps what an earlier run left it for its batch.
                    if (h.dead.load(Ordering::SeqCst) && !self.opts.force_handlers)
                        || !self.reached(phase, hname)
                    {
                        return false;
                    }
                    h.notified
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&(phase, task.name.clone()))
                })
                .cloned()
                .collect();
            let mut notified = notified;
            if task.control.run_once {
                notified.truncate(1);
            }
            let group = task.throttle.unwrap_or(notified.len()).max(1);
            let mut groups = notified.chunks(group);
            for hosts in groups.by_ref() {
                let mut joins = tokio::task::JoinSet::new();
                for hname in hosts {
                    let st = self.clone();
                    let hname = hname.clone();
                    joins.spawn(async move { st.run_task(hid, &hname, None).await });
                }
                while joins.join_next().await.is_some() {}
                let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
                let failed = hosts
                    .iter()
                    .find(|h| matches!(done.get(&(hid, h.to_string())), Some(Done::Failed)));
                if let (Some(failed), Some(_)) = (failed, task.throttle) {
                    let why = format!(
                        "not run: the rolling run of this handler stopped at {failed}, where it \
                         failed (throttle {group})"
                    );
                    drop(done);
                    for hname in groups.flatten() {
                        self.skip(hid, hname, &why);
                    }
                    break;
                }
            }
        }
    }

    /// Reports a task as skipped on `host` without running it.
    fn skip(&self, tid: TaskId, host: &str, why: &str) {
        let check = self.tasks[tid].checks;
        let mut end = self.task_end(tid, host, check);
        self.sink.emit(&Event::TaskStart {
            phase: end.phase.clone(),
            task: end.task.clone(),
            task_id: tid,
            host: host.to_string(),
        });
        end.status = TaskStatus::Skipped;
        end.msg = Some(why.to_string());
        self.end_task(tid, host, end, Done::NotRun { selected: true });
    }

    /// A task's end on a host before its outcome is known: ok, nothing changed.
    fn task_end(&self, tid: TaskId, host: &str, check: bool) -> TaskEnd {
        let task = &self.plan.tasks[tid];
        TaskEnd {
            phase: self.plan.phases[task.phase].name.clone(),
            task: self.shown_name(tid, host),
            task_id: tid,
            host: host.to_string(),
            module: task.module_name().to_string(),
            status: TaskStatus::Ok,
            changed: false,
            check,
            handler: task.is_handler,
            ignored: false,
            rescued: false,
            summary: None,
            msg: None,
            diff: None,
            error: None,
            duration_ms: 0,
        }
    }

    /// A failure of task `tid` on `host`, placed: the task's position in the playbook.
    fn runtime_error(
        &self,
        tid: TaskId,
        host: &str,
        kind: ErrorKind,
        template: Option<&crate::error::TemplatePos>,
    ) -> Box<RuntimeError> {
        let task = &self.plan.tasks[tid];
        Box::new(RuntimeError::new(
            kind, host, &task.name, &task.pos, template,
        ))
    }

    /// Counts, records and reports a task's end on a host.
    fn end_task(&self, tid: TaskId, host: &str, end: TaskEnd, done: Done) {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(host.to_string())
            .or_default()
            .add(&end);
        self.finish(tid, host, done);
        self.sink.emit(&Event::TaskEnd(end));
    }

    fn selected(&self, tid: TaskId) -> bool {
        let t = &self.plan.tasks[tid];
        if t.tags.iter().any(|g| self.opts.skip_tags.contains(g)) {
            return false;
        }
        if self.opts.start_at.is_some_and(|s| tid < s && !t.is_handler) {
            return false;
        }
        self.opts.tags.is_empty()
            || t.tags
                .iter()
                .any(|g| g == "always" || self.opts.tags.contains(g))
    }

    fn finish(&self, tid: TaskId, host: &str, done: Done) {
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((tid, host.to_string()), done);
        self.tasks[tid].finished.send_modify(|n| *n += 1);
    }

    async fn wait_for(&self, tid: TaskId) {
        let mut rx = self.tasks[tid].finished.subscribe();
        let _ = rx.wait_for(|_| self.finished(tid)).await;
    }

    /// Runs one task on one host; an apply made by script takes the probes `follow` picks along
    /// (and leaves their outputs there). Returns whether something ran that may have changed the
    /// host.
    async fn run_task(
        self: &Arc<Self>,
        tid: TaskId,
        host: &str,
        follow: Option<&Follow<'_>>,
    ) -> bool {
        let task = &self.plan.tasks[tid];
        let h = &self.hosts[host];
        if !self.selected(tid) {
            self.finish(tid, host, Done::NotRun { selected: false });
            return false;
        }
        self.settle_block(host, Some(tid));
        let forced = task.is_handler && self.opts.force_handlers;
        if h.dead.load(Ordering::SeqCst) && !forced {
            self.finish(tid, host, Done::NotRun { selected: true });
            return false;
        }
        if let blocks::Gate::Pass(done) = self.block_gate(tid, host) {
            self.finish(tid, host, done);
            return false;
        }
        // A run_once handler is narrowed to its first notified host by `run_handlers`.
        if task.control.run_once && !task.is_handler {
            if let Some(first) = self.run_once_host(tid).filter(|f| f != host) {
                self.take_run_once(tid, host, first).await;
                return false;
            }
        }
        let phase = self.plan.phases[task.phase].name.clone();
        // The run's mode decides whether predictions upstream matter; the task's own mode decides
        // whether this task only checks (`.check_mode(false)` tasks run for real).
        let check_run = self.opts.check;
        let check = self.tasks[tid].checks;
        let (upstream_predicted, upstream_failure) = self.wait_upstream(tid).await;
        if let Some(why) = self.halted().filter(|_| !forced) {
            self.skip(tid, host, &format!("not run: {why}"));
            return false;
        }
        self.sink.emit(&Event::TaskStart {
            phase: phase.clone(),
            task: self.shown_name(tid, host),
            task_id: tid,
            host: host.to_string(),
        });
        let started = Instant::now();
        let result = match upstream_failure {
            Some(msg) => Err(TaskError::failed(ErrorKind::Upstream, msg)),
            None => self.attempts(tid, host, follow).await,
        };
        let upstream_predicted =
            upstream_predicted || (check_run && h.predicted_change.load(Ordering::SeqCst));
        // A failure may come after part of a change was made, unless the task only checked (a
        // custom task may run anything even then).
        let acted = match &result {
            Ok(outcome) => outcome.acted,
            Err(TaskError::DependsOnChange(_)) => false,
            Err(_) => !check || matches!(task.action, Action::Custom(_)),
        };
        let mut end = self.task_end(tid, host, check);
        let done = self.record(tid, host, result, check_run && upstream_predicted, &mut end);
        hide_secret_output(&task.secret, &mut end);
        end.duration_ms = started.elapsed().as_millis() as u64;
        self.end_task(tid, host, end, done);
        acted
    }

    /// Runs the task until it succeeds and its `until` holds, as many times as `retries` allows,
    /// `delay` apart. A task that only checks runs once and its `until` is not read: a
    /// prediction is no result to wait on.
    async fn attempts(
        self: &Arc<Self>,
        tid: TaskId,
        host: &str,
        follow: Option<&Follow<'_>>,
    ) -> Result<Outcome, TaskError> {
        let task = &self.plan.tasks[tid];
        let control = &task.control;
        let attempts = control.attempts();
        if self.tasks[tid].checks || (attempts == 1 && control.until.is_none()) {
            // Probes read after a change go through the changing task's connection: with its
            // own become, environment or deadline they would not be the next tasks' probes.
            let follow = follow.filter(|_| control.is_plain());
            return self.execute(tid, host, follow).await;
        }
        let mut acted = false;
        let mut attempt = 1;
        loop {
            // An attempt reads no probes after its change: the next attempt probes afresh, and
            // the tasks after it probe after the last attempt.
            let why = match self.execute(tid, host, None).await {
                Ok(mut outcome) => {
                    acted |= outcome.acted;
                    outcome.acted = acted;
                    let holds = match (&control.until, &outcome.status) {
                        (_, Status::Skipped(_)) | (None, _) => true,
                        (Some(cond), status) => {
                            let value = Value::Object(result_map(outcome.result.clone(), status));
                            self.until_holds(tid, host, cond, value).await?
                        }
                    };
                    if holds {
                        return Ok(outcome);
                    }
                    Failure::new(
                        ErrorKind::Failed,
                        match &control.until {
                            Some(Condition::Expr(e)) => format!("until condition is false: {e}"),
                            _ => "until condition is false".to_string(),
                        },
                    )
                }
                // A failed attempt may have changed part of what it meant to.
                Err(TaskError::Failed(why)) => {
                    acted = true;
                    why
                }
                Err(other) => return Err(other),
            };
            if attempt >= attempts {
                let message = format!(
                    "'{}' on {host} gave up after {attempt} attempt{}: {why}",
                    task.name,
                    if attempt == 1 { "" } else { "s" }
                );
                return Err(TaskError::Failed(why.reworded(message)));
            }
            self.sink.emit(&Event::TaskRetry {
                phase: self.plan.phases[task.phase].name.clone(),
                task: self.shown_name(tid, host),
                task_id: tid,
                host: host.to_string(),
                attempt,
                attempts,
                delay_s: control.delay().as_secs(),
                msg: match hidden_text(&task.secret, "message") {
                    Some(hidden) => hidden,
                    None => why.message,
                },
            });
            tokio::time::sleep(control.delay()).await;
            attempt += 1;
        }
    }

    /// A run_once task on one of its hosts but the first: takes the first host's outcome once
    /// it is known (its result registered here too, as in Ansible), reporting nothing of its own
    /// unless it failed there.
    async fn take_run_once(&self, tid: TaskId, host: &str, first: String) {
        let task = &self.plan.tasks[tid];
        let key = (tid, first.clone());
        let mut rx = self.tasks[tid].finished.subscribe();
        let _ = rx
            .wait_for(|_| {
                self.done
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&key)
            })
            .await;
        let done = self
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        match done {
            Some(Done::Ran(v)) => {
                if let Some(name) = &task.register {
                    self.hosts[host]
                        .facts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.clone(), v.clone());
                }
                self.finish(tid, host, Done::Ran(v));
            }
            Some(Done::Predicted) => self.finish(tid, host, Done::Predicted),
            // What failed for every host stops every host, as a failure here would.
            Some(Done::Failed) => {
                let mut end = self.task_end(tid, host, self.tasks[tid].checks);
                self.sink.emit(&Event::TaskStart {
                    phase: end.phase.clone(),
                    task: end.task.clone(),
                    task_id: tid,
                    host: host.to_string(),
                });
                end.status = TaskStatus::Failed;
                end.msg = Some(format!(
                    "run_once: the task failed on {first}, where it ran for every host"
                ));
                end.error = Some(self.runtime_error(tid, host, ErrorKind::Upstream, None));
                self.hosts[host].dead.store(true, Ordering::SeqCst);
                self.end_task(tid, host, end, Done::Failed);
            }
            Some(Done::NotRun { selected: false }) => {
                self.finish(tid, host, Done::NotRun { selected: false })
            }
            Some(Done::NotRun { selected: true }) | None => self.skip(
                tid,
                host,
                &format!("run_once: not run, as it did not run on {first}, its first host"),
            ),
        }
    }

    /// Waits for the tasks this one reads or must run after. Returns whether any of them only
    /// predicted a change, and why this task cannot run if one failed or did not run.
    async fn wait_upstream(&self, tid: TaskId) -> (bool, Option<String>) {
        let mut upstream_predicted = false;
        let mut upstream_failure = None;
        for &d in &self.plan.tasks[tid].needs {
            self.wait_for(d).await;
            let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
            for dh in &self.plan.tasks[d].hosts {
                match done.get(&(d, dh.clone())) {
                    Some(Done::Predicted) => upstream_predicted = true,
                    Some(Done::Failed) | Some(Done::NotRun { selected: true }) => {
                        upstream_failure.get_or_insert_with(|| {
                            format!(
                                "depends on '{}' (line {}), which failed or did not run on {dh}",
                                self.plan.tasks[d].name, self.plan.tasks[d].pos.line
                            )
                        });
                    }
                    _ => {}
                }
            }
        }
        (upstream_predicted, upstream_failure)
    }

    /// Fills `end` from a task's result on a host and records what later tasks see: its
    /// registered result, handlers notified, the host failed or predicted to change.
    /// `after_prediction`: a failure may be due to a change only predicted above (check mode).
    fn record(
        &self,
        tid: TaskId,
        host: &str,
        result: Result<Outcome, TaskError>,
        after_prediction: bool,
        end: &mut TaskEnd,
    ) -> Done {
        let task = &self.plan.tasks[tid];
        let h = &self.hosts[host];
        let check = end.check;
        match result {
            Ok(outcome) => {
                end.summary = outcome.summary;
                end.diff = outcome.diff.filter(|_| self.opts.diff);
                let registered = result_map(outcome.result, &outcome.status);
                if let Some(msg) = registered
                    .get("msg")
                    .filter(|_| matches!(&task.action, Action::Module(m) if m.shows_msg()))
                {
                    end.msg = Some(match msg {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    });
                }
                match outcome.status {
                    Status::Ok => end.status = TaskStatus::Ok,
                    Status::Changed => {
                        end.status = TaskStatus::Changed;
                        end.changed = true;
                    }
                    Status::Skipped(why) => {
                        end.status = TaskStatus::Skipped;
                        end.msg = Some(why);
                    }
                }
                if end.changed {
                    let mut n = h.notified.lock().unwrap_or_else(|e| e.into_inner());
                    n.extend(task.notify.iter().map(|name| (task.phase, name.clone())));
                }
                if check && end.changed {
                    h.predicted_change.store(true, Ordering::SeqCst);
                    Done::Predicted
                } else {
                    let value = Value::Object(registered);
                    if task.secret == crate::plan::Secrecy::Marked {
                        self.opts.secrets.add_json(&value);
                    }
                    if let Some(name) = &task.register {
                        h.facts
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(name.clone(), value.clone());
                    }
                    Done::Ran(value)
                }
            }
            Err(TaskError::DependsOnChange(why)) => {
                end.status = TaskStatus::Skipped;
                end.msg = Some(format!("depends on a change above: {why}"));
                Done::Predicted
            }
            Err(TaskError::Failed(why)) if after_prediction => {
                end.status = TaskStatus::Skipped;
                end.msg = Some(format!(
                    "depends on a change above; in a real run it might not fail: {why}"
                ));
                Done::Predicted
            }
            Err(TaskError::Failed(why)) => {
                end.status = TaskStatus::Failed;
                end.error = Some(self.runtime_error(tid, host, why.kind, why.template.as_ref()));
                end.msg = Some(why.message);
                if task.ignore_errors {
                    end.ignored = true;
                    Done::Ran(serde_json::json!({"failed": true, "changed": false, "msg": end.msg}))
                } else if let Some(rescued) = self.block_failure(tid, host) {
                    end.rescued = rescued;
                    Done::Failed
                } else {
                    h.dead.store(true, Ordering::SeqCst);
                    self.fail_fast(tid, host);
                    Done::Failed
                }
            }
            Err(TaskError::Unreachable(why)) => {
                end.status = TaskStatus::Unreachable;
                end.error = Some(self.runtime_error(tid, host, ErrorKind::Unreachable, None));
                end.msg = Some(why);
                if task.ignore_unreachable {
                    end.ignored = true;
                    Done::Ran(
                        serde_json::json!({"unreachable": true, "changed": false, "msg": end.msg}),
                    )
                } else {
                    h.dead.store(true, Ordering::SeqCst);
                    self.fail_fast(tid, host);
                    Done::Failed
                }
            }
        }
    }

    async fn connection(&self, host: &str) -> Result<Host, TaskError> {
        let h = &self.hosts[host];
        let conn = h
            .conn
            .get_or_init(|| async {
                self.connector
                    .connect(&h.entry)
                    .await
                    .map(|inner| {
                        let t: Arc<dyn crate::transport::Transport> =
                            Arc::new(crate::transport::Counted {
                                inner,
                                count: h.round_trips.clone(),
                            });
                        let become_ = h.entry.become_config().map(|mut b| {
                            if let Some(pw) = &self.opts.become_password {
                                b.password = Some(pw.clone());
                            }
                            b
                        });
                        Host::new(host, t)
                            .with_become(become_)
                            .with_keep_output(self.opts.keep_output)
                    })
                    .map_err(|e| match e {
                        TransportError::Unreachable(m) | TransportError::Exec(m) => m,
                    })
            })
            .await;
        conn.clone().map_err(TaskError::Unreachable)
    }

    async fn execute(
        self: &Arc<Self>,
        tid: TaskId,
        host: &str,
        follow: Option<&Follow<'_>>,
    ) -> Result<Outcome, TaskError> {
        let task = &self.plan.tasks[tid];
        let _throttled = match &self.tasks[tid].throttle {
            Some(s) => Some(s.acquire().await.expect("semaphore is never closed")),
            None => None,
        };
        let needs_closures = matches!(task.action, Action::Custom(_))
            || matches!(task.when, Some(Condition::Closure(_)))
            || has_closure(&task.args);
        // Facts are the task's host's own, even when another host runs the task.
        if needs_closures || self.tasks[tid].reads.facts {
            let own = self.connection(host).await?;
            self.gather_facts(host, &own).await?;
        }
        let via = task.control.delegate_to.as_deref().unwrap_or(host);
        let base = self.connection(via).await?;
        let env = self.task_env(tid, host)?;
        let mut conn = self.task_host(tid, via, base).with_env(env);
        // A delegated task still acts for its own host, as `h.name` says (Ansible's
        // inventory_hostname).
        conn.name = host.to_string();
        let prepared = if needs_closures {
            let st = self.clone();
            let hname = host.to_string();
            let c = conn.clone();
            tokio::task::spawn_blocking(move || st.prepare(tid, &hname, &c))
                .await
                .map_err(|e| TaskError::failed(ErrorKind::Failed, format!("task panicked: {e}")))?
        } else {
            self.prepare(tid, host, &conn)
        };
        let prepared = match prepared {
            Err(TaskError::DependsOnChange(why)) => {
                return self.predict_created(tid, host, &conn, why).await;
            }
            other => other?,
        };
        let (args, vars) = match prepared {
            Prepared::Skip(why) => {
                return Ok(Outcome {
                    status: Status::Skipped(why),
                    summary: None,
                    diff: None,
                    result: Value::Null,
                    acted: false,
                })
            }
            Prepared::Custom(outcome) => return Ok(outcome),
            Prepared::Run { args, vars } => (args, vars),
        };
        let Action::Module(module) = &task.action else {
            unreachable!("custom tasks finish in prepare")
        };
        let _permit = self
            .forks
            .acquire()
            .await
            .expect("semaphore is never closed");
        let prefetched = self.hosts[host]
            .prefetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&tid);
        let tc = TaskCx::new(self, tid, host, &conn, vars);
        let cx = tc.cx();
        let outcome: Result<Outcome, TaskError> = async {
            // A probe that is one script is run here, like every script of such a module: alone
            // when it was not read ahead.
            let prefetched = match prefetched {
                None if module.script_probe() => match module.batch_probe_script(&args, &cx) {
                    Some(script) => Some(Prefetched {
                        output: conn.run(&script).await?,
                        script,
                    }),
                    None => None,
                },
                other => other,
            };
            match module.start(args, &cx, prefetched).await? {
                Step::Done(outcome) => Ok(outcome),
                Step::Apply(pending) => {
                    let reads = match follow {
                        Some(f) => f.scripts().await,
                        None => Vec::new(),
                    };
                    let reads: Vec<&str> = reads.iter().map(String::as_str).collect();
                    let (out, read_after) =
                        crate::batch::run_after(&conn, &pending.script, &reads).await?;
                    if let Some(f) = follow {
                        f.received(read_after);
                    }
                    Ok(pending.finish(out, &cx).await?)
                }
            }
        }
        .await;
        match outcome {
            // A template file reading a result only predicted fails to render in check mode.
            Err(TaskError::Failed(why))
                if self.opts.check
                    && matches!(why.kind, ErrorKind::Failed | ErrorKind::Template)
                    && module.creates().is_some()
                    && self.hosts[host].predicted_change.load(Ordering::SeqCst) =>
            {
                self.predict_created(tid, host, &conn, why.message).await
            }
            other => other,
        }
    }

    /// The task's `environment`, its values rendered as templates with the host's variables.
    fn task_env(
        &self,
        tid: TaskId,
        host: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, TaskError> {
        let task = &self.plan.tasks[tid];
        if task.control.environment.is_empty() {
            return Ok(Default::default());
        }
        let origin = format!("{} (task '{}', environment)", task.pos, task.name);
        let ctx = self.template_vars(host, &self.tasks[tid].reads);
        task.control
            .environment
            .iter()
            .map(|(k, v)| {
                let v = if crate::template::is_template(v) {
                    self.templates
                        .render_str(v, &origin, &ctx)
                        .map_err(|e| self.template_failure(host, e))?
                } else {
                    v.clone()
                };
                Ok((k.clone(), v))
            })
            .collect()
    }

    /// The host as one task reaches it (`via`: the task's host, or the one it is delegated to):
    /// the task's become, environment and deadline.
    fn task_host(&self, tid: TaskId, via: &str, base: Host) -> Host {
        let control = &self.plan.tasks[tid].control;
        if control.is_plain() {
            return base;
        }
        let entry = &self.hosts[via].entry;
        let mut become_ = match control.become_ {
            Some(false) => None,
            Some(true) => Some(base.become_config().cloned().unwrap_or_else(|| {
                crate::host::Become {
                    user: entry.become_user.clone(),
                    password: self
                        .opts
                        .become_password
                        .clone()
                        .or_else(|| entry.become_password.clone()),
                }
            })),
            None => base.become_config().cloned(),
        };
        if let (Some(b), Some(user)) = (&mut become_, &control.become_user) {
            b.user = user.clone();
        }
        base.with_become(become_)
            .with_deadline(control.timeout.map(crate::host::Deadline::after))
    }

    async fn gather_facts(&self, host: &str, conn: &Host) -> Result<Value, ModuleError> {
        crate::facts::Cached {
            host: conn,
            cell: &self.hosts[host].gathered,
        }
        .get()
        .await
    }
}

/// What stands for a secret task's summary, message or diff (`what`), or None for a task whose
/// output may be shown.
fn hidden_text(secrecy: &crate::plan::Secrecy, what: &str) -> Option<String> {
    use crate::plan::Secrecy;
    match secrecy {
        Secrecy::Public => None,
        Secrecy::Marked => Some(format!("[{what} hidden: the task is marked secret]")),
        Secrecy::Reads(names) if names.is_empty() => {
            Some(format!("[{what} hidden: the task uses a secret]"))
        }
        Secrecy::Reads(names) => Some(format!(
            "[{what} hidden: the task reads secret {}]",
            names.join(", ")
        )),
    }
}

/// Replaces what a secret task would show: no value it read, wrote or printed reaches the
/// output, even transformed (string matching would miss `| b64encode`, or a file's old content).
fn hide_secret_output(secrecy: &crate::plan::Secrecy, end: &mut TaskEnd) {
    if let Some(d) = &mut end.diff {
        if *secrecy != crate::plan::Secrecy::Public {
            *d = crate::diff::FileDiff::hidden(&d.path);
        }
    }
    if end.summary.is_some() {
        if let Some(hidden) = hidden_text(secrecy, "summary") {
            end.summary = Some(hidden);
        }
    }
    // A skip's reason is the engine's own text (a condition, a dependency), never a value.
    if end.msg.is_some() && end.status != TaskStatus::Skipped {
        if let Some(hidden) = hidden_text(secrecy, "message") {
            end.msg = Some(hidden);
        }
    }
}

/// A task's result as `register` keeps it and `until` reads it: the module's result with
/// `changed`, `skipped` and `failed`.
fn result_map(result: Value, status: &Status) -> Map<String, Value> {
    let mut map = match result {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => Map::from_iter([("value".to_string(), other)]),
    };
    map.insert(
        "changed".into(),
        Value::Bool(matches!(status, Status::Changed)),
    );
    map.insert(
        "skipped".into(),
        Value::Bool(matches!(status, Status::Skipped(_))),
    );
    map.insert("failed".into(), Value::Bool(false));
    map
}

/// What a module's context borrows, for one task on one host.
struct TaskCx<'a> {
    state: &'a State,
    host: &'a HostRt,
    conn: &'a Host,
    check: bool,
    after_predicted_change: bool,
    templates: HostTemplates<'a>,
    system: crate::facts::Cached<'a>,
    vars: Map<String, Value>,
}

impl<'a> TaskCx<'a> {
    fn new(
        state: &'a State,
        tid: TaskId,
        host: &str,
        conn: &'a Host,
        vars: crate::template::Vars,
    ) -> Self {
        let task = &state.plan.tasks[tid];
        let h = &state.hosts[host];
        let check = state.tasks[tid].checks;
        TaskCx {
            state,
            host: h,
            conn,
            check,
            after_predicted_change: check && h.predicted_change.load(Ordering::SeqCst),
            templates: HostTemplates {
                engine: &state.templates,
                origin: format!("{} (task '{}')", task.pos, task.name),
                vars: vars.clone(),
            },
            system: crate::facts::Cached {
                host: conn,
                cell: &h.gathered,
            },
            vars: match vars.to_json() {
                Value::Object(m) => m,
                _ => Map::new(),
            },
        }
    }

    fn cx(&self) -> ModuleContext<'_> {
        ModuleContext {
            secrets: &self.state.opts.secrets,
            system: &self.system,
            host: self.conn,
            check: self.check,
            want_diff: self.state.opts.diff,
            base_dir: &self.state.plan.script.dir,
            templates: &self.templates,
            vars: &self.vars,
            facts: &self.host.facts,
            after_predicted_change: self.after_predicted_change,
        }
    }
}

impl State {
    /// Handlers an earlier run owes this run's hosts, owed again here: each runs at the end of
    /// its phase (a handler the playbook no longer has is dropped).
    fn load_pending_handlers(&self) {
        let Some(store) = &self.opts.pending_handlers else {
            return;
        };
        let owed = match store.load() {
            Ok(owed) => owed,
            Err(e) => return self.warn(&e),
        };
        for (host, list) in owed {
            let Some(h) = self.hosts.get(&host) else {
                continue;
            };
            let mut n = h.notified.lock().unwrap_or_else(|e| e.into_inner());
            for p in list {
                let phase = self.plan.phases.iter().position(|ph| {
                    ph.name == p.phase
                        && ph
                            .handlers
                            .iter()
                            .any(|&t| self.plan.tasks[t].name == p.handler)
                });
                if let Some(pi) = phase {
                    n.insert((pi, p.handler));
                }
            }
        }
    }

    /// Keeps the handlers this run's hosts still owe (their host failed, the run stopped or was
    /// interrupted) for the next run. Check mode changes nothing, so owes nothing new.
    fn save_pending_handlers(&self) {
        let Some(store) = self
            .opts
            .pending_handlers
            .as_ref()
            .filter(|_| !self.opts.check)
        else {
            return;
        };
        let owed = self
            .hosts
            .iter()
            .map(|(name, h)| {
                let n = h.notified.lock().unwrap_or_else(|e| e.into_inner());
                let list = n
                    .iter()
                    .map(|(pi, handler)| crate::pending::Pending {
                        phase: self.plan.phases[*pi].name.clone(),
                        handler: handler.clone(),
                    })
                    .collect();
                (name.clone(), list)
            })
            .collect();
        if let Err(e) = store.save(owed) {
            self.warn(&e);
        }
    }

    fn warn(&self, text: &str) {
        self.sink.emit(&Event::Print {
            host: None,
            text: format!("warning: {text}"),
        });
    }
}
