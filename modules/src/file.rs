//! `file`: directories, links, empty files, removal, and the mode and owner of paths.

use async_trait::async_trait;
use engine::host::{quote, Script};
use engine::remote::FileKind;
use engine::transport::ExecOutput;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::shared::inspect::{Current, Inspect};
use crate::shared::perms::{self, Wanted};

pub struct File;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    File,
    Directory,
    Absent,
    Link,
    Touch,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The path to manage (Ansible's aliases `dest` and `name` work too).
    #[serde(alias = "dest", alias = "name")]
    pub path: String,
    /// `file` (exists; only attributes are set), `directory` (created with its parents),
    /// `absent` (removed, recursively), `link` (a symbolic link to `src`) or `touch` (created when
    /// missing, timestamps updated otherwise). Default: what the path is now, or `file`.
    pub state: Option<State>,
    /// What a link points to (state `link`), as stored in the link: relative paths are relative to
    /// the link's directory.
    pub src: Option<String>,
    /// Permissions: octal ("0644") or symbolic ("u=rw,g=r,o=r", "u+rwX").
    #[serde(default, deserialize_with = "crate::shared::perms::mode_arg")]
    pub mode: Option<String>,
    /// Owner, by name or uid.
    pub owner: Option<String>,
    /// Group, by name or gid.
    pub group: Option<String>,
    /// With state `directory`: set `mode`, `owner` and `group` on everything under it as well.
    pub recurse: Option<bool>,
    /// With state `link`: replace a file that is in the way, and create the link even when `src`
    /// does not exist.
    pub force: Option<bool>,
    /// Accepted for Ansible compatibility and ignored: every write here is atomic (a temporary
    /// file beside the destination, renamed over it).
    #[serde(default)]
    pub unsafe_writes: Option<bool>,
}

pub const DOC: &str = r#"# file

Manages what a path is — a directory, a symbolic link, an empty file, nothing — and its mode,
owner and group. Symbolic links are followed, except with states `link` and `absent`.

| state | effect |
|---|---|
| `file` | the file must exist (it is never created: use `copy` or `touch`); sets attributes |
| `directory` | creates it and its parents (`mkdir -p`); with `recurse`, attributes apply to all under it |
| `absent` | removes it, recursively for directories |
| `link` | a symbolic link to `src`; `force` replaces a file in the way and allows a missing `src` |
| `touch` | creates an empty file or updates the timestamps of an existing one |

Without `state`, the path keeps its current kind (a directory stays a directory) and only
attributes are set; a missing path is an error.

`touch` always reports a change, as in Ansible, because it updates the timestamps; prefer
`state: "file"` (or `copy`) in tasks that should be idempotent.

Symbolic modes follow chmod: `u+rwX` adds execute only to directories and already-executable
files. The mode of a symbolic link itself is never changed; its owner and group are.

## Arguments

| name | type | |
|---|---|---|
| `path` (aliases `dest`, `name`) | string | the path (required) |
| `state` | string | see above |
| `src` | string | link target (state `link`) |
| `mode` | string or number | "0755" or "u=rwx,go=rx"; a number is the mode's value (YAML's `0755` arrives as 493), as in Ansible |
| `owner`, `group` | string | names or numeric ids |
| `recurse` | bool | with `directory`: attributes for everything under it |
| `force` | bool | with `link`: replace a file in the way, allow a missing `src` |
| `unsafe_writes` | bool | accepted and ignored (writes are always atomic) |

## Example

```rhai
file(#{ path: "/etc/kubernetes/pki", state: "directory", mode: "0700" })
file(#{ path: "/usr/local/bin/kubectl", state: "link", src: "/opt/k8s/kubectl" })
file(#{ path: "/var/lib/app", state: "directory", owner: "app", recurse: true })
file(#{ path: "/tmp/old", state: "absent" })
```
"#;

/// A shell script acting on `$p`, with what it does.
pub struct Plan {
    path: String,
    script: String,
}

impl Args {
    fn wanted(&self) -> Wanted<'_> {
        Wanted::new(&self.mode, &self.owner, &self.group)
    }
    fn recurse(&self) -> bool {
        self.recurse.unwrap_or(false)
    }
    fn force(&self) -> bool {
        self.force.unwrap_or(false)
    }
    /// What the probe looks at: the path, through links except for states link and absent.
    fn inspect(&self) -> Inspect<'_> {
        Inspect {
            path: &self.path,
            follow: !matches!(self.state, Some(State::Link | State::Absent)),
            into_dir: None,
            read: None,
        }
    }
}

