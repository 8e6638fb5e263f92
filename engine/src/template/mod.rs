//! The one template environment of the project: template files, templated task arguments
//! (`dest: "{{ root }}/etc/x"`) and `when:` expressions all go through [`TemplateEngine`].
//!
//! It behaves like Ansible's Jinja2 where playbooks notice: undefined variables are errors
//! (naming the file, the line and the variable), `trim_blocks` is on, trailing newlines follow
//! Ansible's rule, nothing is auto-escaped, Python's str/dict/list methods work, and the filters
//! and tests Ansible templates use most are there, with Ansible's output (`to_json`,
//! `to_nice_yaml`, `regex_replace`, `b64encode`, `bool`, `quote`, `combine`, `hash`, `flatten`,
//! `difference`, `urlsplit`, …). tests/ansible.rs compares them with real ansible-core.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use minijinja::value::{Kwargs, Rest};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior, Value};

mod ip;
mod vars;
use vars::{Explained, Root, Undefined};
pub use vars::{TemplatedVars, Vars};

/// A template that failed to parse, render or evaluate, with where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TemplateError {
    /// The template file, or the origin of an inline string ("playbooks/site.rhai:12 arg dest").
    pub file: String,
    /// 1-based line inside the template (or the inline string); 0 when unknown.
    pub line: usize,
    /// 1-based column of the failing expression, when known.
    pub column: Option<usize>,
    pub message: String,
    /// The text of the failing line, when known.
    pub source_line: Option<String>,
    /// Byte range of the failing expression in the template source, when known.
    pub range: Option<Range<usize>>,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(f, "{}: {}", self.file, self.message)
        }
    }
}

/// Python's repr of a value, as Jinja in Ansible prints lists and dicts.
fn python_repr(v: &Value, out: &mut String) {
    use minijinja::value::ValueKind;
    match v.kind() {
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, x) in v.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&x, out);
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, k) in v.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&k, out);
                out.push_str(": ");
                python_repr(&v.get_item(&k).unwrap_or_default(), out);
            }
            out.push('}');
        }
        ValueKind::String => {
            let s = v.as_str().unwrap_or_default();
            let q = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            out.push(q);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == q => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                        out.push_str(&format!("\\x{:02x}", c as u32));
                    }
                    c => out.push(c),
                }
            }
            out.push(q);
        }
        ValueKind::Bool => out.push_str(if v.is_true() { "True" } else { "False" }),
        ValueKind::None | ValueKind::Undefined => out.push_str("None"),
        _ => out.push_str(&v.to_string()),
    }
}

/// Python's methods on values: minijinja-contrib's pycompat, and the few it lacks that Ansible's
/// templates use.
fn python_method(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    use minijinja::value::{from_args, ValueKind};
    match (value.kind(), method) {
        (ValueKind::String, "partition" | "rpartition") => {
            let s = value.as_str().unwrap_or_default();
            let (sep,): (&str,) = from_args(args)?;
            let found = if method == "partition" {
                s.split_once(sep)
            } else {
                s.rsplit_once(sep)
            };
            let parts = match (found, method) {
                (Some((a, b)), _) => [a, sep, b],
                (None, "partition") => [s, "", ""],
                (None, _) => ["", "", s],
            };
            Ok(Value::from(
                parts.iter().map(|p| Value::from(*p)).collect::<Vec<_>>(),
            ))
        }
        (ValueKind::Seq, "index") => {
            let (needle,): (Value,) = from_args(args)?;
            let items: Vec<Value> = value.try_iter()?.collect();
            items
                .iter()
                .position(|x| *x == needle)
                .map(Value::from)
                .ok_or_else(|| invalid(format!("{needle} is not in list")))
        }
        _ => minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args),
    }
}

/// Ansible's templates end with as many newlines as their source does, unless what they render
/// ends with more.
fn pad_newlines(source: &str, mut out: String) -> String {
    let count = |s: &str| s.len() - s.trim_end_matches('\n').len();
    let missing = count(source).saturating_sub(count(&out));
    out.push_str(&"\n".repeat(missing));
    out
}

/// True when `s` contains template syntax and has to be rendered.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// Jinja's truthiness of an evaluated `when:` value: false, null, 0, "", [] and {} are false.
pub fn is_truthy(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_f64() != Some(0.0),
        serde_json::Value::String(s) => !s.is_empty(),
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Object(o) => !o.is_empty(),
    }
}

/// The template environment: filters, tests, the loader for files under the playbook directory.
/// Clones share it.
#[derive(Clone)]
pub struct TemplateEngine {
    env: Arc<Environment<'static>>,
    base_dir: PathBuf,
}

impl fmt::Debug for TemplateEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateEngine")
            .field("base_dir", &self.base_dir)
            .finish_non_exhaustive()
    }
}

