//! The variables a template sees, with Ansible's lazy templated variables: a play variable whose
//! value is itself a template (`api_port: "{{ base_port + 1 }}"`, `{%- if … -%}` in a group var)
//! is rendered when a template reads it, with the same variables, and again for the variables
//! that one reads. A value that is one expression keeps its type (an int stays an int); a
//! variable whose template reads an undefined one is undefined itself (`default()` applies), and
//! a variable that reads itself is an error naming the loop.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use minijinja::value::{Enumerator, Object, ObjectRepr};
use minijinja::{Error, ErrorKind, Value};
use serde_json::Map;

use super::{is_template, TemplateEngine};

/// The variables a template sees on one host.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    /// The play's variables (inventory, group and host variables, the playbook's defaults, extra
    /// vars): a string among them that is a template is rendered when it is read.
    pub play: Map<String, serde_json::Value>,
    /// What tasks made (registered results, `set_fact` values, facts) and the run's own values
    /// (`groups`): read as they are, never rendered again, since a command's output may well
    /// hold `{{`. They win over `play`.
    pub literal: Map<String, serde_json::Value>,
    /// `hostvars`, when it is read: every host's variables in inventory order. A host's
    /// templated variables render with that host's variables.
    pub hostvars: Option<Vec<(String, Vars)>>,
}

impl From<serde_json::Value> for Vars {
    /// Plain values given as play variables (as a test or a module's own rendering has them).
    fn from(value: serde_json::Value) -> Self {
        Vars {
            play: match value {
                serde_json::Value::Object(m) => m,
                _ => Map::new(),
            },
            ..Vars::default()
        }
    }
}

impl Vars {
    /// A variable's value as given (a templated one unrendered).
    pub fn get(&self, name: &str) -> Option<&serde_json::Value> {
        self.literal.get(name).or_else(|| self.play.get(name))
    }

    /// Every variable in one JSON object, templated ones unrendered (what closures are given).
    pub fn to_json(&self) -> serde_json::Value {
        let mut all = self.play.clone();
        all.extend(self.literal.clone());
        if let Some(hosts) = &self.hostvars {
            let hv = hosts
                .iter()
                .map(|(h, v)| (h.clone(), v.to_json()))
                .collect();
            all.insert("hostvars".into(), serde_json::Value::Object(hv));
        }
        serde_json::Value::Object(all)
    }
}

/// Whether a value holds a template anywhere inside.
pub(super) fn holds_template(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => is_template(s),
        serde_json::Value::Array(a) => a.iter().any(holds_template),
        serde_json::Value::Object(o) => o.values().any(holds_template),
        _ => false,
    }
}

/// The expression of a template that is nothing but one `{{ … }}`: its value is the variable's,
/// of whatever type (Ansible's native values); any text around it makes a string.
pub(super) fn single_expression(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    // Braces outside string literals must pair up: `a }} text {{ b` is two expressions (and
    // minijinja's expression lexer does not take a stray `}}`).
    let (mut depth, mut quote, mut escaped) = (0usize, None, false);
    let mut prev = ' ';
    for c in inner.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => quote = Some(c),
                '{' if prev == '{' => return None,
                '%' | '#' if prev == '{' => return None,
                '{' => depth += 1,
                '}' => depth = depth.checked_sub(1)?,
                _ => {}
            },
        }
        prev = if quote.is_some() { ' ' } else { c };
    }
    (depth == 0 && quote.is_none()).then_some(inner)
}

/// Why a templated variable is undefined: the innermost cause, and the variables it was read
/// through (outermost first, each with its template).
#[derive(Debug, Clone)]
pub(super) struct Undefined {
    pub(super) cause: String,
    pub(super) through: Vec<String>,
}

impl Undefined {
    pub(super) fn message(&self) -> String {
        if self.through.is_empty() {
            self.cause.clone()
        } else {
            format!("{} (read through {})", self.cause, self.through.join(", "))
        }
    }
}

