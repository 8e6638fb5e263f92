//! Ansible's inventories — INI and YAML, with the `group_vars/` and `host_vars/` directories beside
//! them — read as they are, by turning them into this project's TOML inventory, which is then
//! checked like any other (`playbook inventory -i hosts.ini --to-toml` prints that TOML).
//!
//! Ansible's connection variables become the TOML settings (`ansible_host` → `address`,
//! `ansible_port`, `ansible_user`, `ansible_ssh_private_key_file`, `ansible_connection`,
//! `ansible_become`, `ansible_become_user`, `ansible_become_password`); where a group sets them,
//! every host of the group gets them, children overriding parents and hosts overriding both, as
//! Ansible resolves them. Other variables stay where they were written: `all`'s in `[vars]`, a
//! group's in its `vars`, a host's in its `vars`. TOML has no null: a variable set to null is left
//! out.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Map, Value};

/// What the inventory file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Ini,
    Yaml,
}

/// The format by extension; a file with another (or none, like Ansible's `hosts`) is TOML when it
/// parses as TOML, INI otherwise.
pub fn format_of(path: &Path, text: &str) -> Format {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "toml" => Format::Toml,
        "yml" | "yaml" => Format::Yaml,
        "ini" => Format::Ini,
        _ if text.parse::<toml::Table>().is_ok() => Format::Toml,
        _ => Format::Ini,
    }
}

/// An error in an Ansible inventory: the file, the line (1-based, 0 when unknown) and why.
#[derive(Debug)]
pub struct ConvertError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

#[derive(Default)]
struct Group {
    hosts: Vec<String>,
    children: Vec<String>,
    vars: Map<String, Value>,
}

#[derive(Default)]
struct Model {
    /// Hosts in the order they first appear, with their own variables.
    hosts: Vec<(String, Map<String, Value>)>,
    /// Groups in the order they first appear (`all` among them).
    groups: Vec<(String, Group)>,
}

impl Model {
    fn host(&mut self, name: &str) -> &mut Map<String, Value> {
        let i = match self.hosts.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.hosts.push((name.to_string(), Map::new()));
                self.hosts.len() - 1
            }
        };
        &mut self.hosts[i].1
    }

    fn group(&mut self, name: &str) -> &mut Group {
        let i = match self.groups.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.groups.push((name.to_string(), Group::default()));
                self.groups.len() - 1
            }
        };
        &mut self.groups[i].1
    }

    fn add_member(&mut self, group: &str, host: &str) {
        self.host(host);
        let g = self.group(group);
        if !g.hosts.iter().any(|h| h == host) {
            g.hosts.push(host.to_string());
        }
    }

    fn add_child(&mut self, group: &str, child: &str) {
        self.group(child);
        let g = self.group(group);
        if !g.children.iter().any(|c| c == child) {
            g.children.push(child.to_string());
        }
    }
}