impl TemplateEngine {
    /// Templates are loaded from files under base_dir (the playbook's directory); paths outside
    /// it are refused.
    pub fn new(base_dir: &Path) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_trim_blocks(true);
        // Ansible's rule for trailing newlines: Jinja drops the template's last one, and the
        // result is then padded back to as many as the template ends with (`pad_newlines`).
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_debug(true);
        let base = base_dir.to_path_buf();
        env.set_loader(move |name| load_template(&base, name));
        register_filters(&mut env);
        // Python's str/dict/list methods that Ansible's Jinja allows (`.items()`, `.split()`,
        // `.startswith()`, `.get()`…): templates written for Ansible use them.
        env.set_unknown_method_callback(python_method);
        // A list or dict printed into text reads as Python prints it (`['a', 'b']`), as in
        // Ansible's output.
        env.set_formatter(|out, state, value| {
            use minijinja::value::ValueKind;
            if matches!(
                value.kind(),
                ValueKind::Seq | ValueKind::Map | ValueKind::Iterable
            ) {
                let mut text = String::new();
                python_repr(value, &mut text);
                return out
                    .write_str(&text)
                    .map_err(|_| Error::from(ErrorKind::WriteFailure));
            }
            minijinja::escape_formatter(out, state, value)
        });
        TemplateEngine {
            env: Arc::new(env),
            base_dir: base_dir.to_path_buf(),
        }
    }

    /// The directory template paths are relative to.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Renders a template file (path relative to base_dir) with `vars`.
    pub fn render_file(&self, path: &str, vars: &Vars) -> Result<String, TemplateError> {
        let tmpl = self
            .env
            .get_template(path)
            .map_err(|e| self.error(e, path, None, false, None))?;
        let root = Root::new(self, vars);
        if let Some(text) = self.native_text(tmpl.source(), &root) {
            return Ok(text);
        }
        tmpl.render(root.value())
            .map(|out| pad_newlines(tmpl.source(), out))
            .map_err(|e| self.error(e, path, Some(tmpl.source()), false, Some(&root)))
    }

    /// A template file that is one expression whose value is not text (a list, a dict, none…)
    /// is that value as Python prints it, none as nothing, without the newlines after the
    /// expression: Ansible renders such a template to the value itself, then writes its text.
    fn native_text(&self, source: &str, root: &Arc<Root>) -> Option<String> {
        use minijinja::value::ValueKind;
        let expr = vars::single_expression(source.trim_end_matches('\n'))?;
        let value = self
            .env
            .compile_expression(expr)
            .ok()?
            .eval(root.value())
            .ok()?;
        match value.kind() {
            ValueKind::None => Some(String::new()),
            ValueKind::Seq | ValueKind::Map | ValueKind::Bool | ValueKind::Number => {
                let mut text = String::new();
                python_repr(&value, &mut text);
                Some(text)
            }
            _ => None,
        }
    }

    /// Renders a string given inline (a task argument); `origin` names where it came from for
    /// errors (e.g. "playbooks/site.rhai:12 arg dest").
    pub fn render_str(
        &self,
        source: &str,
        origin: &str,
        vars: &Vars,
    ) -> Result<String, TemplateError> {
        let env: &Environment<'_> = &self.env;
        let tmpl = env
            .template_from_named_str(origin, source)
            .map_err(|e| self.error(e, origin, Some(source), false, None))?;
        let root = Root::new(self, vars);
        tmpl.render(root.value())
            .map(|out| pad_newlines(source, out))
            .map_err(|e| self.error(e, origin, Some(source), false, Some(&root)))
    }

    /// Evaluates an expression such as `x == 1 and "k8s" in groups` (Ansible's when:) to a JSON
    /// value. An expression whose value is undefined is an error.
    pub fn eval(
        &self,
        expr: &str,
        origin: &str,
        vars: &Vars,
    ) -> Result<serde_json::Value, TemplateError> {
        let env: &Environment<'_> = &self.env;
        let compiled = env
            .compile_expression(expr)
            .map_err(|e| self.error(e, origin, Some(expr), true, None))?;
        let root = Root::new(self, vars);
        let value = compiled
            .eval(root.value())
            .map_err(|e| self.error(e, origin, Some(expr), true, Some(&root)))?;
        if value.is_undefined() {
            let err = Error::from(ErrorKind::UndefinedError);
            return Err(self.error(err, origin, Some(expr), true, Some(&root)));
        }
        serde_json::to_value(&value).map_err(|e| TemplateError {
            file: origin.to_string(),
            line: 0,
            column: None,
            message: format!("expression value cannot be converted: {e}"),
            source_line: None,
            range: None,
        })
    }

    /// The top-level variable names a template string or expression reads (for finding which
    /// earlier task results it needs), e.g. {"tok", "root"} for "{{ tok.stdout }} {{ root }}".
    /// Names the template assigns itself (loop variables, `set`) and the environment's globals
    /// (`range`, `namespace`…) are not included.
    pub fn referenced_names(&self, source: &str) -> Result<BTreeSet<String>, TemplateError> {
        let env: &Environment<'_> = &self.env;
        let tmpl = env
            .template_from_named_str("<string>", source)
            .map_err(|e| self.error(e, "<string>", Some(source), false, None))?;
        Ok(self.without_globals(tmpl.undeclared_variables(false)))
    }

    /// The top-level names a template file reads, like [`referenced_names`](Self::referenced_names);
    /// None when it cannot be told: the file does not load, or it includes, imports or extends
    /// other templates (whose names are not followed).
    pub fn referenced_names_in_file(&self, path: &str) -> Option<BTreeSet<String>> {
        let tmpl = self.env.get_template(path).ok()?;
        static OTHERS: LazyLock<regex::Regex> = LazyLock::new(|| {
            regex::Regex::new(r"\{%-?\s*(include|import|from|extends)\b").expect("valid regex")
        });
        if OTHERS.is_match(tmpl.source()) {
            return None;
        }
        Some(self.without_globals(tmpl.undeclared_variables(false)))
    }

    /// Loads and compiles a template file as rendering would, for checking before a run: its
    /// source, and the names it reads (None when it includes, imports or extends others).
    pub fn compile_file(
        &self,
        path: &str,
    ) -> Result<(String, Option<BTreeSet<String>>), TemplateError> {
        let tmpl = self
            .env
            .get_template(path)
            .map_err(|e| self.error(e, path, None, false, None))?;
        Ok((
            tmpl.source().to_string(),
            self.referenced_names_in_file(path),
        ))
    }

    /// Like [`referenced_names`](Self::referenced_names) for a bare expression (a `when:`).
    pub fn referenced_names_in_expr(&self, expr: &str) -> Result<BTreeSet<String>, TemplateError> {
        let env: &Environment<'_> = &self.env;
        let compiled = env
            .compile_expression(expr)
            .map_err(|e| self.error(e, "<expression>", Some(expr), true, None))?;
        Ok(self.without_globals(compiled.undeclared_variables(false)))
    }

    fn without_globals(&self, names: HashSet<String>) -> BTreeSet<String> {
        let globals: HashSet<&str> = self.env.globals().map(|(k, _)| k).collect();
        names
            .into_iter()
            .filter(|n| !globals.contains(n.as_str()))
            .collect()
    }

    /// Turns a minijinja error into a TemplateError that names the file, the line and (for
    /// undefined values) the variable. `root` is the variables the template was rendered with.
    fn error(
        &self,
        err: Error,
        origin: &str,
        fallback_source: Option<&str>,
        is_expr: bool,
        root: Option<&Root>,
    ) -> TemplateError {
        self.describe(err, origin, fallback_source, is_expr, root).0
    }

    /// What went wrong in a templated variable's own template (`origin` is the variable's name).
    fn explain(
        &self,
        err: Error,
        origin: &str,
        source: &str,
        is_expr: bool,
        root: &Root,
    ) -> Explained {
        match self.describe(err, origin, Some(source), is_expr, Some(root)) {
            (_, Some(why)) => Explained::Undefined(why),
            (e, None) => Explained::Error(e.message),
        }
    }

    /// [`error`](Self::error), and why a value is undefined when that was the error.
    fn describe(
        &self,
        err: Error,
        origin: &str,
        fallback_source: Option<&str>,
        is_expr: bool,
        root: Option<&Root>,
    ) -> (TemplateError, Option<Undefined>) {
        // An error inside an included template comes wrapped; report the innermost one, which
        // names the included file and line.
        let mut err: &Error = &err;
        while let Some(inner) = std::error::Error::source(err)
            .and_then(|s| s.downcast_ref::<Error>())
            .filter(|i| i.name().is_some())
        {
            err = inner;
        }
        // Errors inside included templates carry the included template's name.
        let included = matches!(err.name(), Some(n) if n != origin && !n.starts_with('<'));
        let file = match err.name() {
            Some(name) if included => name.to_string(),
            _ => origin.to_string(),
        };
        // The caller's source is the outer template's: no use for an error in an included one.
        let source = err
            .template_source()
            .or(if included { None } else { fallback_source });
        let range = err.range();
        let mut line = err.line().unwrap_or(if is_expr { 1 } else { 0 });
        let mut column = None;
        if let (Some(src), Some(r)) = (source, &range) {
            if let Some(before) = src.get(..r.start) {
                line = before.matches('\n').count() + 1;
                column = Some(r.start - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1);
            }
        }
        let source_line = match source {
            Some(src) if line > 0 => src.lines().nth(line - 1).map(str::to_string),
            _ => None,
        };
        let block = if is_expr {
            source.map(str::to_string)
        } else {
            match (source, &range) {
                (Some(src), Some(r)) => enclosing_block(src, r),
                _ => source_line.clone(),
            }
        };
        let mut undefined = None;
        let message = match err.kind() {
            ErrorKind::UndefinedError => {
                let snippet = match (source, &range) {
                    (Some(src), Some(r)) => src.get(r.clone()),
                    _ => None,
                };
                let why = undefined_message(self, source, is_expr, block.as_deref(), snippet, root);
                let message = why.message();
                undefined = Some(why);
                message
            }
            // A templated variable's error, already told with the variable it happened in.
            _ if root.is_some_and(|r| r.explained(err)) => {
                err.detail().unwrap_or_default().to_string()
            }
            ErrorKind::TemplateNotFound => match (err.name(), err.detail()) {
                (Some(_), Some(detail)) => {
                    format!("{detail} (looked under {})", self.base_dir.display())
                }
                _ => format!(
                    "template not found: {origin} (looked under {})",
                    self.base_dir.display()
                ),
            },
            _ => {
                let mut m = match err.detail() {
                    Some(d) => format!("{}: {d}", err.kind()),
                    None => err.kind().to_string(),
                };
                let mut cause = std::error::Error::source(err);
                while let Some(c) = cause {
                    m += &format!(": {c}");
                    cause = c.source();
                }
                m
            }
        };
        let e = TemplateError {
            file,
            line,
            column,
            message,
            source_line,
            range,
        };
        (e, undefined)
    }
}