/// What the hosts' variables read in one render share.
#[derive(Default)]
struct Shared {
    /// The variables being rendered, innermost last, by (host root, name): a variable met again
    /// is a loop.
    rendering: Mutex<Vec<(usize, String)>>,
    /// Messages of errors already explained by an inner variable, passed through unchanged.
    explained: Mutex<Vec<String>>,
    /// Why templated variables are undefined, by (host root, name).
    undefined: Mutex<HashMap<(usize, String), Undefined>>,
    /// Roots made so far (ids for `hostvars` entries).
    roots: Mutex<usize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One host's variables as a minijinja map that renders templated values when they are read.
pub(super) struct Root {
    engine: TemplateEngine,
    vars: Arc<Vars>,
    id: usize,
    shared: Arc<Shared>,
    /// What was read in this render: the same value each time it is read again.
    cache: Mutex<HashMap<String, Option<Value>>>,
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Root").field("id", &self.id).finish()
    }
}

impl Root {
    pub(super) fn new(engine: &TemplateEngine, vars: &Vars) -> Arc<Root> {
        Self::with(engine, Arc::new(vars.clone()), Arc::default())
    }

    fn with(engine: &TemplateEngine, vars: Arc<Vars>, shared: Arc<Shared>) -> Arc<Root> {
        let id = {
            let mut n = lock(&shared.roots);
            *n += 1;
            *n
        };
        Arc::new(Root {
            engine: engine.clone(),
            vars,
            id,
            shared,
            cache: Mutex::default(),
        })
    }

    pub(super) fn value(self: &Arc<Self>) -> Value {
        Value::from_dyn_object(self.clone())
    }

    pub(super) fn vars(&self) -> &Vars {
        &self.vars
    }

    /// Why `name` is undefined, when it is a templated variable whose template read an
    /// undefined one.
    pub(super) fn undefined(&self, name: &str) -> Option<Undefined> {
        lock(&self.shared.undefined)
            .get(&(self.id, name.to_string()))
            .cloned()
    }

    /// Whether an error is one a templated variable already explained (it passes through the
    /// variables that read that one unchanged).
    pub(super) fn explained(&self, err: &Error) -> bool {
        err.detail()
            .is_some_and(|d| lock(&self.shared.explained).iter().any(|m| m == d))
    }

    fn read(self: &Arc<Self>, name: &str) -> Option<Value> {
        if let Some(v) = self.vars.literal.get(name) {
            return Some(Value::from_serialize(v));
        }
        if name == "hostvars" {
            if let Some(hosts) = &self.vars.hostvars {
                let roots = hosts
                    .iter()
                    .map(|(h, v)| {
                        let root =
                            Root::with(&self.engine, Arc::new(v.clone()), self.shared.clone());
                        (h.clone(), root.value())
                    })
                    .collect();
                return Some(Value::from_object(Hostvars(roots)));
            }
        }
        let raw = self.vars.play.get(name)?;
        if !holds_template(raw) {
            return Some(Value::from_serialize(raw));
        }
        {
            let mut rendering = lock(&self.shared.rendering);
            if let Some(at) = rendering
                .iter()
                .position(|(id, n)| *id == self.id && n == name)
            {
                let chain: Vec<&str> = rendering[at..]
                    .iter()
                    .map(|(_, n)| n.as_str())
                    .chain([name])
                    .collect();
                let msg = format!("variable '{name}' reads itself: {}", chain.join(" -> "));
                lock(&self.shared.explained).push(msg.clone());
                return Some(Value::from(Error::new(ErrorKind::InvalidOperation, msg)));
            }
            rendering.push((self.id, name.to_string()));
        }
        let out = self.render(name, raw);
        lock(&self.shared.rendering).pop();
        match out {
            Ok(v) => Some(v),
            Err(Failure::Undefined(why)) => {
                lock(&self.shared.undefined).insert((self.id, name.to_string()), why);
                None
            }
            Err(Failure::Error(e)) => Some(Value::from(e)),
        }
    }

