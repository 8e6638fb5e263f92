//! `systemd_unit`: a unit file and its drop-ins (written like `file_template` writes a file), the
//! unit's enablement and mask, and its running state, decided from one probe.

use std::collections::BTreeMap;

use async_trait::async_trait;
use engine::diff::FileDiff;
use engine::host::{quote, Host};
use engine::remote::{read_file, FileKind};
use engine::transport::ExecOutput;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::shared::content;
use crate::shared::inspect::{Current, Inspect, DIFF_LIMIT};
use crate::shared::perms::Wanted;

pub struct SystemdUnit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Started,
    Stopped,
    Restarted,
    Reloaded,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The unit's name, e.g. "haproxy.service"; ".service" is implied without a unit suffix.
    pub name: String,
    /// The unit file's content, written to `path`. Give `content` or `template` (or neither, to
    /// leave the unit file alone).
    #[serde(default)]
    pub content: Option<String>,
    /// A template (relative to the playbook's directory) rendered with the host's variables
    /// into the unit file.
    #[serde(default)]
    pub template: Option<String>,
    /// Where the unit file goes (default /etc/systemd/system/NAME).
    #[serde(default)]
    pub path: Option<String>,
    /// Drop-ins: file name → content, written to /etc/systemd/system/NAME.d/FILE.conf (".conf"
    /// is added when the name lacks it). Other drop-ins in that directory are left alone.
    #[serde(default)]
    pub dropins: BTreeMap<String, String>,
    /// Check the new unit file with `systemd-analyze verify` before it replaces the old one; when
    /// the check fails the old file stays.
    #[serde(default)]
    pub validate: bool,
    /// Whether the unit starts at boot (`systemctl enable` / `disable`).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Whether the unit is masked (`systemctl mask` / `unmask`).
    #[serde(default)]
    pub masked: Option<bool>,
    /// `started`, `stopped`, `restarted` or `reloaded`.
    #[serde(default)]
    pub state: Option<State>,
    /// Run `systemctl daemon-reload` even when no unit file or drop-in changed.
    #[serde(default)]
    pub daemon_reload: bool,
}

pub const DOC: &str = r#"# systemd_unit

Manages a systemd unit: its unit file and drop-ins, whether it is enabled or masked, and whether
it runs. One probe reads everything (the files' sha256, `systemctl is-enabled`, and `systemctl
show -p LoadState,ActiveState,SubState,UnitFileState`); only what differs is done, in this
order:

1. `systemctl unmask` (when `masked: false` and the unit is masked);
2. the unit file (`content` or `template`, written atomically to `path`, default
   `/etc/systemd/system/NAME`; with `validate: true` the new file is first checked with
   `systemd-analyze verify` under the unit's own name, and a failing check leaves the old file in
   place) and each drop-in of `dropins` (`/etc/systemd/system/NAME.d/FILE.conf`);
3. `systemctl daemon-reload`, only when a unit file or drop-in changed, or when
   `daemon_reload: true` (then it always runs and the task reports a change);
4. `systemctl mask` (`masked: true`), `enable` or `disable` (`enabled`);
5. the state:
   - `started`: an active (or activating) unit is left alone (ok) **unless its unit file or a
     drop-in changed in this task: then it is restarted, once**, so that the new definition
     runs; an inactive unit is started;
   - `stopped`: an active, activating or reloading unit is stopped;
   - `restarted`: always restarts (as Ansible; reported as a change) — once, also when the unit
     file changed;
   - `reloaded`: always reloads an active unit, and starts an inactive one (as Ansible).

Static, generated and transient units (no `[Install]` section) cannot be enabled or disabled:
`enabled` is then ok either way. A unit that does not exist (and is not written by this task)
fails with systemctl's message when `enabled` or `state` is given.

Without systemd as PID 1 on the target (containers, chroots), `enable`, `disable`, `mask` and
`unmask` still work on the unit files, `daemon-reload` is skipped (there is no manager to
reload), and any `state` fails with systemctl's own message (`System has not been booted with
systemd as init system (PID 1). Can't operate.`) — in check mode too — never a false ok.

Check mode lists what would happen: `write /etc/systemd/system/app.service, daemon-reload,
restart`. With `--diff` the unit file and drop-in changes are shown.

| argument | required | default | meaning |
|---|---|---|---|
| `name` | yes | | unit name; `.service` implied without a suffix |
| `content` | no | | the unit file's content |
| `template` | no | | template rendered into the unit file |
| `path` | no | `/etc/systemd/system/NAME` | where the unit file goes |
| `dropins` | no | | map: drop-in file name → content |
| `validate` | no | false | `systemd-analyze verify` the new unit file first |
| `enabled` | no | | enable (true) or disable (false) |
| `masked` | no | | mask (true) or unmask (false) |
| `state` | no | | `started`, `stopped`, `restarted`, `reloaded` |
| `daemon_reload` | no | false | daemon-reload even when nothing changed |

Result: `name`, `path`, `actions` (what ran, in order), `changed_files`, `enabled` (the
`is-enabled` word), and `status` (`LoadState`, `ActiveState`, `SubState`, `UnitFileState`, …
from `systemctl show`; empty without systemd).

```rhai
systemd_unit(#{ name: "app", template: "templates/app.service.j2", validate: true,
                dropins: #{ limits: "[Service]\nLimitNOFILE=65536\n" },
                enabled: true, state: "started" })
handler("restart haproxy", systemd_unit(#{ name: "haproxy", state: "restarted" }));
```
"#;

const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".slice",
    ".scope",
];

