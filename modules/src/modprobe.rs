//! `modprobe`: loads or unloads a kernel module, and keeps it loaded across reboots with
//! modules-load.d and modprobe.d files.

use async_trait::async_trait;
use engine::host::quote;
use engine::remote::FileKind;
use engine::transport::ExecOutput;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::shared::content;
use crate::shared::inspect::{Current, Inspect};
use crate::shared::perms::Wanted;

pub struct Modprobe;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Present,
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Persist {
    Present,
    Absent,
    #[default]
    Disabled,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The module's name ("br_netfilter"; `-` and `_` are the same module).
    pub name: String,
    /// `present` (default): loaded; `absent`: not loaded.
    #[serde(default)]
    pub state: State,
    /// Module parameters, separated by spaces ("max_loop=16"), passed when loading and kept in
    /// /etc/modprobe.d/NAME.conf with `persist: "present"`.
    #[serde(default)]
    pub params: Option<String>,
    /// `present`: load at boot (/etc/modules-load.d/NAME.conf, and the parameters in
    /// /etc/modprobe.d/NAME.conf); `absent`: remove those files; `disabled` (default): leave
    /// them alone.
    #[serde(default)]
    pub persist: Persist,
}

pub const DOC: &str = r#"# modprobe

Loads (`state: "present"`) or unloads (`"absent"`) a kernel module, and optionally makes it
load at boot.

- The probe reads `/proc/modules` (and `/sys/module/NAME`, which also shows modules built into
  the kernel); `-` and `_` in names are the same module. A loaded or built-in module is ok. A
  module that is not loaded is checked with `modprobe -n` (a dry run) in the same round trip, so
  a module that does not exist fails with modprobe's message in check mode too.
- Loading runs `modprobe NAME PARAMS`; unloading `modprobe -r NAME`. A refusal (no such module,
  operation not permitted, in use) fails the task with modprobe's message. A built-in module
  cannot be unloaded: `state: "absent"` fails for it. Parameters of a module already loaded are
  not changed (unload it first).
- `persist: "present"` writes `/etc/modules-load.d/NAME.conf` (the name) and, with `params`,
  `/etc/modprobe.d/NAME.conf` (`options NAME PARAMS`; without `params` that file is removed).
  `persist: "absent"` removes both files. `persist: "disabled"` (the default) leaves them alone.
  Files are written atomically and only when they differ, after the module was loaded.

| argument | required | default | meaning |
|---|---|---|---|
| `name` | yes | | module name |
| `state` | no | `present` | `present` or `absent` |
| `params` | no | | parameters, separated by spaces |
| `persist` | no | `disabled` | `present`, `absent` or `disabled` |

Result: `name`, `loaded` (before the task: `loaded`, `builtin` or `absent`), `persist_files`.

```rhai
modprobe(#{ name: "br_netfilter", persist: "present" })
modprobe(#{ name: "loop", params: "max_loop=16", persist: "present" })
```
"#;

/// How the module is now: loaded, built into the kernel, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    Loaded,
    Builtin,
    Absent,
}

/// What to do with the module itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    Nothing,
    Load,
    Unload,
}

/// Decides the load step; an error for what cannot work.
pub fn decide_load(state: State, now: Loaded, dry_run: Option<&str>) -> Result<Load, String> {
    match (state, now) {
        (State::Present, Loaded::Absent) => match dry_run {
            Some(err) => Err(err.to_string()),
            None => Ok(Load::Load),
        },
        (State::Present, _) => Ok(Load::Nothing),
        (State::Absent, Loaded::Loaded) => Ok(Load::Unload),
        (State::Absent, Loaded::Builtin) => {
            Err("the module is built into the kernel and cannot be unloaded".into())
        }
        (State::Absent, Loaded::Absent) => Ok(Load::Nothing),
    }
}

/// The persistence files and their wanted content (None: the file must not exist).
pub fn persist_files(a: &Args) -> Vec<(String, Option<String>)> {
    let load = format!("/etc/modules-load.d/{}.conf", a.name);
    let opts = format!("/etc/modprobe.d/{}.conf", a.name);
    let params = a.params.as_deref().map(str::trim).filter(|p| !p.is_empty());
    match a.persist {
        Persist::Disabled => vec![],
        Persist::Absent => vec![(load, None), (opts, None)],
        Persist::Present => vec![
            (load, Some(format!("{}\n", a.name))),
            (opts, params.map(|p| format!("options {} {p}\n", a.name))),
        ],
    }
}

pub enum FileStep {
    Write { file: content::Plan, create: bool },
    Remove(String),
}

pub struct Plan {
    load: Load,
    files: Vec<FileStep>,
    result: Value,
}

