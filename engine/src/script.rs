//! The Rhai API that playbooks are written in, and the evaluation that turns a playbook into a
//! [`Plan`]. Evaluation only plans: nothing here touches a host. Closures that a playbook passes
//! (conditions, computed arguments, custom tasks) are kept and called by the runner.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, NativeCallContext, Position, AST};
use serde_json::{Map, Value};

use crate::error::{closest, PlanError};
use crate::events::{Event, EventSink};
use crate::inventory::Inventory;
use crate::module::Registry;
use crate::plan::{
    link, Action, Arg, BatchSize, Closure, Condition, Deferred, Phase, Plan, SourcePos, Task,
    TaskId,
};
pub use crate::plan::{Script, TaskRef};

/// Words Rhai reserves; a module with such a name is called through a custom syntax.
const RHAI_KEYWORDS: &[&str] = &[
    "package",
    "debug",
    "print",
    "eval",
    "type_of",
    "module",
    "use",
    "with",
    "super",
    "var",
    "static",
    "shared",
    "goto",
    "exit",
    "match",
    "case",
    "public",
    "protected",
    "new",
    "spawn",
    "thread",
    "go",
    "sync",
    "async",
    "await",
    "yield",
    "default",
    "void",
    "null",
    "nil",
    "call",
    "curry",
    "this",
    "import",
    "export",
    "as",
    "is",
    "fn",
    "private",
    "global",
];

/// Functions of the playbook API, for "did you mean" hints next to module names.
const API_FUNCTIONS: &[&str] = &[
    "phase",
    "on",
    "handler",
    "task",
    "vars",
    "defaults",
    "hosts",
    "first",
    "rest",
    "host_vars",
    "quote",
    "retries",
    "retry_until",
    "delay",
    "run_once",
    "timeout",
    "environment",
    "become",
    "become_user",
    "delegate_to",
    "serial",
    "max_fail_percentage",
    "any_errors_fatal",
    "block",
    "rescue",
    "always",
    "ignore_unreachable",
    "flush_handlers",
    "secret",
];

/// Bounds that keep a runaway playbook from hanging the controller.
const MAX_OPERATIONS: u64 = 20_000_000;
const MAX_CALL_LEVELS: usize = 64;

/// What evaluation needs besides the playbook itself.
pub struct PlanInput<'a> {
    pub playbook: &'a Path,
    pub inventory: Arc<Inventory>,
    pub registry: &'a Registry,
    /// Host names selected by --limit; None means every host.
    pub limit: Option<BTreeSet<String>>,
    pub extra_vars: Map<String, Value>,
    pub sink: Arc<dyn EventSink>,
    /// Variables known to be secret besides the inventory's (extra vars read from the vault).
    pub secret_vars: BTreeSet<String>,
    /// Where the values of secret variables are registered as soon as they are known.
    pub secrets: Arc<crate::secret::Redactor>,
}

/// A task described but not yet placed on hosts.
#[derive(Clone, Debug)]
pub struct TaskSpec {
    name: Option<String>,
    action: Action,
    args: Arg,
    when: Option<Condition>,
    tags: Vec<String>,
    notify: Vec<String>,
    register: Option<String>,
    after: Vec<TaskId>,
    after_names: Vec<(String, SourcePos)>,
    ignore_errors: bool,
    ignore_unreachable: bool,
    block: Option<crate::plan::BlockPart>,
    throttle: Option<usize>,
    check_mode: Option<bool>,
    control: crate::plan::Control,
    secret: bool,
    pos: SourcePos,
}

impl TaskSpec {
    fn new(action: Action, args: Arg, pos: SourcePos) -> Self {
        TaskSpec {
            name: None,
            action,
            args,
            when: None,
            tags: vec![],
            notify: vec![],
            register: None,
            after: vec![],
            after_names: vec![],
            ignore_errors: false,
            ignore_unreachable: false,
            block: None,
            throttle: None,
            check_mode: None,
            control: Default::default(),
            secret: false,
            pos,
        }
    }
}

struct Builder {
    tasks: Vec<Task>,
    phases: Vec<Phase>,
    current_phase: Option<usize>,
    /// Inside the body of a `phase(...)` (not the implicit phase of tasks outside any).
    in_phase_body: bool,
    defaults: Map<String, Value>,
    inventory: Arc<Inventory>,
    limit: Option<BTreeSet<String>>,
    extra_vars: Map<String, Value>,
    file: String,
    /// Blocks placed so far: the next one's number.
    blocks: usize,
    secret_vars: BTreeSet<String>,
    secrets: Arc<crate::secret::Redactor>,
}

impl Builder {
    fn phase_index(&mut self) -> usize {
        match self.current_phase {
            Some(i) => i,
            None => {
                // Tasks outside any phase() form one implicit phase, as a play without phases.
                self.phases.push(Phase::new("main"));
                let i = self.phases.len() - 1;
                self.current_phase = Some(i);
                i
            }
        }
    }

    fn select(&self, pattern: &str) -> Result<Vec<String>, String> {
        crate::pattern::select(&self.inventory, pattern).map_err(|e| e.to_string())
    }

    fn targets(&self, target: &Dynamic) -> Result<(Vec<String>, String), String> {
        let patterns: Vec<String> = if let Some(s) = target.read_lock::<rhai::ImmutableString>() {
            vec![s.to_string()]
        } else if let Some(a) = target.read_lock::<rhai::Array>() {
            a.iter()
                .map(|d| {
                    d.read_lock::<rhai::ImmutableString>()
                        .map(|s| s.to_string())
                        .ok_or_else(|| {
                            format!(
                                "a target list holds host or group names, not {}",
                                d.type_name()
                            )
                        })
                })
                .collect::<Result<_, _>>()?
        } else {
            return Err(format!(
                "on() takes a host pattern or a list of them, not {}",
                target.type_name()
            ));
        };
        let mut hosts: Vec<String> = Vec::new();
        for p in &patterns {
            for h in self.select(p)? {
                if !hosts.contains(&h) {
                    hosts.push(h);
                }
            }
        }
        let order: Vec<String> = self.inventory.hosts().map(|h| h.name.clone()).collect();
        hosts.sort_by_key(|h| order.iter().position(|o| o == h));
        if let Some(limit) = &self.limit {
            hosts.retain(|h| limit.contains(h));
        }
        Ok((hosts, patterns.join(",")))
    }

