//! `file_template`: renders a template from the playbook directory and writes it to the target,
//! atomically, only when its content or attributes differ.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use engine::diff::FileDiff;
use engine::host::quote;
use engine::module::{Applied, Module, ModuleContext, ModuleError, Probe};
use engine::remote::{self, FileKind, FileStat, WriteOptions};

pub struct FileTemplate;

/// Registers `file_template`.

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The template, relative to the playbook's directory (e.g. "templates/haproxy.cfg.j2").
    pub src: String,
    /// The path of the file on the target (a relative path is relative to the login directory).
    pub dest: String,
    /// Permissions, octal ("0644") or symbolic ("u=rw,g=r,o="). Without it an existing file keeps
    /// its mode and a new file gets the default (0666 minus the umask).
    #[serde(default)]
    pub mode: Option<String>,
    /// Owner (user name or numeric id). Without it an existing file keeps its owner.
    #[serde(default)]
    pub owner: Option<String>,
    /// Group (name or numeric id). Without it an existing file keeps its group.
    #[serde(default)]
    pub group: Option<String>,
    /// Keep a copy of the old file as `DEST.<timestamp>~` before replacing it.
    #[serde(default)]
    pub backup: bool,
    /// A command run on the rendered temporary file before it replaces `dest`; `%s` stands for
    /// that file (e.g. "haproxy -c -f %s"). When it fails, `dest` is left as it was.
    #[serde(default)]
    pub validate: Option<String>,
    /// Replace `dest` when its content differs (default). With false, an existing file's content
    /// is left alone (its mode and owner are still set).
    #[serde(default = "yes")]
    pub force: bool,
}

fn yes() -> bool {
    true
}

/// What apply does.
#[derive(Debug)]
pub enum Plan {
    /// Write the rendered content (with mode, owner, validate and backup).
    Write { content: Vec<u8>, sha256: String },
    /// The content is right; only set these attributes on `dest`.
    Attributes {
        mode: Option<String>,
        owner: Option<String>,
        group: Option<String>,
    },
}

pub const DOC: &str = r#"# file_template

Renders a template (Jinja2 syntax, as in Ansible) with the host's variables and writes it to the
target when the result differs from what is there.

- The template is read from the playbook's directory (`src` is relative to it; paths outside it
  are refused). Undefined variables are errors that name the template file, line and variable.
- The rendered text is compared with the file on the target by sha256, computed on the target: the
  old file is only downloaded when `--diff` is asked for.
- When the content is equal but `mode`, `owner` or `group` differ, only those are fixed.
- The new file is written atomically: a temporary file next to `dest` gets the content, mode and
  owner, is checked with `validate` (when given), and is then renamed over `dest`. When validation
  fails, `dest` is left untouched.