/// Names what is undefined: the variable absent from the context, or the missing attribute, or
/// (for a templated variable that is undefined because its template read an undefined one) that
/// one, through the variables it was read through. `block` is the template tag or expression the
/// error happened in; `source` the whole template (or expression), whose free variables are the
/// candidates.
fn undefined_message(
    engine: &TemplateEngine,
    source: Option<&str>,
    is_expr: bool,
    block: Option<&str>,
    snippet: Option<&str>,
    root: Option<&Root>,
) -> Undefined {
    let plain = |cause: String| Undefined {
        cause,
        through: Vec::new(),
    };
    let (Some(source), Some(block)) = (source, block) else {
        return plain("undefined value".to_string());
    };
    let env: &Environment<'_> = &engine.env;
    let paths: HashSet<String> = if is_expr {
        match env.compile_expression(source) {
            Ok(e) => e.undeclared_variables(true),
            Err(_) => HashSet::new(),
        }
    } else {
        match env.template_from_named_str("<check>", source) {
            Ok(t) => t.undeclared_variables(true),
            Err(_) => HashSet::new(),
        }
    };
    let mut paths: Vec<String> = paths.into_iter().collect();
    paths.sort();
    let mentions = |name: &str| {
        regex::Regex::new(&format!(
            r"(^|[^A-Za-z0-9_.]){}([^A-Za-z0-9_]|$)",
            regex::escape(name)
        ))
        .map(|re| re.is_match(block))
        .unwrap_or(false)
    };
    for path in &paths {
        let mut parts = path.split('.');
        let top = parts.next().unwrap_or_default();
        if !mentions(top) {
            continue;
        }
        if let Some(why) = root.and_then(|r| r.undefined(top)) {
            return why;
        }
        let Some(mut cur) = root.and_then(|r| r.vars().get(top)) else {
            if env.globals().any(|(g, _)| g == top) {
                continue;
            }
            return plain(format!("undefined variable '{top}'"));
        };
        let mut seen = top.to_string();
        for part in parts {
            match cur.get(part) {
                Some(next) => {
                    cur = next;
                    seen = format!("{seen}.{part}");
                }
                None => return plain(format!("'{seen}' has no attribute '{part}'")),
            }
        }
    }
    plain(match snippet {
        Some(path)
            if !path.is_empty()
                && path.split('.').all(|p| {
                    !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_')
                }) =>
        {
            format!("undefined value '{path}' in '{}'", block.trim())
        }
        _ => format!("undefined value in '{}'", block.trim()),
    })
}

/// The `{{ … }}` or `{% … %}` block of `src` around `range`.
fn enclosing_block(src: &str, range: &Range<usize>) -> Option<String> {
    let before = src.get(..range.start)?;
    let open = before
        .rfind("{{")
        .into_iter()
        .chain(before.rfind("{%"))
        .max()?;
    let after = src.get(range.end..)?;
    let close = after
        .find("}}")
        .into_iter()
        .chain(after.find("%}"))
        .min()
        .map(|i| range.end + i + 2)
        .unwrap_or(src.len());
    src.get(open..close).map(str::to_string)
}

/// Loads `name` from under `base`, refusing absolute paths, `..` and symbolic links that lead out.
fn load_template(base: &Path, name: &str) -> Result<Option<String>, Error> {
    let rel = Path::new(name);
    let refused = || {
        Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "template path {name:?} is outside the playbook directory {}",
                base.display()
            ),
        )
    };
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(refused());
    }
    let path = base.join(rel);
    let real = match path.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("cannot read template {}", path.display()),
            )
            .with_source(e))
        }
    };
    let real_base = base.canonicalize().unwrap_or_else(|_| base.to_path_buf());
    if !real.starts_with(&real_base) {
        return Err(refused());
    }
    std::fs::read_to_string(&real).map(Some).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot read template {}", path.display()),
        )
        .with_source(e)
    })
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

fn register_filters(env: &mut Environment<'static>) {
    env.add_filter("to_json", to_json);
    env.add_filter("to_nice_json", to_nice_json);
    env.add_filter("to_yaml", to_yaml);
    env.add_filter("to_nice_yaml", to_nice_yaml);
    env.add_filter("from_json", from_json);
    env.add_filter("from_yaml", from_yaml);
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
    env.add_filter("regex_replace", regex_replace);
    env.add_filter("regex_search", regex_search);
    env.add_filter("regex_findall", regex_findall);
    env.add_filter("basename", basename);
    env.add_filter("dirname", dirname);
    env.add_filter("int", int);
    env.add_filter("bool", to_bool);
    env.add_filter("quote", quote);
    env.add_filter("combine", combine);
    env.add_filter("dict2items", dict2items);
    env.add_filter("items2dict", items2dict);
    env.add_filter("ternary", ternary);
    env.add_filter("mandatory", mandatory);
    env.add_filter("indent", indent);
    env.add_filter("hash", hash);
    env.add_filter("difference", difference);
    env.add_filter("intersect", intersect);
    env.add_filter("union", union);
    env.add_filter("symmetric_difference", symmetric_difference);
    env.add_filter("flatten", flatten);
    env.add_filter("urlsplit", urlsplit);
    env.add_filter("ipwrap", ip::ipwrap);
    env.add_filter("ipv4", ip::ipv4);
    env.add_filter("ipv6", ip::ipv6);
    env.add_filter("ipaddr", ip::ipaddr);
    env.add_test("match", test_match);
    env.add_test("search", test_search);
    env.add_test("regex", test_search);
    env.add_test("truthy", |v: &Value| v.is_true());
    env.add_test("falsy", |v: &Value| !v.is_true());
    env.add_test("version", test_version);
    env.add_test("version_compare", test_version);
}

/// Converts to JSON, mappings in their order.
fn json_of(value: &Value) -> Result<serde_json::Value, Error> {
    if value.is_undefined() {
        return Err(Error::from(ErrorKind::UndefinedError));
    }
    serde_json::to_value(value).map_err(|e| invalid(format!("cannot convert to JSON: {e}")))
}

/// Converts to JSON, mappings' keys sorted (Ansible's to_nice_json passes `sort_keys=True`, and
/// PyYAML's dump sorts by default).
fn sorted_json_of(value: &Value) -> Result<serde_json::Value, Error> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut entries: Vec<_> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    json_of(value).map(sort)
}

/// Ansible's to_json is Python's json.dumps: ", " and ": " between items, non-ASCII escaped,
/// mappings in their order.
fn to_json(value: &Value) -> Result<String, Error> {
    let mut out = String::new();
    python_json(&json_of(value)?, &mut out);
    Ok(out)
}

fn python_json(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            out.push('{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_json_str(k, out);
                out.push_str(": ");
                python_json(v, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_json(v, out);
            }
            out.push(']');
        }
        serde_json::Value::String(s) => python_json_str(s, out),
        other => out.push_str(&other.to_string()),
    }
}

/// A JSON string with every non-ASCII character as \uXXXX (ensure_ascii).
fn python_json_str(s: &str, out: &mut String) {
    let quoted = serde_json::Value::String(s.to_string()).to_string();
    for c in quoted.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
}

/// Jinja's indent: every line but the first (and the first with `first=true`), blank lines only
/// with `blank=true`; the text's trailing newline is kept.
fn indent(
    text: String,
    width: Option<Value>,
    first: Option<bool>,
    blank: Option<bool>,
) -> Result<String, Error> {
    let pad = match &width {
        None => " ".repeat(4),
        Some(w) if w.as_str().is_some() => w.as_str().unwrap_or_default().to_string(),
        Some(w) => " ".repeat(
            usize::try_from(w.clone())
                .map_err(|_| invalid("indent: width must be a number or a string"))?,
        ),
    };
    let (first, blank) = (first.unwrap_or(false), blank.unwrap_or(false));
    let trailing = text.ends_with('\n');
    let body = if trailing {
        &text[..text.len() - 1]
    } else {
        &text[..]
    };
    let mut out = String::new();
    for (i, line) in body.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if (i > 0 || first) && (blank || !line.is_empty()) {
            out.push_str(&pad);
        }
        out.push_str(line);
    }
    if trailing {
        out.push('\n');
    }
    Ok(out)
}

/// Ansible's hash: the hex digest of the text (sha1 by default).
fn hash(text: String, algorithm: Option<String>) -> Result<String, Error> {
    use sha2::Digest;
    let data = text.as_bytes();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    Ok(match algorithm.as_deref().unwrap_or("sha1") {
        "sha1" => hex(&sha1::Sha1::digest(data)),
        "sha256" => hex(&sha2::Sha256::digest(data)),
        "sha512" => hex(&sha2::Sha512::digest(data)),
        "sha224" => hex(&sha2::Sha224::digest(data)),
        "sha384" => hex(&sha2::Sha384::digest(data)),
        "md5" => hex(&md5::Md5::digest(data)),
        other => return Err(invalid(format!("hash: unknown algorithm {other:?}"))),
    })
}

fn items(v: &Value) -> Result<Vec<Value>, Error> {
    Ok(v.try_iter()?.collect())
}

