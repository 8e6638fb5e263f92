//! Runs a plan: phase by phase; inside a phase every host at once, each host's tasks in the
//! order of the graph; handlers at the end of a phase. Values that tasks pass to each other are
//! read here, when the consuming task runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Map, Value};
use tokio::sync::{watch, OnceCell, Semaphore};

use crate::bridge::{with_exec_scope, ExecScope, HostApi};
use crate::events::{Event, EventSink, HostCounts, TaskEnd, TaskStatus};
use crate::facts::SystemFacts;
use crate::host::Host;
use crate::inventory::{HostEntry, Inventory};
use crate::module::{
    ModuleContext, ModuleError, Outcome, Prefetched, ReadAfter, Status, Templates,
};
use crate::plan::{Action, Arg, Closure, Condition, Deferred, Plan, TaskId};
use crate::template::TemplateEngine;
use crate::transport::{Connector, ExecOutput, TransportError};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub check: bool,
    pub diff: bool,
    pub forks: usize,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    pub extra_vars: Map<String, Value>,
    /// The sudo password given at the prompt (--ask-become-pass); wins over the inventory's.
    pub become_password: Option<crate::secret::Secret>,
    /// Secrets of this run: never shown in any event.
    pub secrets: Arc<crate::secret::Redactor>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            check: false,
            diff: false,
            forks: 50,
            tags: vec![],
            skip_tags: vec![],
            extra_vars: Map::new(),
            become_password: None,
            secrets: Arc::default(),
        }
    }
}

/// Per-host totals of a finished run.
#[derive(Debug, Clone, Default)]
pub struct Recap {
    pub hosts: BTreeMap<String, HostCounts>,
    /// The run was stopped (Ctrl-C) before it finished.
    pub interrupted: bool,
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
    notified: Mutex<BTreeSet<String>>,
    /// System facts, gathered when a task first needs them.
    gathered: Arc<OnceCell<Value>>,
    /// Remote commands run on this host so far.
    round_trips: Arc<AtomicUsize>,
    /// Probe outputs read ahead in a batch, by task; dropped when the host may have changed.
    prefetched: Mutex<HashMap<TaskId, Prefetched>>,
}

struct TaskRt {
    finished: watch::Sender<usize>,
    reads: Reads,
    /// `throttle`: the hosts that may run the task at once.
    throttle: Option<Semaphore>,
}

/// What a task's templates and condition read beyond the host's own variables: only those are
/// provided (facts cost a round trip, `hostvars` a copy of every host's variables).
#[derive(Debug, Clone, Copy, Default)]
struct Reads {
    facts: bool,
    hostvars: bool,
    groups: bool,
}

impl Reads {
    const ALL: Reads = Reads {
        facts: true,
        hostvars: true,
        groups: true,
    };

    fn of(task: &crate::plan::Task, templates: &TemplateEngine) -> Reads {
        let mut strings = Vec::new();
        task.args.strings(&mut strings);
        if let Some(Condition::Expr(e)) = &task.when {
            strings.push(e.clone());
        }
        // Strings are searched as text: not all of them are templates (assert's `that` is an
        // expression), and a name that is only mentioned costs at most what it used to.
        let has = |name: &str| strings.iter().any(|s| s.contains(name));
        let mut reads = Reads {
            facts: has("facts"),
            hostvars: has("hostvars"),
            groups: has("groups"),
        };
        if let Action::Module(m) = &task.action {
            if m.renders_templates() {
                // Template files are read only when rendered: their names, when the module can
                // say which files they are and they name everything they read.
                let files = task
                    .args
                    .as_plain()
                    .and_then(|a| m.template_files(&a))
                    .filter(|fs| fs.iter().all(|f| !crate::template::is_template(f)));
                let names: Option<Vec<_>> = files.and_then(|fs| {
                    fs.iter()
                        .map(|f| templates.referenced_names_in_file(f))
                        .collect()
                });
                match names {
                    Some(names) => {
                        for n in names.iter().flatten() {
                            reads.facts |= n == "facts";
                            reads.hostvars |= n == "hostvars";
                            reads.groups |= n == "groups";
                        }
                    }
                    None => reads = Reads::ALL,
                }
            }
        }
        // `hostvars` carries this host's facts too.
        reads.facts |= reads.hostvars;
        reads
    }
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
}