fn result(path: &str, state: &str) -> Value {
    json!({ "path": path, "state": state })
}

fn state_name(kind: &FileKind) -> &'static str {
    match kind {
        FileKind::Absent => "absent",
        FileKind::File | FileKind::Other => "file",
        FileKind::Directory => "directory",
        FileKind::Link => "link",
    }
}

fn failed(msg: String) -> ModuleError {
    ModuleError::Failed(msg)
}

/// Changes to a link that should point to `src`, after probing.
fn link_probe(args: &Args, src: &str, cur: &Current) -> Result<Probe<Plan>, ModuleError> {
    let path = &args.path;
    let lines: Vec<String> = cur.rest_text().lines().map(String::from).collect();
    let src_exists = lines.iter().any(|l| l == "src-exists");
    let mut fix = perms::Fix::default();
    let wanted = Wanted {
        mode: None,
        ..args.wanted()
    };
    let was = match cur.kind() {
        FileKind::Link if cur.stat.link_target.as_deref() == Some(src) => {
            fix = perms::fix(&wanted, &cur.entry(), cur.umask).map_err(ModuleError::Args)?;
            if fix.is_empty() {
                return Ok(Probe::Unchanged(result(path, "link")));
            }
            let summary = fix.summary.join(", ");
            return Ok(Probe::change(
                Plan {
                    path: path.clone(),
                    script: fix.script,
                },
                summary,
                None,
            ));
        }
        FileKind::Absent => String::new(),
        FileKind::Link => format!(
            " (was -> {})",
            cur.stat.link_target.as_deref().unwrap_or("")
        ),
        FileKind::Directory => {
            return Err(failed(format!(
                "{path} is a directory; will not replace it with a link"
            )))
        }
        FileKind::File | FileKind::Other if args.force() => " (replacing a file)".to_string(),
        FileKind::File | FileKind::Other => {
            return Err(failed(format!(
                "{path} exists and is not a link; use force: true to replace it"
            )))
        }
    };
    if !src_exists && !args.force() {
        return Err(failed(format!(
            "src {src} does not exist; use force: true to create the link anyway"
        )));
    }
    let mut script = format!(
        "t=\"$(dirname -- \"$p\")/.playbook.$$.link\"\nrm -f -- \"$t\"\nln -s -- {} \"$t\"\n\
         mv -f -T -- \"$t\" \"$p\"\n",
        quote(src)?
    );
    if let Some(o) = &args.owner {
        script += &format!("chown -h {} -- \"$p\"\n", quote(o)?);
    }
    if let Some(g) = &args.group {
        script += &format!("chgrp -h {} -- \"$p\"\n", quote(g)?);
    }
    fix.summary.insert(0, format!("link {path} -> {src}{was}"));
    Ok(Probe::change(
        Plan {
            path: path.clone(),
            script,
        },
        fix.summary.join(", "),
        None,
    ))
}

#[async_trait]
impl Module for File {
    const NAME: &'static str = "file";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = Plan;

    fn check_args(args: &Args) -> Result<(), String> {
        args.wanted().check()?;
        if args.path.is_empty() {
            return Err("path: is empty".into());
        }
        match (args.state, &args.src) {
            (Some(State::Link), None) => return Err("state link needs src".into()),
            (Some(State::Link), Some(_)) => {}
            (_, Some(_)) => return Err("src is only used with state \"link\"".into()),
            _ => {}
        }
        if args.recurse() && args.state != Some(State::Directory) {
            return Err("recurse is only used with state \"directory\"".into());
        }
        if args.force.is_some() && args.state != Some(State::Link) {
            return Err("force is only used with state \"link\"".into());
        }
        Ok(())
    }

    const SCRIPT_PROBE: bool = true;

    fn probe_script(
        &self,
        args: &Args,
        _cx: &ModuleContext<'_>,
    ) -> Result<Option<String>, ModuleError> {
        let mut extra = String::new();
        if args.recurse() {
            extra = format!("if [ -d \"$p\" ]; then {}\nfi\n", perms::TREE_FRAGMENT);
        }
        if let Some(src) = &args.src {
            extra = format!(
                "if (cd \"$(dirname -- \"$p\")\" 2>/dev/null && [ -e {} ]); then echo src-exists; fi\n",
                quote(src)?
            );
        }
        args.inspect().script_with(&extra).map(Some)
    }