/// Ansible's set filters keep the first operand's order, each item once.
fn set_op(a: &Value, b: &Value, keep: impl Fn(bool) -> bool) -> Result<Value, Error> {
    let other = items(b)?;
    let mut out: Vec<Value> = Vec::new();
    for x in items(a)? {
        if keep(other.contains(&x)) && !out.contains(&x) {
            out.push(x);
        }
    }
    Ok(Value::from(out))
}

fn difference(a: &Value, b: &Value) -> Result<Value, Error> {
    set_op(a, b, |in_b| !in_b)
}

fn intersect(a: &Value, b: &Value) -> Result<Value, Error> {
    set_op(a, b, |in_b| in_b)
}

fn union(a: &Value, b: &Value) -> Result<Value, Error> {
    let mut out: Vec<Value> = Vec::new();
    for x in items(a)?.into_iter().chain(items(b)?) {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    Ok(Value::from(out))
}

fn symmetric_difference(a: &Value, b: &Value) -> Result<Value, Error> {
    let left = difference(a, b)?;
    let right = difference(b, a)?;
    union(&left, &right)
}

/// Ansible's flatten: nested lists into one, `levels` deep (all when not given).
fn flatten(v: &Value, levels: Option<usize>) -> Result<Value, Error> {
    fn walk(v: &Value, depth: Option<usize>, out: &mut Vec<Value>) -> Result<(), Error> {
        for x in v.try_iter()? {
            let nested = x.kind() == minijinja::value::ValueKind::Seq;
            if nested && depth != Some(0) {
                walk(&x, depth.map(|d| d - 1), out)?;
            } else {
                out.push(x);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(v, levels, &mut out)?;
    Ok(Value::from(out))
}

/// Ansible's urlsplit: the parts of a URL, or one of them.
fn urlsplit(url: String, part: Option<String>) -> Result<Value, Error> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url.as_str()));
    let (netloc, path_query) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (path_query, fragment) = path_query.split_once('#').unwrap_or((path_query, ""));
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let (userinfo, hostport) = match netloc.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, netloc),
    };
    let (username, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((n, p)) => (Value::from(n), Value::from(p)),
            None => (Value::from(u), Value::from(())),
        },
        None => (Value::from(()), Value::from(())),
    };
    let (hostname, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest.split_once(']').unwrap_or((rest, ""));
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    let port = match port.map(str::parse::<u16>) {
        Some(Ok(p)) => Value::from(p),
        Some(Err(_)) => return Err(invalid(format!("urlsplit: bad port in {url}"))),
        None => Value::from(()),
    };
    let hostname = if hostname.is_empty() {
        Value::from(())
    } else {
        Value::from(hostname.to_lowercase())
    };
    let parts = [
        ("scheme", Value::from(scheme)),
        ("netloc", Value::from(netloc)),
        ("path", Value::from(path)),
        ("query", Value::from(query)),
        ("fragment", Value::from(fragment)),
        ("username", username),
        ("password", password),
        ("hostname", hostname),
        ("port", port),
    ];
    match part {
        None => Ok(Value::from_iter(parts.iter().map(|(k, v)| (*k, v.clone())))),
        Some(p) => parts
            .iter()
            .find(|(k, _)| *k == p)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| invalid(format!("urlsplit: unknown URL component {p:?}"))),
    }
}

/// Ansible's to_nice_json: four spaces of indentation, keys sorted.
fn to_nice_json(value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    use serde::Serialize;
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let indent = " ".repeat(indent.unwrap_or(4));
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    sorted_json_of(value)?
        .serialize(&mut ser)
        .map_err(|e| invalid(e.to_string()))?;
    String::from_utf8(out).map_err(|e| invalid(e.to_string()))
}

/// Ansible's to_yaml is PyYAML's dump with its default flow style: a collection holding only
/// scalars (or nothing) is written inline (`tags: [x, y]`, `{k: v}`), the others as blocks; keys
/// sorted; ends with a newline.
fn to_yaml(value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    let _: Option<usize> = kwargs.get("indent")?;
    let _: Option<usize> = kwargs.get("width")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    pyyaml_block(&sorted_json_of(value)?, 0, &mut out)?;
    Ok(out)
}

fn yaml_scalar(v: &serde_json::Value) -> Result<String, Error> {
    serde_yaml::to_string(v)
        .map(|s| s.trim_end_matches('\n').to_string())
        .map_err(|e| invalid(e.to_string()))
}

/// A collection PyYAML writes inline by default: empty, or holding scalars only.
fn yaml_flows(v: &serde_json::Value) -> bool {
    let scalar = |x: &serde_json::Value| !x.is_object() && !x.is_array();
    match v {
        serde_json::Value::Object(m) => m.values().all(scalar),
        serde_json::Value::Array(a) => a.iter().all(scalar),
        _ => true,
    }
}

fn pyyaml_flow(v: &serde_json::Value) -> Result<String, Error> {
    Ok(match v {
        serde_json::Value::Object(m) => {
            let items: Result<Vec<String>, Error> = m
                .iter()
                .map(|(k, x)| {
                    let key = yaml_scalar(&serde_json::Value::String(k.clone()))?;
                    Ok(format!("{key}: {}", yaml_scalar(x)?))
                })
                .collect();
            format!("{{{}}}", items?.join(", "))
        }
        serde_json::Value::Array(a) => {
            let items: Result<Vec<String>, Error> = a.iter().map(yaml_scalar).collect();
            format!("[{}]", items?.join(", "))
        }
        scalar => yaml_scalar(scalar)?,
    })
}

/// Writes `v` as a block at `indent`, with lines ending in a newline.
fn pyyaml_block(v: &serde_json::Value, indent: usize, out: &mut String) -> Result<(), Error> {
    let pad = " ".repeat(indent);
    if yaml_flows(v) {
        out.push_str(&format!("{pad}{}\n", pyyaml_flow(v)?));
        return Ok(());
    }
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let key = yaml_scalar(&serde_json::Value::String(k.clone()))?;
                if yaml_flows(x) {
                    out.push_str(&format!("{pad}{key}: {}\n", pyyaml_flow(x)?));
                } else {
                    out.push_str(&format!("{pad}{key}:\n"));
                    // PyYAML does not indent a sequence under its key.
                    let inner = if x.is_array() { indent } else { indent + 2 };
                    pyyaml_block(x, inner, out)?;
                }
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                if yaml_flows(x) {
                    out.push_str(&format!("{pad}- {}\n", pyyaml_flow(x)?));
                } else {
                    // The item's first line follows the dash; the rest line up under it.
                    let mut item = String::new();
                    pyyaml_block(x, indent + 2, &mut item)?;
                    out.push_str(&format!("{pad}- {}", &item[indent + 2..]));
                }
            }
        }
        _ => unreachable!("scalars flow"),
    }
    Ok(())
}

/// to_nice_yaml: block style throughout, keys sorted; ends with a newline.
fn to_nice_yaml(value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    // Ansible accepts indent= and width=; serde_yaml always indents by two.
    let _: Option<usize> = kwargs.get("indent")?;
    let _: Option<usize> = kwargs.get("width")?;
    kwargs.assert_all_used()?;
    serde_yaml::to_string(&sorted_json_of(value)?).map_err(|e| invalid(e.to_string()))
}

fn from_json(value: &str) -> Result<Value, Error> {
    serde_json::from_str::<serde_json::Value>(value)
        .map(Value::from_serialize)
        .map_err(|e| invalid(format!("from_json: {e}")))
}

fn from_yaml(value: &str) -> Result<Value, Error> {
    serde_yaml::from_str::<serde_json::Value>(value)
        .map(Value::from_serialize)
        .map_err(|e| invalid(format!("from_yaml: {e}")))
}

fn b64encode(value: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
}

fn b64decode(value: &str) -> Result<String, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|e| invalid(format!("b64decode: {e}")))?;
    String::from_utf8(bytes).map_err(|_| invalid("b64decode: the decoded value is not UTF-8 text"))
}

