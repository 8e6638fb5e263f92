//! The contract every module keeps: read the current state (`probe`, read-only), compare it with
//! the desired state, and change only what differs (`apply`). Check mode runs `probe` alone, so
//! what it predicts comes from the same code that decides the real run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::diff::FileDiff;
pub use crate::error::ModuleError;
use crate::host::{Host, Script};
use crate::transport::ExecOutput;

/// Renders template files for the host a task runs on (its variables, facts and earlier results).
pub trait Templates: Send + Sync {
    /// Renders the template at `path` (relative to the playbook's directory).
    fn render_file(&self, path: &str) -> Result<String, ModuleError>;
    /// Evaluates a bare expression (`x == 1 and y`) as Ansible's `when:` and `that:` do.
    fn eval(&self, expr: &str) -> Result<Value, ModuleError>;
}

/// What a module sees while it runs on one host.
pub struct ModuleContext<'a> {
    pub host: &'a Host,
    pub check: bool,
    /// Whether the user asked for diffs: a module may then read old content it would not need
    /// otherwise.
    pub want_diff: bool,
    /// The playbook's directory: relative `src` paths are resolved against it.
    pub base_dir: &'a Path,
    pub templates: &'a dyn Templates,
    /// The host's variables as templates see them.
    pub vars: &'a Map<String, Value>,
    /// Facts a module sets for later tasks on this host (set_fact).
    pub facts: &'a Mutex<Map<String, Value>>,
    /// The host's system facts (OS family, package manager, addresses...), gathered on first use.
    pub system: &'a dyn crate::facts::SystemFacts,
    /// Texts that must never be shown: a module adds the secrets it handles (tokens, keys).
    pub secrets: &'a crate::secret::Redactor,
    /// Check mode, after a change predicted earlier on this host: what the probe finds missing (a
    /// package not in the lists yet, a unit not installed yet) may be what that change brings. A
    /// module that can tell such a case predicts the change the real run would then make, saying
    /// what it assumes, rather than failing.
    pub after_predicted_change: bool,
}

/// The result of a probe: either nothing to do, or a change and what apply needs to make it.
pub enum Probe<P> {
    /// The target is as desired. The value is the task's result (what `register` stores).
    Unchanged(Value),
    /// Nothing to do, for a reason the user should see (a `creates` guard, say).
    Skipped(String),
    Change(Change<P>),
}

pub struct Change<P> {
    /// What apply needs, computed by probe so apply does not read the target again.
    pub plan: P,
    /// One line for the user: "create /etc/x", "mode 644 -> 600".
    pub summary: String,
    pub diff: Option<FileDiff>,
}

impl<P> Probe<P> {
    pub fn change(plan: P, summary: impl Into<String>, diff: Option<FileDiff>) -> Self {
        Probe::Change(Change {
            plan,
            summary: summary.into(),
            diff,
        })
    }
}

pub struct Applied {
    /// Commands may decide after running that nothing changed (`changed_when`).
    pub changed: bool,
    pub result: Value,
}

impl Applied {
    pub fn changed(result: Value) -> Self {
        Applied {
            changed: true,
            result,
        }
    }
}