/// The full unit name: ".service" added when the name has no unit suffix.
pub fn unit_name(name: &str) -> String {
    if UNIT_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        name.to_string()
    } else {
        format!("{name}.service")
    }
}

/// A drop-in's file name: ".conf" added when missing.
fn dropin_file(name: &str) -> String {
    if name.ends_with(".conf") {
        name.to_string()
    } else {
        format!("{name}.conf")
    }
}

/// One systemctl step, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Unmask { runtime: bool },
    DaemonReload,
    Mask,
    Enable,
    Disable,
    Start,
    Stop,
    Restart,
    Reload,
}

impl Action {
    fn words(self) -> &'static str {
        match self {
            Action::Unmask { runtime: false } => "unmask",
            Action::Unmask { runtime: true } => "unmask --runtime",
            Action::DaemonReload => "daemon-reload",
            Action::Mask => "mask",
            Action::Enable => "enable",
            Action::Disable => "disable",
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Reload => "reload",
        }
    }
}

/// What the probe found out about the unit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitStatus {
    /// systemd runs as PID 1 (`/run/systemd/system` exists).
    pub systemd: bool,
    /// What `systemctl is-enabled` said: "enabled", "disabled", "masked", "static"... or
    /// "not-found" (then `enabled_msg` says why).
    pub enabled: String,
    pub enabled_msg: String,
    /// `systemctl show` properties; empty when it failed (`show_error` says why).
    pub show: BTreeMap<String, String>,
    pub show_error: Option<String>,
}

impl UnitStatus {
    fn active(&self) -> &str {
        self.show
            .get("ActiveState")
            .map(String::as_str)
            .unwrap_or("")
    }
    fn running(&self) -> bool {
        matches!(self.active(), "active" | "activating" | "reloading")
    }
    fn masked(&self) -> bool {
        self.enabled.starts_with("masked")
    }
    fn found(&self) -> bool {
        self.enabled != "not-found"
    }
    fn json(&self) -> Value {
        json!(self.show)
    }
}

/// The desired state, beyond the files.
#[derive(Debug, Clone, Copy, Default)]
pub struct Want {
    /// A unit file or drop-in is written by this task.
    pub files_changed: bool,
    /// The task writes the unit file itself (so a missing unit will exist).
    pub writes_unit: bool,
    pub daemon_reload: bool,
    pub enabled: Option<bool>,
    pub masked: Option<bool>,
    pub state: Option<State>,
}