/// Reads an Ansible inventory (`format` Ini or Yaml) and the variable directories beside it, and
/// writes it as a TOML inventory.
pub fn to_toml(path: &Path, text: &str, format: Format) -> Result<String, ConvertError> {
    let file = path.display().to_string();
    let mut model = Model::default();
    match format {
        Format::Ini => read_ini(&mut model, &file, text)?,
        Format::Yaml => read_yaml(&mut model, &file, text)?,
        Format::Toml => unreachable!("a TOML inventory is read as it is"),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let group_names: Vec<String> = model.groups.iter().map(|(n, _)| n.clone()).collect();
    let host_names: Vec<String> = model.hosts.iter().map(|(n, _)| n.clone()).collect();
    for (name, vars) in vars_dir(&dir.join("group_vars"), &group_names)? {
        model.group(&name).vars.extend(vars);
    }
    // Files beside the inventory win over what the inventory file says, as in Ansible (its
    // precedence: inventory group vars < group_vars/* < inventory host vars < host_vars/*).
    for (name, vars) in vars_dir(&dir.join("host_vars"), &host_names)? {
        model.host(&name).extend(vars);
    }
    Ok(write_toml(&model))
}

// ------------------------------------------------------------------------------------ INI

fn read_ini(model: &mut Model, file: &str, text: &str) -> Result<(), ConvertError> {
    let err = |line: usize, message: String| ConvertError {
        file: file.to_string(),
        line,
        message,
    };
    // Lines before any section are hosts of no group (Ansible's "ungrouped").
    let mut section = ("ungrouped".to_string(), "hosts");
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(head) = line.strip_prefix('[') {
            let head = head
                .split_once(']')
                .map(|(h, _)| h)
                .ok_or_else(|| err(n, format!("section header without `]`: {line}")))?;
            let (name, kind) = match head.split_once(':') {
                None => (head, "hosts"),
                Some((g, "vars")) => (g, "vars"),
                Some((g, "children")) => (g, "children"),
                Some((_, other)) => {
                    return Err(err(
                        n,
                        format!("unknown section kind `:{other}` (hosts, :vars or :children)"),
                    ))
                }
            };
            model.group(name);
            section = (name.to_string(), kind);
            continue;
        }
        let words = split_words(line).map_err(|m| err(n, m))?;
        match section.1 {
            "hosts" => {
                let (pattern, assignments) = words.split_first().expect("a line has a word");
                for host in expand_range(pattern).map_err(|m| err(n, m))? {
                    for a in assignments {
                        let (k, v) = a
                            .split_once('=')
                            .ok_or_else(|| err(n, format!("`{a}` is no key=value")))?;
                        model.host(&host).insert(k.to_string(), ini_literal(v));
                    }
                    model.add_member(&section.0, &host);
                }
            }
            "vars" => {
                // In a :vars section values are strings, as Ansible takes them.
                let (k, v) = line
                    .split_once('=')
                    .ok_or_else(|| err(n, format!("`{line}` is no key=value")))?;
                let v = unquote(v.trim());
                model
                    .group(&section.0)
                    .vars
                    .insert(k.trim().to_string(), Value::String(v));
            }
            _ => {
                let child = words[0].clone();
                model.add_child(&section.0, &child);
            }
        }
    }
    Ok(())
}

/// Words of a host line, with quotes (`k="a b"`) kept together; a `#` starting a word begins a
/// comment.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                cur.push(c);
                started = true;
            }
            (None, '#') if !started => break,
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            (None, c) => {
                cur.push(c);
                started = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unterminated quote in: {line}"));
    }
    if started {
        words.push(cur);
    }
    Ok(words)
}

fn unquote(v: &str) -> String {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}

/// A value written on a host line: a Python literal where it is one (numbers, True/False, None, a
/// quoted string), otherwise the text.
fn ini_literal(v: &str) -> Value {
    match v {
        "True" | "true" => return Value::Bool(true),
        "False" | "false" => return Value::Bool(false),
        "None" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        return i.into();
    }
    if let Ok(f) = v.parse::<f64>() {
        if let Some(n) = serde_json::Number::from_f64(f) {
            return Value::Number(n);
        }
    }
    Value::String(unquote(v))
}

/// Ansible's host ranges: `node[1:3]`, `node[01:03]` (the width kept), `[a:c]`, one range a name.
fn expand_range(pattern: &str) -> Result<Vec<String>, String> {
    let (Some(open), Some(close)) = (pattern.find('['), pattern.find(']')) else {
        return Ok(vec![pattern.to_string()]);
    };
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    let inner = &pattern[open + 1..close];
    let (from, to) = inner
        .split_once(':')
        .ok_or_else(|| format!("host range `{pattern}` needs [start:end]"))?;
    let to = to.split(':').next().unwrap_or(to);
    if let (Ok(a), Ok(b)) = (from.parse::<u64>(), to.parse::<u64>()) {
        let width = if from.starts_with('0') { from.len() } else { 0 };
        return Ok((a..=b)
            .map(|i| format!("{head}{i:0width$}{tail}"))
            .collect());
    }
    let (a, b) = (from.chars().next(), to.chars().next());
    match (a, b) {
        (Some(a), Some(b)) if from.len() == 1 && to.len() == 1 && a <= b => {
            Ok((a..=b).map(|c| format!("{head}{c}{tail}")).collect())
        }
        _ => Err(format!(
            "host range `{pattern}` is neither numbers nor letters"
        )),
    }
}