    async fn decide(
        &self,
        args: &Args,
        out: Option<ExecOutput>,
        _cx: &ModuleContext<'_>,
    ) -> Result<Probe<Plan>, ModuleError> {
        let cur = args.inspect().read_probe(out)?;
        let path = cur.path.clone();
        let state = args.state.unwrap_or(match cur.kind() {
            FileKind::Directory => State::Directory,
            FileKind::Link => State::Link,
            _ => State::File,
        });
        let wanted = args.wanted();
        let plan = |script: String| Plan {
            path: path.clone(),
            script,
        };
        let change = |mut summary: Vec<String>, first: Option<String>, script: String| {
            if let Some(f) = first {
                summary.insert(0, f);
            }
            Ok(Probe::change(plan(script), summary.join(", "), None))
        };
        match state {
            State::File => match cur.kind() {
                FileKind::File | FileKind::Other => {}
                FileKind::Absent => {
                    return Err(failed(format!(
                        "file {path} is absent, cannot continue (use state \"touch\" to create it)"
                    )))
                }
                other => {
                    return Err(failed(format!(
                        "{path} is a {}, not a file",
                        state_name(other)
                    )))
                }
            },
            State::Directory => match cur.kind() {
                FileKind::Directory if args.recurse() => {
                    let entries = perms::parse_tree(&cur.rest_text()).map_err(failed)?;
                    let fix = perms::fix_tree(&wanted, &entries, cur.umask).map_err(ModuleError::Args)?;
                    if fix.is_empty() {
                        return Ok(Probe::Unchanged(result(&path, "directory")));
                    }
                    return change(fix.summary, None, fix.script);
                }
                FileKind::Directory => {}
                FileKind::Absent => {
                    let script = format!("mkdir -p -- \"$p\"\n{}", perms::set_script(&wanted).map_err(ModuleError::Args)?);
                    return change(vec![], Some(format!("create directory {path}")), script);
                }
                other => {
                    return Err(failed(format!(
                        "{path} exists and is a {}, not a directory",
                        state_name(other)
                    )))
                }
            },
            State::Absent => {
                if !cur.exists() {
                    return Ok(Probe::Unchanged(result(&path, "absent")));
                }
                let what = match cur.kind() {
                    FileKind::Directory => "directory ",
                    FileKind::Link => "link ",
                    _ => "",
                };
                return change(
                    vec![],
                    Some(format!("remove {what}{path}")),
                    "rm -rf -- \"$p\"\n".into(),
                );
            }
            State::Touch => {
                let script = "touch -- \"$p\"\n".to_string();
                if !cur.exists() {
                    let script = format!("{script}{}", perms::set_script(&wanted).map_err(ModuleError::Args)?);
                    return change(vec![], Some(format!("create {path}")), script);
                }
                let fix = perms::fix(&wanted, &cur.entry(), cur.umask).map_err(ModuleError::Args)?;
                return change(
                    fix.summary,
                    Some(format!("touch {path}")),
                    format!("{script}{}", fix.script),
                );
            }
            State::Link => {
                let Some(src) = &args.src else {
                    // No state given and the path is a (dangling) link: only attributes.
                    let fix = perms::fix(&wanted, &cur.entry(), cur.umask).map_err(ModuleError::Args)?;
                    if fix.is_empty() {
                        return Ok(Probe::Unchanged(result(&path, "link")));
                    }
                    return change(fix.summary, None, fix.script);
                };
                return link_probe(args, src, &cur);
            }
        }
        // An existing file or directory: attributes only.
        let fix = perms::fix(&wanted, &cur.entry(), cur.umask).map_err(ModuleError::Args)?;
        if fix.is_empty() {
            return Ok(Probe::Unchanged(result(&path, state_name(cur.kind()))));
        }
        change(fix.summary, None, fix.script)
    }

    const SCRIPT_APPLY: bool = true;

    fn apply_script(
        &self,
        _args: &Args,
        plan: &Plan,
        _cx: &ModuleContext<'_>,
    ) -> Result<Script, ModuleError> {
        perms::on_path(&plan.path, &plan.script)
    }