/// The systemctl steps that bring the unit from `st` to `w`, in order; an error when they cannot
/// work (no systemd for a state, a missing unit).
pub fn decide(w: &Want, st: &UnitStatus) -> Result<Vec<Action>, String> {
    let mut acts = Vec::new();
    let missing = !st.found() && !w.writes_unit;
    if missing && (w.enabled == Some(true) || w.state.is_some()) {
        return Err(st.enabled_msg.clone());
    }
    if w.state.is_some() && !st.systemd {
        return Err(st
            .show_error
            .clone()
            .unwrap_or_else(|| "systemd is not running on this host".into()));
    }
    if w.masked == Some(false) && st.masked() {
        acts.push(Action::Unmask {
            runtime: st.enabled == "masked-runtime",
        });
    }
    if st.systemd && (w.files_changed || w.daemon_reload) {
        acts.push(Action::DaemonReload);
    }
    if w.masked == Some(true) && !st.masked() {
        acts.push(Action::Mask);
    }
    let fixed = matches!(st.enabled.as_str(), "static" | "generated" | "transient");
    let is_enabled = matches!(st.enabled.as_str(), "enabled" | "enabled-runtime");
    match w.enabled {
        Some(true) if !is_enabled && !fixed => acts.push(Action::Enable),
        Some(false) if is_enabled => acts.push(Action::Disable),
        _ => {}
    }
    // A unit written or unmasked by this task was not running as it is now defined.
    let running = st.running();
    match w.state {
        Some(State::Started) if !running => acts.push(Action::Start),
        Some(State::Started) if w.files_changed => acts.push(Action::Restart),
        Some(State::Stopped) if running => acts.push(Action::Stop),
        Some(State::Restarted) => acts.push(Action::Restart),
        Some(State::Reloaded) if running => acts.push(Action::Reload),
        Some(State::Reloaded) => acts.push(Action::Start),
        _ => {}
    }
    Ok(acts)
}

/// Shell that prints the unit's status for `parse_status`; the unit name is in `$u`.
const STATUS_FRAGMENT: &str = r#"echo '--status'
if [ -d /run/systemd/system ]; then echo systemd; else echo offline; fi
e=$(systemctl is-enabled -- "$u" 2>&1); printf '%s %s\n' "$?" "$(printf '%s' "$e" | tr '\n' ' ')"
s=$(systemctl show -p LoadState,ActiveState,SubState,UnitFileState,InvocationID,NRestarts,MainPID -- "$u" 2>&1); echo $?
printf '%s\n' "$s"
"#;

/// Reads what `STATUS_FRAGMENT` printed (starting at its marker line).
pub fn parse_status(text: &str) -> Result<UnitStatus, String> {
    let mut lines = text
        .lines()
        .skip_while(|l| *l != "--status")
        .skip(1)
        .map(str::to_string);
    let bad = || format!("unexpected systemctl output: {text:?}");
    let systemd = lines.next().ok_or_else(bad)? == "systemd";
    let enabled_line = lines.next().ok_or_else(bad)?;
    let (rc, said) = enabled_line.split_once(' ').unwrap_or((&enabled_line, ""));
    let said = said.trim();
    let word = said.split_whitespace().next().unwrap_or("");
    const WORDS: &[&str] = &[
        "enabled",
        "enabled-runtime",
        "linked",
        "linked-runtime",
        "alias",
        "masked",
        "masked-runtime",
        "static",
        "indirect",
        "disabled",
        "generated",
        "transient",
        "bad",
    ];
    let enabled = if said.contains(' ') || !WORDS.contains(&word) {
        "not-found".to_string()
    } else {
        word.to_string()
    };
    let _ = rc;
    let show_rc = lines.next().ok_or_else(bad)?;
    let rest: Vec<String> = lines.collect();
    let (show, show_error) = if show_rc.trim() == "0" {
        let map = rest
            .iter()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (map, None)
    } else {
        (BTreeMap::new(), Some(rest.join("\n").trim().to_string()))
    };
    Ok(UnitStatus {
        systemd,
        enabled,
        enabled_msg: said.to_string(),
        show,
        show_error,
    })
}

