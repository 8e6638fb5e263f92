//! What a task is run with, on one host: which variables its templates read (`Reads`), its
//! condition, and its arguments resolved (templates rendered with the host's variables, facts and
//! registered results; earlier tasks' results; playbook closures called through the bridge).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::bridge::{with_exec_scope, DependsOnChange, ExecScope, HostApi, Unresolved};
use crate::error::ErrorKind;
use crate::host::Host;
use crate::module::{ModuleError, Outcome, Status, Templates};
use crate::plan::{Action, Arg, Closure, Condition, Deferred, TaskId};
use crate::template::{TemplateEngine, TemplateError, TemplatedVars, Vars};

use super::{Done, State, TaskError};

/// What a task's templates and condition read beyond the host's own variables: only those are
/// provided (facts cost a round trip, `hostvars` a copy of every host's variables).
#[derive(Debug, Clone, Default)]
pub(super) struct Reads {
    pub(super) facts: bool,
    pub(super) hostvars: bool,
    pub(super) groups: bool,
    /// The text in which the task names the variables it reads (its strings, and the names its
    /// template files use): a variable it does not mention is not copied for it, so a large
    /// registered result costs nothing to the tasks that do not read it. `None`: the task may read
    /// any variable (a closure, a template file that cannot be told).
    pub(super) mentions: Option<Arc<str>>,
}

impl Reads {
    pub(super) const ALL: Reads = Reads {
        facts: true,
        hostvars: true,
        groups: true,
        mentions: None,
    };

    /// Whether the task may read the variable `name`.
    fn mentions(&self, name: &str) -> bool {
        self.mentions.as_deref().is_none_or(|t| t.contains(name))
    }

    pub(super) fn of(
        task: &crate::plan::Task,
        templates: &TemplateEngine,
        templated: &TemplatedVars,
    ) -> Reads {
        let mut strings = Vec::new();
        task.args.strings(&mut strings);
        strings.extend(task.control.environment.values().cloned());
        for cond in [&task.when, &task.control.until].into_iter().flatten() {
            if let Condition::Expr(e) = cond {
                strings.push(e.clone());
            }
        }
        // Strings are searched as text: not all of them are templates (assert's `that` is an
        // expression), and a name that is only mentioned costs at most what it used to.
        let has = |name: &str| strings.iter().any(|s| s.contains(name));
        let mut reads = Reads {
            facts: has("facts"),
            hostvars: has("hostvars"),
            groups: has("groups"),
            mentions: None,
        };
        // What the templated variables it reads read (`etcd_peers: "{{ groups.etcd }}"`).
        let mut names = BTreeSet::new();
        for s in strings.iter().filter(|s| crate::template::is_template(s)) {
            names.extend(templates.referenced_names(s).unwrap_or_default());
        }
        for cond in [&task.when, &task.control.until].into_iter().flatten() {
            if let Condition::Expr(e) = cond {
                names.extend(templates.referenced_names_in_expr(e).unwrap_or_default());
            }
        }
        let mut unknown_files = false;
        if let Action::Module(m) = &task.action {
            if m.renders_templates() {
                // Template files are read only when rendered: their names, when the module can
                // say which files they are and they name everything they read.
                let files = task
                    .args
                    .as_plain()
                    .and_then(|a| m.template_files(&a))
                    .filter(|fs| fs.iter().all(|f| !crate::template::is_template(f)));
                let files_names: Option<Vec<_>> = files.and_then(|fs| {
                    fs.iter()
                        .map(|f| templates.referenced_names_in_file(f))
                        .collect()
                });
                match files_names {
                    Some(found) => names.extend(found.into_iter().flatten()),
                    None => {
                        reads = Reads::ALL;
                        unknown_files = true;
                    }
                }
            }
        }
        // Another host's variables may read anything.
        if names.contains("hostvars") {
            names.extend(templated.names().map(str::to_string));
        }
        let names = templated.widen(&names);
        reads.facts |= names.contains("facts");
        reads.hostvars |= names.contains("hostvars");
        reads.groups |= names.contains("groups");
        // `hostvars` carries this host's facts too.
        reads.facts |= reads.hostvars;
        // A closure is given every variable (`h.vars`).
        let closure = has_closure(&task.args)
            || matches!(task.action, Action::Custom(_))
            || [&task.when, &task.control.until]
                .into_iter()
                .flatten()
                .any(|c| matches!(c, Condition::Closure(_)));
        if !closure && !unknown_files {
            // The names read through templated variables count as mentioned.
            let mut mentions = strings.join("\n");
            for n in &names {
                mentions.push('\n');
                mentions.push_str(n);
            }
            reads.mentions = Some(mentions.into());
        }
        reads
    }
}