    fn place(
        &mut self,
        spec: TaskSpec,
        hosts: Vec<String>,
        target: String,
        handler: bool,
    ) -> TaskId {
        let phase = self.phase_index();
        let id = self.tasks.len();
        let mut deps: Vec<TaskId> = spec.after.clone();
        spec.args.deferred(&mut deps);
        if let Some(Condition::Closure(c)) = &spec.when {
            crate::plan::closure_refs(c, &mut deps);
        }
        if let Some(Condition::Closure(c)) = &spec.control.until {
            crate::plan::closure_refs(c, &mut deps);
        }
        deps.retain(|&d| d != id);
        let name = spec.name.clone().unwrap_or_else(|| default_name(&spec));
        self.tasks.push(Task {
            id,
            name: name.clone(),
            action: spec.action,
            args: spec.args,
            phase,
            hosts,
            target,
            when: spec.when,
            tags: spec.tags,
            notify: spec.notify,
            register: spec.register,
            after_names: spec.after_names,
            needs: deps,
            deps: vec![],
            pos: spec.pos,
            is_handler: handler,
            ignore_errors: spec.ignore_errors,
            ignore_unreachable: spec.ignore_unreachable,
            block: spec.block,
            throttle: spec.throttle,
            check_mode: spec.check_mode,
            control: spec.control,
            secret: if spec.secret {
                crate::plan::Secrecy::Marked
            } else {
                crate::plan::Secrecy::Public
            },
        });
        if handler {
            self.phases[phase].handlers.push(id);
        } else {
            self.phases[phase].tasks.push(id);
        }
        id
    }

    fn plan_vars(&self) -> Map<String, Value> {
        let mut vars = self.defaults.clone();
        vars.extend(self.inventory.global_vars().clone());
        vars.extend(self.extra_vars.clone());
        vars
    }
}

fn default_name(spec: &TaskSpec) -> String {
    let module = match &spec.action {
        Action::Module(m) => m.name(),
        Action::Custom(_) => "custom",
    };
    let detail = match &spec.args {
        Arg::Map(m) => ["cmd", "dest", "path", "name", "src", "argv"]
            .iter()
            .find_map(|k| match m.get(*k) {
                Some(Arg::Value(Value::String(s))) => Some(s.clone()),
                Some(Arg::Value(v @ Value::Array(_))) => Some(shown_words(v)),
                Some(list @ Arg::List(_)) => list.as_plain().map(|v| shown_words(&v)),
                _ => None,
            }),
        _ => None,
    };
    match detail {
        Some(d) => {
            let d: String = d.lines().next().unwrap_or("").chars().take(60).collect();
            format!("{module}: {d}")
        }
        None => module.to_string(),
    }
}

/// A list of words (an `argv`) as a shell would take it, as the command modules show it.
fn shown_words(list: &Value) -> String {
    let words: Vec<String> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let w = w
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| w.to_string());
            crate::quote::quote(&w).unwrap_or(w)
        })
        .collect();
    words.join(" ")
}

fn pos_of(ctx: &NativeCallContext, file: &str) -> SourcePos {
    let p = ctx.call_position();
    SourcePos {
        file: source_file(ctx.call_source().unwrap_or(file), file),
        line: p.line().unwrap_or(0),
        column: p.position().unwrap_or(0),
    }
}

fn runtime_err(msg: impl Into<String>, ctx: &NativeCallContext) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(Dynamic::from(msg.into()), ctx.call_position()).into()
}

/// Converts a Rhai value to a task argument, keeping deferred values and closures for later.
pub fn to_arg(d: &Dynamic) -> Result<Arg, String> {
    if d.is_shared() {
        return to_arg(&d.flatten_clone());
    }
    if let Some(r) = d.clone().try_cast::<TaskRef>() {
        return Ok(Arg::Deferred(Deferred {
            task: r.id,
            host: r.host,
            path: vec![],
        }));
    }
    if let Some(x) = d.clone().try_cast::<Deferred>() {
        return Ok(Arg::Deferred(x));
    }
    if let Some(f) = d.clone().try_cast::<FnPtr>() {
        return Ok(Arg::Closure(Closure(f)));
    }
    if let Some(m) = d.read_lock::<rhai::Map>() {
        return m
            .iter()
            .map(|(k, v)| to_arg(v).map(|a| (k.to_string(), a)))
            .collect::<Result<_, _>>()
            .map(Arg::Map);
    }
    if let Some(a) = d.read_lock::<rhai::Array>() {
        return a
            .iter()
            .map(to_arg)
            .collect::<Result<_, _>>()
            .map(Arg::List);
    }
    if d.is::<TaskSpec>() {
        return Err("a task cannot be an argument; place it with on(...) first".into());
    }
    rhai::serde::from_dynamic::<Value>(d)
        .map(Arg::Value)
        .map_err(|e| format!("unsupported value of type {}: {e}", d.type_name()))
}