- A symbolic link at `dest` is replaced by a regular file (as Ansible's default `follow: false`).

| argument   | required | default | meaning |
|------------|----------|---------|---------|
| `src`      | yes      |         | template path, relative to the playbook directory |
| `dest`     | yes      |         | path on the target |
| `mode`     | no       | keep / umask | `"0644"` or `"u=rw,g=r,o="` |
| `owner`    | no       | keep    | user name or id |
| `group`    | no       | keep    | group name or id |
| `backup`   | no       | false   | keep the old file as `DEST.<timestamp>~` |
| `validate` | no       |         | command run on the new file before it replaces `dest`; `%s` is the file |
| `force`    | no       | true    | replace differing content; false only creates missing files |

Result (for `register`): `dest`, `sha256`, `size`, `mode`, `owner`, `group`, and `backup_file`
when a backup was made.

```rhai
file_template(#{ src: "templates/haproxy.cfg.j2", dest: "/etc/haproxy/haproxy.cfg",
                 validate: "haproxy -c -f %s" })
    .notify("restart haproxy")
```
"#;

#[async_trait]
impl Module for FileTemplate {
    const NAME: &'static str = "file_template";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = Plan;

    fn check_args(args: &Args) -> Result<(), String> {
        if args.src.trim().is_empty() {
            return Err("src must not be empty".into());
        }
        if args.dest.ends_with('/') {
            return Err(format!(
                "dest {:?} must name a file, not a directory",
                args.dest
            ));
        }
        if let Some(m) = &args.mode {
            remote::normalize_mode(m)?;
            // Symbolic modes are computed here to compare; make sure they can be.
            apply_mode(m, 0o644)?;
        }
        if let Some(v) = &args.validate {
            if !v.contains("%s") {
                return Err(format!(
                    "validate {v:?} must contain %s (the rendered file to check)"
                ));
            }
        }
        for (name, value) in [("owner", &args.owner), ("group", &args.group)] {
            if let Some(v) = value {
                if v.trim().is_empty() {
                    return Err(format!("{name} must not be empty"));
                }
            }
        }
        Ok(())
    }

    async fn probe(&self, args: &Args, cx: &ModuleContext<'_>) -> Result<Probe<Plan>, ModuleError> {
        let rendered = cx.templates.render_file(&args.src)?.into_bytes();
        let sha = hex::encode(Sha256::digest(&rendered));
        let (st, ids) = stat_with_ids(cx, &args.dest).await?;
        match st.kind {
            FileKind::Directory => {
                return Err(ModuleError::Failed(format!(
                    "{} is a directory; dest must name the file to write",
                    args.dest
                )))
            }
            FileKind::Other => {
                return Err(ModuleError::Failed(format!(
                    "{} exists and is not a regular file",
                    args.dest
                )))
            }
            _ => {}
        }

        let attrs = attribute_changes(args, &st, ids.as_ref())?;
        let content_differs = match st.kind {
            FileKind::File => st.sha256.as_deref() != Some(sha.as_str()),
            _ => true,
        };

        let write = content_differs && (args.force || st.kind == FileKind::Absent);
        if write {
            let mut summary = match st.kind {
                FileKind::Absent => format!("create {}", args.dest),
                FileKind::Link => format!(
                    "replace symbolic link {} -> {} with a file",
                    args.dest,
                    st.link_target.as_deref().unwrap_or("?")
                ),
                _ => format!("update {}", args.dest),
            };
            if st.kind == FileKind::File && !attrs.is_empty() {
                summary += &format!(" ({})", describe(&attrs));
            }
            let diff = if cx.want_diff {
                let before = match st.kind {
                    FileKind::File => remote::read_file(cx.host, &args.dest).await?,
                    _ => None,
                };
                Some(FileDiff::new(
                    &args.dest,
                    before.as_deref(),
                    Some(&rendered),
                ))
            } else {
                None
            };
            return Ok(Probe::change(
                Plan::Write {
                    content: rendered,
                    sha256: sha,
                },
                summary,
                diff,
            ));
        }
        if !attrs.is_empty() {
            let plan = Plan::Attributes {
                mode: attrs.iter().find(|a| a.0 == "mode").map(|a| a.2.clone()),
                owner: attrs.iter().find(|a| a.0 == "owner").map(|a| a.2.clone()),
                group: attrs.iter().find(|a| a.0 == "group").map(|a| a.2.clone()),
            };
            let summary = format!("{}: {}", args.dest, describe(&attrs));
            return Ok(Probe::change(plan, summary, None));
        }
        Ok(Probe::Unchanged(json!({
            "dest": args.dest,
            "sha256": st.sha256,
            "mode": st.mode,
            "owner": st.owner,
            "group": st.group,
        })))
    }

    async fn apply(
        &self,
        args: &Args,
        plan: Plan,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        match plan {
            Plan::Write { content, sha256 } => {
                let opts = WriteOptions {
                    mode: args.mode.as_deref(),
                    owner: args.owner.as_deref(),
                    group: args.group.as_deref(),
                    validate: args.validate.as_deref(),
                    backup: args.backup,
                };
                let backup = remote::write_file(cx.host, &args.dest, &content, &opts).await?;
                let mut result = json!({
                    "dest": args.dest,
                    "sha256": sha256,
                    "size": content.len(),
                    "mode": args.mode,
                    "owner": args.owner,
                    "group": args.group,
                });
                if let Some(b) = backup {
                    result["backup_file"] = Value::String(b);
                }
                Ok(Applied::changed(result))
            }
            Plan::Attributes { mode, owner, group } => {
                let p = quote(&args.dest)?;
                let mut script = String::from("set -e\n");
                if let Some(o) = &owner {
                    script += &format!("chown -h {} {p}\n", quote(o)?);
                }
                if let Some(g) = &group {
                    script += &format!("chgrp -h {} {p}\n", quote(g)?);
                }
                // chmod last: chown may clear setuid/setgid bits.
                if let Some(m) = &mode {
                    script += &format!("chmod {} {p}\n", quote(m)?);
                }
                let out = cx.host.run(&script).await?;
                if !out.success() {
                    return Err(ModuleError::Failed(format!(
                        "cannot set attributes of {}: {}",
                        args.dest,
                        out.stderr_text().trim()
                    )));
                }
                Ok(Applied::changed(json!({
                    "dest": args.dest,
                    "mode": mode.or(args.mode.clone()),
                    "owner": owner.or(args.owner.clone()),
                    "group": group.or(args.group.clone()),
                })))
            }
        }
    }
}

/// Numeric owner and group ids of an existing path.
struct Ids {
    uid: String,
    gid: String,
}

/// `remote::stat` plus numeric ids (so owner "0" compares equal to "root"), in one round trip.
async fn stat_with_ids(
    cx: &ModuleContext<'_>,
    path: &str,
) -> Result<(FileStat, Option<Ids>), ModuleError> {
    let script = format!(
        "p={}\n{}\nif [ -e \"$p\" ] || [ -L \"$p\" ]; then stat -c '%u %g' -- \"$p\"; fi",
        quote(path)?,
        remote::STAT_FRAGMENT
    );
    let out = cx.host.run(&script).await?;
    if !out.success() {
        return Err(ModuleError::Failed(format!(
            "cannot inspect {path}: {}",
            out.stderr_text().trim()
        )));
    }
    let text = out.stdout_text();
    let st = remote::parse_stat(&text).map_err(ModuleError::Failed)?;
    let ids = if st.exists() {
        text.lines().nth(3).and_then(|l| {
            let mut it = l.split_whitespace();
            Some(Ids {
                uid: it.next()?.to_string(),
                gid: it.next()?.to_string(),
            })
        })
    } else {
        None
    };
    Ok((st, ids))
}

/// (attribute, current, desired) for each attribute of an existing regular file that differs.
fn attribute_changes(
    args: &Args,
    st: &FileStat,
    ids: Option<&Ids>,
) -> Result<Vec<(&'static str, String, String)>, ModuleError> {
    let mut changes = Vec::new();
    if st.kind != FileKind::File {
        return Ok(changes);
    }
    if let Some(m) = &args.mode {
        let current = u32::from_str_radix(&st.mode, 8).map_err(|_| {
            ModuleError::Failed(format!("unexpected mode {:?} of {}", st.mode, args.dest))
        })?;
        let want = apply_mode(m, current).map_err(ModuleError::Args)?;
        if want != current {
            changes.push(("mode", format!("{current:o}"), format!("{want:o}")));
        }
    }
    let same = |want: &str, name: &str, id: Option<&str>| want == name || Some(want) == id;
    if let Some(o) = &args.owner {
        if !same(o, &st.owner, ids.map(|i| i.uid.as_str())) {
            changes.push(("owner", st.owner.clone(), o.clone()));
        }
    }
    if let Some(g) = &args.group {
        if !same(g, &st.group, ids.map(|i| i.gid.as_str())) {
            changes.push(("group", st.group.clone(), g.clone()));
        }
    }
    Ok(changes)
}

fn describe(changes: &[(&'static str, String, String)]) -> String {
    changes
        .iter()
        .map(|(what, from, to)| format!("{what} {from} -> {to}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The permission bits `chmod MODE` gives a regular file whose bits are `current`. Octal modes
/// are taken as they are; symbolic clauses (`u=rw,g+r,o-wx,a+X`) are applied in order (a clause
/// without who applies to all).
fn apply_mode(mode: &str, current: u32) -> Result<u32, String> {
    let m = remote::normalize_mode(mode)?;
    if m.chars().all(|c| c.is_ascii_digit()) {
        return u32::from_str_radix(&m, 8).map_err(|e| e.to_string());
    }
    let mut bits = current & 0o7777;
    for clause in m.split(',') {
        let op_at = clause
            .find(['+', '-', '='])
            .ok_or_else(|| format!("mode clause {clause:?} has no operator"))?;
        let (who, rest) = clause.split_at(op_at);
        let who = if who.is_empty() { "a" } else { who };
        let mut who_mask = 0u32;
        for w in who.chars() {
            who_mask |= match w {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                _ => return Err(format!("mode clause {clause:?}: unknown who {w:?}")),
            };
        }
        let op = rest.chars().next().unwrap_or('=');
        let mut perm = 0u32;
        for p in rest[1..].chars() {
            perm |= match p {
                'r' => 0o444,
                'w' => 0o222,
                'x' => 0o111,
                'X' if bits & 0o111 != 0 => 0o111,
                'X' => 0,
                's' => 0o6000,
                't' => 0o1000,
                _ => {
                    return Err(format!(
                        "mode clause {clause:?}: permission {p:?} is not supported"
                    ))
                }
            };
        }
        let perm = perm & who_mask;
        bits = match op {
            '+' => bits | perm,
            '-' => bits & !perm,
            _ => (bits & !who_mask) | perm,
        };
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::host::Host;
    use engine::module::{DynModule, Outcome, Status, Templates};
    use engine::template::TemplateEngine;
    use engine::transport::LocalTransport;
    use serde_json::Map;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    /// Templates backed by the engine's TemplateEngine, with fixed variables.
    struct TestTemplates {
        engine: TemplateEngine,
        vars: Value,
    }

    impl Templates for TestTemplates {
        fn render_file(&self, path: &str) -> Result<String, ModuleError> {
            Ok(self.engine.render_file(path, &self.vars)?)
        }
        fn eval(&self, expr: &str) -> Result<Value, ModuleError> {
            Ok(self.engine.eval(expr, "test", &self.vars)?)
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        host: Host,
        templates: TestTemplates,
        vars: Map<String, Value>,
        facts: Mutex<Map<String, Value>>,
    }

    impl Fixture {
        fn new(template: &str, vars: Value) -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("templates")).unwrap();
            std::fs::create_dir(dir.path().join("etc")).unwrap();
            std::fs::write(dir.path().join("templates/app.conf.j2"), template).unwrap();
            let templates = TestTemplates {
                engine: TemplateEngine::new(dir.path()),
                vars: vars.clone(),
            };
            Fixture {
                host: Host::new("local", Arc::new(LocalTransport)),
                templates,
                vars: vars.as_object().cloned().unwrap_or_default(),
                facts: Mutex::new(Map::new()),
                dir,
            }
        }

        fn dest(&self) -> String {
            self.dir
                .path()
                .join("etc/app.conf")
                .to_str()
                .unwrap()
                .to_string()
        }

        fn cx(&self, check: bool, want_diff: bool) -> ModuleContext<'_> {
            ModuleContext {
                host: &self.host,
                check,
                want_diff,
                base_dir: self.dir.path(),
                templates: &self.templates,
                vars: &self.vars,
                facts: &self.facts,
                system: &crate::testutil::NoSystemFacts,
            }
        }

        async fn run(&self, args: Value, check: bool) -> Result<Outcome, ModuleError> {
            FileTemplate.run(args, &self.cx(check, true)).await
        }
    }

    fn mode_of(p: &str) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn files_in(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[tokio::test]
    async fn renders_writes_with_mode_then_is_unchanged() {
        let f = Fixture::new(
            "listen {{ vip }}:{{ port }}\n{% for b in backends %}\nserver {{ b }}\n{% endfor %}\n",
            json!({"vip": "10.0.0.10", "port": 6443, "backends": ["m1", "m2"]}),
        );
        let dest = f.dest();
        let args = json!({"src": "templates/app.conf.j2", "dest": dest, "mode": "0640"});
        let out = f.run(args.clone(), false).await.unwrap();
        assert_eq!(out.status, Status::Changed);
        assert_eq!(
            out.summary.as_deref(),
            Some(format!("create {dest}").as_str())
        );
        let want = "listen 10.0.0.10:6443\nserver m1\nserver m2\n";
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), want);
        assert_eq!(mode_of(&dest), 0o640);
        let diff = out.diff.unwrap();
        assert_eq!((diff.before, diff.after.as_deref()), (None, Some(want)));
        assert_eq!(
            files_in(&f.dir.path().join("etc")),
            1,
            "no temporary file left"
        );

        let again = f.run(args.clone(), false).await.unwrap();
        assert_eq!(again.status, Status::Ok);
        assert_eq!(
            again.result["sha256"],
            json!(hex::encode(Sha256::digest(want)))
        );
        // The same check in check mode agrees.
        assert_eq!(f.run(args, true).await.unwrap().status, Status::Ok);
    }

    #[tokio::test]
    async fn check_mode_writes_nothing_but_reports_the_diff() {
        let f = Fixture::new("new {{ v }}\n", json!({"v": 2}));
        let dest = f.dest();
        let args = json!({"src": "templates/app.conf.j2", "dest": dest});
        let out = f.run(args.clone(), true).await.unwrap();
        assert_eq!(out.status, Status::Changed);
        assert!(!Path::new(&dest).exists());

        std::fs::write(&dest, "old\n").unwrap();
        let out = f.run(args, true).await.unwrap();
        assert_eq!(out.status, Status::Changed);
        assert_eq!(
            out.summary.as_deref(),
            Some(format!("update {dest}").as_str())
        );
        let unified = out.diff.unwrap().unified();
        assert!(
            unified.contains("-old\n") && unified.contains("+new 2\n"),
            "{unified}"
        );
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old\n");
    }

    #[tokio::test]
    async fn only_attributes_are_fixed_when_content_is_equal() {
        let f = Fixture::new("same\n", json!({}));
        let dest = f.dest();
        std::fs::write(&dest, "same\n").unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&dest).unwrap());
        let args = json!({"src": "templates/app.conf.j2", "dest": dest, "mode": "u=rw,go="});
        let out = f.run(args.clone(), false).await.unwrap();
        assert_eq!(out.status, Status::Changed);
        assert_eq!(
            out.summary.as_deref(),
            Some(format!("{dest}: mode 644 -> 600").as_str())
        );
        assert!(out.diff.is_none());
        assert_eq!(mode_of(&dest), 0o600);
        let ino2 = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&dest).unwrap());
        assert_eq!(ino, ino2, "the file was not rewritten");
        assert_eq!(f.run(args, false).await.unwrap().status, Status::Ok);

        // The current owner, by name or by id, is no change.
        let meta = std::fs::metadata(&dest).unwrap();
        let uid = std::os::unix::fs::MetadataExt::uid(&meta).to_string();
        let args = json!({"src": "templates/app.conf.j2", "dest": dest, "owner": uid});
        assert_eq!(f.run(args, false).await.unwrap().status, Status::Ok);
    }

    #[tokio::test]
    async fn failed_validation_leaves_dest_untouched() {
        let f = Fixture::new("bad config\n", json!({}));
        let dest = f.dest();
        std::fs::write(&dest, "good config\n").unwrap();
        let args = json!({
            "src": "templates/app.conf.j2", "dest": dest,
            "validate": "grep -q '^good' %s", "backup": true,
        });
        let err = f.run(args, false).await.unwrap_err();
        assert!(err.to_string().contains("validation failed"), "{err}");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "good config\n");
        assert_eq!(files_in(&f.dir.path().join("etc")), 1);
    }

    #[tokio::test]
    async fn passing_validation_and_backup() {
        let f = Fixture::new("good {{ n }}\n", json!({"n": 2}));
        let dest = f.dest();
        std::fs::write(&dest, "good 1\n").unwrap();
        let args = json!({
            "src": "templates/app.conf.j2", "dest": dest,
            "validate": "grep -q '^good' %s", "backup": true,
        });
        let out = f.run(args, false).await.unwrap();
        assert_eq!(out.status, Status::Changed);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "good 2\n");
        let backup = out.result["backup_file"].as_str().unwrap().to_string();
        assert_eq!(std::fs::read_to_string(backup).unwrap(), "good 1\n");
    }

    #[tokio::test]
    async fn force_false_keeps_existing_content() {
        let f = Fixture::new("new\n", json!({}));
        let dest = f.dest();
        std::fs::write(&dest, "mine\n").unwrap();
        let args = json!({"src": "templates/app.conf.j2", "dest": dest, "force": false});
        assert_eq!(f.run(args, false).await.unwrap().status, Status::Ok);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "mine\n");
    }

    #[tokio::test]
    async fn undefined_variable_names_template_file_and_line() {
        let f = Fixture::new("global\n  maxconn 100\n  bind {{ vip }}:6443\n", json!({}));
        let args = json!({"src": "templates/app.conf.j2", "dest": f.dest()});
        let err = f.run(args, false).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "templates/app.conf.j2:3: undefined variable 'vip'"
        );
        assert!(!Path::new(&f.dest()).exists());
    }

    #[tokio::test]
    async fn symbolic_link_is_replaced_and_directory_refused() {
        let f = Fixture::new("x\n", json!({}));
        let dest = f.dest();
        let other = f.dir.path().join("other");
        std::fs::write(&other, "x\n").unwrap();
        std::os::unix::fs::symlink(&other, &dest).unwrap();
        let args = json!({"src": "templates/app.conf.j2", "dest": dest});
        let out = f.run(args.clone(), false).await.unwrap();
        assert!(out.summary.unwrap().starts_with("replace symbolic link"));
        assert!(!std::fs::symlink_metadata(&dest)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(f.run(args, false).await.unwrap().status, Status::Ok);

        let dir = f.dir.path().join("etc").to_str().unwrap().to_string();
        let args = json!({"src": "templates/app.conf.j2", "dest": dir});
        let err = f.run(args, false).await.unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn args_are_checked() {
        let m = FileTemplate;
        assert!(m
            .validate(&json!({"src": "t.j2", "dest": "/etc/x"}))
            .is_ok());
        let e = m
            .validate(&json!({"src": "t.j2", "dest": "/etc/x", "mod": "0644"}))
            .unwrap_err();
        assert!(
            e.contains("unknown field `mod`") && e.contains("mode"),
            "{e}"
        );
        let e = m
            .validate(&json!({"src": "t.j2", "dest": "/x", "validate": "check"}))
            .unwrap_err();
        assert!(e.contains("%s"), "{e}");
        let e = m
            .validate(&json!({"src": "t.j2", "dest": "/x", "mode": "0999"}))
            .unwrap_err();
        assert!(e.contains("0999"), "{e}");
        assert!(DynModule::fields(&m).contains(&"validate"));
    }

    #[test]
    fn symbolic_modes_are_computed() {
        assert_eq!(apply_mode("0644", 0o600).unwrap(), 0o644);
        assert_eq!(apply_mode("u=rw,go=", 0o644).unwrap(), 0o600);
        assert_eq!(apply_mode("u=rw,g=r,o=r", 0o600).unwrap(), 0o644);
        assert_eq!(apply_mode("g+w,o-r", 0o644).unwrap(), 0o660);
        assert_eq!(apply_mode("a+X", 0o644).unwrap(), 0o644);
        assert_eq!(apply_mode("a+X", 0o744).unwrap(), 0o755);
        assert_eq!(apply_mode("+x", 0o644).unwrap(), 0o755);
        assert_eq!(apply_mode("u+s", 0o755).unwrap(), 0o4755);
    }
}