#[async_trait]
pub trait Module: Send + Sync + 'static {
    /// The name playbooks call it by.
    const NAME: &'static str;
    /// Markdown shown by `playbook doc NAME`.
    const DOC: &'static str;
    type Args: DeserializeOwned + Send + Sync;
    type Plan: Send;
    /// The result's `msg` is what the user wants to see (debug): the report shows it.
    const SHOWS_MSG: bool = false;
    /// The module renders template files, which may read any variable, every host's
    /// (`hostvars`), the groups and the facts: the runner provides all of them.
    const RENDERS_TEMPLATES: bool = false;

    /// The template files these arguments (as written, not rendered) render, when the module
    /// can tell: the runner then provides only what they read (`facts`, `hostvars`, `groups`).
    /// None: they may read anything.
    fn template_files(_args: &Value) -> Option<Vec<String>> {
        None
    }

    /// In check mode the results of tasks that would change are not known. With this, such a
    /// result reaches the module as null (it predicts from what it can read on the host, as a
    /// join can: "would join" unless the node has joined), instead of the task being reported
    /// as depending on a change above.
    const PREDICTS_WITH_UNKNOWN_RESULTS: bool = false;

    /// The argument naming a file the module writes whatever its other arguments are (copy's and
    /// template's `dest`). In check mode, when the content depends on a change above, a
    /// destination that does not exist yet is then predicted as created, not left unknown.
    const CREATES: Option<&'static str> = None;

    /// Checks that need no host (conflicting fields, say). Runs at plan time.
    fn check_args(_args: &Self::Args) -> Result<(), String> {
        Ok(())
    }

    /// Whether `probe` is one read-only script (`probe_script`) whose output `decide` reads: the
    /// runner may then send the scripts of several tasks in one round trip.
    const SCRIPT_PROBE: bool = false;

    /// The remote half of a `SCRIPT_PROBE` module's probe: the script that reads what `decide`
    /// needs, or None when nothing has to be read on the host. It must depend only on the
    /// arguments and the context, and change nothing.
    fn probe_script(
        &self,
        _args: &Self::Args,
        _cx: &ModuleContext<'_>,
    ) -> Result<Option<String>, ModuleError> {
        Ok(None)
    }

    /// The local half of a `SCRIPT_PROBE` module's probe: decides from the output of
    /// `probe_script` (None when it had no script), whether that ran alone or in a batch.
    async fn decide(
        &self,
        _args: &Self::Args,
        _out: Option<ExecOutput>,
        _cx: &ModuleContext<'_>,
    ) -> Result<Probe<Self::Plan>, ModuleError> {
        Err(ModuleError::Failed(format!(
            "module {} implements neither probe nor decide",
            Self::NAME
        )))
    }

    /// Reads the current state. Must not change anything on the target. `SCRIPT_PROBE` modules
    /// keep this default: their script, run alone, then `decide`.
    async fn probe(
        &self,
        args: &Self::Args,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<Self::Plan>, ModuleError> {
        let out = match self.probe_script(args, cx)? {
            Some(script) => Some(cx.host.run(&script).await?),
            None => None,
        };
        self.decide(args, out, cx).await
    }

    /// Whether `apply` is one script (`apply_script`) whose output `applied` reads: the runner
    /// may then have the probes of the next tasks run after it, in the same round trip.
    const SCRIPT_APPLY: bool = false;

    /// The remote half of a `SCRIPT_APPLY` module's apply: the script (and its stdin) that makes
    /// the change `plan` describes.
    fn apply_script(
        &self,
        _args: &Self::Args,
        _plan: &Self::Plan,
        _cx: &ModuleContext<'_>,
    ) -> Result<Script, ModuleError> {
        Err(ModuleError::Failed(format!(
            "module {} has no apply script",
            Self::NAME
        )))
    }

    /// The local half of a `SCRIPT_APPLY` module's apply: what the output of `apply_script`
    /// means (an error, or the task's result).
    async fn applied(
        &self,
        _args: &Self::Args,
        _plan: Self::Plan,
        _out: ExecOutput,
        _cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        Err(ModuleError::Failed(format!(
            "module {} implements neither apply nor applied",
            Self::NAME
        )))
    }

    /// Makes the change that probe found, leaving the target as a new probe would call unchanged.
    /// `SCRIPT_APPLY` modules keep this default: their script, run alone, then `applied`.
    async fn apply(
        &self,
        args: &Self::Args,
        plan: Self::Plan,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        let out = cx
            .host
            .run_script(&self.apply_script(args, &plan, cx)?)
            .await?;
        self.applied(args, plan, out, cx).await
    }
}

/// How a task ended on one host.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Ok,
    Changed,
    Skipped(String),
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub summary: Option<String>,
    pub diff: Option<FileDiff>,
    pub result: Value,
    /// Something ran that may have changed the host (apply, a custom task): what was read on the
    /// host before may be stale now.
    pub acted: bool,
}

/// Where a module's run stands after it decided: done, or a change made by one script that the
/// caller runs on the host (the runner, taking the next tasks' probes along in its round trip).
pub enum Step<'m> {
    Done(Outcome),
    Apply(PendingApply<'m>),
}

