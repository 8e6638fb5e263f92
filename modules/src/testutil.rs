//! What module tests share: a local host, a context, and a way to run a module as the engine does.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use engine::host::Host;
use engine::module::{
    DynModule, Module, ModuleContext, ModuleError, Outcome, Prefetched, Probe, Status, Templates,
};
use engine::template::TemplateEngine;
use engine::transport::LocalTransport;
use serde_json::{Map, Value};

pub fn local() -> Host {
    Host::new("local", Arc::new(LocalTransport))
}

/// The engine's own template environment over the test's variables.
struct EnvTemplates {
    engine: TemplateEngine,
    vars: engine::template::Vars,
}

impl Templates for EnvTemplates {
    fn render_file(&self, path: &str) -> Result<String, ModuleError> {
        Ok(self.engine.render_file(path, &self.vars)?)
    }
    fn eval(&self, expr: &str) -> Result<Value, ModuleError> {
        Ok(self.engine.eval(expr, "test", &self.vars)?)
    }
}

/// Binds `$cx`, a `ModuleContext` over the `Env`'s host, variables and scratch directory, for
/// `$body` (the context borrows values that live only as long as this block).
macro_rules! with_context {
    ($env:expr, $check:expr, |$cx:ident| $body:expr) => {{
        let env: &Env = $env;
        let base = env.base();
        let templates = EnvTemplates {
            engine: TemplateEngine::new(&base),
            vars: Value::Object(env.vars.clone()).into(),
        };
        let gathered = tokio::sync::OnceCell::new();
        let system = engine::facts::Cached {
            host: &env.host,
            cell: &gathered,
        };
        let secrets = engine::secret::Redactor::default();
        let $cx = ModuleContext {
            secrets: &secrets,
            system: &system,
            host: &env.host,
            check: $check,
            want_diff: env.want_diff,
            base_dir: &base,
            templates: &templates,
            vars: &env.vars,
            facts: &env.facts,
            after_predicted_change: $check && env.after_predicted_change,
        };
        $body
    }};
}

/// A scratch directory on the local host, standing for both the playbook directory and the
/// target's file system.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub host: Host,
    pub vars: Map<String, Value>,
    pub facts: Mutex<Map<String, Value>>,
    pub want_diff: bool,
    /// Check mode after a change predicted earlier on the host (`ModuleContext`).
    pub after_predicted_change: bool,
}

impl Env {
    pub fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
            host: local(),
            vars: Map::new(),
            facts: Mutex::new(Map::new()),
            want_diff: true,
            after_predicted_change: false,
        }
    }

    /// A path inside the scratch directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    pub fn base(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Runs `module` with `args` as the engine does: parse, probe, and apply unless `check`.
    pub async fn run(
        &self,
        module: &dyn DynModule,
        args: Value,
        check: bool,
    ) -> Result<Outcome, ModuleError> {
        let mut outs = self.run_all(&[(module, args)], check, false).await;
        outs.pop().expect("one outcome per task")
    }

    /// Runs the tasks one after the other as the engine does. `batched`: their probe scripts are
    /// first sent in one round trip, as the runner reads probes ahead, and each task decides from
    /// its output.
    pub async fn run_all(
        &self,
        tasks: &[(&dyn DynModule, Value)],
        check: bool,
        batched: bool,
    ) -> Vec<Result<Outcome, ModuleError>> {
        with_context!(self, check, |cx| self.run_in(&cx, tasks, batched).await)
    }

    /// Only the probe, as a real run (not check mode) makes it before it decides to apply.
    pub async fn probe<M: Module>(
        &self,
        module: &M,
        args: Value,
    ) -> Result<Probe<M::Plan>, ModuleError> {
        let args: M::Args = engine::module::parse_args(&args).map_err(ModuleError::Args)?;
        M::check_args(&args).map_err(ModuleError::Args)?;
        with_context!(self, false, |cx| module.probe(&args, &cx).await)
    }

    async fn run_in(
        &self,
        cx: &ModuleContext<'_>,
        tasks: &[(&dyn DynModule, Value)],
        batched: bool,
    ) -> Vec<Result<Outcome, ModuleError>> {
        let scripts: Vec<Option<String>> = tasks
            .iter()
            .map(|(m, a)| batched.then(|| m.batch_probe_script(a, cx)).flatten())
            .collect();
        let sent: Vec<&str> = scripts.iter().flatten().map(String::as_str).collect();
        let mut outputs = match sent.is_empty() {
            true => Vec::new(),
            false => engine::batch::run(&self.host, &sent)
                .await
                .expect("the batch runs"),
        }
        .into_iter();
        let mut outs = Vec::new();
        for ((module, args), script) in tasks.iter().zip(scripts) {
            let prefetched = script.map(|script| Prefetched {
                script,
                output: outputs.next().expect("one output per script"),
            });
            outs.push(module.run_prefetched(args.clone(), cx, prefetched).await);
        }
        outs
    }

    /// Runs for real and returns the outcome, failing the test on an error.
    pub async fn apply(&self, module: &dyn DynModule, args: Value) -> Outcome {
        self.run(module, args, false)
            .await
            .unwrap_or_else(|e| panic!("{} failed: {e}", module.name()))
    }

    /// Runs in check mode and returns the status.
    pub async fn check(&self, module: &dyn DynModule, args: Value) -> Status {
        self.run(module, args, true)
            .await
            .unwrap_or_else(|e| panic!("{} check failed: {e}", module.name()))
            .status
    }

    /// The error message of a run that must fail.
    pub async fn error(&self, module: &dyn DynModule, args: Value) -> String {
        match self.run(module, args, false).await {
            Ok(o) => panic!("{} should fail, got {:?}", module.name(), o.status),
            Err(e) => e.to_string(),
        }
    }
}

/// The permission bits of a local path.
pub fn mode_of(path: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// Every path under a directory with its content or kind, to show a check run touched nothing.
pub fn snapshot(dir: &std::path::Path) -> Vec<(String, String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let what = if md.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if md.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else {
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()
            };
            out.push((
                p.display().to_string(),
                what,
                md.permissions().mode() & 0o7777,
            ));
        }
    }
    out.sort();
    out
}