fn check_fields(module: &dyn crate::module::DynModule, args: &Arg) -> Result<(), String> {
    if let Some(plain) = args.as_plain() {
        return module.validate(&plain);
    }
    // Values only known at execution time are type-checked then; the names can be checked now.
    if let Arg::Map(m) = args {
        let fields = module.fields();
        for k in m.keys() {
            if !fields.is_empty() && !fields.contains(&k.as_str()) {
                return Err(format!(
                    "unknown field `{k}`, expected one of {}",
                    fields
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    Ok(())
}

fn strings_of(d: &Dynamic, what: &str) -> Result<Vec<String>, String> {
    if let Some(s) = d.read_lock::<rhai::ImmutableString>() {
        return Ok(vec![s.to_string()]);
    }
    if let Some(a) = d.read_lock::<rhai::Array>() {
        return a
            .iter()
            .map(|x| {
                x.read_lock::<rhai::ImmutableString>()
                    .map(|s| s.to_string())
                    .ok_or_else(|| format!("{what} must be strings, not {}", x.type_name()))
            })
            .collect();
    }
    Err(format!(
        "{what} must be a string or a list of strings, not {}",
        d.type_name()
    ))
}

/// Imports resolve only to files under the playbook's directory.
struct SandboxResolver {
    root: PathBuf,
    inner: rhai::module_resolvers::FileModuleResolver,
    /// The functions of every imported file. A closure made inside a library function is linked
    /// to that library's functions, which a call from outside the script cannot see: closures
    /// are called with these merged into the playbook's (see `plan`).
    libraries: Arc<Mutex<std::collections::BTreeMap<PathBuf, AST>>>,
}

impl rhai::ModuleResolver for SandboxResolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<rhai::Shared<rhai::Module>, Box<EvalAltResult>> {
        let p = Path::new(path);
        let escapes = p.is_absolute()
            || p.components()
                .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)));
        let file = self.inner.get_file_path(path, source.map(Path::new));
        // A symlink may lead out as `..` does; templates refuse the same.
        let leaves_by_link = match (file.canonicalize(), self.root.canonicalize()) {
            (Ok(real), Ok(root)) => !real.starts_with(root),
            _ => false,
        };
        if escapes || leaves_by_link {
            return Err(EvalAltResult::ErrorRuntime(
                format!(
                    "import \"{path}\" is outside the playbook's directory {}; imports must be relative paths under it{}",
                    self.root.display(),
                    if leaves_by_link { " (a symbolic link leads out of it)" } else { "" }
                )
                .into(),
                pos,
            )
            .into());
        }
        let module = self.inner.resolve(engine, source, path, pos)?;
        // The resolver caches the module but not its AST: compile each file once more, once.
        let mut libraries = self.libraries.lock().unwrap_or_else(|e| e.into_inner());
        if let std::collections::btree_map::Entry::Vacant(slot) = libraries.entry(file) {
            if let Ok(ast) = engine.compile_file(slot.key().clone()) {
                slot.insert(ast.clone_functions_only());
            }
        }
        Ok(module)
    }
}

/// Evaluates a playbook into a plan.
pub fn plan(input: PlanInput<'_>) -> Result<Plan, PlanError> {
    let file = input.playbook.display().to_string();
    let source = std::fs::read_to_string(input.playbook)
        .map_err(|e| PlanError::whole(&file, format!("cannot read playbook: {e}")))?;
    let dir = input
        .playbook
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();

    let builder = Arc::new(Mutex::new(Builder {
        tasks: vec![],
        phases: vec![],
        current_phase: None,
        in_phase_body: false,
        defaults: Map::new(),
        inventory: input.inventory.clone(),
        limit: input.limit.clone(),
        extra_vars: input.extra_vars.clone(),
        file: file.clone(),
        blocks: 0,
        secret_vars: input
            .inventory
            .secret_names()
            .union(&input.secret_vars)
            .cloned()
            .collect(),
        secrets: input.secrets.clone(),
    }));
    let mut engine = Engine::new();
    engine.set_max_operations(MAX_OPERATIONS);
    engine.set_max_call_levels(MAX_CALL_LEVELS);
    engine.set_max_expr_depths(128, 64);
    engine.set_max_string_size(16 << 20);
    engine.set_max_array_size(1 << 20);
    engine.set_max_map_size(1 << 20);
    let mut resolver = rhai::module_resolvers::FileModuleResolver::new_with_path(&dir);
    resolver.enable_cache(true);
    let libraries = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
    engine.set_module_resolver(SandboxResolver {
        root: dir.clone(),
        inner: resolver,
        libraries: libraries.clone(),
    });
    let sink = input.sink.clone();
    engine.on_print(move |text| {
        sink.emit(&Event::Print {
            host: crate::bridge::exec_host(),
            text: text.to_string(),
        })
    });
    register_api(&mut engine, &builder, input.registry);

    let mut ast = engine
        .compile(&source)
        .map_err(|e| parse_error(&e, &file, &source))?;
    ast.set_source(file.as_str());
    let mut scope = rhai::Scope::new();
    engine
        .run_ast_with_scope(&mut scope, &ast)
        .map_err(|e| eval_error(&e, &file, &dir, input.registry))?;

    let mut b = builder.lock().unwrap_or_else(|e| e.into_inner());
    let mut tasks = std::mem::take(&mut b.tasks);
    let phases = std::mem::take(&mut b.phases);
    let defaults = std::mem::take(&mut b.defaults);
    let mut secret_vars = std::mem::take(&mut b.secret_vars);
    drop(b);
    // Template references to registered results imply dependencies too.
    let templates = crate::template::TemplateEngine::new(&dir);
    let templated = templated_vars(&templates, &input.inventory, &defaults, &input.extra_vars);
    imply_register_deps(&mut tasks, &templates, &templated);
    crate::template_check::check_templates(
        &tasks,
        &templates,
        &templated,
        &input.inventory,
        &defaults,
        &input.extra_vars,
    )?;
    crate::template_check::mark_secrets(&mut tasks, &templates, &mut secret_vars, &input.secrets)?;
    input
        .inventory
        .register_secrets(&input.secrets, &secret_vars, &defaults, &input.extra_vars);
    check_notify(&tasks, &phases)?;
    if let Some(limit) = &input.limit {
        crate::plan::check_limited_producers(&tasks, &input.inventory, limit)?;
    }
    link(&mut tasks, &phases)?;
    // The playbook's own functions win over a library's of the same name.
    let closure_ast = libraries
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .fold(AST::empty(), |all, lib| all.merge(lib))
        .merge(&ast);
    Ok(Plan {
        phases,
        tasks,
        file: file.clone(),
        defaults,
        templated,
        secret_vars,
        script: Arc::new(Script {
            engine,
            // The playbook's own functions win over a library's of the same name.
            ast: closure_ast,
            file,
            dir,
        }),
    })
}

/// Every notified handler must exist in the notifying task's phase.
fn check_notify(tasks: &[Task], phases: &[Phase]) -> Result<(), PlanError> {
    for t in tasks {
        let phase = &phases[t.phase];
        let handlers: Vec<&str> = phase
            .handlers
            .iter()
            .map(|&h| tasks[h].name.as_str())
            .collect();
        for n in &t.notify {
            if !handlers.contains(&n.as_str()) {
                let hint = closest(n, handlers.iter().copied())
                    .map(|c| format!(" (did you mean '{c}'?)"))
                    .unwrap_or_default();
                return Err(PlanError::at(
                    t.pos.clone(),
                    format!(
                        "task '{}' notifies '{n}', but phase '{}' has no handler of that name{hint}",
                        t.name, phase.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// What the play's templated variables read, on any host.
pub(crate) fn templated_vars(
    templates: &crate::template::TemplateEngine,
    inventory: &Inventory,
    defaults: &Map<String, Value>,
    extra_vars: &Map<String, Value>,
) -> crate::template::TemplatedVars {
    let hosts: Vec<_> = inventory
        .hosts()
        .map(|h| inventory.host_vars(&h.name, defaults, extra_vars))
        .collect();
    crate::template::TemplatedVars::new(templates, hosts.iter().chain([defaults, extra_vars]))
}

/// A task whose template strings read a name that an earlier task registers depends on that task,
/// also when it reads it through a templated variable (`join_cmd: "{{ init.stdout }}"`).
fn imply_register_deps(
    tasks: &mut [Task],
    templates: &crate::template::TemplateEngine,
    templated: &crate::template::TemplatedVars,
) {
    for i in 0..tasks.len() {
        let mut strings = Vec::new();
        tasks[i].args.strings(&mut strings);
        let mut names: BTreeSet<String> = strings
            .iter()
            .filter(|s| crate::template::is_template(s))
            .filter_map(|s| templates.referenced_names(s).ok())
            .flatten()
            .collect();
        if let Some(Condition::Expr(e)) = &tasks[i].when {
            names.extend(templates.referenced_names_in_expr(e).unwrap_or_default());
        }
        for name in templated.widen(&names) {
            let source = tasks[..i]
                .iter()
                .rev()
                .find(|t| t.register.as_deref() == Some(name.as_str()) && !t.is_handler);
            if let Some(src) = source {
                let id = src.id;
                if !tasks[i].needs.contains(&id) {
                    tasks[i].needs.push(id);
                }
            }
        }
    }
}

fn register_api(engine: &mut Engine, builder: &Arc<Mutex<Builder>>, registry: &Registry) {
    engine.register_type_with_name::<TaskSpec>("Task");
    engine.register_type_with_name::<TaskRef>("TaskRef");
    engine.register_type_with_name::<Deferred>("Deferred");
    crate::bridge::HostApi::register(engine);
    register_modules(engine, builder, registry);
    register_custom_task(engine, builder);
    register_task_options(engine, builder);
    register_control_options(engine, builder);
    register_blocks(engine);
    register_placement(engine, builder);
    register_flush(engine, builder);
    register_rollout(engine, builder);
    register_planning_values(engine, builder);
    register_results(engine);
}

/// Every module of the registry as a constructor: `shell(#{ .. })`, or a custom syntax for
/// the modules whose names Rhai reserves.
fn register_modules(engine: &mut Engine, builder: &Arc<Mutex<Builder>>, registry: &Registry) {
    // Modules: each is a function taking a map of arguments.
    for module in registry.iter() {
        let make = {
            let module = module.clone();
            move |args: rhai::Map, pos: SourcePos| -> Result<TaskSpec, String> {
                let arg = to_arg(&Dynamic::from_map(args))?;
                check_fields(module.as_ref(), &arg)
                    .map_err(|e| format!("{}: {e}", module.name()))?;
                Ok(TaskSpec::new(Action::Module(module.clone()), arg, pos))
            }
        };
        let file = builder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .file
            .clone();
        if RHAI_KEYWORDS.contains(&module.name()) {
            // A Rhai keyword cannot name a function, but it can start a custom syntax, so
            // `package(#{ .. })` and `debug(#{ .. })` read as they do in Ansible.
            engine
                .register_custom_syntax([module.name(), "(", "$expr$", ")"], false, {
                    let name = module.name();
                    move |ctx, inputs| {
                        let map_pos = inputs[0].position();
                        let map = ctx.eval_expression_tree(&inputs[0])?;
                        // The map starts after `NAME(`; the task is where NAME starts.
                        let line = map_pos.line().unwrap_or(0);
                        let column = map_pos
                            .position()
                            .unwrap_or(0)
                            .saturating_sub(name.len() + 1);
                        let p = Position::new(line as u16, column as u16);
                        let pos = SourcePos {
                            file: ctx
                                .source()
                                .map(str::to_string)
                                .unwrap_or_else(|| file.clone()),
                            line,
                            column,
                        };
                        let args = map.try_cast::<rhai::Map>().ok_or_else(|| {
                            Box::new(EvalAltResult::ErrorRuntime(
                                format!("{name}() takes a map of arguments: {name}(#{{ ... }})")
                                    .into(),
                                p,
                            ))
                        })?;
                        make(args, pos)
                            .map(Dynamic::from)
                            .map_err(|e| EvalAltResult::ErrorRuntime(e.into(), p).into())
                    }
                })
                .expect("a keyword that is not otherwise used starts a custom syntax");
        } else {
            engine.register_fn(
                module.name(),
                move |ctx: NativeCallContext,
                      args: rhai::Map|
                      -> Result<TaskSpec, Box<EvalAltResult>> {
                    make(args, pos_of(&ctx, &file)).map_err(|e| runtime_err(e, &ctx))
                },
            );
        }
    }
}

/// `task(name, |h| ..)`: a task whose body is a playbook closure.
fn register_custom_task(engine: &mut Engine, builder: &Arc<Mutex<Builder>>) {
    let b = builder.clone();
    engine.register_fn(
        "task",
        move |ctx: NativeCallContext, name: &str, body: FnPtr| -> TaskSpec {
            let file = b.lock().unwrap_or_else(|e| e.into_inner()).file.clone();
            let mut spec = TaskSpec::new(
                Action::Custom(Closure(body)),
                Arg::Map(Default::default()),
                pos_of(&ctx, &file),
            );
            spec.name = Some(name.to_string());
            spec
        },
    );
}

/// Options chained on a task: `.name`, `.register`, `.when`, `.notify`, `.after`, `.tags`, ….
fn register_task_options(engine: &mut Engine, builder: &Arc<Mutex<Builder>>) {
    // Task options, chained: shell(#{..}).name("x").register("out").when("x == 1")
    engine.register_fn("name", |t: &mut TaskSpec, name: &str| -> TaskSpec {
        t.name = Some(name.to_string());
        t.clone()
    });
    engine.register_fn("register", |t: &mut TaskSpec, name: &str| -> TaskSpec {
        t.register = Some(name.to_string());
        t.clone()
    });
    engine.register_fn("when", |t: &mut TaskSpec, expr: &str| -> TaskSpec {
        t.when = Some(Condition::Expr(expr.to_string()));
        t.clone()
    });
    engine.register_fn("when", |t: &mut TaskSpec, f: FnPtr| -> TaskSpec {
        t.when = Some(Condition::Closure(Closure(f)));
        t.clone()
    });
    engine.register_fn("when", |t: &mut TaskSpec, v: bool| -> TaskSpec {
        t.when = Some(Condition::Expr(v.to_string()));
        t.clone()
    });
    engine.register_fn("check_mode", |t: &mut TaskSpec, v: bool| -> TaskSpec {
        t.check_mode = Some(v);
        t.clone()
    });
    // Ansible's `no_log`: the task's result, output and messages are never shown.
    engine.register_fn("secret", |t: &mut TaskSpec| -> TaskSpec {
        t.secret = true;
        t.clone()
    });
    engine.register_fn("ignore_errors", |t: &mut TaskSpec, v: bool| -> TaskSpec {
        t.ignore_errors = v;
        t.clone()
    });
    engine.register_fn("ignore_unreachable", |t: &mut TaskSpec| -> TaskSpec {
        t.ignore_unreachable = true;
        t.clone()
    });
    engine.register_fn(
        "ignore_unreachable",
        |t: &mut TaskSpec, v: bool| -> TaskSpec {
            t.ignore_unreachable = v;
            t.clone()
        },
    );
    engine.register_fn(
        "throttle",
        |ctx: NativeCallContext,
         t: &mut TaskSpec,
         n: i64|
         -> Result<TaskSpec, Box<EvalAltResult>> {
            if n < 1 {
                return Err(runtime_err(
                    format!("throttle({n}): at least one host must run the task at a time"),
                    &ctx,
                ));
            }
            t.throttle = Some(n as usize);
            Ok(t.clone())
        },
    );
    engine.register_fn(
        "tags",
        |ctx: NativeCallContext,
         t: &mut TaskSpec,
         v: Dynamic|
         -> Result<TaskSpec, Box<EvalAltResult>> {
            t.tags = strings_of(&v, "tags").map_err(|e| runtime_err(e, &ctx))?;
            Ok(t.clone())
        },
    );
    engine.register_fn(
        "notify",
        |ctx: NativeCallContext,
         t: &mut TaskSpec,
         v: Dynamic|
         -> Result<TaskSpec, Box<EvalAltResult>> {
            t.notify
                .extend(strings_of(&v, "handler names").map_err(|e| runtime_err(e, &ctx))?);
            Ok(t.clone())
        },
    );
    let b = builder.clone();
    engine.register_fn(
        "after",
        move |ctx: NativeCallContext,
              t: &mut TaskSpec,
              v: Dynamic|
              -> Result<TaskSpec, Box<EvalAltResult>> {
            let file = b.lock().unwrap_or_else(|e| e.into_inner()).file.clone();
            let items: Vec<Dynamic> = match v.read_lock::<rhai::Array>() {
                Some(a) => a.clone(),
                None => vec![v.clone()],
            };
            for item in items {
                if let Some(r) = item.clone().try_cast::<TaskRef>() {
                    t.after.push(r.id);
                } else if let Some(s) = item.read_lock::<rhai::ImmutableString>() {
                    t.after_names.push((s.to_string(), pos_of(&ctx, &file)));
                } else {
                    return Err(runtime_err(
                        format!(
                            "after() takes a task handle or a task name, not {}",
                            item.type_name()
                        ),
                        &ctx,
                    ));
                }
            }
            Ok(t.clone())
        },
    );
}

/// Options on how a task runs: `retries`, `retry_until` (Ansible's `until`, a keyword in Rhai:
/// `do { } until x`), `delay`, `run_once`, `timeout`,
/// `environment`, `become`, `become_user`.
fn register_control_options(engine: &mut Engine, builder: &Arc<Mutex<Builder>>) {
    fn count(
        ctx: &NativeCallContext,
        what: &str,
        n: i64,
        min: i64,
        why: &str,
    ) -> Result<u64, Box<EvalAltResult>> {
        if n < min || n > u32::MAX as i64 {
            return Err(runtime_err(format!("{what}({n}): {why}"), ctx));
        }
        Ok(n as u64)
    }
    engine.register_fn(
        "retries",
        |ctx: NativeCallContext,
         t: &mut TaskSpec,
         n: i64|
         -> Result<TaskSpec, Box<EvalAltResult>> {
            let n = count(
                &ctx,
                "retries",
                n,
                0,
                "the number of tries after the first is 0 or more",
            )?;
            t.control.retries = Some(n as u32);
            Ok(t.clone())
        },
    );
    engine.register_fn(
        "delay",
        |ctx: NativeCallContext,
         t: &mut TaskSpec,
         n: i64|
         -> Result<TaskSpec, Box<EvalAltResult>> {
            t.control.delay = Some(count(
                &ctx,
                "delay",
                n,
                0,
                "seconds between tries are 0 or more",
            )?);
            Ok(t.clone())
        },
    );
    engine.register_fn(
        "timeout",
        |ctx: NativeCallContext,
         t: &mut TaskSpec,
         n: i64|
         -> Result<TaskSpec, Box<EvalAltResult>> {
            t.control.timeout = Some(count(
                &ctx,
                "timeout",
                n,
                1,
                "a task needs at least one second",
            )?);
            Ok(t.clone())
        },
    );
    let b = builder.clone();
    engine.register_fn(
        "delegate_to",
        move |ctx: NativeCallContext,
              t: &mut TaskSpec,
              host: &str|
              -> Result<TaskSpec, Box<EvalAltResult>> {
            let b = b.lock().unwrap_or_else(|e| e.into_inner());
            if b.inventory.host(host).is_none() {
                let names: Vec<String> = b.inventory.hosts().map(|h| h.name.clone()).collect();
                let hint = closest(host, names.iter().map(String::as_str))
                    .map(|c| format!("; did you mean '{c}'?"))
                    .unwrap_or_default();
                return Err(runtime_err(
                    format!("delegate_to(\"{host}\"): no such host in the inventory{hint}"),
                    &ctx,
                ));
            }
            t.control.delegate_to = Some(host.to_string());
            Ok(t.clone())
        },
    );
    engine.register_fn("retry_until", |t: &mut TaskSpec, expr: &str| -> TaskSpec {
        t.control.until = Some(Condition::Expr(expr.to_string()));
        t.clone()
    });
    engine.register_fn("retry_until", |t: &mut TaskSpec, f: FnPtr| -> TaskSpec {
        t.control.until = Some(Condition::Closure(Closure(f)));
        t.clone()
    });
    engine.register_fn("run_once", |t: &mut TaskSpec| -> TaskSpec {
        t.control.run_once = true;
        t.clone()
    });
    engine.register_fn("run_once", |t: &mut TaskSpec, v: bool| -> TaskSpec {
        t.control.run_once = v;
        t.clone()
    });
    engine.register_fn("become", |t: &mut TaskSpec, v: bool| -> TaskSpec {
        t.control.become_ = Some(v);
        t.clone()
    });
    engine.register_fn(
        "become_user",
        |ctx: NativeCallContext,
         t: &mut TaskSpec,
         user: &str|
         -> Result<TaskSpec, Box<EvalAltResult>> {
            if user.is_empty() {
                return Err(runtime_err("become_user(\"\"): name a user", &ctx));
            }
            t.control.become_user = Some(user.to_string());
            Ok(t.clone())
        },
    );
    engine.register_fn(
        "environment",
        |ctx: NativeCallContext, t: &mut TaskSpec, vars: rhai::Map| -> Result<TaskSpec, Box<EvalAltResult>> {
            for (k, v) in vars {
                let valid = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(runtime_err(
                        format!("environment: '{k}' is not a variable name (letters, digits, _; not a digit first)"),
                        &ctx,
                    ));
                }
                let value = if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
                    s.to_string()
                } else if v.is_int() || v.is_float() || v.is_bool() {
                    v.to_string()
                } else {
                    return Err(runtime_err(
                        format!("environment: the value of {k} is a {}, not a string", v.type_name()),
                        &ctx,
                    ));
                };
                if value.contains('\0') {
                    return Err(runtime_err(format!("environment: the value of {k} holds a NUL byte"), &ctx));
                }
                t.control.environment.insert(k.to_string(), value);
            }
            Ok(t.clone())
        },
    );
}

/// Placing tasks on hosts and grouping them: `phase`, `on`, `handler`.
fn register_placement(engine: &mut Engine, builder: &Arc<Mutex<Builder>>) {
    // Placing tasks: one, a list (of tasks and blocks), or a block.
    fn place_all(
        b: &Arc<Mutex<Builder>>,
        ctx: &NativeCallContext,
        target: &Dynamic,
        items: Vec<Dynamic>,
    ) -> Result<Vec<TaskRef>, Box<EvalAltResult>> {
        let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
        let (hosts, label) = b.targets(target).map_err(|e| runtime_err(e, ctx))?;
        let mut specs = Vec::new();
        for item in items {
            if let Some(block) = item.clone().try_cast::<Block>() {
                specs.extend(block.parts(b.blocks));
                b.blocks += 1;
            } else {
                specs.push(item.try_cast::<TaskSpec>().ok_or_else(|| {
                    runtime_err("on(target, [...]) takes a list of tasks and blocks", ctx)
                })?);
            }
        }
        Ok(specs
            .into_iter()
            .map(|spec| TaskRef {
                id: b.place(spec, hosts.clone(), label.clone(), false),
                host: None,
            })
            .collect())
    }
    let b = builder.clone();
    engine.register_fn(
        "on",
        move |ctx: NativeCallContext,
              target: Dynamic,
              spec: TaskSpec|
              -> Result<TaskRef, Box<EvalAltResult>> {
            let mut refs = place_all(&b, &ctx, &target, vec![Dynamic::from(spec)])?;
            Ok(refs.remove(0))
        },
    );
    let b = builder.clone();
    engine.register_fn(
        "on",
        move |ctx: NativeCallContext,
              target: Dynamic,
              specs: rhai::Array|
              -> Result<rhai::Array, Box<EvalAltResult>> {
            let refs = place_all(&b, &ctx, &target, specs)?;
            Ok(refs.into_iter().map(Dynamic::from).collect())
        },
    );
    let b = builder.clone();
    engine.register_fn(
        "on",
        move |ctx: NativeCallContext,
              target: Dynamic,
              block: Block|
              -> Result<rhai::Array, Box<EvalAltResult>> {
            let refs = place_all(&b, &ctx, &target, vec![Dynamic::from(block)])?;
            Ok(refs.into_iter().map(Dynamic::from).collect())
        },
    );
    let b = builder.clone();
    engine.register_fn(
        "handler",
        move |name: &str, mut spec: TaskSpec| -> TaskRef {
            let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
            spec.name = Some(name.to_string());
            let all: Vec<String> = b
                .inventory
                .hosts()
                .map(|h| h.name.clone())
                .filter(|h| b.limit.as_ref().is_none_or(|l| l.contains(h)))
                .collect();
            TaskRef {
                id: b.place(spec, all, "notifying hosts".into(), true),
                host: None,
            }
        },
    );
    let b = builder.clone();
    engine.register_fn(
        "phase",
        move |ctx: NativeCallContext, name: &str, body: FnPtr| -> Result<(), Box<EvalAltResult>> {
            {
                let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
                if b.phases.iter().any(|p| p.name == name) {
                    return Err(runtime_err(
                        format!("phase '{name}' is declared twice"),
                        &ctx,
                    ));
                }
                b.phases.push(Phase::new(name));
                b.current_phase = Some(b.phases.len() - 1);
                b.in_phase_body = true;
            }
            let _: Dynamic = body.call_within_context(&ctx, ())?;
            let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
            b.current_phase = None;
            b.in_phase_body = false;
            Ok(())
        },
    );
}

/// `block([...]).rescue([...]).always([...])`: tasks that fail together (Ansible's
/// block/rescue/always), placed with `on`.
#[derive(Clone, Debug, Default)]
pub struct Block {
    body: Vec<TaskSpec>,
    rescue: Vec<TaskSpec>,
    always: Vec<TaskSpec>,
}

impl Block {
    /// The block's tasks in the order they run, each marked with its part of block `id`.
    fn parts(self, id: usize) -> Vec<TaskSpec> {
        use crate::plan::{BlockPart, BlockRole};
        let has_rescue = !self.rescue.is_empty();
        let mark = |role: BlockRole| {
            move |mut t: TaskSpec| {
                t.block = Some(BlockPart {
                    id,
                    role,
                    has_rescue,
                });
                t
            }
        };
        let body = self.body.into_iter().map(mark(BlockRole::Body));
        let rescue = self.rescue.into_iter().map(mark(BlockRole::Rescue));
        let always = self.always.into_iter().map(mark(BlockRole::Always));
        body.chain(rescue).chain(always).collect()
    }
}

/// `block`, `.rescue`, `.always`.
fn register_blocks(engine: &mut Engine) {
    fn tasks(
        ctx: &NativeCallContext,
        what: &str,
        list: rhai::Array,
    ) -> Result<Vec<TaskSpec>, Box<EvalAltResult>> {
        list.into_iter()
            .map(|d| {
                let kind = d.type_name().to_string();
                d.try_cast::<TaskSpec>().ok_or_else(|| {
                    runtime_err(
                        format!("{what} takes a list of tasks, not {kind} (blocks do not nest)"),
                        ctx,
                    )
                })
            })
            .collect()
    }
    engine.register_type_with_name::<Block>("Block");
    engine.register_fn(
        "block",
        |ctx: NativeCallContext, list: rhai::Array| -> Result<Block, Box<EvalAltResult>> {
            let body = tasks(&ctx, "block()", list)?;
            if body.is_empty() {
                return Err(runtime_err(
                    "block([]): a block needs at least one task",
                    &ctx,
                ));
            }
            Ok(Block {
                body,
                ..Block::default()
            })
        },
    );
    engine.register_fn(
        "rescue",
        |ctx: NativeCallContext,
         b: &mut Block,
         list: rhai::Array|
         -> Result<Block, Box<EvalAltResult>> {
            b.rescue.extend(tasks(&ctx, ".rescue()", list)?);
            Ok(b.clone())
        },
    );
    engine.register_fn(
        "always",
        |ctx: NativeCallContext,
         b: &mut Block,
         list: rhai::Array|
         -> Result<Block, Box<EvalAltResult>> {
            b.always.extend(tasks(&ctx, ".always()", list)?);
            Ok(b.clone())
        },
    );
}

/// `flush_handlers()`: the handlers notified so far run here, before the phase's next tasks.
fn register_flush(engine: &mut Engine, builder: &Arc<Mutex<Builder>>) {
    let b = builder.clone();
    engine.register_fn("flush_handlers", move || {
        let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
        let i = b.phase_index();
        let at = b.phases[i].tasks.len();
        b.phases[i].flushes.push(at);
    });
}

/// How the current phase rolls over its hosts: `serial`, `max_fail_percentage`,
/// `any_errors_fatal`, called inside `phase(name, || { ... })` (an Ansible play's keywords).
fn register_rollout(engine: &mut Engine, builder: &Arc<Mutex<Builder>>) {
    fn batch_size(d: &Dynamic) -> Result<BatchSize, String> {
        let bad = || {
            format!(
                "serial takes a number of hosts (1 or more), a percentage (\"30%\") or a list of \
                 them, not {d}"
            )
        };
        if let Ok(n) = d.as_int() {
            return usize::try_from(n)
                .ok()
                .filter(|n| *n >= 1)
                .map(BatchSize::Hosts)
                .ok_or_else(bad);
        }
        let s = d.clone().into_string().map_err(|_| bad())?;
        let s = s.trim();
        match s.strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|p| (1..=100).contains(p))
                .map(BatchSize::Percent)
                .ok_or_else(|| format!("serial(\"{s}\"): a percentage is 1% to 100%")),
            None => s
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .map(BatchSize::Hosts)
                .ok_or_else(bad),
        }
    }
    /// The phase being declared, for a rollout setting; `what` names the setting in errors.
    fn with_phase(
        b: &Arc<Mutex<Builder>>,
        ctx: &NativeCallContext,
        what: &str,
        set: impl FnOnce(&mut crate::plan::Rollout) -> bool,
    ) -> Result<(), Box<EvalAltResult>> {
        let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = b.current_phase.filter(|_| b.in_phase_body) else {
            return Err(runtime_err(
                format!("{what} sets how a phase rolls over its hosts: call it inside phase(\"name\", || {{ ... }})"),
                ctx,
            ));
        };
        let phase = &mut b.phases[i];
        if !set(&mut phase.rollout) {
            return Err(runtime_err(
                format!("{what} is set twice in phase '{}'", phase.name),
                ctx,
            ));
        }
        Ok(())
    }
    let b = builder.clone();
    engine.register_fn(
        "serial",
        move |ctx: NativeCallContext, sizes: Dynamic| -> Result<(), Box<EvalAltResult>> {
            let sizes: Vec<BatchSize> = match sizes.read_lock::<rhai::Array>() {
                Some(list) if list.is_empty() => {
                    return Err(runtime_err(
                        "serial([]): give at least one batch size",
                        &ctx,
                    ))
                }
                Some(list) => list.iter().map(batch_size).collect(),
                None => batch_size(&sizes).map(|s| vec![s]),
            }
            .map_err(|e| runtime_err(e, &ctx))?;
            with_phase(&b, &ctx, "serial()", |r| {
                r.serial.is_empty() && {
                    r.serial = sizes;
                    true
                }
            })
        },
    );
    let b = builder.clone();
    engine.register_fn(
        "max_fail_percentage",
        move |ctx: NativeCallContext, n: i64| -> Result<(), Box<EvalAltResult>> {
            let n = u32::try_from(n).ok().filter(|n| *n <= 100).ok_or_else(|| {
                runtime_err(
                    format!("max_fail_percentage({n}): a percentage is 0 to 100"),
                    &ctx,
                )
            })?;
            with_phase(&b, &ctx, "max_fail_percentage()", |r| {
                r.max_fail_percentage.replace(n).is_none()
            })
        },
    );
    let b = builder.clone();
    engine.register_fn(
        "any_errors_fatal",
        move |ctx: NativeCallContext| -> Result<(), Box<EvalAltResult>> {
            with_phase(&b, &ctx, "any_errors_fatal()", |r| {
                !std::mem::replace(&mut r.any_errors_fatal, true)
            })
        },
    );
}

/// Values for planning: `quote`, `vars`, `defaults`, `hosts`, `first`, `rest`, `host_vars`.
fn register_planning_values(engine: &mut Engine, builder: &Arc<Mutex<Builder>>) {
    // Building shell commands from values: the same quoting as the `quote` template filter.
    engine.register_fn(
        "quote",
        |ctx: NativeCallContext, s: &str| -> Result<String, Box<EvalAltResult>> {
            crate::quote::quote(s).map_err(|e| runtime_err(e.to_string(), &ctx))
        },
    );

    // Marks a variable secret: its values on every host are never shown, and a task that reads
    // it shows no diff, summary or message.
    let b = builder.clone();
    engine.register_fn("secret", move |name: &str| {
        let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
        b.secret_vars.insert(name.to_string());
        let names = BTreeSet::from([name.to_string()]);
        b.inventory
            .register_secrets(&b.secrets, &names, &b.defaults, &b.extra_vars);
    });

    // Values for planning.
    let b = builder.clone();
    engine.register_fn("vars", move || -> Result<Dynamic, Box<EvalAltResult>> {
        rhai::serde::to_dynamic(b.lock().unwrap_or_else(|e| e.into_inner()).plan_vars())
    });
    let b = builder.clone();
    engine.register_fn(
        "defaults",
        move |ctx: NativeCallContext, m: rhai::Map| -> Result<(), Box<EvalAltResult>> {
            let v: Value = rhai::serde::from_dynamic(&Dynamic::from_map(m))?;
            let Value::Object(m) = v else {
                return Err(runtime_err("defaults() takes a map", &ctx));
            };
            b.lock()
                .unwrap_or_else(|e| e.into_inner())
                .defaults
                .extend(m);
            Ok(())
        },
    );
    let b = builder.clone();
    engine.register_fn(
        "hosts",
        move |ctx: NativeCallContext, pattern: &str| -> Result<rhai::Array, Box<EvalAltResult>> {
            let b = b.lock().unwrap_or_else(|e| e.into_inner());
            let hosts = b.select(pattern).map_err(|e| runtime_err(e, &ctx))?;
            Ok(hosts.into_iter().map(Dynamic::from).collect())
        },
    );
    let b = builder.clone();
    engine.register_fn(
        "first",
        move |ctx: NativeCallContext, pattern: &str| -> Result<String, Box<EvalAltResult>> {
            let b = b.lock().unwrap_or_else(|e| e.into_inner());
            let hosts = b.select(pattern).map_err(|e| runtime_err(e, &ctx))?;
            hosts
                .into_iter()
                .next()
                .ok_or_else(|| runtime_err(format!("first(\"{pattern}\"): no host matches"), &ctx))
        },
    );
    let b = builder.clone();
    engine.register_fn(
        "rest",
        move |ctx: NativeCallContext, pattern: &str| -> Result<rhai::Array, Box<EvalAltResult>> {
            let b = b.lock().unwrap_or_else(|e| e.into_inner());
            let hosts = b.select(pattern).map_err(|e| runtime_err(e, &ctx))?;
            Ok(hosts.into_iter().skip(1).map(Dynamic::from).collect())
        },
    );
    let b = builder.clone();
    engine.register_fn(
        "host_vars",
        move |ctx: NativeCallContext, host: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            let b = b.lock().unwrap_or_else(|e| e.into_inner());
            if b.inventory.host(host).is_none() {
                return Err(runtime_err(
                    format!("host_vars(\"{host}\"): no such host"),
                    &ctx,
                ));
            }
            rhai::serde::to_dynamic(b.inventory.host_vars(host, &b.defaults, &b.extra_vars))
        },
    );
}

/// Reading earlier tasks' results from their handles (`tok.stdout`, `tok.on_host("h1")`).
fn register_results(engine: &mut Engine) {
    // Results of earlier tasks: tok.stdout, tok["rc"], tok.on_host("h1").stdout
    engine.register_indexer_get(
        |r: &mut TaskRef, key: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            crate::bridge::read_deferred(Deferred {
                task: r.id,
                host: r.host.clone(),
                path: vec![key.to_string()],
            })
        },
    );
    engine.register_fn("on_host", |r: &mut TaskRef, host: &str| -> TaskRef {
        TaskRef {
            id: r.id,
            host: Some(host.to_string()),
        }
    });
    engine.register_indexer_get(|d: &mut Deferred, key: &str| -> Deferred {
        let mut d = d.clone();
        d.path.push(key.to_string());
        d
    });
}

fn position(file: &str, pos: Position) -> SourcePos {
    SourcePos {
        file: file.to_string(),
        line: pos.line().unwrap_or(0),
        column: pos.position().unwrap_or(0),
    }
}

fn parse_error(e: &rhai::ParseError, file: &str, source: &str) -> PlanError {
    let pos = position(file, e.position());
    // Ansible's `until` is a Rhai keyword (`do { } until x;`): `.until(` cannot parse.
    let at = source
        .lines()
        .nth(pos.line.saturating_sub(1))
        .and_then(|l| l.get(pos.column.saturating_sub(1)..))
        .unwrap_or("");
    let hint = if at.starts_with("until") {
        "; `until` is a Rhai keyword: use .retry_until(...)"
    } else {
        ""
    };
    PlanError::at(pos, format!("syntax error: {}{hint}", e.err_type()))
}

/// Finds the innermost error and the file it happened in (errors inside imported modules and
/// functions are wrapped by Rhai).
fn eval_error(e: &EvalAltResult, file: &str, dir: &Path, registry: &Registry) -> PlanError {
    match e {
        EvalAltResult::ErrorInModule(path, inner, pos) => {
            if let EvalAltResult::ErrorParsing(p, ipos) = inner.as_ref() {
                let f = module_file(dir, path);
                return PlanError::at(position(&f, *ipos), format!("syntax error: {p}"));
            }
            if matches!(inner.as_ref(), EvalAltResult::ErrorRuntime(..)) && inner.position().is_none() {
                return PlanError::at(position(file, *pos), inner.to_string());
            }
            eval_error(inner, &module_file(dir, path), dir, registry)
        }
        EvalAltResult::ErrorInFunctionCall(_, src, inner, _) => {
            // A library's functions carry its import path as their source; the playbook's its
            // own file name.
            let f = if src.is_empty() {
                file.to_string()
            } else if Path::new(src).is_file() {
                src.clone()
            } else {
                module_file(dir, src)
            };
            eval_error(inner, &f, dir, registry)
        }
        EvalAltResult::ErrorParsing(p, pos) => {
            PlanError::at(position(file, *pos), format!("syntax error: {p}"))
        }
        EvalAltResult::ErrorFunctionNotFound(sig, pos) => {
            let name = sig.split([' ', '(']).next().unwrap_or(sig);
            let candidates: Vec<&str> = registry.names().chain(API_FUNCTIONS.iter().copied()).collect();
            let hint = closest(name, candidates.iter().copied())
                .filter(|c| *c != name)
                .map(|c| format!(" (did you mean '{c}'?)"))
                .unwrap_or_default();
            let known = registry.names().any(|n| n == name) || API_FUNCTIONS.contains(&name);
            let message = if known {
                format!("function '{name}' is not called like that: {sig}")
            } else {
                format!("unknown function or module '{name}'{hint}")
            };
            PlanError::at(position(file, *pos), message)
        }
        EvalAltResult::ErrorRuntime(msg, pos) => {
            let text = msg
                .read_lock::<rhai::ImmutableString>()
                .map(|s| s.to_string())
                .unwrap_or_else(|| msg.to_string());
            PlanError::at(position(file, *pos), text)
        }
        EvalAltResult::ErrorTooManyOperations(pos) => PlanError::at(
            position(file, *pos),
            format!("the playbook ran more than {MAX_OPERATIONS} operations while planning (an endless loop?)"),
        ),
        EvalAltResult::ErrorStackOverflow(pos) | EvalAltResult::ErrorTooManyModules(pos) => {
            PlanError::at(position(file, *pos), strip_position(&e.to_string()))
        }
        other => PlanError::at(position(file, other.position()), strip_position(&other.to_string())),
    }
}

/// The file a Rhai source name stands for: the playbook itself, or an imported library, whose
/// source is its import path (`lib/node`) under the playbook's directory.
fn source_file(source: &str, playbook: &str) -> String {
    if source == playbook {
        return playbook.to_string();
    }
    let dir = Path::new(playbook).parent().unwrap_or(Path::new(""));
    module_file(dir, source)
}

fn module_file(dir: &Path, path: &str) -> String {
    let p = dir.join(path);
    if p.extension().is_some() {
        p.display().to_string()
    } else {
        p.with_extension("rhai").display().to_string()
    }
}

fn strip_position(s: &str) -> String {
    match s.rfind(" (line ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s.to_string(),
    }
}
