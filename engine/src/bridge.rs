//! Where planning and execution meet: playbook closures run by the runner read earlier tasks'
//! results through a thread-local scope, and custom tasks get a `Host` handle. Kept apart so the
//! Rhai API (script.rs) and the runner both depend on it and not on each other.

use std::cell::RefCell;

use rhai::{Dynamic, EvalAltResult};
use serde_json::{Map, Value};

use crate::host::Host;
use crate::plan::Deferred;

/// Reads an earlier task's result for the host a closure runs on.
pub type Resolver = dyn Fn(&Deferred) -> Result<Value, Unresolved>;

/// Why an earlier task's result cannot be read.
#[derive(Debug, Clone)]
pub enum Unresolved {
    Failed(String),
    /// Check mode only predicted that task's change: there is no real result to read.
    DependsOnChange(String),
}

/// What a closure throws when it reads a result check mode only predicted: a value of its own
/// type, so the runner tells it from any other error however deep in the script it was thrown.
#[derive(Debug, Clone)]
pub struct DependsOnChange(pub String);

impl DependsOnChange {
    /// The one a closure's error carries, through the calls of playbook functions it crossed.
    pub fn in_error(e: &EvalAltResult) -> Option<DependsOnChange> {
        match e {
            EvalAltResult::ErrorRuntime(v, _) => v.clone().try_cast::<DependsOnChange>(),
            EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
            | EvalAltResult::ErrorInModule(_, inner, _) => Self::in_error(inner),
            _ => None,
        }
    }
}

/// Set while the runner calls a playbook closure: task handles then read real results.
pub struct ExecScope {
    pub host: String,
    pub resolve: Box<Resolver>,
}

thread_local! {
    static EXEC: RefCell<Option<ExecScope>> = const { RefCell::new(None) };
}

/// Runs `f` with `scope` active on this thread.
pub fn with_exec_scope<T>(scope: ExecScope, f: impl FnOnce() -> T) -> T {
    EXEC.with(|e| *e.borrow_mut() = Some(scope));
    let out = f();
    EXEC.with(|e| *e.borrow_mut() = None);
    out
}

pub(crate) fn exec_host() -> Option<String> {
    EXEC.with(|e| e.borrow().as_ref().map(|s| s.host.clone()))
}

pub(crate) fn read_deferred(d: Deferred) -> Result<Dynamic, Box<EvalAltResult>> {
    let resolved = EXEC.with(|e| e.borrow().as_ref().map(|s| (s.resolve)(&d)));
    match resolved {
        None => Ok(Dynamic::from(d)),
        Some(Ok(v)) => rhai::serde::to_dynamic(v),
        Some(Err(Unresolved::Failed(msg))) => Err(msg.into()),
        Some(Err(Unresolved::DependsOnChange(msg))) => Err(Box::new(EvalAltResult::ErrorRuntime(
            Dynamic::from(DependsOnChange(msg)),
            rhai::Position::NONE,
        ))),
    }
}

/// The host as a custom task's closure sees it: `h.run(cmd)`, `h.read_file(path)`,
/// `h.write_file(path, content)`, `h.vars`, `h.name`, `h.check`.
#[derive(Clone)]
pub struct HostApi {
    pub(crate) host: Host,
    pub(crate) check: bool,
    pub(crate) vars: Map<String, Value>,
    pub(crate) rt: Option<tokio::runtime::Handle>,
}

impl HostApi {
    fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = T>,
    ) -> Result<T, Box<rhai::EvalAltResult>> {
        match &self.rt {
            Some(rt) => Ok(rt.block_on(f)),
            None => Err("no runtime to reach the host".into()),
        }
    }

    /// Registers the host API type on a Rhai engine.
    pub fn register(engine: &mut rhai::Engine) {
        engine.register_type_with_name::<HostApi>("Host");
        engine.register_get("name", |h: &mut HostApi| h.host.name.clone());
        engine.register_get("check", |h: &mut HostApi| h.check);
        engine.register_get(
            "facts",
            |h: &mut HostApi| -> Result<rhai::Dynamic, Box<rhai::EvalAltResult>> {
                rhai::serde::to_dynamic(h.vars.get("facts").cloned().unwrap_or_default())
            },
        );
        engine.register_get(
            "vars",
            |h: &mut HostApi| -> Result<rhai::Dynamic, Box<rhai::EvalAltResult>> {
                rhai::serde::to_dynamic(&h.vars)
            },
        );
        engine.register_fn(
            "run",
            |h: &mut HostApi, cmd: &str| -> Result<rhai::Map, Box<rhai::EvalAltResult>> {
                // The user's command: its output is kept within --keep-output.
                let keep = h.host.keep(None);
                let out = h
                    .block_on(h.host.run_kept(cmd, b"", &keep))?
                    .map_err(|e| e.to_string())?;
                let mut m = rhai::Map::new();
                m.insert("rc".into(), (out.status as i64).into());
                m.insert("stdout_cut".into(), (out.stdout_cut as i64).into());
                m.insert("stderr_cut".into(), (out.stderr_cut as i64).into());
                m.insert(
                    "stdout".into(),
                    out.stdout_text().trim_end_matches('\n').to_string().into(),
                );
                m.insert(
                    "stderr".into(),
                    out.stderr_text().trim_end_matches('\n').to_string().into(),
                );
                Ok(m)
            },
        );
        engine.register_fn(
            "read_file",
            |h: &mut HostApi, path: &str| -> Result<rhai::Dynamic, Box<rhai::EvalAltResult>> {
                let data = h
                    .block_on(crate::remote::read_file(&h.host, path))?
                    .map_err(|e| e.to_string())?;
                Ok(match data {
                    Some(bytes) => String::from_utf8_lossy(&bytes).into_owned().into(),
                    None => rhai::Dynamic::UNIT,
                })
            },
        );
        // Returns whether the content differed; in check mode it only compares.
        engine.register_fn(
            "write_file",
            |h: &mut HostApi,
             path: &str,
             content: &str|
             -> Result<bool, Box<rhai::EvalAltResult>> {
                let old = h
                    .block_on(crate::remote::read_file(&h.host, path))?
                    .map_err(|e| e.to_string())?;
                if old.as_deref() == Some(content.as_bytes()) {
                    return Ok(false);
                }
                if !h.check {
                    h.block_on(crate::remote::write_file(
                        &h.host,
                        path,
                        content.as_bytes(),
                        &Default::default(),
                    ))?
                    .map_err(|e| e.to_string())?;
                }
                Ok(true)
            },
        );
    }
}