/// An error while running one task on one host.
enum TaskError {
    Failed(String),
    Unreachable(String),
    /// Check mode could not decide because an earlier change was only predicted.
    DependsOnChange(String),
}

impl From<ModuleError> for TaskError {
    fn from(e: ModuleError) -> Self {
        match e {
            ModuleError::Transport(TransportError::Unreachable(m)) => TaskError::Unreachable(m),
            other => TaskError::Failed(other.to_string()),
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
    for name in plan.hosts() {
        let Some(entry) = inventory.host(&name) else {
            continue;
        };
        let vars = inventory.host_vars(&name, &plan.defaults, &opts.extra_vars);
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
            },
        );
    }
    let counts = hosts
        .keys()
        .map(|h| (h.clone(), HostCounts::default()))
        .collect();
    let templates = TemplateEngine::new(&plan.script.dir);
    let tasks = plan
        .tasks
        .iter()
        .map(|t| TaskRt {
            finished: watch::channel(0).0,
            reads: Reads::of(t, &templates),
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
    });
    state.sink.emit(&Event::RunStart {
        playbook: plan.file.clone(),
        hosts: state.hosts.len(),
        tasks: plan.tasks.iter().filter(|t| !t.is_handler).count(),
        check: state.opts.check,
    });
    let phases = async {
        for pi in 0..plan.phases.len() {
            state.run_phase(pi).await;
        }
    };
    let interrupted = tokio::select! {
        _ = phases => false,
        _ = interrupt => true,
    };
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
    state.sink.emit(&Event::Recap {
        hosts: counts.clone(),
        check: state.opts.check,
        interrupted,
        duration_ms: started.elapsed().as_millis() as u64,
    });
    Recap {
        hosts: counts,
        interrupted,
    }
}

impl State {
    async fn run_phase(self: &Arc<Self>, pi: usize) {
        let plan = self.plan.clone();
        let phase = &plan.phases[pi];
        let state = self;
        let phase_hosts: Vec<String> = {
            let mut seen = BTreeSet::new();
            phase
                .tasks
                .iter()
                .flat_map(|&t| plan.tasks[t].hosts.iter())
                .filter(|h| seen.insert((*h).clone()))
                .cloned()
                .collect()
        };
        state.sink.emit(&Event::PhaseStart {
            phase: phase.name.clone(),
            hosts: phase_hosts.len(),
            tasks: phase.tasks.len(),
        });
        let mut joins = tokio::task::JoinSet::new();
        for h in phase_hosts {
            let st = state.clone();
            joins.spawn(async move { st.run_host_phase(pi, &h).await });
        }
        while joins.join_next().await.is_some() {}
        state.run_handlers(pi).await;
    }

