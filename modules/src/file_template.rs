//! `file_template`: renders a template from the playbook directory and writes it to the target,
//! atomically, only when its content or attributes differ.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use engine::host::Script;
use engine::module::{Applied, Module, ModuleContext, ModuleError, Probe};
use engine::remote::FileKind;
use engine::transport::ExecOutput;

use crate::shared::content;
use crate::shared::inspect::{sha256, Current, Inspect, Read, DIFF_LIMIT};
use crate::shared::perms::{resolve_mode, Wanted};

pub struct FileTemplate;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The template, relative to the playbook's directory (e.g. "templates/haproxy.cfg.j2").
    pub src: String,
    /// The path of the file on the target (a relative path is relative to the login directory).
    pub dest: String,
    /// Permissions, octal ("0644") or symbolic ("u=rw,g=r,o="). Without it an existing file keeps
    /// its mode and a new file gets the default (0666 minus the umask).
    #[serde(default, deserialize_with = "crate::shared::perms::mode_arg")]
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
    /// Accepted for Ansible compatibility and ignored: there is no vault to decrypt from; the
    /// content is written as given.
    #[serde(default)]
    pub decrypt: Option<bool>,
    /// Accepted for Ansible compatibility and ignored: every write here is atomic (a temporary
    /// file beside the destination, renamed over it).
    #[serde(default)]
    pub unsafe_writes: Option<bool>,
}

fn yes() -> bool {
    true
}

/// What apply does: the file change, and the result the task registers.
pub struct Plan {
    file: content::Plan,
    result: Value,
}

impl Args {
    fn wanted(&self) -> Wanted<'_> {
        Wanted::new(&self.mode, &self.owner, &self.group)
    }
    /// What the probe reads of `dest`: with --diff also its old content, unless it is already
    /// `rendered`.
    fn inspect(&self, rendered: &[u8], cx: &ModuleContext<'_>) -> Inspect<'_> {
        Inspect {
            path: &self.dest,
            follow: false,
            into_dir: None,
            read: cx.want_diff.then(|| Read {
                limit: Some(DIFF_LIMIT),
                unless_sha256: Some(sha256(rendered)),
            }),
        }
    }

    /// The result for `register`: the file's checksum and size (also as `sha256`, this module's
    /// name for it), and the mode, owner and group it has afterwards as far as they are known.
    fn result(&self, file: Value, cur: &Current) -> Result<Value, ModuleError> {
        let is_file = cur.stat.kind == FileKind::File;
        let now = |v: &str| is_file.then(|| v.to_string());
        let mode = match &self.mode {
            Some(m) if is_file => Some(format!(
                "{:o}",
                resolve_mode(m, cur.mode(), false, cur.umask).map_err(ModuleError::Args)?
            )),
            Some(m) => Some(m.clone()),
            None => now(&cur.stat.mode),
        };
        let mut result = file;
        result["sha256"] = result["checksum"].clone();
        result["mode"] = json!(mode);
        result["owner"] = json!(self.owner.clone().or_else(|| now(&cur.stat.owner)));
        result["group"] = json!(self.group.clone().or_else(|| now(&cur.stat.group)));
        Ok(result)
    }
}

pub const DOC: &str = r#"# file_template

Renders a template (Jinja2 syntax, as in Ansible) with the host's variables and writes it to the
target when the result differs from what is there.

- The template is read from the playbook's directory (`src` is relative to it; paths outside it
  are refused). Undefined variables are errors that name the template file, line and variable.
- The rendered text is compared with the file on the target by sha256, computed on the target: the
  old file is only downloaded when `--diff` is asked for (and shown only up to 256 KiB).
- When the content is equal but `mode`, `owner` or `group` differ, only those are fixed.
- The new file is written atomically: a temporary file next to `dest` gets the content, mode and
  owner, is checked with `validate` (when given), and is then renamed over `dest`. When validation
  fails, `dest` is left untouched.