/// A `SCRIPT_APPLY` module's change, decided and not made yet: `script` is to run on the task's
/// host, and `finish` reads its output.
pub struct PendingApply<'m> {
    pub script: Script,
    finish: Box<dyn FinishApply + 'm>,
}

impl PendingApply<'_> {
    /// What the apply script's output means: the task's outcome, or its failure.
    pub async fn finish(
        self,
        out: ExecOutput,
        cx: &ModuleContext<'_>,
    ) -> Result<Outcome, ModuleError> {
        self.finish.finish(out, cx).await
    }

    /// Runs the script alone on the context's host, then `finish`.
    pub async fn run_alone(self, cx: &ModuleContext<'_>) -> Result<Outcome, ModuleError> {
        let out = cx.host.run_script(&self.script).await?;
        self.finish(out, cx).await
    }
}

#[async_trait]
trait FinishApply: Send {
    async fn finish(
        self: Box<Self>,
        out: ExecOutput,
        cx: &ModuleContext<'_>,
    ) -> Result<Outcome, ModuleError>;
}

/// A typed module's pending change, with what `applied` needs.
struct Finish<'m, M: Module> {
    module: &'m M,
    args: M::Args,
    change: Change<M::Plan>,
}

#[async_trait]
impl<M: Module> FinishApply for Finish<'_, M> {
    async fn finish(
        self: Box<Self>,
        out: ExecOutput,
        cx: &ModuleContext<'_>,
    ) -> Result<Outcome, ModuleError> {
        let Finish {
            module,
            args,
            change,
        } = *self;
        let applied = module.applied(&args, change.plan, out, cx).await?;
        Ok(applied_outcome(applied, change.summary, change.diff))
    }
}

/// The outcome of a change made (or found not to change anything after all: `changed_when`).
fn applied_outcome(applied: Applied, summary: String, diff: Option<FileDiff>) -> Outcome {
    Outcome {
        status: if applied.changed {
            Status::Changed
        } else {
            Status::Ok
        },
        summary: Some(summary),
        diff: if applied.changed { diff } else { None },
        result: applied.result,
        acted: true,
    }
}

/// A probe script's output, read ahead of its task in a batch (`runner`).
#[derive(Debug, Clone)]
pub struct Prefetched {
    pub script: String,
    pub output: ExecOutput,
}

/// A module with its argument and plan types erased, as the engine stores it.
#[async_trait]
pub trait DynModule: Send + Sync {
    fn name(&self) -> &'static str;
    fn doc(&self) -> &'static str;
    /// The argument names the module accepts.
    fn fields(&self) -> &'static [&'static str];
    /// Parses and checks arguments without a host.
    fn validate(&self, args: &Value) -> Result<(), String>;
    fn shows_msg(&self) -> bool;
    fn renders_templates(&self) -> bool;
    fn template_files(&self, args: &Value) -> Option<Vec<String>>;
    fn predicts_with_unknown_results(&self) -> bool;
    fn creates(&self) -> Option<&'static str>;
    /// The probe script for these arguments, when the module's probe is one script that may be
    /// sent ahead in a batch; None otherwise (or when the arguments are wrong: the task's run
    /// reports that).
    /// Whether the module's probe is one script (`Module::SCRIPT_PROBE`).
    fn script_probe(&self) -> bool;
    fn batch_probe_script(&self, args: &Value, cx: &ModuleContext<'_>) -> Option<String>;
    async fn run(&self, args: Value, cx: &ModuleContext<'_>) -> Result<Outcome, ModuleError> {
        self.run_prefetched(args, cx, None).await
    }
    /// Like `run`, deciding from `prefetched` (see `start`); a change made by script runs alone.
    async fn run_prefetched(
        &self,
        args: Value,
        cx: &ModuleContext<'_>,
        prefetched: Option<Prefetched>,
    ) -> Result<Outcome, ModuleError> {
        match self.start(args, cx, prefetched).await? {
            Step::Done(outcome) => Ok(outcome),
            Step::Apply(pending) => pending.run_alone(cx).await,
        }
    }
    /// Parses the arguments, probes — deciding from `prefetched` instead when the task's probe
    /// script is exactly the one that was run (so the plan is the one a probe would make now, as
    /// long as nothing changed the host since) — and makes the change unless checking; a change
    /// made by one script is handed back (`Step::Apply`) for the caller to run.
    async fn start<'m>(
        &'m self,
        args: Value,
        cx: &ModuleContext<'_>,
        prefetched: Option<Prefetched>,
    ) -> Result<Step<'m>, ModuleError>;
}

