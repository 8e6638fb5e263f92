//! The plan: what a playbook asked for, resolved against the inventory, before any host is touched.
//! Tasks, their target hosts, phases, handlers, and the dependency graph between tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value;

use crate::error::PlanError;
pub use crate::error::SourcePos;
use crate::module::DynModule;

pub type TaskId = usize;

/// The evaluated playbook, kept so closures can be called while the plan runs.
pub struct Script {
    pub engine: rhai::Engine,
    pub ast: rhai::AST,
    pub file: String,
    pub dir: std::path::PathBuf,
}

/// A handle to a placed task, returned by `on(...)`. Reading a field of it (`tok.stdout`) gives
/// a value that is filled in when the task has run.
#[derive(Clone, Debug)]
pub struct TaskRef {
    pub id: TaskId,
    pub host: Option<String>,
}

/// A Rhai closure kept for execution time.
#[derive(Clone, Debug)]
pub struct Closure(pub rhai::FnPtr);

/// A task argument as written: plain values, or values only known at execution time.
#[derive(Clone, Debug)]
pub enum Arg {
    Value(Value),
    /// A field of an earlier task's result (`tok.stdout`), read when this task runs.
    Deferred(Deferred),
    /// A closure called with the host when the task runs.
    Closure(Closure),
    Map(BTreeMap<String, Arg>),
    List(Vec<Arg>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deferred {
    pub task: TaskId,
    /// A fixed source host (`tok.on("h1")`); otherwise the rule in `runner::resolve_deferred`.
    pub host: Option<String>,
    pub path: Vec<String>,
}

impl Arg {
    /// The argument as plain JSON when nothing in it waits for execution time.
    pub fn as_plain(&self) -> Option<Value> {
        match self {
            Arg::Value(v) => Some(v.clone()),
            Arg::Deferred(_) | Arg::Closure(_) => None,
            Arg::Map(m) => m
                .iter()
                .map(|(k, v)| v.as_plain().map(|v| (k.clone(), v)))
                .collect::<Option<serde_json::Map<_, _>>>()
                .map(Value::Object),
            Arg::List(l) => l
                .iter()
                .map(Arg::as_plain)
                .collect::<Option<Vec<_>>>()
                .map(Value::Array),
        }
    }

    /// Every plain string in the argument, for finding template references.
    pub fn strings(&self, out: &mut Vec<String>) {
        match self {
            Arg::Value(v) => json_strings(v, out),
            Arg::Deferred(_) | Arg::Closure(_) => {}
            Arg::Map(m) => m.values().for_each(|a| a.strings(out)),
            Arg::List(l) => l.iter().for_each(|a| a.strings(out)),
        }
    }

    pub fn deferred(&self, out: &mut Vec<TaskId>) {
        match self {
            Arg::Deferred(d) => out.push(d.task),
            Arg::Value(_) => {}
            Arg::Closure(c) => closure_refs(c, out),
            Arg::Map(m) => m.values().for_each(|a| a.deferred(out)),
            Arg::List(l) => l.iter().for_each(|a| a.deferred(out)),
        }
    }
}

fn json_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| json_strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// Tasks a closure reads: the task handles it captured.
pub fn closure_refs(c: &Closure, out: &mut Vec<TaskId>) {
    for captured in c.0.curry() {
        collect_refs(captured, out);
    }
}

fn collect_refs(d: &rhai::Dynamic, out: &mut Vec<TaskId>) {
    if let Some(r) = d.clone().try_cast::<TaskRef>() {
        out.push(r.id);
    } else if let Some(x) = d.clone().try_cast::<Deferred>() {
        out.push(x.task);
    } else if d.is_shared() {
        collect_refs(&d.flatten_clone(), out);
    } else if let Some(a) = d.read_lock::<rhai::Array>() {
        a.iter().for_each(|d| collect_refs(d, out));
    } else if let Some(m) = d.read_lock::<rhai::Map>() {
        m.values().for_each(|d| collect_refs(d, out));
    }
}

/// A condition: an expression in template syntax (Ansible's `when:`) or a Rhai closure.
#[derive(Clone, Debug)]
pub enum Condition {
    Expr(String),
    Closure(Closure),
}

/// What a task does.
#[derive(Clone)]
pub enum Action {
    Module(Arc<dyn DynModule>),
    /// A custom task: a Rhai closure that receives the host.
    Custom(Closure),
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Module(m) => write!(f, "Module({})", m.name()),
            Action::Custom(_) => f.write_str("Custom"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Task {
    pub id: TaskId,
    pub name: String,
    pub action: Action,
    pub args: Arg,
    pub phase: usize,
    /// Target hosts, in inventory order (already narrowed by --limit).
    pub hosts: Vec<String>,
    /// The pattern the hosts came from, for display.
    pub target: String,
    pub when: Option<Condition>,
    pub tags: Vec<String>,
    pub notify: Vec<String>,
    pub register: Option<String>,
    /// Explicit `after` dependencies by name, resolved into `deps` when the plan is finished.
    pub after_names: Vec<(String, SourcePos)>,
    /// Tasks this one must wait for, on every host they run on: explicit `after`, and tasks
    /// whose results it reads. Sorted.
    pub needs: Vec<TaskId>,
    /// Every edge of the graph into this task: `needs` plus the previous task on a shared host
    /// (per host, tasks run in the order they were written). Sorted.
    pub deps: Vec<TaskId>,
    pub pos: SourcePos,
    /// Handlers are tasks too, run at the end of their phase on hosts that notified them.
    pub is_handler: bool,
    pub ignore_errors: bool,
    /// An unreachable host goes on with its next task (reported unreachable, ignored).
    pub ignore_unreachable: bool,
    /// The task is part of a `block(...)`: its body, rescue or always tasks.
    pub block: Option<BlockPart>,
    /// At most this many hosts run the task at once (Ansible's `throttle`). A throttled handler
    /// runs on its notifying hosts in inventory order, that many at a time, and stops at the
    /// first group where it fails: a rolling restart.
    pub throttle: Option<usize>,
    /// `Some(false)`: runs for real even in check mode (a task that only reads);
    /// `Some(true)`: always only checks. None follows --check.
    pub check_mode: Option<bool>,
    /// Retries, run_once, timeout, environment and become set on the task.
    pub control: Control,
    /// Whether what the task shows (diff, summary, messages) must be hidden.
    pub secret: Secrecy,
}

/// Why a task's output is hidden, if it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Secrecy {
    #[default]
    Public,
    /// `.secret()` (Ansible's `no_log`): nothing it returns or prints is shown.
    Marked,
    /// It reads these secret variables (or holds a secret's text: then none is named).
    Reads(Vec<String>),
}

/// Where a task sits in a `block([...]).rescue([...]).always([...])` group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockPart {
    /// The block's number in the plan.
    pub id: usize,
    pub role: BlockRole,
    /// Whether the block has rescue tasks: a failure in its body is then rescued, not final.
    pub has_rescue: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockRole {
    /// Runs in order until one fails on the host; the rest of the body is then not run there.
    Body,
    /// Runs on a host where the body failed; when every rescue task succeeds, the host goes on.
    Rescue,
    /// Runs on every host that reached the block, whether the body or rescue failed or not.
    Always,
}

/// How a task is run, beyond what it does: `retries`/`until`/`delay`, `run_once`, `timeout`,
/// `environment`, `become`/`become_user`.
#[derive(Clone, Debug, Default)]
pub struct Control {
    pub retries: Option<u32>,
    pub until: Option<Condition>,
    /// Seconds between attempts.
    pub delay: Option<u64>,
    pub run_once: bool,
    /// Seconds the whole task may take on a host.
    pub timeout: Option<u64>,
    pub environment: BTreeMap<String, String>,
    /// `Some(false)` turns the host's become off for the task, `Some(true)` on.
    pub become_: Option<bool>,
    pub become_user: Option<String>,
    /// Runs the task through this host's connection, with the task's host's variables.
    pub delegate_to: Option<String>,
}

impl Control {
    /// As in Ansible: `until` alone retries 3 times; `retries(n)` is n tries after the first.
    pub fn attempts(&self) -> u32 {
        match (self.retries, &self.until) {
            (Some(n), _) => n + 1,
            (None, Some(_)) => 4,
            (None, None) => 1,
        }
    }

    pub fn delay(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.delay.unwrap_or(5))
    }

    /// Whether the task runs like any other: its probe may then be read ahead with the host's
    /// other probes. A probe read ahead would escape the task's own timeout, environment and
    /// become, run on a run_once task's other hosts, or stand in for a later attempt.
    pub fn is_plain(&self) -> bool {
        self.retries.is_none()
            && self.until.is_none()
            && !self.run_once
            && self.timeout.is_none()
            && self.environment.is_empty()
            && self.become_.is_none()
            && self.become_user.is_none()
            && self.delegate_to.is_none()
    }
}

impl Task {
    /// Whether this task only checks in a run with the given --check setting.
    pub fn checks(&self, check_run: bool) -> bool {
        self.check_mode.unwrap_or(check_run)
    }
}

impl Task {
    pub fn module_name(&self) -> &str {
        match &self.action {
            Action::Module(m) => m.name(),
            Action::Custom(_) => "custom",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Phase {
    pub name: String,
    /// Tasks in declaration order.
    pub tasks: Vec<TaskId>,
    /// Handlers by name, in declaration order.
    pub handlers: Vec<TaskId>,
    pub rollout: Rollout,
    /// `flush_handlers()`: positions in `tasks` before which the handlers notified so far run.
    pub flushes: Vec<usize>,
}

impl Phase {
    pub fn new(name: &str) -> Self {
        Phase {
            name: name.to_string(),
            tasks: vec![],
            handlers: vec![],
            rollout: Rollout::default(),
            flushes: vec![],
        }
    }

    /// The phase's tasks cut at its `flush_handlers()` calls, as ranges of `tasks`.
    pub fn segments(&self) -> Vec<std::ops::Range<usize>> {
        let mut cuts: Vec<usize> = self.flushes.clone();
        cuts.retain(|&c| c > 0 && c < self.tasks.len());
        cuts.dedup();
        let mut out = Vec::new();
        let mut start = 0;
        for c in cuts.into_iter().chain([self.tasks.len()]) {
            out.push(start..c);
            start = c;
        }
        out
    }
}

/// A batch size of `serial`: a number of hosts, or a percentage of the phase's hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSize {
    Hosts(usize),
    /// 1..=100; rounded down, at least one host (as Ansible does).
    Percent(u32),
}

impl std::fmt::Display for BatchSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchSize::Hosts(n) => write!(f, "{n}"),
            BatchSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// How a phase rolls over its hosts (Ansible's `serial`, `max_fail_percentage`,
/// `any_errors_fatal`): the whole phase on one batch of hosts, its handlers, then the next
/// batch; failures in a batch may stop the run before the next one starts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rollout {
    /// Batch sizes in order; the last one repeats. Empty: one batch of every host.
    pub serial: Vec<BatchSize>,
    /// The run stops after a batch in which more than this percentage of hosts failed.
    pub max_fail_percentage: Option<u32>,
    /// The first failure stops every host of the batch from starting another task, and the run.
    pub any_errors_fatal: bool,
}

impl Rollout {
    /// Whether the phase runs by these rules rather than every host at once, carrying on past
    /// failures with the hosts that did not fail.
    pub fn is_set(&self) -> bool {
        *self != Rollout::default()
    }

    /// `hosts` (inventory order) cut into batches: percentages are of all of them.
    pub fn batches(&self, hosts: &[String]) -> Vec<Vec<String>> {
        let total = hosts.len();
        let mut sizes = self.serial.iter().map(|s| match *s {
            BatchSize::Hosts(n) => n,
            BatchSize::Percent(p) => (total * p as usize / 100).max(1),
        });
        let mut last = total;
        let mut out = Vec::new();
        let mut rest = hosts;
        while !rest.is_empty() {
            last = sizes.next().unwrap_or(last).max(1);
            let (batch, tail) = rest.split_at(last.min(rest.len()));
            out.push(batch.to_vec());
            rest = tail;
        }
        out
    }

    /// Why a batch of `size` hosts of which `failed` failed stops the run, if it does: more
    /// failed than `max_fail_percentage` allows, or every one of them (as in Ansible).
    pub fn stops_after(&self, failed: &[String], size: usize) -> Option<String> {
        let n = failed.len();
        if n == 0 {
            return None;
        }
        let who = failed.join(", ");
        match self.max_fail_percentage {
            Some(max) if n * 100 > max as usize * size => Some(format!(
                "{n} of {size} host(s) of the batch failed ({who}), more than \
                 max_fail_percentage({max}) allows"
            )),
            _ if n == size => Some(format!("every host of the batch failed ({who})")),
            _ => None,
        }
    }

    /// `serial`, `max_fail_percentage` and `any_errors_fatal` in words, for `playbook plan`.
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.serial.is_empty() {
            let sizes: Vec<String> = self.serial.iter().map(ToString::to_string).collect();
            parts.push(format!("in batches of {}", sizes.join(", then ")));
        }
        if let Some(m) = self.max_fail_percentage {
            parts.push(format!(
                "stops after a batch where more than {m}% of hosts fail"
            ));
        }
        if self.any_errors_fatal {
            parts.push("stops at the first failure (any_errors_fatal)".into());
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// The finished plan.
#[derive(Clone)]
pub struct Plan {
    pub phases: Vec<Phase>,
    pub tasks: Vec<Task>,
    pub file: String,
    /// Playbook defaults: the lowest variable precedence.
    pub defaults: serde_json::Map<String, Value>,
    /// What the play's templated variables read (a task reading one reads those too).
    pub templated: crate::template::TemplatedVars,
    /// Variables whose values are secrets: the inventory's, the vault's, those marked with
    /// `secret()` and what secret tasks register.
    pub secret_vars: BTreeSet<String>,
    pub script: Arc<Script>,
}

impl Plan {
    pub fn task(&self, id: TaskId) -> &Task {
        &self.tasks[id]
    }

    /// Every host any task targets, in first-seen order.
    pub fn hosts(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for t in &self.tasks {
            for h in &t.hosts {
                if seen.insert(h.clone()) {
                    out.push(h.clone());
                }
            }
        }
        out
    }

    /// Hosts tasks are delegated to, which the run connects to without running tasks of their own.
    pub fn delegates(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .tasks
            .iter()
            .filter_map(|t| t.control.delegate_to.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The dependency graph as Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph playbook {\n  rankdir=LR;\n  node [shape=box];\n");
        for (pi, phase) in self.phases.iter().enumerate() {
            let _ = writeln!(
                out,
                "  subgraph cluster_{pi} {{\n    label={};",
                dot_quote(&format!("phase {}", phase.name))
            );
            for &id in phase.tasks.iter().chain(&phase.handlers) {
                let t = &self.tasks[id];
                let label = format!(
                    "{}\\n{} on {}{}",
                    dot_escape(&t.name),
                    t.module_name(),
                    dot_escape(&t.target),
                    if t.is_handler { " (handler)" } else { "" }
                );
                let _ = writeln!(out, "    t{id} [label=\"{label}\"];");
            }
            out.push_str("  }\n");
        }
        for t in &self.tasks {
            for d in &t.deps {
                let _ = writeln!(out, "  t{d} -> t{};", t.id);
            }
        }
        out.push_str("}\n");
        out
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn dot_quote(s: &str) -> String {
    format!("\"{}\"", dot_escape(s))
}

/// Fills in `deps` for every task and rejects cycles, naming every task in one with its line.
pub fn link(tasks: &mut [Task], phases: &[Phase]) -> Result<(), PlanError> {
    let by_name: BTreeMap<&str, Vec<TaskId>> = tasks.iter().fold(BTreeMap::new(), |mut m, t| {
        m.entry(t.name.as_str()).or_default().push(t.id);
        m
    });
    let mut needs: Vec<BTreeSet<TaskId>> = vec![BTreeSet::new(); tasks.len()];
    for t in tasks.iter() {
        for (name, pos) in &t.after_names {
            let Some(ids) = by_name.get(name.as_str()) else {
                let names: Vec<&str> = by_name.keys().copied().collect();
                let hint = crate::error::closest(name, names.iter().copied())
                    .map(|c| format!(" (did you mean '{c}'?)"))
                    .unwrap_or_default();
                return Err(PlanError::at(
                    pos.clone(),
                    format!(
                        "task '{}' runs after '{name}', but no task has that name{hint}",
                        t.name
                    ),
                ));
            };
            needs[t.id].extend(ids.iter().copied().filter(|&d| d != t.id));
        }
        needs[t.id].extend(t.needs.iter().copied());
    }
    let mut deps = needs.clone();
    // The previous task in the same phase on a shared host comes first: per host, tasks run in
    // the order they were written, as in Ansible.
    for phase in phases {
        let mut last_on_host: BTreeMap<&str, TaskId> = BTreeMap::new();
        for &id in &phase.tasks {
            for h in &tasks[id].hosts {
                if let Some(prev) = last_on_host.insert(h.as_str(), id) {
                    deps[id].insert(prev);
                }
            }
        }
    }
    for phase in phases.iter().filter(|p| !p.flushes.is_empty()) {
        let segment_of = |id: TaskId| {
            let at = phase.tasks.iter().position(|&t| t == id);
            at.map(|i| phase.flushes.iter().filter(|&&f| f <= i).count())
        };
        for &id in &phase.tasks {
            for &d in &needs[id] {
                if let (Some(mine), Some(theirs)) = (segment_of(id), segment_of(d)) {
                    if theirs > mine {
                        return Err(PlanError::at(
                            tasks[id].pos.clone(),
                            format!(
                                "task '{}' waits for '{}' (line {}), which comes after a \
                                 flush_handlers() that waits for this task's part of the phase",
                                tasks[id].name, tasks[d].name, tasks[d].pos.line
                            ),
                        ));
                    }
                }
            }
        }
    }
    for t in tasks.iter() {
        for &d in &deps[t.id] {
            if tasks[d].phase > t.phase {
                return Err(PlanError::at(
                    t.pos.clone(),
                    format!(
                        "task '{}' (phase '{}') depends on '{}' at line {}, which is in the later phase '{}'",
                        t.name, phases[t.phase].name, tasks[d].name, tasks[d].pos.line, phases[tasks[d].phase].name
                    ),
                ));
            }
        }
    }
    let mut graph: DiGraph<TaskId, ()> = DiGraph::new();
    let nodes: Vec<NodeIndex> = tasks.iter().map(|t| graph.add_node(t.id)).collect();
    for (id, ds) in deps.iter().enumerate() {
        for &d in ds {
            graph.add_edge(nodes[d], nodes[id], ());
        }
    }
    for scc in petgraph::algo::tarjan_scc(&graph) {
        let cyclic = scc.len() > 1 || graph.contains_edge(scc[0], scc[0]);
        if cyclic {
            let mut ids: Vec<TaskId> = scc.iter().map(|n| graph[*n]).collect();
            ids.sort();
            let first = &tasks[ids[0]];
            let members: Vec<String> = ids
                .iter()
                .map(|&i| format!("'{}' (line {})", tasks[i].name, tasks[i].pos.line))
                .collect();
            return Err(PlanError::at(
                first.pos.clone(),
                format!("dependency cycle between tasks {}", members.join(" -> ")),
            ));
        }
    }
    for ((t, ds), ns) in tasks.iter_mut().zip(deps).zip(needs) {
        t.deps = ds.into_iter().collect();
        t.needs = ns.into_iter().collect();
    }
    Ok(())
}

/// With --limit, a task that reads the result of a task whose hosts the limit all excludes could
/// only fail when it runs ("has no result"): refused while planning, naming the hosts to add.
pub fn check_limited_producers(
    tasks: &[Task],
    inventory: &crate::inventory::Inventory,
    limit: &BTreeSet<String>,
) -> Result<(), PlanError> {
    for t in tasks.iter().filter(|t| !t.hosts.is_empty()) {
        let mut reads = Vec::new();
        t.args.deferred(&mut reads);
        if let Some(Condition::Closure(c)) = &t.when {
            closure_refs(c, &mut reads);
        }
        for p in reads.into_iter().map(|id| &tasks[id]) {
            if !p.hosts.is_empty() {
                continue;
            }
            let outside: Vec<String> = crate::pattern::select(inventory, &p.target)
                .unwrap_or_default()
                .into_iter()
                .filter(|h| !limit.contains(h))
                .collect();
            if outside.is_empty() {
                continue;
            }
            return Err(PlanError::at(
                t.pos.clone(),
                format!(
                    "task '{}' reads the result of '{}', which runs on {}, outside --limit: \
                     add {} to --limit",
                    t.name,
                    p.name,
                    outside.join(", "),
                    outside.join(":")
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{BatchSize, Rollout};

    fn hosts(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("h{i}")).collect()
    }

    fn sizes(r: &Rollout, n: usize) -> Vec<usize> {
        r.batches(&hosts(n)).iter().map(Vec::len).collect()
    }

    #[test]
    fn batches_follow_the_sizes_and_the_last_size_repeats() {
        let serial = |s: Vec<BatchSize>| Rollout {
            serial: s,
            ..Rollout::default()
        };
        assert_eq!(sizes(&Rollout::default(), 5), [5]);
        assert_eq!(sizes(&serial(vec![BatchSize::Hosts(2)]), 5), [2, 2, 1]);
        // Percentages are of all the phase's hosts, rounded down, at least one host.
        assert_eq!(
            sizes(&serial(vec![BatchSize::Percent(30)]), 10),
            [3, 3, 3, 1]
        );
        assert_eq!(sizes(&serial(vec![BatchSize::Percent(10)]), 3), [1, 1, 1]);
        let mixed = serial(vec![
            BatchSize::Hosts(1),
            BatchSize::Hosts(2),
            BatchSize::Percent(50),
        ]);
        assert_eq!(sizes(&mixed, 10), [1, 2, 5, 2]);
        assert_eq!(sizes(&mixed, 0), Vec::<usize>::new());
        assert_eq!(
            mixed.batches(&hosts(4)),
            [vec!["h1"], vec!["h2", "h3"], vec!["h4"]]
        );
    }

    #[test]
    fn a_batch_stops_the_run_past_max_fail_percentage_or_when_all_of_it_failed() {
        let failed = |n: usize| hosts(n);
        let none = Rollout::default();
        assert_eq!(none.stops_after(&failed(1), 2), None);
        assert!(none.stops_after(&failed(2), 2).is_some());
        let zero = Rollout {
            max_fail_percentage: Some(0),
            ..Rollout::default()
        };
        assert_eq!(zero.stops_after(&[], 2), None);
        assert!(zero.stops_after(&failed(1), 2).is_some());
        // Exactly the percentage is allowed; more is not (as in Ansible).
        let half = Rollout {
            max_fail_percentage: Some(50),
            ..Rollout::default()
        };
        assert_eq!(half.stops_after(&failed(1), 2), None);
        assert!(half.stops_after(&failed(2), 3).is_some());
        let all = Rollout {
            max_fail_percentage: Some(100),
            ..Rollout::default()
        };
        assert!(all
            .stops_after(&failed(2), 2)
            .unwrap()
            .contains("every host"));
    }
}