    /// Runs the host's tasks of the phase in order, reading their probes ahead in batches (one
    /// round trip for many tasks) while nothing changes the host, and after a change in the
    /// change's own round trip.
    async fn run_host_phase(self: &Arc<Self>, phase: usize, host: &str) {
        let plan = self.plan.clone();
        let tasks: Vec<TaskId> = plan.phases[phase]
            .tasks
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
            match self.run_task(tid, host, &follow).await {
                Some(read_after) => {
                    let (fresh, considered) = follow.take(read_after);
                    let mut pre = h.prefetched.lock().unwrap_or_else(|e| e.into_inner());
                    pre.clear();
                    pre.extend(fresh);
                    covered = i + 1 + considered;
                    quiet = 0;
                    ahead = 1;
                }
                None => {
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
    }

    /// Runs the probe scripts of `tasks` (the host's next tasks, as `next_probes` finds them) in
    /// one round trip and keeps their outputs for the tasks. Returns how many tasks it considered
    /// (those after them are not read ahead).
    async fn probe_ahead(self: &Arc<Self>, host: &str, tasks: &[TaskId], limit: usize) -> usize {
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
    async fn next_probes(
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
            let finished =
                |&d: &TaskId| *self.tasks[d].finished.borrow() >= self.plan.tasks[d].hosts.len();
            if !module.script_probe()
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
                    let notified = h
                        .notified
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&task.name);
                    notified && !h.dead.load(Ordering::SeqCst)
                })
                .cloned()
                .collect();
            let group = task.throttle.unwrap_or(notified.len()).max(1);
            let mut groups = notified.chunks(group);
            for hosts in groups.by_ref() {
                let mut joins = tokio::task::JoinSet::new();
                for hname in hosts {
                    let st = self.clone();
                    let hname = hname.clone();
                    joins.spawn(async move { st.run_task(hid, &hname, &()).await });
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
        let check = self.plan.tasks[tid].checks(self.opts.check);
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
            task: task.name.clone(),
            task_id: tid,
            host: host.to_string(),
            module: task.module_name().to_string(),
            status: TaskStatus::Ok,
            changed: false,
            check,
            handler: task.is_handler,
            ignored: false,
            summary: None,
            msg: None,
            diff: None,
            duration_ms: 0,
        }
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
        let total = self.plan.tasks[tid].hosts.len();
        let mut rx = self.tasks[tid].finished.subscribe();
        let _ = rx.wait_for(|n| *n >= total).await;
    }

    /// Runs one task on one host; an apply made by script takes `after` along. Returns None when
    /// nothing ran that may have changed the host, else the outputs of `after` read after it.
    async fn run_task(
        self: &Arc<Self>,
        tid: TaskId,
        host: &str,
        after: &dyn ReadAfter,
    ) -> Option<Vec<ExecOutput>> {
        let task = &self.plan.tasks[tid];
        let h = &self.hosts[host];
        if !self.selected(tid) {
            self.finish(tid, host, Done::NotRun { selected: false });
            return None;
        }
        if h.dead.load(Ordering::SeqCst) {
            self.finish(tid, host, Done::NotRun { selected: true });
            return None;
        }
        let phase = self.plan.phases[task.phase].name.clone();
        // The run's mode decides whether predictions upstream matter; the task's own mode decides
        // whether this task only checks (`.check_mode(false)` tasks run for real).
        let check_run = self.opts.check;
        let check = task.checks(check_run);
        // Wait for the tasks whose results this one reads or that it must run after.
        let mut upstream_predicted = false;
        let mut upstream_failure = None;
        for &d in &task.needs {
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
        self.sink.emit(&Event::TaskStart {
            phase: phase.clone(),
            task: task.name.clone(),
            task_id: tid,
            host: host.to_string(),
        });
        let started = Instant::now();
        let mut result = match upstream_failure {
            Some(msg) => Err(TaskError::Failed(msg)),
            None => self.execute(tid, host, after).await,
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
        let read_after = match &mut result {
            Ok(outcome) => std::mem::take(&mut outcome.read_after),
            Err(_) => Vec::new(),
        };
        let mut end = self.task_end(tid, host, check);
        let done = match result {
            Ok(outcome) => {
                end.summary = outcome.summary;
                end.diff = outcome.diff.filter(|_| self.opts.diff);
                let mut registered = match outcome.result {
                    Value::Object(m) => m,
                    Value::Null => Map::new(),
                    other => Map::from_iter([("value".to_string(), other)]),
                };
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
                registered.insert("changed".into(), Value::Bool(end.changed));
                registered.insert(
                    "skipped".into(),
                    Value::Bool(end.status == TaskStatus::Skipped),
                );
                registered.insert("failed".into(), Value::Bool(false));
                if end.changed {
                    let mut n = h.notified.lock().unwrap_or_else(|e| e.into_inner());
                    n.extend(task.notify.iter().cloned());
                }
                if check && end.changed {
                    h.predicted_change.store(true, Ordering::SeqCst);
                    Done::Predicted
                } else {
                    let value = Value::Object(registered);
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
            Err(TaskError::Failed(why)) if check_run && upstream_predicted => {
                end.status = TaskStatus::Skipped;
                end.msg = Some(format!(
                    "depends on a change above; in a real run it might not fail: {why}"
                ));
                Done::Predicted
            }
            Err(TaskError::Failed(why)) => {
                end.status = TaskStatus::Failed;
                end.msg = Some(why);
                if task.ignore_errors {
                    end.ignored = true;
                    Done::Ran(serde_json::json!({"failed": true, "changed": false, "msg": end.msg}))
                } else {
                    h.dead.store(true, Ordering::SeqCst);
                    Done::Failed
                }
            }
            Err(TaskError::Unreachable(why)) => {
                end.status = TaskStatus::Unreachable;
                end.msg = Some(why);
                h.dead.store(true, Ordering::SeqCst);
                Done::Failed
            }
        };
        end.duration_ms = started.elapsed().as_millis() as u64;
        self.end_task(tid, host, end, done);
        acted.then_some(read_after)
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
                        Host::new(host, t).with_become(become_)
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
        after: &dyn ReadAfter,
    ) -> Result<Outcome, TaskError> {
        let task = &self.plan.tasks[tid];
        let _throttled = match &self.tasks[tid].throttle {
            Some(s) => Some(s.acquire().await.expect("semaphore is never closed")),
            None => None,
        };
        let needs_closures = matches!(task.action, Action::Custom(_))
            || matches!(task.when, Some(Condition::Closure(_)))
            || has_closure(&task.args);
        let conn = self.connection(host).await?;
        if needs_closures || self.tasks[tid].reads.facts {
            self.gather_facts(host, &conn).await?;
        }
        let prepared = if needs_closures {
            let st = self.clone();
            let hname = host.to_string();
            let c = conn.clone();
            tokio::task::spawn_blocking(move || st.prepare(tid, &hname, &c))
                .await
                .map_err(|e| TaskError::Failed(format!("task panicked: {e}")))??
        } else {
            self.prepare(tid, host, &conn)?
        };
        let (args, vars) = match prepared {
            Prepared::Skip(why) => {
                return Ok(Outcome {
                    status: Status::Skipped(why),
                    summary: None,
                    diff: None,
                    result: Value::Null,
                    acted: false,
                    read_after: Vec::new(),
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
        Ok(module
            .run_prefetched(args, &tc.cx(), prefetched, after)
            .await?)
    }

    async fn gather_facts(&self, host: &str, conn: &Host) -> Result<Value, ModuleError> {
        crate::facts::Cached {
            host: conn,
            cell: &self.hosts[host].gathered,
        }
        .get()
        .await
    }

    /// Evaluates the condition and the arguments (may call playbook closures: runs on a
    /// blocking thread then).
    fn prepare(
        self: &Arc<Self>,
        tid: TaskId,
        host: &str,
        conn: &Host,
    ) -> Result<Prepared, TaskError> {
        let task = &self.plan.tasks[tid];
        let origin = format!("{} (task '{}')", task.pos, task.name);
        let vars = self.template_vars(host, self.tasks[tid].reads);
        let ctx = Value::Object(vars.clone());
        let scope = || ExecScope {
            host: host.to_string(),
            resolve: Box::new({
                let st = self.clone();
                let host = host.to_string();
                move |d: &Deferred| {
                    st.resolve_deferred(d, &host).map_err(|e| match e {
                        TaskError::Failed(m) | TaskError::Unreachable(m) => m,
                        TaskError::DependsOnChange(m) => format!("{DEPENDS_MARK}{m}"),
                    })
                }
            }),
        };
        let api = HostApi {
            host: conn.clone(),
            check: task.checks(self.opts.check),
            vars: vars.clone(),
            rt: tokio::runtime::Handle::try_current().ok(),
        };
        let call = |c: &Closure| -> Result<rhai::Dynamic, TaskError> {
            let script = &self.plan.script;
            with_exec_scope(scope(), || {
                let r =
                    c.0.call::<rhai::Dynamic>(&script.engine, &script.ast, (api.clone(),));
                match r {
                    Err(e) if matches!(*e, rhai::EvalAltResult::ErrorFunctionNotFound(..)) => {
                        c.0.call::<rhai::Dynamic>(&script.engine, &script.ast, ())
                    }
                    other => other,
                }
            })
            .map_err(|e| closure_error(&e, &origin))
        };
        match &task.when {
            None => {}
            Some(Condition::Expr(expr)) => {
                let v = self
                    .templates
                    .eval(expr, &origin, &ctx)
                    .map_err(|e| self.template_failure(host, e.to_string()))?;
                if !crate::template::is_truthy(&v) {
                    return Ok(Prepared::Skip(format!("condition is false: {expr}")));
                }
            }
            Some(Condition::Closure(c)) => {
                let v = call(c)?;
                if !v.as_bool().unwrap_or(!v.is_unit()) {
                    return Ok(Prepared::Skip("condition is false".into()));
                }
            }
        }
        if let Action::Custom(body) = &task.action {
            let v = call(body)?;
            return custom_outcome(v).map(Prepared::Custom);
        }
        let unknown_ok =
            matches!(&task.action, Action::Module(m) if m.predicts_with_unknown_results());
        let args = self.resolve_arg(&task.args, host, &ctx, &origin, &call, unknown_ok)?;
        Ok(Prepared::Run { args, vars })
    }

    fn template_failure(&self, host: &str, msg: String) -> TaskError {
        if self.opts.check && self.hosts[host].predicted_change.load(Ordering::SeqCst) {
            TaskError::DependsOnChange(msg)
        } else {
            TaskError::Failed(msg)
        }
    }

    fn resolve_arg(
        &self,
        arg: &Arg,
        host: &str,
        ctx: &Value,
        origin: &str,
        call: &dyn Fn(&Closure) -> Result<rhai::Dynamic, TaskError>,
        unknown_ok: bool,
    ) -> Result<Value, TaskError> {
        Ok(match arg {
            Arg::Value(v) => self.render_value(v, host, ctx, origin)?,
            Arg::Deferred(d) => match self.resolve_deferred(d, host) {
                // Only predicted: the module predicts without it (Module::PREDICTS_WITH_UNKNOWN_RESULTS).
                Err(TaskError::DependsOnChange(_)) if unknown_ok => Value::Null,
                other => other?,
            },
            Arg::Closure(c) => {
                let d = call(c)?;
                rhai::serde::from_dynamic::<Value>(&d).map_err(|e| {
                    TaskError::Failed(format!(
                        "{origin}: a closure returned an unusable value: {e}"
                    ))
                })?
            }
            Arg::Map(m) => Value::Object(
                m.iter()
                    .map(|(k, a)| {
                        let origin = format!("{origin} arg {k}");
                        self.resolve_arg(a, host, ctx, &origin, call, unknown_ok)
                            .map(|v| (k.clone(), v))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Arg::List(l) => Value::Array(
                l.iter()
                    .map(|a| self.resolve_arg(a, host, ctx, origin, call, unknown_ok))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    fn render_value(
        &self,
        v: &Value,
        host: &str,
        ctx: &Value,
        origin: &str,
    ) -> Result<Value, TaskError> {
        Ok(match v {
            Value::String(s) if crate::template::is_template(s) => Value::String(
                self.templates
                    .render_str(s, origin, ctx)
                    .map_err(|e| self.template_failure(host, e.to_string()))?,
            ),
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.render_value(x, host, ctx, origin))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| {
                        self.render_value(x, host, ctx, origin)
                            .map(|x| (k.clone(), x))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => other.clone(),
        })
    }

    /// Reads a field of an earlier task's result for `host`: the task's result on this host if
    /// it ran here, else on its only host, else on the host the playbook named.
    fn resolve_deferred(&self, d: &Deferred, host: &str) -> Result<Value, TaskError> {
        let src = &self.plan.tasks[d.task];
        let from = match &d.host {
            Some(h) => h.clone(),
            None if src.hosts.iter().any(|h| h == host) => host.to_string(),
            None if src.hosts.len() == 1 => src.hosts[0].clone(),
            None => {
                return Err(TaskError::Failed(format!(
                    "the result of '{}' is ambiguous here: it ran on {}; pick one with .on_host(\"{}\")",
                    src.name,
                    src.hosts.join(", "),
                    src.hosts.first().map(String::as_str).unwrap_or("HOST")
                )))
            }
        };
        let done = self
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(d.task, from.clone()))
            .cloned();
        let mut value = match done {
            Some(Done::Ran(v)) => v,
            Some(Done::Predicted) => {
                return Err(TaskError::DependsOnChange(format!(
                    "'{}' on {from} would change, so its result is not known in check mode",
                    src.name
                )))
            }
            _ => {
                return Err(TaskError::Failed(format!(
                    "'{}' has no result on {from} (it failed, was skipped or did not run)",
                    src.name
                )))
            }
        };
        for key in &d.path {
            value = match value.get(key) {
                Some(v) => v.clone(),
                None => {
                    return Err(TaskError::Failed(format!(
                        "the result of '{}' on {from} has no field '{key}'",
                        src.name
                    )))
                }
            };
        }
        Ok(value)
    }

    /// The variables templates see on `host`: its variables, facts and registered results,
    /// results registered on a single other host, and (when read) every host's variables and
    /// the groups.
    fn template_vars(&self, host: &str, reads: Reads) -> Map<String, Value> {
        let h = &self.hosts[host];
        let mut vars = h.vars.clone();
        if let Some(f) = h.gathered.get() {
            vars.insert("facts".into(), f.clone());
        }
        vars.extend(h.facts.lock().unwrap_or_else(|e| e.into_inner()).clone());
        // Extra vars win over everything, facts set while running included (as in Ansible).
        vars.extend(self.opts.extra_vars.clone());
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        for t in &self.plan.tasks {
            if let (Some(name), [only]) = (&t.register, t.hosts.as_slice()) {
                if only != host && !vars.contains_key(name) {
                    if let Some(Done::Ran(v)) = done.get(&(t.id, only.clone())) {
                        vars.insert(name.clone(), v.clone());
                    }
                }
            }
        }
        drop(done);
        if reads.hostvars {
            let hostvars: Map<String, Value> = self
                .inventory
                .hosts()
                .map(|e| {
                    let v = match self.hosts.get(&e.name) {
                        Some(rt) => {
                            let mut v = rt.vars.clone();
                            if let Some(f) = rt.gathered.get() {
                                v.insert("facts".into(), f.clone());
                            }
                            v.extend(rt.facts.lock().unwrap_or_else(|e| e.into_inner()).clone());
                            v
                        }
                        None => self.inventory.host_vars(
                            &e.name,
                            &self.plan.defaults,
                            &self.opts.extra_vars,
                        ),
                    };
                    (e.name.clone(), Value::Object(v))
                })
                .collect();
            vars.insert("hostvars".into(), Value::Object(hostvars));
        }
        if reads.groups {
            let groups: Map<String, Value> = self
                .inventory
                .groups()
                .iter()
                .map(|(g, hs)| (g.clone(), Value::from(hs.clone())))
                .collect();
            vars.insert("groups".into(), Value::Object(groups));
        }
        vars
    }
}

const DEPENDS_MARK: &str = "\u{1}depends:";

fn has_closure(arg: &Arg) -> bool {
    match arg {
        Arg::Closure(_) => true,
        Arg::Map(m) => m.values().any(has_closure),
        Arg::List(l) => l.iter().any(has_closure),
        _ => false,
    }
}

fn closure_error(e: &rhai::EvalAltResult, origin: &str) -> TaskError {
    let text = e.to_string();
    if let Some(i) = text.find(DEPENDS_MARK) {
        let rest = &text[i + DEPENDS_MARK.len()..];
        return TaskError::DependsOnChange(
            rest.split(" (line ").next().unwrap_or(rest).to_string(),
        );
    }
    TaskError::Failed(format!("{origin}: {text}"))
}

enum Prepared {
    Skip(String),
    Custom(Outcome),
    Run {
        args: Value,
        vars: Map<String, Value>,
    },
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
        vars: Map<String, Value>,
    ) -> Self {
        let task = &state.plan.tasks[tid];
        let h = &state.hosts[host];
        let check = task.checks(state.opts.check);
        TaskCx {
            state,
            host: h,
            conn,
            check,
            after_predicted_change: check && h.predicted_change.load(Ordering::SeqCst),
            templates: HostTemplates {
                engine: &state.templates,
                ctx: Value::Object(vars.clone()),
                origin: format!("{} (task '{}')", task.pos, task.name),
            },
            system: crate::facts::Cached {
                host: conn,
                cell: &h.gathered,
            },
            vars,
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

/// The probes of the tasks after the running one on its host, read after its apply in the same
/// round trip: what they read is the host as that change left it.
struct Follow<'a> {
    state: &'a Arc<State>,
    host: &'a str,
    tasks: &'a [TaskId],
    limit: usize,
    /// The probes handed out, by task, and how many tasks they cover.
    sent: Mutex<(Vec<(TaskId, String)>, usize)>,
}

impl<'a> Follow<'a> {
    fn new(state: &'a Arc<State>, host: &'a str, tasks: &'a [TaskId], limit: usize) -> Self {
        Follow {
            state,
            host,
            tasks,
            limit,
            sent: Mutex::new((Vec::new(), 0)),
        }
    }

    /// The probe outputs read after the apply, by task, and how many tasks they cover; nothing
    /// when they did not all come back.
    fn take(&self, outputs: Vec<ExecOutput>) -> (Vec<(TaskId, Prefetched)>, usize) {
        let (sent, considered) =
            std::mem::take(&mut *self.sent.lock().unwrap_or_else(|e| e.into_inner()));
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

#[async_trait::async_trait]
impl ReadAfter for Follow<'_> {
    async fn scripts(&self) -> Vec<String> {
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

struct HostTemplates<'a> {
    engine: &'a TemplateEngine,
    ctx: Value,
    origin: String,
}

impl Templates for HostTemplates<'_> {
    fn render_file(&self, path: &str) -> Result<String, ModuleError> {
        self.engine
            .render_file(path, &self.ctx)
            .map_err(|e| ModuleError::Failed(e.to_string()))
    }
    fn eval(&self, expr: &str) -> Result<Value, ModuleError> {
        self.engine
            .eval(expr, &self.origin, &self.ctx)
            .map_err(|e| ModuleError::Failed(e.to_string()))
    }
}

/// What a custom task returns: "changed", "ok", "skipped", a bool (changed), or a map with
/// `changed`, `msg` and `result`.
fn custom_outcome(v: rhai::Dynamic) -> Result<Outcome, TaskError> {
    // A custom task may run anything on the host, even in check mode.
    let mut outcome = Outcome {
        status: Status::Ok,
        summary: None,
        diff: None,
        result: Value::Null,
        acted: true,
        read_after: Vec::new(),
    };
    if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        outcome.status = match s.as_str() {
            "changed" => Status::Changed,
            "ok" => Status::Ok,
            "skipped" => Status::Skipped("skipped by the task".into()),
            other => {
                return Err(TaskError::Failed(format!(
                    "a custom task returns \"changed\", \"ok\", \"skipped\", a bool or a map, not \"{other}\""
                )))
            }
        };
    } else if let Ok(b) = v.as_bool() {
        outcome.status = if b { Status::Changed } else { Status::Ok };
    } else if v.is_unit() {
    } else if let Some(m) = v.read_lock::<rhai::Map>() {
        let changed = m
            .get("changed")
            .and_then(|c| c.as_bool().ok())
            .unwrap_or(false);
        outcome.status = if changed { Status::Changed } else { Status::Ok };
        outcome.summary = m.get("msg").map(|d| d.to_string());
        if let Some(r) = m.get("result") {
            outcome.result =
                rhai::serde::from_dynamic(r).map_err(|e| TaskError::Failed(e.to_string()))?;
        }
    } else {
        return Err(TaskError::Failed(format!(
            "a custom task returns \"changed\", \"ok\", \"skipped\", a bool or a map, not {}",
            v.type_name()
        )));
    }
    Ok(outcome)
}