pub(super) fn has_closure(arg: &Arg) -> bool {
    match arg {
        Arg::Closure(_) => true,
        Arg::Map(m) => m.values().any(has_closure),
        Arg::List(l) => l.iter().any(has_closure),
        _ => false,
    }
}

pub(super) fn closure_error(e: &rhai::EvalAltResult, origin: &str) -> TaskError {
    match DependsOnChange::in_error(e) {
        Some(DependsOnChange(why)) => TaskError::DependsOnChange(why),
        None => TaskError::failed(ErrorKind::Closure, format!("{origin}: {e}")),
    }
}

pub(super) enum Prepared {
    Skip(String),
    Custom(Outcome),
    Run { args: Value, vars: Vars },
}

pub(super) struct HostTemplates<'a> {
    pub(super) engine: &'a TemplateEngine,
    pub(super) vars: Vars,
    pub(super) origin: String,
}

impl Templates for HostTemplates<'_> {
    fn render_file(&self, path: &str) -> Result<String, ModuleError> {
        self.engine
            .render_file(path, &self.vars)
            .map_err(ModuleError::Template)
    }
    fn eval(&self, expr: &str) -> Result<Value, ModuleError> {
        self.engine
            .eval(expr, &self.origin, &self.vars)
            .map_err(ModuleError::Template)
    }
}

/// What a custom task returns: "changed", "ok", "skipped", a bool (changed), or a map with
/// `changed`, `msg` and `result`.
pub(super) fn custom_outcome(v: rhai::Dynamic) -> Result<Outcome, TaskError> {
    // A custom task may run anything on the host, even in check mode.
    let mut outcome = Outcome {
        status: Status::Ok,
        summary: None,
        diff: None,
        result: Value::Null,
        acted: true,
    };
    if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        outcome.status = match s.as_str() {
            "changed" => Status::Changed,
            "ok" => Status::Ok,
            "skipped" => Status::Skipped("skipped by the task".into()),
            other => {
                return Err(TaskError::failed(
                    ErrorKind::Closure,
                    format!(
                    "a custom task returns \"changed\", \"ok\", \"skipped\", a bool or a map, not \"{other}\""
                ),
                ))
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
            outcome.result = rhai::serde::from_dynamic(r)
                .map_err(|e| TaskError::failed(ErrorKind::Closure, e.to_string()))?;
        }
    } else {
        return Err(TaskError::failed(
            ErrorKind::Closure,
            format!(
                "a custom task returns \"changed\", \"ok\", \"skipped\", a bool or a map, not {}",
                v.type_name()
            ),
        ));
    }
    Ok(outcome)
}