// ------------------------------------------------------------------------------------ YAML

fn read_yaml(model: &mut Model, file: &str, text: &str) -> Result<(), ConvertError> {
    // serde_yaml's own values keep the file's order, which is the hosts' and groups' order.
    let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| ConvertError {
        file: file.to_string(),
        line: e.location().map(|l| l.line()).unwrap_or(0),
        message: e.to_string(),
    })?;
    let serde_yaml::Value::Mapping(top) = doc else {
        return Ok(());
    };
    for (name, body) in &top {
        read_yaml_group(model, file, &yaml_key(file, name)?, body)?;
    }
    Ok(())
}

fn yaml_key(file: &str, k: &serde_yaml::Value) -> Result<String, ConvertError> {
    match k {
        serde_yaml::Value::String(s) => Ok(s.clone()),
        serde_yaml::Value::Number(n) => Ok(n.to_string()),
        other => Err(ConvertError {
            file: file.to_string(),
            line: 0,
            message: format!("a host or group name must be text, not {other:?}"),
        }),
    }
}

/// Variables as JSON values (a key that is no text is an error).
fn yaml_vars(file: &str, v: &serde_yaml::Value) -> Result<Map<String, Value>, ConvertError> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(ConvertError {
            file: file.to_string(),
            line: 0,
            message: "variables must be a map".into(),
        }),
        Err(e) => Err(ConvertError {
            file: file.to_string(),
            line: 0,
            message: e.to_string(),
        }),
    }
}

fn read_yaml_group(
    model: &mut Model,
    file: &str,
    name: &str,
    body: &serde_yaml::Value,
) -> Result<(), ConvertError> {
    model.group(name);
    let serde_yaml::Value::Mapping(body) = body else {
        // `group:` with nothing under it.
        return Ok(());
    };
    if let Some(serde_yaml::Value::Mapping(hosts)) = body.get("hosts") {
        for (pattern, vars) in hosts {
            let pattern = yaml_key(file, pattern)?;
            let names = expand_range(&pattern).map_err(|m| ConvertError {
                file: file.to_string(),
                line: 0,
                message: m,
            })?;
            let vars = yaml_vars(file, vars)?;
            for host in names {
                model.add_member(name, &host);
                model.host(&host).extend(vars.clone());
            }
        }
    }
    if let Some(vars) = body.get("vars") {
        let vars = yaml_vars(file, vars)?;
        model.group(name).vars.extend(vars);
    }
    if let Some(serde_yaml::Value::Mapping(children)) = body.get("children") {
        for (child, child_body) in children {
            let child = yaml_key(file, child)?;
            model.add_child(name, &child);
            read_yaml_group(model, file, &child, child_body)?;
        }
    }
    Ok(())
}

// --------------------------------------------------------------------- group_vars, host_vars

/// A group's or host's name and the variables a file gives it.
type NamedVars = (String, Map<String, Value>);

/// The variables of `dir/NAME.yml` (or .yaml, .json, no extension) and of every file in
/// `dir/NAME/`, for each name there is, merged in file-name order.
fn vars_dir(dir: &Path, names: &[String]) -> Result<Vec<NamedVars>, ConvertError> {
    let mut out = Vec::new();
    for name in names {
        let mut files = Vec::new();
        for ext in ["", ".yml", ".yaml", ".json"] {
            let f = dir.join(format!("{name}{ext}"));
            if f.is_file() {
                files.push(f);
            }
        }
        let sub = dir.join(name);
        if sub.is_dir() {
            let mut inner: Vec<_> = std::fs::read_dir(&sub)
                .map_err(|e| io_error(&sub, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(
                            p.extension().and_then(|e| e.to_str()),
                            Some("yml" | "yaml" | "json")
                        )
                })
                .collect();
            inner.sort();
            files.extend(inner);
        }
        let mut vars = Map::new();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| io_error(&f, e))?;
            let v: Value = serde_yaml::from_str(&text).map_err(|e| ConvertError {
                file: f.display().to_string(),
                line: e.location().map(|l| l.line()).unwrap_or(0),
                message: e.to_string(),
            })?;
            match v {
                Value::Object(m) => vars.extend(m),
                Value::Null => {}
                _ => {
                    return Err(ConvertError {
                        file: f.display().to_string(),
                        line: 0,
                        message: "not a map of variables".into(),
                    })
                }
            }
        }
        if !vars.is_empty() {
            out.push((name.clone(), vars));
        }
    }
    Ok(out)
}