/// A file this task manages: where, what it should hold, and whether it is the unit itself.
struct FileSpec {
    path: String,
    content: Vec<u8>,
    unit: bool,
}

/// A file to write, as `content::decide` planned it.
pub struct FileWrite {
    file: content::Plan,
    create: bool,
    unit: bool,
}

pub struct Plan {
    writes: Vec<FileWrite>,
    actions: Vec<Action>,
    result: Value,
}

impl Args {
    fn unit(&self) -> String {
        unit_name(&self.name)
    }
    fn unit_path(&self) -> String {
        self.path
            .clone()
            .unwrap_or_else(|| format!("/etc/systemd/system/{}", self.unit()))
    }
    /// The files to manage, the unit file first.
    fn files(&self, cx: &ModuleContext<'_>) -> Result<Vec<FileSpec>, ModuleError> {
        let mut files = Vec::new();
        let unit = match (&self.content, &self.template) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(t)) => Some(cx.templates.render_file(t)?),
            (None, None) => None,
        };
        if let Some(u) = unit {
            files.push(FileSpec {
                path: self.unit_path(),
                content: u.into_bytes(),
                unit: true,
            });
        }
        for (name, text) in &self.dropins {
            files.push(FileSpec {
                path: format!(
                    "/etc/systemd/system/{}.d/{}",
                    self.unit(),
                    dropin_file(name)
                ),
                content: text.clone().into_bytes(),
                unit: false,
            });
        }
        Ok(files)
    }
    /// The `validate` command for the unit file: `systemd-analyze verify` on a copy named as the
    /// unit (it derives the unit's name and type from the file name).
    fn validate_cmd(&self) -> Result<Option<String>, String> {
        if !self.validate {
            return Ok(None);
        }
        let n = quote(&self.unit())?;
        let inner = format!(
            "vd=$(mktemp -d) || exit 1; cp -- \"$1\" \"$vd\"/{n} && \
             systemd-analyze verify --man=no -- \"$vd\"/{n}; vrc=$?; rm -rf -- \"$vd\"; exit $vrc"
        );
        Ok(Some(format!("sh -c {} sh %s", quote(&inner)?)))
    }
}

/// The one diff shown for several files: each file's content under a `# PATH` header.
fn combined_diff(diffs: Vec<FileDiff>) -> Option<FileDiff> {
    if diffs.len() <= 1 {
        return diffs.into_iter().next();
    }
    let join = |side: &dyn Fn(&FileDiff) -> &Option<String>| -> Option<String> {
        let parts: Vec<String> = diffs
            .iter()
            .filter_map(|d| side(d).as_ref().map(|t| format!("# {}\n{t}", d.path)))
            .collect();
        (!parts.is_empty()).then(|| parts.concat())
    };
    Some(FileDiff {
        path: "unit files".into(),
        before: join(&|d| &d.before),
        after: join(&|d| &d.after),
    })
}

/// Runs the steps in order, stopping at the first failure with systemctl's message.
async fn systemctl(host: &Host, unit: &str, acts: &[Action]) -> Result<(), ModuleError> {
    if acts.is_empty() {
        return Ok(());
    }
    let mut s = format!(
        "u={}\nstep() {{ if ! o=$(\"$@\" 2>&1); then printf '%s\\n' \"$o\" >&2; exit 3; fi; }}\n",
        quote(unit)?
    );
    for a in acts {
        s += &match a {
            Action::DaemonReload => "echo daemon-reload\nstep systemctl daemon-reload\n".into(),
            _ => format!("echo '{w}'\nstep systemctl {w} -- \"$u\"\n", w = a.words()),
        };
    }
    let out = host.run(&s).await?;
    if !out.success() {
        let last = out.stdout_text().lines().last().unwrap_or("").to_string();
        let what = if last == "daemon-reload" {
            last
        } else {
            format!("{last} {unit}")
        };
        return Err(ModuleError::Failed(format!(
            "systemctl {what} failed: {}",
            out.stderr_text().trim()
        )));
    }
    Ok(())
}