/// Compiles a Python-style pattern with Ansible's `ignorecase` and `multiline` flags. Python's
/// look-around and backreferences in the pattern work (fancy-regex; plain patterns run on the
/// `regex` crate underneath). A pattern is compiled once per process: a filter in a loop, or in
/// a template rendered for every host, finds it compiled.
fn build_regex(pattern: &str, kwargs: &Kwargs) -> Result<Arc<fancy_regex::Regex>, Error> {
    type Compiled = std::collections::HashMap<(String, bool), Arc<fancy_regex::Regex>>;
    static COMPILED: LazyLock<std::sync::Mutex<Compiled>> = LazyLock::new(Default::default);
    let ignorecase: Option<bool> = kwargs.get("ignorecase")?;
    let multiline: Option<bool> = kwargs.get("multiline")?;
    let flagged = if multiline.unwrap_or(false) {
        format!("(?m){pattern}")
    } else {
        pattern.to_string()
    };
    let key = (flagged, ignorecase.unwrap_or(false));
    let mut compiled = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(re) = compiled.get(&key) {
        return Ok(re.clone());
    }
    let re = fancy_regex::RegexBuilder::new(&key.0)
        .case_insensitive(key.1)
        .build()
        .map_err(|e| invalid(format!("invalid regular expression {pattern:?}: {e}")))?;
    // Patterns built from values (one per host, say) must not grow it without bound.
    if compiled.len() >= 512 {
        compiled.clear();
    }
    let re = Arc::new(re);
    compiled.insert(key, re.clone());
    Ok(re)
}

fn regex_failed(e: fancy_regex::Error) -> Error {
    invalid(format!("regular expression: {e}"))
}

/// Converts a Python-style regex replacement to the `regex` crate's syntax, for
/// `Regex::replace*` or `Captures::expand`.
///
/// Group references `\1` (one or two digits), `\g<1>` and `\g<name>` become `${1}` / `${name}`;
/// a group that did not take part in the match expands to nothing. The escapes `\n`, `\t` and
/// `\\` become a newline, a tab and a backslash; any other backslash is kept as it is. A literal
/// `$` is escaped as `$$`, so it is never read as a Rust group reference.
///
/// Used by the `regex_replace` filter and by `lineinfile`'s `backrefs`.
pub fn python_replacement_to_rust(rep: &str) -> String {
    let mut out = String::with_capacity(rep.len());
    let mut chars = rep.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        n.push(d);
                        chars.next();
                        if n.len() == 2 {
                            break;
                        }
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('g') => {
                    let mut look = chars.clone();
                    look.next();
                    if look.next() == Some('<') {
                        let name: String = look.clone().take_while(|&c| c != '>').collect();
                        if look.clone().nth(name.chars().count()) == Some('>') {
                            out.push_str(&format!("${{{name}}}"));
                            for _ in 0..name.chars().count() + 3 {
                                chars.next();
                            }
                            continue;
                        }
                    }
                    out.push('\\');
                }
                Some('n') => {
                    chars.next();
                    out.push('\n');
                }
                Some('t') => {
                    chars.next();
                    out.push('\t');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// `value | regex_replace(pattern, replacement='', ignorecase=false, multiline=false)`.
fn regex_replace(
    value: &str,
    pattern: &str,
    replacement: Option<&str>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let re = build_regex(pattern, &kwargs)?;
    let count: Option<usize> = kwargs.get("count")?;
    kwargs.assert_all_used()?;
    let rep = python_replacement_to_rust(replacement.unwrap_or(""));
    Ok(re
        .try_replacen(value, count.unwrap_or(0), rep.as_str())
        .map_err(regex_failed)?
        .into_owned())
}

/// `value | regex_search(pattern, '\\1', '\\g<name>'…)`: the match (or the listed groups), none
/// when nothing matches.
fn regex_search(
    value: &str,
    pattern: &str,
    groups: Rest<String>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let re = build_regex(pattern, &kwargs)?;
    kwargs.assert_all_used()?;
    let Some(caps) = re.captures(value).map_err(regex_failed)? else {
        return Ok(Value::from(()));
    };
    if groups.is_empty() {
        return Ok(Value::from(caps.get(0).map(|m| m.as_str()).unwrap_or("")));
    }
    let mut out = Vec::new();
    for g in groups.iter() {
        let m = if let Some(n) = g.strip_prefix('\\').and_then(|n| n.parse::<usize>().ok()) {
            caps.get(n)
        } else if let Some(name) = g.strip_prefix("\\g<").and_then(|n| n.strip_suffix('>')) {
            match name.parse::<usize>() {
                Ok(n) => caps.get(n),
                Err(_) => caps.name(name),
            }
        } else {
            return Err(invalid(format!(
                "regex_search: group {g:?} must look like '\\\\1' or '\\\\g<name>'"
            )));
        };
        out.push(Value::from(m.map(|m| m.as_str()).unwrap_or("")));
    }
    Ok(Value::from(out))
}

/// `value | regex_findall(pattern)`: every match, or the groups of every match.
fn regex_findall(value: &str, pattern: &str, kwargs: Kwargs) -> Result<Value, Error> {
    let re = build_regex(pattern, &kwargs)?;
    kwargs.assert_all_used()?;
    let groups = re.captures_len() - 1;
    let mut out = Vec::new();
    for caps in re.captures_iter(value) {
        let caps = caps.map_err(regex_failed)?;
        let text = |i: usize| Value::from(caps.get(i).map(|m| m.as_str()).unwrap_or(""));
        out.push(match groups {
            0 => text(0),
            1 => text(1),
            n => Value::from((1..=n).map(text).collect::<Vec<_>>()),
        });
    }
    Ok(Value::from(out))
}

/// Python's os.path.basename: "/a/b" -> "b", "/a/b/" -> "".
fn basename(path: &str) -> String {
    path.rsplit('/').next().unwrap_or_default().to_string()
}

/// Python's os.path.dirname: "/a/b" -> "/a", "b" -> "", "/b" -> "/".
fn dirname(path: &str) -> String {
    let head = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => return String::new(),
    };
    if head.chars().all(|c| c == '/') {
        head.to_string()
    } else {
        head.trim_end_matches('/').to_string()
    }
}

/// Ansible's int: `value | int`, `value | int(default)`, `value | int(base=16)`; text that is not a
/// number gives the default (0).
fn int(
    state: &State,
    value: &Value,
    default: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let base: Option<u32> = kwargs.get("base")?;
    let kw_default: Option<Value> = kwargs.get("default")?;
    kwargs.assert_all_used()?;
    if value.is_undefined() && state.undefined_behavior() == UndefinedBehavior::Strict {
        return Err(Error::from(ErrorKind::UndefinedError));
    }
    let default = default.or(kw_default).unwrap_or(Value::from(0));
    let base = base.unwrap_or(10);
    if let Some(s) = value.as_str() {
        let t = s.trim();
        let digits = match base {
            16 => t.trim_start_matches("0x").trim_start_matches("0X"),
            8 => t.trim_start_matches("0o").trim_start_matches("0O"),
            2 => t.trim_start_matches("0b").trim_start_matches("0B"),
            _ => t,
        };
        return Ok(match i64::from_str_radix(digits, base) {
            Ok(n) => Value::from(n),
            Err(_) if base == 10 => match t.parse::<f64>() {
                Ok(f) if f.is_finite() => Value::from(f.trunc() as i64),
                _ => default,
            },
            Err(_) => default,
        });
    }
    if let Ok(b) = bool::try_from(value.clone()) {
        return Ok(Value::from(b as i64));
    }
    if let Some(n) = value.as_i64() {
        return Ok(Value::from(n));
    }
    match f64::try_from(value.clone()) {
        Ok(f) => Ok(Value::from(f.trunc() as i64)),
        Err(_) => Ok(default),
    }
}

/// Ansible's bool: true for true, 1 and the strings "yes", "on", "1", "true" (any case).
fn to_bool(state: &State, value: &Value) -> Result<bool, Error> {
    if value.is_undefined() && state.undefined_behavior() == UndefinedBehavior::Strict {
        return Err(Error::from(ErrorKind::UndefinedError));
    }
    if let Ok(b) = bool::try_from(value.clone()) {
        if value.kind() == minijinja::value::ValueKind::Bool {
            return Ok(b);
        }
    }
    if let Some(s) = value.as_str() {
        return Ok(matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "yes" | "on" | "1" | "true" | "y"
        ));
    }
    if let Ok(f) = f64::try_from(value.clone()) {
        return Ok(f == 1.0);
    }
    Ok(false)
}