fn io_error(path: &Path, e: std::io::Error) -> ConvertError {
    ConvertError {
        file: path.display().to_string(),
        line: 0,
        message: e.to_string(),
    }
}

// ------------------------------------------------------------------------------------ TOML

/// Ansible's connection variables and the TOML settings they become.
const CONNECTION: &[(&str, &str)] = &[
    ("ansible_host", "address"),
    ("ansible_ssh_host", "address"),
    ("ansible_port", "port"),
    ("ansible_ssh_port", "port"),
    ("ansible_user", "user"),
    ("ansible_ssh_user", "user"),
    ("ansible_ssh_private_key_file", "identity_file"),
    ("ansible_private_key_file", "identity_file"),
    ("ansible_connection", "connection"),
    ("ansible_become", "become"),
    ("ansible_become_user", "become_user"),
    ("ansible_become_password", "become_password"),
    ("ansible_become_pass", "become_password"),
];

fn setting_of(var: &str) -> Option<&'static str> {
    CONNECTION.iter().find(|(a, _)| *a == var).map(|(_, s)| *s)
}

/// How deep a group is below `all` (Ansible applies shallower groups' variables first).
fn depth(model: &Model, group: &str, seen: &mut Vec<String>) -> usize {
    if seen.iter().any(|s| s == group) {
        return 0;
    }
    seen.push(group.to_string());
    model
        .groups
        .iter()
        .filter(|(_, g)| g.children.iter().any(|c| c == group))
        .map(|(p, _)| depth(model, p, seen) + 1)
        .max()
        .unwrap_or(if group == "all" { 0 } else { 1 })
}

/// The groups a host is in, directly or through children.
fn groups_of(model: &Model, host: &str) -> Vec<String> {
    let mut found: Vec<String> = model
        .groups
        .iter()
        .filter(|(_, g)| g.hosts.iter().any(|h| h == host))
        .map(|(n, _)| n.clone())
        .collect();
    let mut i = 0;
    while i < found.len() {
        let child = found[i].clone();
        for (parent, g) in &model.groups {
            if g.children.contains(&child) && !found.contains(parent) {
                found.push(parent.clone());
            }
        }
        i += 1;
    }
    found
}

fn setting_value(setting: &str, v: &Value) -> Option<toml::Value> {
    match (setting, v) {
        ("port", Value::String(s)) => s.parse::<i64>().ok().map(toml::Value::Integer),
        ("become", Value::String(s)) => Some(toml::Value::Boolean(matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "yes" | "1"
        ))),
        ("connection", Value::String(s)) => Some(toml::Value::String(
            if s == "local" { "local" } else { "ssh" }.into(),
        )),
        (_, v) => json_to_toml(v),
    }
}

fn json_to_toml(v: &Value) -> Option<toml::Value> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(a) => toml::Value::Array(a.iter().filter_map(json_to_toml).collect()),
        Value::Object(m) => toml::Value::Table(
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), json_to_toml(v)?)))
                .collect(),
        ),
    })
}

/// A TOML key: bare where TOML allows it, quoted otherwise.
fn key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        k.to_string()
    } else {
        toml::Value::String(k.to_string()).to_string()
    }
}

/// `key = value` lines of a table, in its order.
fn lines(t: &[(String, toml::Value)]) -> String {
    let mut out = String::new();
    for (k, v) in t {
        let _ = writeln!(out, "{} = {v}", key(k));
    }
    out
}

fn vars_lines(m: &Map<String, Value>) -> Vec<(String, toml::Value)> {
    m.iter()
        .filter(|(k, _)| setting_of(k).is_none())
        .filter_map(|(k, v)| Some((k.clone(), json_to_toml(v)?)))
        .collect()
}