impl State {
    /// Evaluates the condition and the arguments (may call playbook closures: runs on a
    /// blocking thread then).
    pub(super) fn prepare(
        self: &Arc<Self>,
        tid: TaskId,
        host: &str,
        conn: &Host,
    ) -> Result<Prepared, TaskError> {
        let task = &self.plan.tasks[tid];
        let origin = format!("{} (task '{}')", task.pos, task.name);
        let ctx = self.template_vars(host, &self.tasks[tid].reads);
        let scope = || self.exec_scope(host);
        // Made only for a closure: it holds a copy of the variables.
        let api = || HostApi {
            host: conn.clone(),
            check: self.tasks[tid].checks,
            vars: match ctx.to_json() {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            rt: tokio::runtime::Handle::try_current().ok(),
        };
        let call = |c: &Closure| -> Result<rhai::Dynamic, TaskError> {
            let script = &self.plan.script;
            let api = api();
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
                    .map_err(|e| self.template_failure(host, e))?;
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
        Ok(Prepared::Run { args, vars: ctx })
    }

    /// A task whose arguments depend on a change above, in check mode: when its module writes a
    /// destination whatever the content (`Module::CREATES`) and that destination does not exist,
    /// the task will create it, and is predicted so; otherwise it stays unknown.
    pub(super) async fn predict_created(
        &self,
        tid: TaskId,
        host: &str,
        conn: &Host,
        why: String,
    ) -> Result<Outcome, TaskError> {
        let task = &self.plan.tasks[tid];
        let unknown = || Err(TaskError::DependsOnChange(why.clone()));
        let (Action::Module(module), Arg::Map(args)) = (&task.action, &task.args) else {
            return unknown();
        };
        let Some(Arg::Value(dest)) = module.creates().and_then(|name| args.get(name)) else {
            return unknown();
        };
        let ctx = self.template_vars(host, &self.tasks[tid].reads);
        let origin = format!("{} (task '{}')", task.pos, task.name);
        let Ok(Value::String(dest)) = self.render_value(dest, host, &ctx, &origin) else {
            return unknown();
        };
        // Into a directory, the file's name comes from the arguments that are not known.
        if dest.is_empty() || dest.ends_with('/') {
            return unknown();
        }
        let path = crate::host::quote(&dest)
            .map_err(|e| TaskError::failed(ErrorKind::Args, e.to_string()))?;
        let out = conn
            .run(&format!("test -e {path} || test -L {path}"))
            .await
            .map_err(|e| TaskError::Unreachable(e.to_string()))?;
        if out.success() {
            return unknown();
        }
        Ok(Outcome {
            status: Status::Changed,
            summary: Some(format!(
                "create {dest} (its content depends on a change above: {why})"
            )),
            diff: None,
            result: Value::Null,
            acted: false,
        })
    }

    /// Where a closure run for `host` reads earlier tasks' results.
    fn exec_scope(self: &Arc<Self>, host: &str) -> ExecScope {
        ExecScope {
            host: host.to_string(),
            resolve: Box::new({
                let st = self.clone();
                let host = host.to_string();
                move |d: &Deferred| {
                    st.resolve_deferred(d, &host).map_err(|e| match e {
                        TaskError::Failed(f) => Unresolved::Failed(f.message),
                        TaskError::Unreachable(m) => Unresolved::Failed(m),
                        TaskError::DependsOnChange(m) => Unresolved::DependsOnChange(m),
                    })
                }
            }),
        }
    }

    /// Whether `until` holds over an attempt's result: an expression sees it as `result` (and
    /// by its registered name), a closure is given it.
    pub(super) async fn until_holds(
        self: &Arc<Self>,
        tid: TaskId,
        host: &str,
        cond: &Condition,
        result: Value,
    ) -> Result<bool, TaskError> {
        let task = &self.plan.tasks[tid];
        let origin = format!("{} (task '{}', until)", task.pos, task.name);
        match cond {
            Condition::Expr(expr) => {
                let mut vars = self.template_vars(host, &self.tasks[tid].reads);
                if let Some(name) = &task.register {
                    vars.literal.insert(name.clone(), result.clone());
                }
                vars.literal.insert("result".into(), result);
                let v = self
                    .templates
                    .eval(expr, &origin, &vars)
                    .map_err(|e| TaskError::Failed(e.into()))?;
                Ok(crate::template::is_truthy(&v))
            }
            Condition::Closure(c) => {
                let st = self.clone();
                let host = host.to_string();
                let c = c.clone();
                tokio::task::spawn_blocking(move || {
                    let script = &st.plan.script;
                    let arg = rhai::serde::to_dynamic(&result).map_err(|e| {
                        TaskError::failed(ErrorKind::Closure, format!("{origin}: {e}"))
                    })?;
                    let v = with_exec_scope(st.exec_scope(&host), || {
                        c.0.call::<rhai::Dynamic>(&script.engine, &script.ast, (arg,))
                    })
                    .map_err(|e| closure_error(&e, &origin))?;
                    Ok(v.as_bool().unwrap_or(!v.is_unit()))
                })
                .await
                .map_err(|e| TaskError::failed(ErrorKind::Failed, format!("until panicked: {e}")))?
            }
        }
    }

    /// A template that failed on `host`: in check mode after a predicted change, it may have
    /// failed for want of what that change brings.
    pub(super) fn template_failure(&self, host: &str, e: TemplateError) -> TaskError {
        if self.opts.check && self.hosts[host].predicted_change.load(Ordering::SeqCst) {
            TaskError::DependsOnChange(e.to_string())
        } else {
            TaskError::Failed(e.into())
        }
    }

    pub(super) fn resolve_arg(
        &self,
        arg: &Arg,
        host: &str,
        ctx: &Vars,
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
                    TaskError::failed(
                        ErrorKind::Closure,
                        format!("{origin}: a closure returned an unusable value: {e}"),
                    )
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

    pub(super) fn render_value(
        &self,
        v: &Value,
        host: &str,
        ctx: &Vars,
        origin: &str,
    ) -> Result<Value, TaskError> {
        Ok(match v {
            Value::String(s) if crate::template::is_template(s) => Value::String(
                self.templates
                    .render_str(s, origin, ctx)
                    .map_err(|e| self.template_failure(host, e))?,
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
    pub(super) fn resolve_deferred(&self, d: &Deferred, host: &str) -> Result<Value, TaskError> {
        let src = &self.plan.tasks[d.task];
        let from = match &d.host {
            Some(h) => h.clone(),
            None if src.hosts.iter().any(|h| h == host) => host.to_string(),
            None if src.hosts.len() == 1 => src.hosts[0].clone(),
            None => {
                return Err(TaskError::failed(ErrorKind::Upstream, format!(
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
                return Err(TaskError::failed(
                    ErrorKind::Upstream,
                    format!(
                        "'{}' has no result on {from} (it failed, was skipped or did not run)",
                        src.name
                    ),
                ))
            }
        };
        for key in &d.path {
            value = match value.get(key) {
                Some(v) => v.clone(),
                None => {
                    return Err(TaskError::failed(
                        ErrorKind::Upstream,
                        format!(
                            "the result of '{}' on {from} has no field '{key}'",
                            src.name
                        ),
                    ))
                }
            };
        }
        Ok(value)
    }

    /// The task's name as `host`'s output lines show it: its templates rendered with the host's
    /// variables (`file: /opt/app/etc`, not `file: {{ root }}/etc`). A name that cannot be
    /// rendered yet (a result not made) stays as written, and so does a secret task's, whose
    /// name must not carry what it reads. Rendered once per task and host: the variables are
    /// copied to render, and a task's start, retries and end show the same name.
    pub(super) fn shown_name(&self, tid: TaskId, host: &str) -> String {
        let task = &self.plan.tasks[tid];
        if !crate::template::is_template(&task.name) || task.secret != crate::plan::Secrecy::Public
        {
            return task.name.clone();
        }
        let key = (tid, host.to_string());
        if let Some(name) = self
            .shown_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return name.clone();
        }
        let ctx = self.template_vars(host, &self.tasks[tid].reads);
        let origin = format!("{} (task name)", task.pos);
        let name = self
            .templates
            .render_str(&task.name, &origin, &ctx)
            .unwrap_or_else(|_| task.name.clone());
        self.shown_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, name.clone());
        name
    }

    /// The variables templates see on `host`: its variables (templated ones rendered when read),
    /// facts and registered results (as they are), results registered on a single other host,
    /// and (when read) every host's variables and the groups.
    pub(super) fn template_vars(&self, host: &str, reads: &Reads) -> Vars {
        let h = &self.hosts[host];
        let mut vars = Vars {
            play: h.vars.clone(),
            ..Vars::default()
        };
        vars.literal = self.results_of(h, reads);
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        for t in &self.plan.tasks {
            if let (Some(name), [only]) = (&t.register, t.hosts.as_slice()) {
                if only != host && vars.get(name).is_none() && reads.mentions(name) {
                    if let Some(Done::Ran(v)) = done.get(&(t.id, only.clone())) {
                        vars.literal.insert(name.clone(), v.clone());
                    }
                }
            }
        }
        drop(done);
        let groups = reads.groups.then(|| {
            let groups: Map<String, Value> = self
                .inventory
                .groups()
                .iter()
                .map(|(g, hs)| (g.clone(), Value::from(hs.clone())))
                .collect();
            Value::Object(groups)
        });
        if reads.hostvars {
            let hostvars = self
                .inventory
                .hosts()
                .map(|e| {
                    let mut v = match self.hosts.get(&e.name) {
                        Some(rt) => Vars {
                            play: rt.vars.clone(),
                            // What is read through `hostvars[h]` is not named in the task.
                            literal: self.results_of(rt, &Reads::ALL),
                            hostvars: None,
                        },
                        None => Vars {
                            play: self.inventory.host_vars(
                                &e.name,
                                &self.plan.defaults,
                                &self.opts.extra_vars,
                            ),
                            ..Vars::default()
                        },
                    };
                    // A host's templated variables may read the groups too.
                    if let Some(g) = &groups {
                        v.literal.insert("groups".into(), g.clone());
                    }
                    (e.name.clone(), v)
                })
                .collect();
            vars.hostvars = Some(hostvars);
        }
        if let Some(g) = groups {
            vars.literal.insert("groups".into(), g);
        }
        vars
    }

    /// What tasks made on a host: its facts, `set_fact` values and registered results, less
    /// what extra vars set (they win over everything, as in Ansible), and less what the task does
    /// not mention (a large registered result is not copied for the tasks that do not read it).
    fn results_of(&self, h: &super::HostRt, reads: &Reads) -> Map<String, Value> {
        let mut made = Map::new();
        if let Some(f) = h.gathered.get() {
            made.insert("facts".into(), f.clone());
        }
        let wanted = |k: &String| !self.opts.extra_vars.contains_key(k) && reads.mentions(k);
        made.retain(|k, _| wanted(k));
        let results = h.facts.lock().unwrap_or_else(|e| e.into_inner());
        made.extend(
            results
                .iter()
                .filter(|(k, _)| wanted(k))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        made
    }
}