async fn read_status(host: &Host, unit: &str) -> Result<UnitStatus, ModuleError> {
    let out = host
        .run(&format!("u={}\n{STATUS_FRAGMENT}", quote(unit)?))
        .await?;
    parse_status(&out.stdout_text()).map_err(ModuleError::Failed)
}

/// What the probe reads of each file the unit is made of: its state and checksum.
fn inspects(files: &[FileSpec]) -> Vec<Inspect<'_>> {
    files
        .iter()
        .map(|f| Inspect {
            path: &f.path,
            follow: false,
            into_dir: None,
            read: None,
        })
        .collect()
}

#[async_trait]
impl Module for SystemdUnit {
    const NAME: &'static str = "systemd_unit";
    const RENDERS_TEMPLATES: bool = true;
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = Plan;

    fn check_args(a: &Args) -> Result<(), String> {
        let ok = |c: char| c.is_ascii_alphanumeric() || ":-_.@\\".contains(c);
        if a.name.is_empty() || !a.name.chars().all(ok) || a.name.starts_with('.') {
            return Err(format!("name {:?} is not a unit name", a.name));
        }
        if a.content.is_some() && a.template.is_some() {
            return Err("give content or template, not both".into());
        }
        if a.validate && a.content.is_none() && a.template.is_none() {
            return Err("validate needs content or template (the unit file to check)".into());
        }
        if a.path
            .as_deref()
            .is_some_and(|p| p.is_empty() || p.ends_with('/'))
        {
            return Err("path must name a file".into());
        }
        for d in a.dropins.keys() {
            if d.is_empty() || d.contains('/') || d.starts_with('.') {
                return Err(format!("dropins: {d:?} is not a file name"));
            }
        }
        if a.masked == Some(true) {
            if a.enabled == Some(true) {
                return Err("a masked unit cannot be enabled".into());
            }
            if matches!(
                a.state,
                Some(State::Started | State::Restarted | State::Reloaded)
            ) {
                return Err("a masked unit cannot be started".into());
            }
            if a.content.is_some() || a.template.is_some() {
                return Err(
                    "masked: true replaces the unit file with a link to /dev/null; \
                            give no content or template"
                        .into(),
                );
            }
        }
        Ok(())
    }

    const SCRIPT_PROBE: bool = true;

    fn probe_script(
        &self,
        args: &Args,
        cx: &ModuleContext<'_>,
    ) -> Result<Option<String>, ModuleError> {
        let files = args.files(cx)?;
        let mut script = String::new();
        for i in inspects(&files) {
            script += &i.script().map_err(ModuleError::Args)?;
            script += "\n";
        }
        script += &format!("u={}\n{STATUS_FRAGMENT}", quote(&args.unit())?);
        Ok(Some(script))
    }