/// Quotes for POSIX sh.
fn quote(value: &Value) -> Result<String, Error> {
    if value.is_undefined() {
        return Err(Error::from(ErrorKind::UndefinedError));
    }
    let text = value.to_string();
    crate::quote::quote(&text).map_err(|e| invalid(e.to_string()))
}

/// Ansible's combine: merges mappings left to right; `recursive=true` merges nested mappings.
fn combine(value: &Value, others: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let recursive: Option<bool> = kwargs.get("recursive")?;
    let list_merge: Option<String> = kwargs.get("list_merge")?;
    kwargs.assert_all_used()?;
    fn merge(a: &mut serde_json::Value, b: serde_json::Value, recursive: bool, append: bool) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    match a.get_mut(&k) {
                        Some(existing) if recursive && existing.is_object() && v.is_object() => {
                            merge(existing, v, recursive, append)
                        }
                        Some(serde_json::Value::Array(existing)) if append && v.is_array() => {
                            if let serde_json::Value::Array(more) = v {
                                existing.extend(more);
                            }
                        }
                        _ => {
                            a.insert(k, v);
                        }
                    }
                }
            }
            (a, b) => *a = b,
        }
    }
    let append = match list_merge.as_deref() {
        None | Some("replace") => false,
        Some("append") => true,
        Some(other) => {
            return Err(invalid(format!(
                "combine: list_merge {other:?} is not supported (replace, append)"
            )))
        }
    };
    let mut acc = json_of(value)?;
    if !acc.is_object() {
        return Err(invalid(format!(
            "combine expects mappings, got {}",
            value.kind()
        )));
    }
    for other in others.iter() {
        let o = json_of(other)?;
        if !o.is_object() {
            return Err(invalid(format!(
                "combine expects mappings, got {}",
                other.kind()
            )));
        }
        merge(&mut acc, o, recursive.unwrap_or(false), append);
    }
    Ok(Value::from_serialize(acc))
}

/// `{a: 1} | dict2items` -> `[{key: a, value: 1}]`.
fn dict2items(value: &Value) -> Result<Value, Error> {
    let json = json_of(value)?;
    let serde_json::Value::Object(map) = json else {
        return Err(invalid(format!(
            "dict2items expects a mapping, got {}",
            value.kind()
        )));
    };
    let items: Vec<serde_json::Value> = map
        .into_iter()
        .map(|(k, v)| serde_json::json!({ "key": k, "value": v }))
        .collect();
    Ok(Value::from_serialize(items))
}

/// `[{key: a, value: 1}] | items2dict` -> `{a: 1}`.
fn items2dict(value: &Value) -> Result<Value, Error> {
    let json = json_of(value)?;
    let serde_json::Value::Array(items) = json else {
        return Err(invalid(format!(
            "items2dict expects a list, got {}",
            value.kind()
        )));
    };
    let mut map = serde_json::Map::new();
    for item in items {
        let key = match item.get("key") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => return Err(invalid("items2dict: an item has no 'key'")),
        };
        map.insert(key, item.get("value").cloned().unwrap_or_default());
    }
    Ok(Value::from_serialize(map))
}

/// `cond | ternary(if_true, if_false, if_none)`.
fn ternary(
    state: &State,
    value: &Value,
    if_true: Value,
    if_false: Value,
    if_none: Option<Value>,
) -> Result<Value, Error> {
    if value.is_none() {
        if let Some(n) = if_none {
            return Ok(n);
        }
    }
    if value.is_undefined() && state.undefined_behavior() == UndefinedBehavior::Strict {
        return Err(Error::from(ErrorKind::UndefinedError));
    }
    Ok(if value.is_true() { if_true } else { if_false })
}

/// `value | mandatory("message")`: an error when the value is undefined.
fn mandatory(value: Value, msg: Option<String>) -> Result<Value, Error> {
    if value.is_undefined() {
        return Err(match msg {
            Some(msg) => invalid(msg),
            // The error then names the variable.
            None => Error::from(ErrorKind::UndefinedError),
        });
    }
    Ok(value)
}

fn test_match(value: &str, pattern: &str, kwargs: Kwargs) -> Result<bool, Error> {
    let re = build_regex(&format!("^(?:{pattern})"), &kwargs)?;
    kwargs.assert_all_used()?;
    re.is_match(value).map_err(regex_failed)
}

fn test_search(value: &str, pattern: &str, kwargs: Kwargs) -> Result<bool, Error> {
    let re = build_regex(pattern, &kwargs)?;
    kwargs.assert_all_used()?;
    re.is_match(value).map_err(regex_failed)
}