#[async_trait]
impl<M: Module> DynModule for M {
    fn name(&self) -> &'static str {
        M::NAME
    }
    fn doc(&self) -> &'static str {
        M::DOC
    }
    fn fields(&self) -> &'static [&'static str] {
        crate::fields::struct_fields::<M::Args>()
    }
    fn validate(&self, args: &Value) -> Result<(), String> {
        let parsed = parse_args::<M::Args>(args)?;
        M::check_args(&parsed)
    }
    fn shows_msg(&self) -> bool {
        M::SHOWS_MSG
    }
    fn renders_templates(&self) -> bool {
        M::RENDERS_TEMPLATES
    }
    fn template_files(&self, args: &Value) -> Option<Vec<String>> {
        M::template_files(args)
    }
    fn predicts_with_unknown_results(&self) -> bool {
        M::PREDICTS_WITH_UNKNOWN_RESULTS
    }
    fn creates(&self) -> Option<&'static str> {
        M::CREATES
    }
    fn script_probe(&self) -> bool {
        M::SCRIPT_PROBE
    }
    fn batch_probe_script(&self, args: &Value, cx: &ModuleContext<'_>) -> Option<String> {
        if !M::SCRIPT_PROBE {
            return None;
        }
        let args = parse_args::<M::Args>(args).ok()?;
        M::check_args(&args).ok()?;
        self.probe_script(&args, cx).ok().flatten()
    }
    async fn start<'m>(
        &'m self,
        args: Value,
        cx: &ModuleContext<'_>,
        prefetched: Option<Prefetched>,
    ) -> Result<Step<'m>, ModuleError> {
        let args = parse_args::<M::Args>(&args).map_err(ModuleError::Args)?;
        M::check_args(&args).map_err(ModuleError::Args)?;
        let probe = match prefetched {
            Some(p)
                if M::SCRIPT_PROBE
                    && self.probe_script(&args, cx)?.as_deref() == Some(p.script.as_str()) =>
            {
                self.decide(&args, Some(p.output), cx).await?
            }
            _ => self.probe(&args, cx).await?,
        };
        let done = |status, summary, diff| {
            Step::Done(Outcome {
                status,
                summary,
                diff,
                result: Value::Null,
                acted: false,
            })
        };
        Ok(match probe {
            Probe::Unchanged(result) => Step::Done(Outcome {
                status: Status::Ok,
                summary: None,
                diff: None,
                result,
                acted: false,
            }),
            Probe::Skipped(reason) => done(Status::Skipped(reason), None, None),
            Probe::Change(change) if cx.check => {
                done(Status::Changed, Some(change.summary), change.diff)
            }
            Probe::Change(change) if M::SCRIPT_APPLY => Step::Apply(PendingApply {
                script: self.apply_script(&args, &change.plan, cx)?,
                finish: Box::new(Finish {
                    module: self,
                    args,
                    change,
                }),
            }),
            Probe::Change(change) => {
                let applied = self.apply(&args, change.plan, cx).await?;
                Step::Done(applied_outcome(applied, change.summary, change.diff))
            }
        })
    }
}

/// Deserialises module arguments; errors name the field and, for unknown fields, the accepted ones.
pub fn parse_args<T: DeserializeOwned>(args: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(args).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." || inner.starts_with("unknown field") {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// The modules a run can call, by name.
#[derive(Default, Clone)]
pub struct Registry {
    modules: BTreeMap<&'static str, Arc<dyn DynModule>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn register<M: Module>(&mut self, module: M) {
        self.modules.insert(M::NAME, Arc::new(module));
    }
    pub fn get(&self, name: &str) -> Option<&Arc<dyn DynModule>> {
        self.modules.get(name)
    }
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.modules.keys().copied()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn DynModule>> {
        self.modules.values()
    }
}