- A symbolic link at `dest` is replaced by a regular file (as Ansible's default `follow: false`).

| argument   | required | default | meaning |
|------------|----------|---------|---------|
| `src`      | yes      |         | template path, relative to the playbook directory |
| `dest`     | yes      |         | path on the target |
| `mode`     | no       | keep / umask | `"0644"` or `"u=rw,g=r,o="`; a number is the mode's value (YAML's `0644` is 420) |
| `owner`    | no       | keep    | user name or id |
| `group`    | no       | keep    | group name or id |
| `backup`   | no       | false   | keep the old file as `DEST.<timestamp>~` |
| `validate` | no       |         | command run on the new file before it replaces `dest`; `%s` is the file |
| `force`    | no       | true    | replace differing content; false only creates missing files |
| `decrypt`, `unsafe_writes` | no | | accepted and ignored (no vault yet; writes are always atomic) |

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
    const RENDERS_TEMPLATES: bool = true;

    fn template_files(args: &Value) -> Option<Vec<String>> {
        Some(vec![args.get("src")?.as_str()?.to_string()])
    }
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = Plan;

    fn check_args(args: &Args) -> Result<(), String> {
        if args.src.trim().is_empty() {
            return Err("src must not be empty".into());
        }
        if args.dest.is_empty() || args.dest.ends_with('/') {
            return Err(format!(
                "dest {:?} must name a file, not a directory",
                args.dest
            ));
        }
        args.wanted().check()?;
        for (name, value) in [("owner", &args.owner), ("group", &args.group)] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(format!("{name} must not be empty"));
            }
        }
        content::check_validate(args.validate.as_deref())
    }

    const SCRIPT_PROBE: bool = true;
    const CREATES: Option<&'static str> = Some("dest");

    fn probe_script(
        &self,
        args: &Args,
        cx: &ModuleContext<'_>,
    ) -> Result<Option<String>, ModuleError> {
        let rendered = cx.templates.render_file(&args.src)?.into_bytes();
        args.inspect(&rendered, cx).script_with("").map(Some)
    }

    async fn decide(
        &self,
        args: &Args,
        out: Option<ExecOutput>,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<Plan>, ModuleError> {
        let rendered = cx.templates.render_file(&args.src)?.into_bytes();
        let cur = args.inspect(&rendered, cx).read_probe(out)?;
        match cur.kind() {
            FileKind::Directory => {
                return Err(ModuleError::Failed(format!(
                    "{} is a directory; dest must name the file to write",
                    cur.path
                )))
            }
            FileKind::Other => {
                return Err(ModuleError::Failed(format!(
                    "{} exists and is not a regular file",
                    cur.path
                )))
            }
            _ => {}
        }
        let wanted = args.wanted();
        let (file, probe) = if cur.exists() && !args.force {
            (content::current(&cur), content::keep(&cur, &wanted)?)
        } else {
            let file = content::result(&cur.path, &rendered);
            let probe = content::decide(&cur, rendered, &wanted, cx.want_diff, None)?;
            (file, probe)
        };
        let result = args.result(file, &cur)?;
        Ok(match probe {
            Probe::Change(c) => Probe::change(
                Plan {
                    file: c.plan,
                    result,
                },
                c.summary,
                c.diff,
            ),
            Probe::Unchanged(_) => Probe::Unchanged(result),
            Probe::Skipped(s) => Probe::Skipped(s),
        })
    }

    const SCRIPT_APPLY: bool = true;

    fn apply_script(
        &self,
        args: &Args,
        plan: &Plan,
        _cx: &ModuleContext<'_>,
    ) -> Result<Script, ModuleError> {
        let opts = content::write_options(args.wanted(), args.validate.as_deref(), args.backup);
        content::apply_script(&plan.file, &opts)
    }

    async fn applied(
        &self,
        _args: &Args,
        plan: Plan,
        out: ExecOutput,
        _cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        let mut result = plan.result;
        if let Some(b) = content::applied(&plan.file, &out)? {
            result["backup_file"] = b.into();
        }
        Ok(Applied::changed(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{mode_of, Env};
    use engine::module::{DynModule, Status};
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    const DEST: &str = "etc/app.conf";

    /// A scratch directory with `templates/app.conf.j2` and an empty `etc/` (for `DEST`).
    fn setup(template: &str, vars: Value) -> Env {
        let mut env = Env::new();
        std::fs::create_dir(env.path("templates")).unwrap();
        std::fs::create_dir(env.path("etc")).unwrap();
        std::fs::write(env.path("templates/app.conf.j2"), template).unwrap();
        env.vars = vars.as_object().cloned().unwrap_or_default();
        env
    }

    fn files_in(dir: &str) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[tokio::test]
    async fn renders_writes_with_mode_then_is_unchanged() {
        let f = setup(
            "listen {{ vip }}:{{ port }}\n{% for b in backends %}\nserver {{ b }}\n{% endfor %}\n",
            json!({"vip": "10.0.0.10", "port": 6443, "backends": ["m1", "m2"]}),
        );
        let dest = f.path(DEST);
        let args = json!({"src": "templates/app.conf.j2", "dest": dest, "mode": "0640"});
        let out = f.apply(&FileTemplate, args.clone()).await;
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
        assert_eq!(files_in(&f.path("etc")), 1, "no temporary file left");

        let again = f.apply(&FileTemplate, args.clone()).await;
        assert_eq!(again.status, Status::Ok);
        assert_eq!(again.result["sha256"], json!(sha256(want.as_bytes())));
        // The same check in check mode agrees.
        assert_eq!(f.check(&FileTemplate, args).await, Status::Ok);
    }

    #[tokio::test]
    async fn check_mode_writes_nothing_but_reports_the_diff() {
        let f = setup("new {{ v }}\n", json!({"v": 2}));
        let dest = f.path(DEST);
        let args = json!({"src": "templates/app.conf.j2", "dest": dest});
        let out = f.run(&FileTemplate, args.clone(), true).await.unwrap();
        assert_eq!(out.status, Status::Changed);
        assert!(!Path::new(&dest).exists());

        std::fs::write(&dest, "old\n").unwrap();
        let out = f.run(&FileTemplate, args, true).await.unwrap();
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
        let f = setup("same\n", json!({}));
        let dest = f.path(DEST);
        std::fs::write(&dest, "same\n").unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&dest).unwrap());
        let args = json!({"src": "templates/app.conf.j2", "dest": dest, "mode": "u=rw,go="});
        let out = f.apply(&FileTemplate, args.clone()).await;
        assert_eq!(out.status, Status::Changed);
        assert_eq!(out.summary.as_deref(), Some("mode 644 -> 600"));
        assert!(out.diff.is_none());
        assert_eq!(mode_of(&dest), 0o600);
        let ino2 = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&dest).unwrap());
        assert_eq!(ino, ino2, "the file was not rewritten");
        assert_eq!(f.apply(&FileTemplate, args).await.status, Status::Ok);

        // The current owner, by name or by id, is no change.
        let meta = std::fs::metadata(&dest).unwrap();
        let uid = std::os::unix::fs::MetadataExt::uid(&meta).to_string();
        let args = json!({"src": "templates/app.conf.j2", "dest": dest, "owner": uid});
        assert_eq!(f.apply(&FileTemplate, args).await.status, Status::Ok);
    }

    #[tokio::test]
    async fn failed_validation_leaves_dest_untouched() {
        let f = setup("bad config\n", json!({}));
        let dest = f.path(DEST);
        std::fs::write(&dest, "good config\n").unwrap();
        let args = json!({
            "src": "templates/app.conf.j2", "dest": dest,
            "validate": "grep -q '^good' %s", "backup": true,
        });
        let err = f.error(&FileTemplate, args).await;
        assert!(err.contains("validation failed"), "{err}");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "good config\n");
        assert_eq!(files_in(&f.path("etc")), 1);
    }

    #[tokio::test]
    async fn passing_validation_and_backup() {
        let f = setup("good {{ n }}\n", json!({"n": 2}));
        let dest = f.path(DEST);
        std::fs::write(&dest, "good 1\n").unwrap();
        let args = json!({
            "src": "templates/app.conf.j2", "dest": dest,
            "validate": "grep -q '^good' %s", "backup": true,
        });
        let out = f.apply(&FileTemplate, args).await;
        assert_eq!(out.status, Status::Changed);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "good 2\n");
        let backup = out.result["backup_file"].as_str().unwrap().to_string();
        assert_eq!(std::fs::read_to_string(backup).unwrap(), "good 1\n");
    }

    #[tokio::test]
    async fn force_false_keeps_existing_content() {
        let f = setup("new\n", json!({}));
        let dest = f.path(DEST);
        std::fs::write(&dest, "mine\n").unwrap();
        let args = json!({"src": "templates/app.conf.j2", "dest": dest, "force": false});
        assert_eq!(f.apply(&FileTemplate, args).await.status, Status::Ok);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "mine\n");
        // The attributes are still set, and the result describes the file as it is.
        let args = json!({"src": "templates/app.conf.j2", "dest": dest, "force": false,
                          "mode": "0600"});
        let out = f.apply(&FileTemplate, args).await;
        assert_eq!(out.summary.as_deref(), Some("mode 644 -> 600"));
        assert_eq!(out.result["sha256"], json!(sha256(b"mine\n")));
        assert_eq!(
            (&out.result["size"], &out.result["mode"]),
            (&json!(5), &json!("600"))
        );
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "mine\n");
    }

    #[tokio::test]
    async fn undefined_variable_names_template_file_and_line() {
        let f = setup("global\n  maxconn 100\n  bind {{ vip }}:6443\n", json!({}));
        let args = json!({"src": "templates/app.conf.j2", "dest": f.path(DEST)});
        let err = f.error(&FileTemplate, args).await;
        assert_eq!(err, "templates/app.conf.j2:3: undefined variable 'vip'");
        assert!(!Path::new(&f.path(DEST)).exists());
    }

    #[tokio::test]
    async fn symbolic_link_is_replaced_and_directory_refused() {
        let f = setup("x\n", json!({}));
        let dest = f.path(DEST);
        let other = f.path("other");
        std::fs::write(&other, "x\n").unwrap();
        std::os::unix::fs::symlink(&other, &dest).unwrap();
        let args = json!({"src": "templates/app.conf.j2", "dest": dest});
        let out = f.apply(&FileTemplate, args.clone()).await;
        assert!(out.summary.unwrap().starts_with("replace link"));
        assert!(!std::fs::symlink_metadata(&dest)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(f.apply(&FileTemplate, args).await.status, Status::Ok);

        let dir = f.path("etc");
        let args = json!({"src": "templates/app.conf.j2", "dest": dir});
        let err = f.error(&FileTemplate, args).await;
        assert!(err.contains("is a directory"), "{err}");
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
}