impl Args {
    /// The name as /proc/modules and /sys/module spell it.
    fn kernel_name(&self) -> String {
        self.name.replace('-', "_")
    }
    /// `NAME PARAMS` as quoted words.
    fn words(&self) -> Result<String, String> {
        let mut w = vec![quote(&self.name)?];
        for p in self.params.as_deref().unwrap_or("").split_whitespace() {
            w.push(quote(p)?);
        }
        Ok(w.join(" "))
    }
}

/// What the probe reads of each persistence file: whether it is there.
fn inspects(files: &[(String, Option<String>)]) -> Vec<Inspect<'_>> {
    files
        .iter()
        .map(|(p, _)| Inspect {
            path: p,
            follow: false,
            into_dir: None,
            read: None,
        })
        .collect()
}

#[async_trait]
impl Module for Modprobe {
    const NAME: &'static str = "modprobe";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = Plan;

    fn check_args(a: &Args) -> Result<(), String> {
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if a.name.is_empty() || !a.name.chars().all(ok) || a.name.starts_with('-') {
            return Err(format!("name {:?} is not a module name", a.name));
        }
        if a.params.as_deref().is_some_and(|p| p.contains('\n')) {
            return Err("params must be on one line".into());
        }
        if a.state == State::Absent && a.persist == Persist::Present {
            return Err("state absent with persist present would load it at the next boot".into());
        }
        Ok(())
    }

    const SCRIPT_PROBE: bool = true;

    fn probe_script(
        &self,
        args: &Args,
        _cx: &ModuleContext<'_>,
    ) -> Result<Option<String>, ModuleError> {
        let files = persist_files(args);
        let inspects = inspects(&files);
        let mut script = String::new();
        for i in &inspects {
            script += &i.script().map_err(ModuleError::Args)?;
            script += "\n";
        }
        let n = quote(&args.kernel_name())?;
        script += &format!(
            "n={n}\necho '--module'\n\
             if grep -q \"^$n \" /proc/modules 2>/dev/null || [ -e \"/sys/module/$n/initstate\" ]; \
             then echo loaded\nelif [ -d \"/sys/module/$n\" ]; then echo builtin\nelse echo absent\n"
        );
        if args.state == State::Present {
            script += &format!(
                "o=$(modprobe -n -- {} 2>&1); echo $?; printf '%s\\n' \"$o\"\n",
                args.words().map_err(ModuleError::Args)?
            );
        }
        script += "fi\n";
        Ok(Some(script))
    }