/// The TOML inventory, hosts and groups in the order the Ansible inventory has them (so
/// `groups['x']` lists hosts as Ansible does).
fn write_toml(model: &Model) -> String {
    let all = model
        .groups
        .iter()
        .find(|(n, _)| n == "all")
        .map(|(_, g)| g);
    let mut out =
        String::from("# Converted from an Ansible inventory by `playbook inventory --to-toml`.\n");
    if let Some(g) = all {
        let vars = vars_lines(&g.vars);
        if !vars.is_empty() {
            let _ = write!(out, "\n[vars]\n{}", lines(&vars));
        }
    }
    for (name, own) in &model.hosts {
        // Connection settings: all, then groups from the shallowest, then the host's own.
        let mut groups = groups_of(model, name);
        groups.retain(|g| g != "all");
        groups.sort_by_key(|g| (depth(model, g, &mut Vec::new()), g.clone()));
        let mut layers: Vec<&Map<String, Value>> = all.map(|g| &g.vars).into_iter().collect();
        for g in &groups {
            if let Some((_, grp)) = model.groups.iter().find(|(n, _)| n == g) {
                layers.push(&grp.vars);
            }
        }
        layers.push(own);
        let mut settings: Vec<(String, toml::Value)> = Vec::new();
        for layer in layers {
            for (k, v) in layer {
                let (Some(setting), Some(value)) = (
                    setting_of(k),
                    setting_of(k).and_then(|s| setting_value(s, v)),
                ) else {
                    continue;
                };
                settings.retain(|(s, _)| s != setting);
                settings.push((setting.to_string(), value));
            }
        }
        let _ = write!(out, "\n[hosts.{}]\n{}", key(name), lines(&settings));
        let vars = vars_lines(own);
        if !vars.is_empty() {
            let _ = write!(out, "[hosts.{}.vars]\n{}", key(name), lines(&vars));
        }
    }
    for (name, g) in &model.groups {
        if name == "all" || name == "ungrouped" {
            continue;
        }
        let list = |v: &[String]| {
            toml::Value::Array(
                v.iter()
                    .filter(|c| *c != "all" && *c != "ungrouped")
                    .cloned()
                    .map(toml::Value::String)
                    .collect(),
            )
        };
        let mut t = vec![("hosts".to_string(), list(&g.hosts))];
        if !g.children.is_empty() {
            t.push(("children".to_string(), list(&g.children)));
        }
        let _ = write!(out, "\n[groups.{}]\n{}", key(name), lines(&t));
        let vars = vars_lines(&g.vars);
        if !vars.is_empty() {
            let _ = write!(out, "[groups.{}.vars]\n{}", key(name), lines(&vars));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Inventory;
    use serde_json::json;

    /// Writes `files` (relative path, text) into a directory and loads `main` from it.
    fn load(files: &[(&str, &str)], main: &str) -> Inventory {
        let dir = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        Inventory::load(&dir.path().join(main)).unwrap()
    }

    const INI: &str = "\
# kubespray's shape
[all]
node1 ansible_host=10.0.0.11 ip=10.3.0.1 etcd_member_name=etcd1 weight=3 on=True none=None
node2 ansible_host=10.0.0.12 label=\"a b\"  # a comment
worker[01:02] ansible_host=10.0.1.1 ansible_port=2222

[kube_control_plane]
node2
node1

[etcd:children]
kube_control_plane

[kube_node]
worker[01:02]

[k8s_cluster:children]
kube_control_plane
kube_node

[all:vars]
ansible_user=ops
ansible_become=true
domain=example.com

[kube_node:vars]
ansible_user=deploy
count=3
";

    #[test]
    fn an_ini_inventory_with_ranges_children_and_vars() {
        let inv = load(
            &[
                ("inventory.ini", INI),
                (
                    "group_vars/k8s_cluster/k8s.yml",
                    "kube_version: v1.31.2\nupstream: null\n",
                ),
                ("group_vars/all.yml", "ntp: [a, b]\n"),
                ("host_vars/node2.yml", "ip: 10.3.0.9\nlabel: from-file\n"),
            ],
            "inventory.ini",
        );
        let names: Vec<&str> = inv.hosts().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["node1", "node2", "worker01", "worker02"]);
        let groups: std::collections::BTreeMap<_, _> = inv.groups().into_iter().collect();
        // Members come in the inventory's host order (Ansible: the order the group lists them).
        assert_eq!(groups["kube_control_plane"], ["node1", "node2"]);
        assert_eq!(groups["etcd"], ["node1", "node2"]);
        assert_eq!(groups["k8s_cluster"].len(), 4);

        let n1 = inv.host("node1").unwrap();
        assert_eq!(
            (n1.address.as_str(), n1.user.as_deref()),
            ("10.0.0.11", Some("ops"))
        );
        assert!(n1.become_);
        let w = inv.host("worker02").unwrap();
        assert_eq!(
            (w.port, w.user.as_deref()),
            (2222, Some("deploy")),
            "the child group wins"
        );

        let vars = inv.host_vars("node1", &Map::new(), &Map::new());
        assert_eq!(vars["ip"], json!("10.3.0.1"));
        assert_eq!(vars["weight"], json!(3), "a Python literal on a host line");
        assert_eq!(vars["on"], json!(true));
        assert!(!vars.contains_key("none"), "TOML has no null");
        assert_eq!(vars["domain"], json!("example.com"));
        assert_eq!(vars["ntp"], json!(["a", "b"]));
        assert_eq!(vars["kube_version"], json!("v1.31.2"));
        let v2 = inv.host_vars("node2", &Map::new(), &Map::new());
        assert_eq!(v2["ip"], json!("10.3.0.9"), "host_vars/");
        assert_eq!(
            v2["label"],
            json!("from-file"),
            "host_vars/ wins over the inline value"
        );
        let vw = inv.host_vars("worker01", &Map::new(), &Map::new());
        assert_eq!(
            vw["count"],
            json!("3"),
            ":vars values are strings, as in Ansible"
        );
        assert!(!vw.contains_key("ansible_user") || vw["ansible_user"] == json!("deploy"));
    }

    #[test]
    fn a_yaml_inventory() {
        let yaml = "\
all:
  vars:
    ansible_user: ops
  children:
    masters:
      hosts:
        m[1:2]:
          ansible_host: 10.0.0.1
        m3:
      vars:
        role: master
    workers:
      hosts:
        w1: {ansible_host: 10.0.0.21, ansible_connection: local}
";
        let inv = load(&[("hosts.yml", yaml)], "hosts.yml");
        let names: Vec<&str> = inv.hosts().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["m1", "m2", "m3", "w1"]);
        assert_eq!(inv.host("m3").unwrap().address, "m3");
        assert_eq!(inv.host("w1").unwrap().connection.as_str(), "local");
        assert_eq!(inv.host("m1").unwrap().user.as_deref(), Some("ops"));
        let vars = inv.host_vars("m2", &Map::new(), &Map::new());
        assert_eq!(vars["role"], json!("master"));
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts.ini");
        std::fs::write(&p, "[web]\nweb1\n[web:bogus]\n").unwrap();
        let e = Inventory::load(&p).unwrap_err();
        assert_eq!(e.line(), Some(3), "{e}");
        assert!(
            e.to_string().contains("unknown section kind `:bogus`"),
            "{e}"
        );
        std::fs::write(&p, "[web]\nweb1 label=\"open\n").unwrap();
        let e = Inventory::load(&p).unwrap_err();
        assert!(e.to_string().contains("hosts.ini:2:"), "{e}");
        assert_eq!(expand_range("n[a:c]").unwrap(), ["na", "nb", "nc"]);
        assert!(expand_range("n[1]").is_err());
    }

    #[test]
    fn the_format_is_told_by_extension_or_content() {
        let p = Path::new("hosts");
        assert_eq!(
            format_of(p, "[web]\nweb1 ansible_host=1.2.3.4\n"),
            Format::Ini
        );
        assert_eq!(
            format_of(p, "[hosts.web1]\naddress = \"1.2.3.4\"\n"),
            Format::Toml
        );
        assert_eq!(format_of(Path::new("x.yaml"), ""), Format::Yaml);
    }
}