/// `version is version("1.28", ">=")`: compares dotted versions part by part, numerically where
/// both parts are numbers (a leading "v" is ignored).
fn test_version(value: &Value, other: &Value, op: Option<&str>) -> Result<bool, Error> {
    fn parts(v: &str) -> Vec<String> {
        v.trim()
            .trim_start_matches('v')
            .split(['.', '-', '+'])
            .map(str::to_string)
            .collect()
    }
    let a = parts(&value.to_string());
    let b = parts(&other.to_string());
    let mut ord = std::cmp::Ordering::Equal;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).map(String::as_str).unwrap_or("0");
        let y = b.get(i).map(String::as_str).unwrap_or("0");
        ord = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if ord.is_ne() {
            break;
        }
    }
    use std::cmp::Ordering::*;
    Ok(match op.unwrap_or("==") {
        "<" | "lt" => ord == Less,
        "<=" | "le" => ord != Greater,
        ">" | "gt" => ord == Greater,
        ">=" | "ge" => ord != Less,
        "==" | "=" | "eq" => ord == Equal,
        "!=" | "<>" | "ne" => ord != Equal,
        other => return Err(invalid(format!("version: unknown operator {other:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(super) fn engine() -> (tempfile::TempDir, TemplateEngine) {
        let dir = tempfile::tempdir().unwrap();
        let e = TemplateEngine::new(dir.path());
        (dir, e)
    }

    fn r(e: &TemplateEngine, src: &str, ctx: serde_json::Value) -> String {
        e.render_str(src, "test", &ctx.into())
            .unwrap_or_else(|err| panic!("{src}: {err}"))
    }

    fn err(e: &TemplateEngine, src: &str, ctx: serde_json::Value) -> TemplateError {
        e.render_str(src, "test", &ctx.into()).unwrap_err()
    }

    #[test]
    fn python_methods_as_ansibles_jinja_has_them() {
        let (_d, e) = engine();
        let ctx = json!({"m": {"b": 2, "a": 1}, "s": " x,y ", "l": [1, 2, 2]});
        assert_eq!(
            r(
                &e,
                "{% for k, v in m.items() %}{{ k }}={{ v }};{% endfor %}",
                ctx.clone()
            ),
            "b=2;a=1;"
        );
        assert_eq!(
            r(&e, "{{ m.keys() | list }} {{ m.get('z', 0) }}", ctx.clone()),
            "['b', 'a'] 0"
        );
        assert_eq!(
            r(&e, "{{ s.strip().split(',') }}", ctx.clone()),
            "['x', 'y']"
        );
        assert_eq!(
            r(
                &e,
                "{{ s.strip().startswith('x') }} {{ s.replace(',', ';') }}",
                ctx.clone()
            ),
            "True  x;y "
        );
        assert_eq!(r(&e, "{{ l.count(2) }}", ctx), "2");
    }

    #[test]
    fn renders_files_with_ansible_whitespace() {
        let (dir, e) = engine();
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        std::fs::write(
            dir.path().join("templates/hosts.j2"),
            "# hosts\n{% for h in hosts %}\n{{ h.ip }} {{ h.name }}\n{% endfor %}\nend\n",
        )
        .unwrap();
        let ctx =
            json!({"hosts": [{"ip": "10.0.0.1", "name": "a"}, {"ip": "10.0.0.2", "name": "b"}]});
        let out = e.render_file("templates/hosts.j2", &ctx.into()).unwrap();
        assert_eq!(out, "# hosts\n10.0.0.1 a\n10.0.0.2 b\nend\n");
        // Files named *.yaml.j2 or *.html.j2 are not escaped.
        std::fs::write(dir.path().join("templates/k.yaml.j2"), "a: {{ v }}\n").unwrap();
        let out = e
            .render_file("templates/k.yaml.j2", &json!({"v": "<x> & \"y\""}).into())
            .unwrap();
        assert_eq!(out, "a: <x> & \"y\"\n");
    }

    #[test]
    fn undefined_variable_names_file_line_and_variable() {
        let (dir, e) = engine();
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        std::fs::write(
            dir.path().join("templates/haproxy.cfg.j2"),
            "global\n  log stdout\n\nfrontend api\n  bind {{ vip }}:6443\n",
        )
        .unwrap();
        let e1 = e
            .render_file("templates/haproxy.cfg.j2", &json!({}).into())
            .unwrap_err();
        assert_eq!(e1.file, "templates/haproxy.cfg.j2");
        assert_eq!(e1.line, 5);
        assert_eq!(e1.column, Some(11));
        assert_eq!(e1.source_line.as_deref(), Some("  bind {{ vip }}:6443"));
        assert_eq!(
            e1.to_string(),
            "templates/haproxy.cfg.j2:5: undefined variable 'vip'"
        );
        let ctx = json!({"tok": {"stdout": "x"}});
        assert_eq!(
            err(&e, "a\n{{ tok.stderr }}", ctx.clone()).to_string(),
            "test:2: 'tok' has no attribute 'stderr'"
        );
        assert_eq!(
            err(&e, "{{ tok.a.b }}", ctx.clone()).message,
            "'tok' has no attribute 'a'"
        );
        assert_eq!(
            err(&e, "{{ vip | upper }}", ctx.clone()).message,
            "undefined variable 'vip'"
        );
        assert_eq!(
            err(&e, "{% if vip %}x{% endif %}", ctx.clone()).message,
            "undefined variable 'vip'"
        );
        assert_eq!(
            err(&e, "{% for x in [{}] %}{{ x.b }}{% endfor %}", ctx.clone()).message,
            "undefined value 'x.b' in '{{ x.b }}'"
        );
        // Defined-ness can still be asked, and default() still works.
        assert_eq!(
            r(&e, "{{ vip is defined }} {{ vip | default('d') }}", ctx),
            "False d"
        );
    }

    #[test]
    fn errors_in_included_templates_name_the_included_file() {
        let (dir, e) = engine();
        std::fs::write(dir.path().join("outer.j2"), "x\n{% include 'inner.j2' %}\n").unwrap();
        std::fs::write(dir.path().join("inner.j2"), "a\nb\n{{ missing }}\n").unwrap();
        let err = e.render_file("outer.j2", &json!({}).into()).unwrap_err();
        assert_eq!(err.to_string(), "inner.j2:3: undefined variable 'missing'");
    }

    #[test]
    fn paths_outside_the_playbook_directory_are_refused() {
        let outer = tempfile::tempdir().unwrap();
        let base = outer.path().join("pb");
        std::fs::create_dir(&base).unwrap();
        std::fs::write(outer.path().join("secret.j2"), "s").unwrap();
        std::os::unix::fs::symlink(outer.path().join("secret.j2"), base.join("link.j2")).unwrap();
        let e = TemplateEngine::new(&base);
        for p in ["../secret.j2", "/etc/passwd", "link.j2"] {
            let err = e.render_file(p, &json!({}).into()).unwrap_err();
            assert!(
                err.message.contains("outside the playbook directory"),
                "{p}: {err}"
            );
        }
        let err = e.render_file("nope.j2", &json!({}).into()).unwrap_err();
        assert!(
            err.to_string().starts_with("nope.j2: template not found"),
            "{err}"
        );
        std::fs::write(base.join("inc.j2"), "a\n{% include 'gone.j2' %}\n").unwrap();
        let err = e.render_file("inc.j2", &json!({}).into()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("inc.j2:2: tried to include non-existing template \"gone.j2\""),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let (_d, e) = engine();
        let err = err(&e, "ok\n{{ x", json!({"x": 1}));
        assert_eq!(err.line, 2);
        assert!(err.message.starts_with("syntax error"), "{err}");
        let unknown = self::err(&e, "{{ 1 | nofilter }}", json!({}));
        assert!(unknown.message.contains("nofilter"), "{unknown}");
    }

    #[test]
    fn engine_is_shared_between_threads_and_truthiness_is_jinja_s() {
        fn shared<T: Send + Sync>() {}
        shared::<TemplateEngine>();
        for v in [
            json!(null),
            json!(false),
            json!(0),
            json!(0.0),
            json!(""),
            json!([]),
            json!({}),
        ] {
            assert!(!is_truthy(&v), "{v}");
        }
        for v in [
            json!(true),
            json!(1),
            json!("no"),
            json!([0]),
            json!({"a": 1}),
        ] {
            assert!(is_truthy(&v), "{v}");
        }
    }

    #[test]
    fn eval_when_expressions() {
        let (_d, e) = engine();
        let ctx = json!({"x": 1, "groups": ["k8s", "lb"], "s": "yes", "tok": {"rc": 0}});
        let ev = |x: &str| e.eval(x, "site.rhai:3 when", &ctx.clone().into());
        assert_eq!(ev("x == 1 and 'k8s' in groups").unwrap(), json!(true));
        assert_eq!(ev("x == 2 or 'db' in groups").unwrap(), json!(false));
        assert_eq!(ev("s | bool").unwrap(), json!(true));
        assert_eq!(ev("tok.rc != 0").unwrap(), json!(false));
        assert_eq!(ev("y is defined").unwrap(), json!(false));
        assert_eq!(ev("y is not defined").unwrap(), json!(true));
        assert_eq!(ev("groups | length").unwrap(), json!(2));
        let err = ev("y == 1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "site.rhai:3 when:1: undefined variable 'y'"
        );
        assert_eq!(ev("y").unwrap_err().message, "undefined variable 'y'");
        assert!(ev("x ==").unwrap_err().message.starts_with("syntax error"));
    }

    #[test]
    fn referenced_names_are_top_level_free_variables() {
        let (d, e) = engine();
        let names = e
            .referenced_names("{{ tok.stdout }} {{ root }}{% for h in hosts %}{{ h.ip }}{% endfor %}{{ range(3) | join }}")
            .unwrap();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            vec!["hosts", "root", "tok"]
        );
        let names = e
            .referenced_names_in_expr("init.stdout is defined and x | default(1) == 1")
            .unwrap();
        assert_eq!(names.into_iter().collect::<Vec<_>>(), vec!["init", "x"]);
        assert!(e.referenced_names("{{ x").is_err());
        std::fs::write(
            d.path().join("t.j2"),
            "{{ facts.os }}{% for h in groups.all %}{% endfor %}",
        )
        .unwrap();
        std::fs::write(d.path().join("i.j2"), "{% include 't.j2' %}{{ a }}").unwrap();
        let names = e.referenced_names_in_file("t.j2").unwrap();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            vec!["facts", "groups"]
        );
        assert!(
            e.referenced_names_in_file("i.j2").is_none(),
            "includes are not followed"
        );
        assert!(e.referenced_names_in_file("missing.j2").is_none());
        assert!(is_template("a {{ b }}") && is_template("{% if a %}{% endif %}"));
        assert!(!is_template("plain { text }"));
    }

    #[test]
    fn default_filter_like_ansible() {
        let (_d, e) = engine();
        let ctx = json!({"empty": "", "f": false, "v": "val", "n": null});
        assert_eq!(r(&e, "{{ missing | default('d') }}", ctx.clone()), "d");
        assert_eq!(r(&e, "{{ missing | d('d') }}", ctx.clone()), "d");
        assert_eq!(r(&e, "{{ empty | default('d') }}", ctx.clone()), "");
        assert_eq!(r(&e, "{{ empty | default('d', true) }}", ctx.clone()), "d");
        assert_eq!(r(&e, "{{ f | default('d', true) }}", ctx.clone()), "d");
        assert_eq!(r(&e, "{{ v | default('d', true) }}", ctx.clone()), "val");
        assert_eq!(r(&e, "{{ v.attr | default('d') }}", ctx.clone()), "d");
        assert_eq!(r(&e, "{{ n is none }} {{ v is none }}", ctx), "True False");
    }

    #[test]
    fn json_and_yaml_filters() {
        let (_d, e) = engine();
        let ctx = json!({"m": {"b": [1, 2], "a": "x"}});
        assert_eq!(
            r(&e, "{{ m | to_json }}", ctx.clone()),
            r#"{"b": [1, 2], "a": "x"}"#
        );
        assert_eq!(
            r(&e, "{{ m | to_nice_json }}", ctx.clone()),
            "{\n    \"a\": \"x\",\n    \"b\": [\n        1,\n        2\n    ]\n}"
        );
        assert_eq!(
            r(&e, "{{ m | to_nice_json(indent=2) }}", ctx.clone()),
            "{\n  \"a\": \"x\",\n  \"b\": [\n    1,\n    2\n  ]\n}"
        );
        assert_eq!(r(&e, "{{ m | to_yaml }}", ctx.clone()), "a: x\nb: [1, 2]\n");
        assert_eq!(
            r(&e, "{{ m | to_nice_yaml(indent=2) }}", ctx.clone()),
            "a: x\nb:\n- 1\n- 2\n"
        );
        assert_eq!(
            r(&e, "{{ ('{\"k\": 3}' | from_json).k }}", ctx.clone()),
            "3"
        );
        assert_eq!(r(&e, "{{ ('k: [1]' | from_yaml).k[0] }}", ctx.clone()), "1");
        assert_eq!(r(&e, "{{ 'a\"b' | to_json }}", ctx), r#""a\"b""#);
    }

    #[test]
    fn string_filters() {
        let (_d, e) = engine();
        let c = json!({"l": ["a", "b", "a"], "p": "/etc/kubernetes/admin.conf"});
        assert_eq!(r(&e, "{{ 'hello' | b64encode }}", c.clone()), "aGVsbG8=");
        assert_eq!(r(&e, "{{ 'aGVsbG8=' | b64decode }}", c.clone()), "hello");
        assert!(err(&e, "{{ '%%%' | b64decode }}", c.clone())
            .message
            .contains("b64decode"));
        assert_eq!(r(&e, "{{ p | basename }}", c.clone()), "admin.conf");
        assert_eq!(r(&e, "{{ p | dirname }}", c.clone()), "/etc/kubernetes");
        assert_eq!(
            r(
                &e,
                "{{ '/x' | dirname }}|{{ 'x' | dirname }}|{{ '/a/b/' | basename }}",
                c.clone()
            ),
            "/||"
        );
        assert_eq!(
            r(&e, "{{ 'Ab' | upper }}{{ 'Ab' | lower }}", c.clone()),
            "ABab"
        );
        assert_eq!(r(&e, "[{{ '  x \n' | trim }}]", c.clone()), "[x]");
        assert_eq!(r(&e, "{{ l | join(',') }}", c.clone()), "a,b,a");
        assert_eq!(r(&e, "{{ l | unique | join(',') }}", c.clone()), "a,b");
        assert_eq!(
            r(
                &e,
                "{{ l | first }}{{ l | last }}{{ l | length }}",
                c.clone()
            ),
            "aa3"
        );
        assert_eq!(
            r(&e, "{{ \"it's $x\" | quote }}", c.clone()),
            crate::quote::quote("it's $x").unwrap()
        );
        assert_eq!(r(&e, "{{ 'plain' | quote }}", c), "plain");
    }

    #[test]
    fn regex_filters_use_python_backreferences() {
        let (_d, e) = engine();
        let c = json!({"v": "v1.28.3", "line": "token: abc.def hash: sha256:123"});
        assert_eq!(
            r(
                &e,
                r"{{ v | regex_replace('^v(\\d+)\\.(\\d+).*$', '\\1-\\2') }}",
                c.clone()
            ),
            "1-28"
        );
        assert_eq!(
            r(
                &e,
                r"{{ v | regex_replace('^v(?P<maj>\\d+).*', 'major \\g<maj> $1') }}",
                c.clone()
            ),
            "major 1 $1"
        );
        assert_eq!(
            r(
                &e,
                "{{ 'aXbx' | regex_replace('x', '-', ignorecase=true) }}",
                c.clone()
            ),
            "a-b-"
        );
        assert_eq!(
            r(&e, "{{ 'a.b' | regex_replace('\\\\.') }}", c.clone()),
            "ab"
        );
        assert_eq!(
            r(
                &e,
                r"{{ line | regex_search('token: (\\S+)', '\\1') | first }}",
                c.clone()
            ),
            "abc.def"
        );
        assert_eq!(
            r(&e, r"{{ line | regex_search('sha256:\\d+') }}", c.clone()),
            "sha256:123"
        );
        assert_eq!(
            r(
                &e,
                "{{ line | regex_search('nomatch') is none }}",
                c.clone()
            ),
            "True"
        );
        assert_eq!(
            r(
                &e,
                r"{{ 'a1b22' | regex_findall('\\d+') | join(',') }}",
                c.clone()
            ),
            "1,22"
        );
        assert!(err(&e, "{{ 'x' | regex_replace('(') }}", c)
            .message
            .contains("invalid regular expression"));
    }

    #[test]
    fn int_and_bool_like_ansible() {
        let (_d, e) = engine();
        let c = json!({});
        assert_eq!(r(&e, "{{ '42' | int + 1 }}", c.clone()), "43");
        assert_eq!(
            r(
                &e,
                "{{ ' 7 ' | int }}|{{ '3.9' | int }}|{{ 'abc' | int }}|{{ 'abc' | int(5) }}",
                c.clone()
            ),
            "7|3|0|5"
        );
        assert_eq!(
            r(
                &e,
                "{{ 'ff' | int(base=16) }}|{{ '0x1F' | int(base=16) }}|{{ true | int }}",
                c.clone()
            ),
            "255|31|1"
        );
        for (v, want) in [
            ("'yes'", true),
            ("'True'", true),
            ("'on'", true),
            ("'1'", true),
            ("1", true),
            ("true", true),
            ("'no'", false),
            ("'false'", false),
            ("'off'", false),
            ("0", false),
            ("''", false),
            ("none", false),
        ] {
            assert_eq!(
                r(&e, &format!("{{{{ {v} | bool }}}}"), c.clone()),
                if want { "True" } else { "False" },
                "{v}"
            );
        }
        assert_eq!(
            err(&e, "{{ nope | bool }}", c.clone()).message,
            "undefined variable 'nope'"
        );
        assert_eq!(
            err(&e, "{{ nope | int }}", c).message,
            "undefined variable 'nope'"
        );
    }

    #[test]
    fn ansible_extras() {
        let (_d, e) = engine();
        let c = json!({"a": {"x": 1, "n": {"p": 1}}, "b": {"y": 2, "n": {"q": 2}}, "t": true});
        assert_eq!(
            r(&e, "{{ a | combine(b) | to_json }}", c.clone()),
            r#"{"x": 1, "n": {"q": 2}, "y": 2}"#
        );
        assert_eq!(
            r(
                &e,
                "{{ a | combine(b, recursive=true) | to_json }}",
                c.clone()
            ),
            r#"{"x": 1, "n": {"p": 1, "q": 2}, "y": 2}"#
        );
        assert_eq!(
            r(&e, "{{ {'k': 'v'} | dict2items | to_json }}", c.clone()),
            r#"[{"key": "k", "value": "v"}]"#
        );
        assert_eq!(
            r(
                &e,
                "{{ [{'key': 'k', 'value': 1}] | items2dict | to_json }}",
                c.clone()
            ),
            r#"{"k": 1}"#
        );
        assert_eq!(
            r(
                &e,
                "{{ t | ternary('on', 'off') }}{{ (not t) | ternary('on', 'off') }}",
                c.clone()
            ),
            "onoff"
        );
        assert_eq!(
            r(
                &e,
                "{{ '1.28.3' is version('1.24', '>=') }} {{ 'v1.9' is version('1.10', '<') }}",
                c.clone()
            ),
            "True True"
        );
        assert_eq!(r(&e, "{{ 'node-1' is match('node') }} {{ 'a-node' is match('node') }} {{ 'a-node' is search('node') }}", c.clone()), "True False True");
        assert_eq!(
            r(&e, "{{ 'yes' is truthy }} {{ '' is falsy }}", c.clone()),
            "True True"
        );
        assert_eq!(
            err(&e, "{{ nope | mandatory }}", c).message,
            "undefined variable 'nope'"
        );
    }
}