    async fn decide(
        &self,
        args: &Args,
        out: Option<ExecOutput>,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<Plan>, ModuleError> {
        let files = persist_files(args);
        let inspects = inspects(&files);
        let out = crate::shared::inspect::probe_output(out, &format!("inspecting module {}", args.name))?;
        if !out.success() {
            return Err(ModuleError::Failed(format!(
                "cannot inspect module {}: {}",
                args.name,
                out.stderr_text().trim()
            )));
        }
        let mut rest: &[u8] = &out.stdout;
        let mut currents: Vec<Current> = Vec::new();
        for i in &inspects {
            currents.push(i.parse(rest).map_err(ModuleError::Failed)?);
            rest = &currents.last().expect("just pushed").rest;
        }
        let text = String::from_utf8_lossy(rest).into_owned();
        let mut lines = text.lines().skip_while(|l| *l != "--module").skip(1);
        let now = match lines.next() {
            Some("loaded") => Loaded::Loaded,
            Some("builtin") => Loaded::Builtin,
            Some("absent") => Loaded::Absent,
            other => {
                return Err(ModuleError::Failed(format!(
                    "unexpected output probing module {}: {other:?}",
                    args.name
                )))
            }
        };
        let dry_run = match lines.next() {
            Some(rc) if rc.trim() != "0" => {
                let msg: Vec<&str> = lines.collect();
                Some(format!(
                    "modprobe -n {}: {}",
                    args.name,
                    msg.join("\n").trim()
                ))
            }
            _ => None,
        };
        let load = decide_load(args.state, now, dry_run.as_deref()).map_err(|e| {
            ModuleError::Failed(if dry_run.is_some() {
                e
            } else {
                format!("{}: {e}", args.name)
            })
        })?;

        let mut summary = Vec::new();
        match load {
            Load::Load => summary.push(format!("load {}", args.name)),
            Load::Unload => summary.push(format!("unload {}", args.name)),
            Load::Nothing => {}
        }
        let mut steps = Vec::new();
        let mut diff = None;
        for ((path, want), cur) in files.iter().zip(&currents) {
            match want {
                None if cur.exists() => {
                    summary.push(format!("remove {path}"));
                    steps.push(FileStep::Remove(path.clone()));
                }
                None => {}
                Some(text) => {
                    if cur.kind() == &FileKind::Directory {
                        return Err(ModuleError::Failed(format!("{path} is a directory")));
                    }
                    let label = Some(format!("write {path}"));
                    let bytes = text.clone().into_bytes();
                    if let Probe::Change(c) =
                        content::decide(cur, bytes, &Wanted::default(), cx.want_diff, label)?
                    {
                        summary.push(c.summary);
                        diff = diff.or(c.diff);
                        steps.push(FileStep::Write {
                            file: c.plan,
                            create: !cur.exists(),
                        });
                    }
                }
            }
        }
        let result = json!({
            "name": args.name,
            "loaded": match now { Loaded::Loaded => "loaded", Loaded::Builtin => "builtin", Loaded::Absent => "absent" },
            "persist_files": files.iter().filter(|(_, w)| w.is_some()).map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        });
        if load == Load::Nothing && steps.is_empty() {
            return Ok(Probe::Unchanged(result));
        }
        let plan = Plan {
            load,
            files: steps,
            result,
        };
        Ok(Probe::change(plan, summary.join(", "), diff))
    }

    async fn apply(
        &self,
        args: &Args,
        plan: Plan,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        let cmd = match plan.load {
            Load::Load => Some(format!("modprobe -- {}", args.words().map_err(ModuleError::Args)?)),
            Load::Unload => Some(format!("modprobe -r -- {}", quote(&args.name)?)),
            Load::Nothing => None,
        };
        if let Some(cmd) = cmd {
            let out = cx.host.run(&cmd).await?;
            if !out.success() {
                return Err(ModuleError::Failed(format!(
                    "{} failed: {}",
                    cmd.replace(" -- ", " "),
                    out.stderr_text().trim()
                )));
            }
        }
        for step in &plan.files {
            match step {
                FileStep::Write { file, create } => {
                    if *create {
                        crate::shared::content::ensure_parent(cx.host, &file.path).await?;
                    }
                    let opts = content::write_options(Wanted::default(), None, false);
                    content::apply(cx.host, file, &opts).await?;
                }
                FileStep::Remove(path) => {
                    let out = cx.host.run(&format!("rm -f -- {}", quote(path)?)).await?;
                    if !out.success() {
                        return Err(ModuleError::Failed(format!(
                            "cannot remove {path}: {}",
                            out.stderr_text().trim()
                        )));
                    }
                }
            }
        }
        Ok(Applied::changed(plan.result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::module::DynModule;

    fn args(v: Value) -> Args {
        engine::module::parse_args(&v).unwrap()
    }

    #[test]
    fn load_decisions() {
        use Loaded::{Absent as Out, Builtin, Loaded as In};
        assert_eq!(decide_load(State::Present, In, None), Ok(Load::Nothing));
        assert_eq!(
            decide_load(State::Present, Builtin, None),
            Ok(Load::Nothing)
        );
        assert_eq!(decide_load(State::Present, Out, None), Ok(Load::Load));
        let e = decide_load(
            State::Present,
            Out,
            Some("modprobe: FATAL: Module x not found"),
        );
        assert!(e.unwrap_err().contains("not found"));
        assert_eq!(decide_load(State::Absent, In, None), Ok(Load::Unload));
        assert_eq!(decide_load(State::Absent, Out, None), Ok(Load::Nothing));
        assert!(decide_load(State::Absent, Builtin, None)
            .unwrap_err()
            .contains("built into"));
    }

    #[test]
    fn persistence_files() {
        let a = args(json!({"name": "br_netfilter", "persist": "present"}));
        assert_eq!(
            persist_files(&a),
            vec![
                (
                    "/etc/modules-load.d/br_netfilter.conf".to_string(),
                    Some("br_netfilter\n".to_string())
                ),
                ("/etc/modprobe.d/br_netfilter.conf".to_string(), None),
            ]
        );
        let a = args(json!({"name": "loop", "params": " max_loop=16 ", "persist": "present"}));
        assert_eq!(
            persist_files(&a)[1].1.as_deref(),
            Some("options loop max_loop=16\n")
        );
        assert_eq!(a.words().unwrap(), "loop 'max_loop=16'");
        let a = args(json!({"name": "loop", "persist": "absent"}));
        assert!(persist_files(&a).iter().all(|(_, w)| w.is_none()));
        assert!(persist_files(&args(json!({"name": "loop"}))).is_empty());
        assert_eq!(
            args(json!({"name": "nf-conntrack"})).kernel_name(),
            "nf_conntrack"
        );
    }

    #[test]
    fn args_are_checked() {
        let m = Modprobe;
        assert!(m.validate(&json!({"name": "overlay"})).is_ok());
        assert!(m
            .validate(&json!({"name": "a b"}))
            .unwrap_err()
            .contains("module name"));
        assert!(m.validate(&json!({"name": "x", "persist": true})).is_err());
        let e = m
            .validate(&json!({"name": "x", "state": "absent", "persist": "present"}))
            .unwrap_err();
        assert!(e.contains("next boot"), "{e}");
        assert!(m
            .validate(&json!({"name": "x", "param": "a=1"}))
            .unwrap_err()
            .contains("params"));
    }
}