    /// Decides from the probe script's output; only a diff of a changed file reads that file in
    /// a round trip of its own.
    async fn decide(
        &self,
        args: &Args,
        out: Option<ExecOutput>,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<Plan>, ModuleError> {
        let unit = args.unit();
        let files = args.files(cx)?;
        let inspects = inspects(&files);
        let out = crate::shared::inspect::probe_output(out, &format!("inspecting {unit}"))?;
        if !out.success() {
            return Err(ModuleError::Failed(format!(
                "cannot inspect {unit}: {}",
                out.stderr_text().trim()
            )));
        }
        let mut rest: &[u8] = &out.stdout;
        let mut currents: Vec<Current> = Vec::new();
        for i in &inspects {
            let cur = i.parse(rest).map_err(ModuleError::Failed)?;
            currents.push(cur);
            rest = &currents.last().expect("just pushed").rest;
        }
        let mut status =
            parse_status(&String::from_utf8_lossy(rest)).map_err(ModuleError::Failed)?;

        let mut writes = Vec::new();
        let mut summary = Vec::new();
        let mut diffs = Vec::new();
        for (f, mut cur) in files.into_iter().zip(currents) {
            if matches!(cur.kind(), FileKind::Directory | FileKind::Other) {
                return Err(ModuleError::Failed(format!(
                    "{} exists and is not a regular file",
                    cur.path
                )));
            }
            let differs =
                cur.stat.sha256.as_deref() != Some(crate::shared::inspect::sha256(&f.content).as_str());
            if differs && cx.want_diff && cur.kind() == &FileKind::File && cur.size <= DIFF_LIMIT {
                cur.content = read_file(cx.host, &cur.path).await?;
            }
            let label = Some(format!("write {}", f.path));
            if let Probe::Change(c) =
                content::decide(&cur, f.content, &Wanted::default(), cx.want_diff, label)?
            {
                summary.push(c.summary);
                diffs.extend(c.diff);
                writes.push(FileWrite {
                    file: c.plan,
                    create: !cur.exists(),
                    unit: f.unit,
                });
            }
        }
        let want = Want {
            files_changed: !writes.is_empty(),
            writes_unit: args.content.is_some() || args.template.is_some(),
            daemon_reload: args.daemon_reload,
            enabled: args.enabled,
            masked: args.masked,
            state: args.state,
        };
        let mut assumed = None;
        if !status.found() && !want.writes_unit && status.systemd && cx.after_predicted_change {
            // A package a change above installs may bring the unit: predict what the real run
            // then does to a unit that is new, so disabled and inactive.
            assumed = Some(format!(
                " (assumed installed by a change above; now: {})",
                status.enabled_msg.trim()
            ));
            status.enabled = "disabled".into();
            status.show.insert("ActiveState".into(), "inactive".into());
        }
        let actions = decide(&want, &status).map_err(ModuleError::Failed)?;
        let result = json!({
            "name": unit,
            "path": args.unit_path(),
            "enabled": status.enabled,
            "status": status.json(),
            "changed_files": writes.iter().map(|w| w.file.path.clone()).collect::<Vec<_>>(),
            "actions": actions.iter().map(|a| a.words()).collect::<Vec<_>>(),
        });
        if writes.is_empty() && actions.is_empty() {
            return Ok(Probe::Unchanged(result));
        }
        summary.extend(actions.iter().map(|a| a.words().to_string()));
        let mut summary = summary.join(", ");
        summary.extend(assumed);
        let plan = Plan {
            writes,
            actions,
            result,
        };
        Ok(Probe::change(plan, summary, combined_diff(diffs)))
    }

    async fn apply(
        &self,
        args: &Args,
        plan: Plan,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        let unit = args.unit();
        let (before, after): (Vec<Action>, Vec<Action>) = plan
            .actions
            .iter()
            .partition(|a| matches!(a, Action::Unmask { .. }));
        systemctl(cx.host, &unit, &before).await?;
        let validate = args.validate_cmd().map_err(ModuleError::Args)?;
        for w in &plan.writes {
            if w.create {
                crate::shared::content::ensure_parent(cx.host, &w.file.path).await?;
            }
            let v = if w.unit { validate.as_deref() } else { None };
            let opts = content::write_options(Wanted::default(), v, false);
            content::apply(cx.host, &w.file, &opts).await?;
        }
        systemctl(cx.host, &unit, &after).await?;
        let status = read_status(cx.host, &unit).await?;
        let mut result = plan.result;
        result["enabled"] = json!(status.enabled);
        result["status"] = status.json();
        Ok(Applied::changed(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Env;
    use engine::module::{DynModule, Status};

    fn st(systemd: bool, enabled: &str, active: &str) -> UnitStatus {
        let mut show = BTreeMap::new();
        if systemd {
            show.insert("ActiveState".to_string(), active.to_string());
        }
        UnitStatus {
            systemd,
            enabled: enabled.into(),
            enabled_msg: format!("Failed to get unit file state for x.service: {enabled}"),
            show,
            show_error: (!systemd).then(|| "System has not been booted with systemd".into()),
        }
    }

    fn started() -> Want {
        Want {
            writes_unit: true,
            state: Some(State::Started),
            ..Default::default()
        }
    }

    #[test]
    fn started_unit_is_left_alone_unless_its_file_changed() {
        use Action::*;
        assert_eq!(
            decide(&started(), &st(true, "enabled", "active")),
            Ok(vec![])
        );
        let changed = Want {
            files_changed: true,
            ..started()
        };
        assert_eq!(
            decide(&changed, &st(true, "enabled", "active")),
            Ok(vec![DaemonReload, Restart]),
            "restarted once"
        );
        assert_eq!(
            decide(&changed, &st(true, "disabled", "inactive")),
            Ok(vec![DaemonReload, Start])
        );
        let restarted = Want {
            state: Some(State::Restarted),
            ..changed
        };
        assert_eq!(
            decide(&restarted, &st(true, "enabled", "active")),
            Ok(vec![DaemonReload, Restart])
        );
        let unchanged_restart = Want {
            state: Some(State::Restarted),
            ..Default::default()
        };
        assert_eq!(
            decide(&unchanged_restart, &st(true, "enabled", "active")),
            Ok(vec![Restart]),
            "restarted always acts"
        );
    }

    #[test]
    fn reloaded_stopped_enable_mask() {
        use Action::*;
        let w = |state, enabled, masked| Want {
            state,
            enabled,
            masked,
            ..Default::default()
        };
        let active = st(true, "enabled", "active");
        let inactive = st(true, "disabled", "inactive");
        assert_eq!(
            decide(&w(Some(State::Reloaded), None, None), &active),
            Ok(vec![Reload])
        );
        assert_eq!(
            decide(&w(Some(State::Reloaded), None, None), &inactive),
            Ok(vec![Start])
        );
        assert_eq!(
            decide(&w(Some(State::Stopped), None, None), &active),
            Ok(vec![Stop])
        );
        assert_eq!(
            decide(&w(Some(State::Stopped), None, None), &inactive),
            Ok(vec![])
        );
        assert_eq!(
            decide(&w(None, Some(true), None), &inactive),
            Ok(vec![Enable])
        );
        assert_eq!(decide(&w(None, Some(true), None), &active), Ok(vec![]));
        assert_eq!(
            decide(&w(None, Some(false), None), &active),
            Ok(vec![Disable])
        );
        assert_eq!(
            decide(&w(None, Some(false), None), &st(true, "static", "active")),
            Ok(vec![]),
            "static units cannot be disabled"
        );
        assert_eq!(
            decide(&w(None, None, Some(true)), &inactive),
            Ok(vec![Mask])
        );
        let masked = st(true, "masked", "inactive");
        assert_eq!(decide(&w(None, None, Some(true)), &masked), Ok(vec![]));
        assert_eq!(
            decide(&w(Some(State::Started), Some(true), Some(false)), &masked),
            Ok(vec![Unmask { runtime: false }, Enable, Start])
        );
        let forced = Want {
            daemon_reload: true,
            ..Default::default()
        };
        assert_eq!(decide(&forced, &active), Ok(vec![DaemonReload]));
    }

    #[test]
    fn without_systemd_states_fail_and_unit_files_still_work() {
        use Action::*;
        let offline = st(false, "disabled", "");
        let err = decide(&started(), &offline).unwrap_err();
        assert!(err.contains("not been booted with systemd"), "{err}");
        let stop = Want {
            state: Some(State::Stopped),
            ..Default::default()
        };
        assert!(decide(&stop, &offline).is_err(), "no false ok for stopped");
        let enable = Want {
            files_changed: true,
            writes_unit: true,
            enabled: Some(true),
            ..Default::default()
        };
        // No daemon-reload without a manager; enable works on the files.
        assert_eq!(decide(&enable, &offline), Ok(vec![Enable]));
        let missing = st(false, "not-found", "");
        let e = decide(
            &Want {
                writes_unit: false,
                ..enable
            },
            &missing,
        )
        .unwrap_err();
        assert!(e.contains("Failed to get unit file state"), "{e}");
        assert_eq!(
            decide(
                &Want {
                    enabled: Some(false),
                    ..Default::default()
                },
                &missing
            ),
            Ok(vec![])
        );
    }

    #[test]
    fn status_is_parsed_online_and_offline() {
        let online = "x\n--status\nsystemd\n0 enabled\n0\nLoadState=loaded\nActiveState=active\nSubState=running\n";
        let s = parse_status(online).unwrap();
        assert!(s.systemd && s.running());
        assert_eq!(s.enabled, "enabled");
        assert_eq!(s.show["SubState"], "running");
        let offline = "--status\noffline\n1 Failed to get unit file state for a.service: No such file or directory \n1\nSystem has not been booted with systemd as init system (PID 1). Can't operate.\nFailed to connect to bus: Host is down\n";
        let s = parse_status(offline).unwrap();
        assert!(!s.systemd && !s.found());
        assert!(s.show.is_empty());
        assert!(s
            .show_error
            .unwrap()
            .starts_with("System has not been booted"));
        let masked = parse_status("--status\noffline\n1 masked\n1\nx\n").unwrap();
        assert!(masked.masked());
    }

    #[test]
    fn names_and_args() {
        assert_eq!(unit_name("haproxy"), "haproxy.service");
        assert_eq!(unit_name("kubelet.service"), "kubelet.service");
        assert_eq!(unit_name("fstrim.timer"), "fstrim.timer");
        assert_eq!(unit_name("getty@tty1"), "getty@tty1.service");
        assert_eq!(dropin_file("override"), "override.conf");
        assert_eq!(dropin_file("10-x.conf"), "10-x.conf");
        let m = SystemdUnit;
        assert!(m
            .validate(&json!({"name": "app", "content": "x", "enabled": true}))
            .is_ok());
        for (bad, why) in [
            (json!({"name": "a/b"}), "not a unit name"),
            (
                json!({"name": "a", "content": "x", "template": "t"}),
                "not both",
            ),
            (
                json!({"name": "a", "masked": true, "enabled": true}),
                "cannot be enabled",
            ),
            (
                json!({"name": "a", "masked": true, "state": "started"}),
                "cannot be started",
            ),
            (json!({"name": "a", "validate": true}), "validate needs"),
            (
                json!({"name": "a", "dropins": {"../x": "y"}}),
                "not a file name",
            ),
            (json!({"name": "a", "state": "running"}), "unknown variant"),
            (json!({"name": "a", "enable": true}), "enabled"),
        ] {
            let e = m.validate(&bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn unit_file_and_dropin_written_then_unchanged_validate_keeps_old_file() {
        let env = Env::new();
        let path = env.path("pbtest-unit.service");
        let content = "[Service]\nExecStart=/bin/true\n";
        // Drop-ins always go to /etc/systemd/system: this test manages the unit file only.
        let args = json!({"name": "pbtest-unit", "content": content, "path": path});
        let out = env.run(&SystemdUnit, args.clone(), true).await.unwrap();
        assert_eq!(out.status, Status::Changed);
        let summary = out.summary.unwrap();
        assert!(summary.starts_with(&format!("write {path}")), "{summary}");
        let out = env.apply(&SystemdUnit, args.clone()).await;
        assert_eq!(out.status, Status::Changed);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
        assert_eq!(env.apply(&SystemdUnit, args).await.status, Status::Ok);

        let bad = json!({"name": "pbtest-unit", "path": path, "validate": true,
                         "content": "[Service]\nExecStart=relative/path\n"});
        let e = env.error(&SystemdUnit, bad).await;
        assert!(e.contains("validation failed"), "{e}");
        assert!(e.contains("relative/path"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
        assert_eq!(std::fs::read_dir(env.dir.path()).unwrap().count(), 1);
    }
}