    /// A variable's value with every template inside it rendered.
    fn render(self: &Arc<Self>, name: &str, raw: &serde_json::Value) -> Result<Value, Failure> {
        Ok(match raw {
            serde_json::Value::String(s) if is_template(s) => self.render_str(name, s)?,
            serde_json::Value::Array(a) => Value::from(
                a.iter()
                    .map(|x| self.render(name, x))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            serde_json::Value::Object(o) => Value::from_iter(
                o.iter()
                    .map(|(k, x)| self.render(name, x).map(|v| (k.clone(), v)))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            other => Value::from_serialize(other),
        })
    }

    fn render_str(self: &Arc<Self>, name: &str, src: &str) -> Result<Value, Failure> {
        let env = &self.engine.env;
        let expr = single_expression(src);
        let out = match expr {
            Some(expr) => env
                .compile_expression(expr)
                .and_then(|e| e.eval(self.value()))
                .and_then(|v| match v.is_undefined() {
                    true => Err(Error::from(ErrorKind::UndefinedError)),
                    false => Ok(v),
                }),
            None => env
                .template_from_named_str(name, src)
                .and_then(|t| t.render(self.value()).map(|out| (t, out)))
                .map(|(t, out)| Value::from(super::pad_newlines(t.source(), out))),
        };
        let err = match out {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if err.kind() != ErrorKind::UndefinedError && self.explained(&err) {
            return Err(Failure::Error(err));
        }
        let (source, is_expr) = match expr {
            Some(e) => (e, true),
            None => (src, false),
        };
        let shown = format!("{name} = {src:?}");
        match self.engine.explain(err, name, source, is_expr, self) {
            Explained::Undefined(mut why) => {
                why.through.insert(0, shown);
                Err(Failure::Undefined(why))
            }
            Explained::Error(msg) => {
                let msg = format!("{msg} (in {shown})");
                lock(&self.shared.explained).push(msg.clone());
                Err(Failure::Error(Error::new(ErrorKind::InvalidOperation, msg)))
            }
        }
    }
}

enum Failure {
    Undefined(Undefined),
    Error(Error),
}

/// What went wrong in a templated variable's template.
pub(super) enum Explained {
    Undefined(Undefined),
    Error(String),
}

impl Object for Root {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        if let Some(v) = lock(&self.cache).get(name) {
            return v.clone();
        }
        let v = self.read(name);
        lock(&self.cache).insert(name.to_string(), v.clone());
        v
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut names: Vec<Value> = self
            .vars
            .play
            .keys()
            .map(|k| Value::from(k.as_str()))
            .collect();
        for k in self.vars.literal.keys() {
            if !self.vars.play.contains_key(k) {
                names.push(Value::from(k.as_str()));
            }
        }
        if self.vars.hostvars.is_some() {
            names.push(Value::from("hostvars"));
        }
        Enumerator::Values(names)
    }
}

/// `hostvars`: each host's variables, in inventory order.
#[derive(Debug)]
struct Hostvars(Vec<(String, Value)>);

impl Object for Hostvars {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        self.0
            .iter()
            .find(|(h, _)| h == name)
            .map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(
            self.0
                .iter()
                .map(|(h, _)| Value::from(h.as_str()))
                .collect(),
        )
    }
}

/// What the templated play variables read, over every host's variables, the playbook's defaults
/// and extra vars: a template reading one of them reads what its value reads too (for ordering
/// tasks after the results they read, for what a task needs, and for checking names).
#[derive(Debug, Clone, Default)]
pub struct TemplatedVars(BTreeMap<String, Vec<(String, BTreeSet<String>)>>);

impl TemplatedVars {
    pub fn new<'a>(
        engine: &TemplateEngine,
        maps: impl IntoIterator<Item = &'a Map<String, serde_json::Value>>,
    ) -> Self {
        fn strings<'v>(v: &'v serde_json::Value, out: &mut Vec<&'v str>) {
            match v {
                serde_json::Value::String(s) if is_template(s) => out.push(s),
                serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
                serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
                _ => {}
            }
        }
        let mut all: BTreeMap<String, Vec<(String, BTreeSet<String>)>> = BTreeMap::new();
        for map in maps {
            for (name, value) in map {
                let mut found = Vec::new();
                strings(value, &mut found);
                for s in found {
                    let sources = all.entry(name.clone()).or_default();
                    if sources.iter().any(|(known, _)| known == s) {
                        continue;
                    }
                    // A template that does not parse fails where it is read, naming the variable.
                    if let Ok(names) = engine.referenced_names(s) {
                        sources.push((s.to_string(), names));
                    }
                }
            }
        }
        TemplatedVars(all)
    }

    /// The templates of a variable (one per distinct value among the hosts), with the names each
    /// reads.
    pub fn templates(&self, name: &str) -> &[(String, BTreeSet<String>)] {
        self.0.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    /// The templated variables' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// `names` and every name read through the templated variables among them, transitively.
    pub fn widen(&self, names: &BTreeSet<String>) -> BTreeSet<String> {
        let mut all = names.clone();
        let mut todo: Vec<String> = names.iter().cloned().collect();
        while let Some(n) = todo.pop() {
            for (_, read) in self.templates(&n) {
                for r in read {
                    if all.insert(r.clone()) {
                        todo.push(r.clone());
                    }
                }
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::engine;
    use super::*;
    use serde_json::json;

    fn play() -> Vars {
        Vars::from(json!({
            "base_port": 6440,
            "port": "{{ base_port + 1 }}",
            "flag": true,
            "mode": "{%- if flag -%}\nha\n{%- else -%}\nsingle\n{%- endif -%}",
            "first": "{{ second }}",
            "second": "{{ third | default('x') }}",
            "ports": {"api": "{{ port }}", "list": ["{{ base_port }}", 1]},
            "empty": "{{ none }}",
            "many": "{{ [1, 2] }}",
            "text": "{{ port }}/tcp",
            "quoted": "{{ '{{ 1 }}' }}",
            "broken": "{{ nope }}",
            "via_broken": "{{ broken }}",
            "loop_a": "{{ loop_b }}",
            "loop_b": "{{ loop_a }}",
            "bad_filter": "{{ 1 | no_such_filter }}",
            "nested": "{{ {'a': {'b': base_port}} }}",
            "twice": "{{ base_port }}{{ base_port }}",
        }))
    }

    fn r(e: &TemplateEngine, src: &str, vars: &Vars) -> String {
        e.render_str(src, "test", vars)
            .unwrap_or_else(|err| panic!("{src}: {err}"))
    }

    #[test]
    fn templated_variables_render_when_read_keeping_types() {
        let (_d, e) = engine();
        let v = play();
        assert_eq!(r(&e, "{{ port + 1 }}", &v), "6442");
        assert_eq!(r(&e, "[{{ mode }}]", &v), "[ha]");
        assert_eq!(r(&e, "{{ first }}", &v), "x");
        assert_eq!(
            r(&e, "{{ ports.api + 1 }} {{ ports.list[0] + 1 }}", &v),
            "6442 6441"
        );
        assert_eq!(
            r(&e, "{{ empty is none }} {{ many | length }}", &v),
            "True 2"
        );
        assert_eq!(
            r(&e, "{{ text }} {{ text is string }}", &v),
            "6441/tcp True"
        );
        assert_eq!(
            r(&e, "{{ nested.a.b + 1 }} {{ twice + 'x' }}", &v),
            "6441 64406440x"
        );
        // What a template renders to is a value, not a template again.
        assert_eq!(r(&e, "{{ quoted }}", &v), "{{ 1 }}");
        assert_eq!(
            e.eval("port", "when", &v).unwrap(),
            json!(6441),
            "one expression keeps its type"
        );
    }

    #[test]
    fn one_expression_is_told_from_several() {
        assert_eq!(single_expression("{{ a + 1 }}"), Some(" a + 1 "));
        assert_eq!(
            single_expression("{{- {'a': {'b': 1}} -}}"),
            Some(" {'a': {'b': 1}} ")
        );
        assert_eq!(single_expression("{{ '}}' ~ x }}"), Some(" '}}' ~ x "));
        for several in [
            "{{ a }}{{ b }}",
            "{{ a }} and {{ b }}",
            "{{ a }}{% if b %}{% endif %}{{ c }}",
            "x{{ a }}",
        ] {
            assert_eq!(single_expression(several), None, "{several}");
        }
    }

    #[test]
    fn a_variable_reading_an_undefined_one_is_undefined_itself() {
        let (_d, e) = engine();
        let v = play();
        assert_eq!(
            r(
                &e,
                "{{ broken | default('d') }} {{ broken is defined }}",
                &v
            ),
            "d False"
        );
        let err = e.render_str("a\n{{ via_broken }}", "test", &v).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test:2: undefined variable 'nope' (read through via_broken = \"{{ broken }}\", \
             broken = \"{{ nope }}\")"
        );
        assert_eq!(err.column, Some(4));
    }

    #[test]
    fn loops_and_errors_in_variables_name_the_variable() {
        let (_d, e) = engine();
        let v = play();
        let err = e.render_str("{{ loop_a }}", "test", &v).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test:1: variable 'loop_a' reads itself: loop_a -> loop_b -> loop_a"
        );
        let err = e.render_str("x {{ bad_filter }}", "test", &v).unwrap_err();
        assert!(
            err.message.contains("no_such_filter")
                && err
                    .message
                    .ends_with("(in bad_filter = \"{{ 1 | no_such_filter }}\")"),
            "{err}"
        );
    }

    #[test]
    fn results_of_tasks_are_never_rendered_again() {
        let (_d, e) = engine();
        let mut v = play();
        v.literal
            .insert("out".into(), json!({"stdout": "{{ base_port }}"}));
        v.literal.insert("port".into(), json!("{{ x }}"));
        assert_eq!(
            r(&e, "{{ out.stdout }} {{ port }}", &v),
            "{{ base_port }} {{ x }}"
        );
    }

    #[test]
    fn hostvars_render_with_each_host_s_own_variables() {
        let (_d, e) = engine();
        let host = |ip: &str| Vars::from(json!({"ip": ip, "addr": "{{ ip }}:2379"}));
        let v = Vars {
            hostvars: Some(vec![
                ("a".into(), host("10.0.0.1")),
                ("b".into(), host("10.0.0.2")),
            ]),
            ..host("10.0.0.1")
        };
        assert_eq!(
            r(
                &e,
                "{% for h in hostvars %}{{ hostvars[h].addr }},{% endfor %} {{ addr }}",
                &v
            ),
            "10.0.0.1:2379,10.0.0.2:2379, 10.0.0.1:2379"
        );
    }

    #[test]
    fn names_read_through_templated_variables() {
        let (_d, e) = engine();
        let a =
            json!({"api": "{{ vip }}:{{ port }}", "port": "{{ base | int + 1 }}", "plain": "x"});
        let b = json!({"api": "{{ lb_name }}", "bad": "{{ x", "list": ["{{ groups.k8s }}"]});
        let maps = [a.as_object().unwrap(), b.as_object().unwrap()];
        let t = TemplatedVars::new(&e, maps);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            t.widen(&names(&["api", "other"])),
            names(&["api", "base", "lb_name", "other", "port", "vip"])
        );
        assert_eq!(t.widen(&names(&["list"])), names(&["groups", "list"]));
        assert!(t.templates("plain").is_empty() && t.templates("bad").is_empty());
    }
}
