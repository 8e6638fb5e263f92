//! Template mistakes found while planning, before any host is touched: a syntax error in an
//! argument, a condition or a template file, a template file that is not there, and a name that
//! nothing can define (`db_pasword`). Names are checked against everything a run could provide:
//! any host's variables, the playbook's defaults, extra vars, registered results, `set_fact` keys
//! and the run's own names (`facts`, `hostvars`, `groups`). A name used under a guard
//! (`is defined`, `| default`) may be missing, and a task with a closure condition may guard
//! anything, so neither is checked.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::error::{closest, PlanError};
use crate::inventory::Inventory;
use crate::plan::{Action, Condition, Secrecy, Task};
use crate::template::{is_template, TemplateEngine, TemplateError, TemplatedVars};

/// Names a run provides beside the variables.
const RUN_NAMES: [&str; 4] = ["facts", "hostvars", "groups", "loop"];

pub fn check_templates(
    tasks: &[Task],
    templates: &TemplateEngine,
    templated: &TemplatedVars,
    inventory: &Inventory,
    defaults: &Map<String, Value>,
    extra_vars: &Map<String, Value>,
) -> Result<(), PlanError> {
    let known = known_names(tasks, inventory, defaults, extra_vars);
    for task in tasks {
        if !matches!(task.action, Action::Module(_)) {
            continue;
        }
        let guards = match &task.when {
            Some(Condition::Expr(e)) => Some(e.clone()),
            Some(Condition::Closure(_)) => None,
            None => Some(String::new()),
        };
        // Each template read, with its names, and the templated variable it is the value of.
        let mut reads = names_read(task, templates)?;
        let Some(guards) = guards else { continue };
        // What a templated variable read unguarded reads is read too.
        let mut widened = BTreeSet::new();
        let mut i = 0;
        while i < reads.len() {
            let (source, names) = (reads[i].0.clone(), reads[i].1.clone());
            for name in &names {
                if guarded(name, &source) || guarded(name, &guards) || !widened.insert(name.clone())
                {
                    continue;
                }
                for (value, inner) in templated.templates(name) {
                    reads.push((value.clone(), inner.clone(), Some(name.clone())));
                }
            }
            i += 1;
        }
        for (source, names, via) in &reads {
            for name in names {
                if known.contains(name) || guarded(name, source) || guarded(name, &guards) {
                    continue;
                }
                let read = match via {
                    Some(var) => format!("reads '{var}', whose value {source:?} reads '{name}'"),
                    None => format!("reads '{name}'"),
                };
                let candidates = known.iter().map(String::as_str);
                let hint = closest(name, candidates.filter(|c| !RUN_NAMES.contains(c)))
                    .map(|c| format!(" (did you mean '{c}'?)"))
                    .unwrap_or_default();
                return Err(PlanError::at(
                    task.pos.clone(),
                    format!(
                        "task '{}' {read}, which no host's variables, default, extra var, \
                         registered result or set_fact defines{hint}; guard it with \
                         `{name} is defined` or `{name} | default(...)` if it may be missing",
                        task.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The names each template of a task reads (its condition, its arguments, its template files),
/// with the template's source.
/// Each template a task reads, with the names it reads (and, for the caller to fill in, the
/// templated variable it is the value of).
type TemplatesRead = Vec<(String, BTreeSet<String>, Option<String>)>;

fn names_read(task: &Task, templates: &TemplateEngine) -> Result<TemplatesRead, PlanError> {
    let mut reads: TemplatesRead = Vec::new();
    if let Some(Condition::Expr(e)) = &task.when {
        let names = templates
            .referenced_names_in_expr(e)
            .map_err(|err| in_task(task, "its condition", &err))?;
        reads.push((e.clone(), names, None));
    }
    let mut strings = Vec::new();
    task.args.strings(&mut strings);
    for s in strings.into_iter().filter(|s| is_template(s)) {
        let names = templates
            .referenced_names(&s)
            .map_err(|err| in_task(task, "an argument", &err))?;
        reads.push((s, names, None));
    }
    let files = match &task.action {
        Action::Module(module) if module.renders_templates() => task
            .args
            .as_plain()
            .and_then(|a| module.template_files(&a))
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    for file in files.iter().filter(|f| !is_template(f)) {
        let (source, names) = templates
            .compile_file(file)
            .map_err(|err| in_task(task, "its template", &err))?;
        reads.push((source, names.unwrap_or_default(), None));
    }
    Ok(reads)
}

/// Marks the tasks whose output must not be shown: those marked `.secret()`, and those that read
/// a secret variable (`secret_vars`) in a template or hold a secret's text (`secrets`) in their
/// arguments. What such a task registers is secret in turn, for the tasks after it.
pub fn mark_secrets(
    tasks: &mut [Task],
    templates: &TemplateEngine,
    secret_vars: &mut BTreeSet<String>,
    secrets: &crate::secret::Redactor,
) -> Result<(), PlanError> {
    for task in tasks.iter_mut() {
        if task.secret == Secrecy::Marked {
            secret_vars.extend(task.register.clone());
            continue;
        }
        let mut read: BTreeSet<String> = BTreeSet::new();
        let mut reads = names_read(task, templates)?;
        // Its environment and `until` are rendered with the host's variables too (neither is
        // checked for unknown names: `until` reads the attempt's `result`).
        let env = task.control.environment.values().filter(|v| is_template(v));
        reads.extend(
            env.filter_map(|v| Some((v.clone(), templates.referenced_names(v).ok()?, None))),
        );
        if let Some(Condition::Expr(e)) = &task.control.until {
            reads.extend(
                templates
                    .referenced_names_in_expr(e)
                    .ok()
                    .map(|n| (e.clone(), n, None)),
            );
        }
        for (_, names, _) in reads {
            read.extend(names.intersection(secret_vars).cloned());
        }
        let mut strings = Vec::new();
        task.args.strings(&mut strings);
        strings.extend(task.control.environment.values().cloned());
        let holds_secret = strings.iter().any(|s| secrets.contains_secret(s));
        if read.is_empty() && !holds_secret {
            continue;
        }
        secret_vars.extend(task.register.clone());
        secret_vars.extend(set_fact_names(task));
        task.secret = Secrecy::Reads(read.into_iter().collect());
    }
    Ok(())
}

fn known_names(
    tasks: &[Task],
    inventory: &Inventory,
    defaults: &Map<String, Value>,
    extra_vars: &Map<String, Value>,
) -> BTreeSet<String> {
    let mut known: BTreeSet<String> = RUN_NAMES.iter().map(|s| s.to_string()).collect();
    known.extend(defaults.keys().cloned());
    known.extend(extra_vars.keys().cloned());
    for h in inventory.hosts() {
        known.extend(
            inventory
                .host_vars(&h.name, defaults, extra_vars)
                .keys()
                .cloned(),
        );
    }
    for t in tasks {
        known.extend(t.register.clone());
        known.extend(set_fact_names(t));
    }
    known
}

/// The variables a `set_fact` task sets.
fn set_fact_names(t: &Task) -> Vec<String> {
    if t.module_name() != "set_fact" {
        return Vec::new();
    }
    match &t.args {
        crate::plan::Arg::Map(m) => m.keys().cloned().collect(),
        other => match other.as_plain() {
            Some(Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        },
    }
}

/// Whether `source` uses `name` only where it may be missing: `name is defined`,
/// `name is undefined`, `name | default(...)` (also after attribute access), or `name in ...`
/// tests on `vars`.
fn guarded(name: &str, source: &str) -> bool {
    let pattern = format!(
        r"\b{}\b(\s*(\.\w+|\[[^\]]*\]))*\s*(is\s+(not\s+)?(defined|undefined|none)\b|\|\s*(default|d)\b)",
        regex::escape(name)
    );
    regex::Regex::new(&pattern)
        .map(|r| r.is_match(source))
        .unwrap_or(false)
}

fn in_task(task: &Task, what: &str, err: &TemplateError) -> PlanError {
    PlanError::at(
        task.pos.clone(),
        format!("task '{}': {what}: {err}", task.name),
    )
}

#[cfg(test)]
mod tests {
    use super::guarded;

    #[test]
    fn guards_are_recognised() {
        assert!(guarded("x", "{{ x | default('a') }}"));
        assert!(guarded("x", "{% if x is defined %}{{ x }}{% endif %}"));
        assert!(guarded("x", "{{ x.port|d(80) }}"));
        assert!(guarded("x", "x['a'] is not defined"));
        assert!(!guarded("x", "{{ x }}"));
        assert!(!guarded("x", "{{ xy | default(1) }} {{ x }}"));
    }
}