    async fn applied(
        &self,
        args: &Args,
        plan: Plan,
        out: ExecOutput,
        _cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        perms::ran(&args.path, &out)?;
        let state = match args.state {
            Some(State::Absent) => "absent",
            Some(State::Link) => "link",
            Some(State::Directory) => "directory",
            _ => "file",
        };
        Ok(Applied::changed(result(&plan.path, state)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{mode_of, snapshot, Env};
    use engine::module::Status;
    use std::path::Path;

    #[tokio::test]
    async fn directory_created_with_parents_and_mode() {
        let env = Env::new();
        let d = env.path("a/b/c");
        let args = json!({ "path": d, "state": "directory", "mode": "0700" });
        let before = snapshot(env.dir.path());
        assert_eq!(env.check(&File, args.clone()).await, Status::Changed);
        assert_eq!(
            snapshot(env.dir.path()),
            before,
            "check mode changed nothing"
        );
        let out = env.apply(&File, args.clone()).await;
        assert_eq!(
            out.summary.as_deref(),
            Some(format!("create directory {d}").as_str())
        );
        assert!(Path::new(&d).is_dir());
        assert_eq!(mode_of(&d), 0o700);
        assert_eq!(env.apply(&File, args).await.status, Status::Ok);

        let out = env.apply(&File, json!({ "path": d, "mode": "0755" })).await;
        assert_eq!(
            out.summary.as_deref(),
            Some("mode 700 -> 755"),
            "state defaults to what it is"
        );
        assert_eq!(mode_of(&d), 0o755);
        let out = env
            .apply(&File, json!({ "path": d, "owner": "nobody", "group": "0" }))
            .await;
        assert_eq!(out.summary.as_deref(), Some("owner root -> nobody"));
        let again = env
            .check(
                &File,
                json!({ "path": d, "owner": "65534", "group": "root" }),
            )
            .await;
        assert_eq!(again, Status::Ok, "numeric ids compare with names");
    }

    #[tokio::test]
    async fn recurse_finds_differences_deep_down() {
        let env = Env::new();
        let d = env.path("tree");
        std::fs::create_dir_all(format!("{d}/x/y")).unwrap();
        std::fs::write(format!("{d}/x/y/f"), "f").unwrap();
        std::fs::write(format!("{d}/x/exe"), "e").unwrap();
        std::process::Command::new("chmod")
            .args(["755", &format!("{d}/x/exe")])
            .status()
            .unwrap();
        let args =
            json!({ "path": d, "state": "directory", "mode": "u=rwX,g=rX,o=", "recurse": true });
        let out = env.apply(&File, args.clone()).await;
        assert_eq!(out.status, Status::Changed);
        assert_eq!(mode_of(&format!("{d}/x/y")), 0o750);
        assert_eq!(mode_of(&format!("{d}/x/y/f")), 0o640);
        assert_eq!(mode_of(&format!("{d}/x/exe")), 0o750);
        assert_eq!(env.apply(&File, args.clone()).await.status, Status::Ok);

        // One file deep down drifts: the probe notices.
        std::process::Command::new("chmod")
            .args(["666", &format!("{d}/x/y/f")])
            .status()
            .unwrap();
        assert_eq!(env.check(&File, args.clone()).await, Status::Changed);
        env.apply(&File, args.clone()).await;
        assert_eq!(mode_of(&format!("{d}/x/y/f")), 0o640);

        let owner = json!({ "path": d, "state": "directory", "owner": "nobody", "recurse": true });
        let out = env.apply(&File, owner.clone()).await;
        assert_eq!(
            out.summary.as_deref(),
            Some("owner root -> nobody (recursively)")
        );
        let uid = std::process::Command::new("stat")
            .args(["-c", "%U", &format!("{d}/x/y/f")])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "nobody");
        assert_eq!(env.apply(&File, owner).await.status, Status::Ok);
    }

    #[tokio::test]
    async fn file_state_needs_an_existing_file() {
        let env = Env::new();
        let f = env.path("f");
        let err = env
            .error(&File, json!({ "path": f, "state": "file", "mode": "0600" }))
            .await;
        assert!(err.contains("is absent"), "{err}");
        std::fs::write(&f, "x").unwrap();
        let out = env
            .apply(&File, json!({ "path": f, "state": "file", "mode": "0600" }))
            .await;
        assert_eq!(out.summary.as_deref(), Some("mode 644 -> 600"));
        assert_eq!(mode_of(&f), 0o600);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "x");
        let err = env
            .error(&File, json!({ "path": env.path(""), "state": "file" }))
            .await;
        assert!(err.contains("not a file"), "{err}");
    }

    #[tokio::test]
    async fn absent_removes_recursively() {
        let env = Env::new();
        let d = env.path("gone");
        std::fs::create_dir_all(format!("{d}/sub")).unwrap();
        std::fs::write(format!("{d}/sub/f"), "x").unwrap();
        let args = json!({ "path": d, "state": "absent" });
        assert_eq!(env.check(&File, args.clone()).await, Status::Changed);
        assert!(Path::new(&d).exists());
        let out = env.apply(&File, args.clone()).await;
        assert_eq!(
            out.summary.as_deref(),
            Some(format!("remove directory {d}").as_str())
        );
        assert!(!Path::new(&d).exists());
        assert_eq!(env.apply(&File, args).await.status, Status::Ok);
    }

    #[tokio::test]
    async fn links_are_created_retargeted_and_guarded() {
        let env = Env::new();
        let l = env.path("link");
        std::fs::write(env.path("a"), "a").unwrap();
        std::fs::write(env.path("b"), "b").unwrap();
        let to_a = json!({ "path": l, "state": "link", "src": "a" });
        env.apply(&File, to_a.clone()).await;
        assert_eq!(std::fs::read_link(&l).unwrap(), Path::new("a"));
        assert_eq!(env.apply(&File, to_a).await.status, Status::Ok);
        let out = env
            .apply(&File, json!({ "path": l, "state": "link", "src": "b" }))
            .await;
        assert_eq!(
            out.summary.as_deref(),
            Some(format!("link {l} -> b (was -> a)").as_str())
        );
        assert_eq!(std::fs::read_to_string(&l).unwrap(), "b");

        let err = env
            .error(
                &File,
                json!({ "path": l, "state": "link", "src": "missing" }),
            )
            .await;
        assert!(err.contains("force"), "{err}");
        let f = env.path("a");
        let err = env
            .error(&File, json!({ "path": f, "state": "link", "src": "b" }))
            .await;
        assert!(err.contains("not a link"), "{err}");
        env.apply(
            &File,
            json!({ "path": f, "state": "link", "src": "b", "force": true }),
        )
        .await;
        assert_eq!(std::fs::read_link(&f).unwrap(), Path::new("b"));

        // Other states follow links: the mode lands on the target.
        env.apply(&File, json!({ "path": l, "mode": "0600", "state": "file" }))
            .await;
        assert_eq!(mode_of(&env.path("b")), 0o600);
        // Absent removes the link, not its target.
        env.apply(&File, json!({ "path": l, "state": "absent" }))
            .await;
        assert!(!Path::new(&l).exists() && Path::new(&env.path("b")).exists());
    }

    #[tokio::test]
    async fn touch_creates_then_always_changes() {
        let env = Env::new();
        let f = env.path("t");
        let args = json!({ "path": f, "state": "touch", "mode": "0640" });
        let out = env.apply(&File, args.clone()).await;
        assert_eq!(out.summary.as_deref(), Some(format!("create {f}").as_str()));
        assert_eq!(mode_of(&f), 0o640);
        let again = env.apply(&File, args).await;
        assert_eq!(again.status, Status::Changed);
        assert_eq!(
            again.summary.as_deref(),
            Some(format!("touch {f}").as_str())
        );
    }

    #[tokio::test]
    async fn argument_errors() {
        let env = Env::new();
        let err = env
            .error(&File, json!({ "path": "/x", "state": "dir" }))
            .await;
        assert!(err.contains("state") && err.contains("directory"), "{err}");
        let err = env
            .error(&File, json!({ "path": "/x", "state": "link" }))
            .await;
        assert!(err.contains("src"), "{err}");
        let err = env
            .error(&File, json!({ "path": "/x", "mode": "0999" }))
            .await;
        assert!(err.contains("0999"), "{err}");
        let err = env
            .error(&File, json!({ "path": "/x", "recurse": true }))
            .await;
        assert!(err.contains("recurse"), "{err}");
        let err = env.error(&File, json!({ "pth": "/x" })).await;
        assert!(
            err.contains("unknown field `pth`") && err.contains("`path`"),
            "{err}"
        );
    }
}
