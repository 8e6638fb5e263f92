//! `sysctl`: keeps one kernel parameter in a sysctl.d file and, when asked, applies it to the
//! running kernel.

use async_trait::async_trait;
use engine::host::quote;
use engine::remote::FileKind;
use engine::transport::ExecOutput;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::shared::content;
use crate::shared::inspect::{Inspect, Read};
use crate::shared::perms::Wanted;

pub struct Sysctl;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Present,
    Absent,
}

pub const DEFAULT_FILE: &str = "/etc/sysctl.d/99-playbook.conf";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The key, as `sysctl` names it (e.g. "net.ipv4.ip_forward").
    pub name: String,
    /// The value (a string, number or bool; required with state `present`). Keys with several
    /// values take them separated by spaces ("4096 87380 6291456").
    #[serde(default, deserialize_with = "scalar")]
    pub value: Option<String>,
    /// `present` (default): the file has `name = value`; `absent`: the file has no line for it.
    #[serde(default)]
    pub state: State,
    /// The file that keeps the setting across reboots (default /etc/sysctl.d/99-playbook.conf).
    #[serde(default)]
    pub sysctl_file: Option<String>,
    /// Also set the running kernel's value with `sysctl -w` when it differs (default true).
    #[serde(default = "yes")]
    pub reload: bool,
}

fn yes() -> bool {
    true
}

/// A string, number or bool, as text.
fn scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(if b { "1" } else { "0" }.into())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a string or number, found {other}"
        ))),
    }
}

pub const DOC: &str = r#"# sysctl

Sets a kernel parameter persistently and, by default, in the running kernel.

- The setting is kept as a `name = value` line in `sysctl_file` (default
  `/etc/sysctl.d/99-playbook.conf`, created when missing). The first line for the key is
  replaced, later duplicates are removed; other lines and comments are left alone. The file is
  written atomically, only when it changes.
- With `reload: true` (the default) the running value is read with `sysctl -n` and set with
  `sysctl -w name=value` only when it differs. Values are compared with whitespace normalised
  (`sysctl` separates the parts of multi-value keys with tabs).
- When the kernel refuses the value (a read-only key, `permission denied on key ...`, as for
  `vm.*` and `kernel.*` in a container), the task **fails with sysctl's message**. As in Ansible,
  the file has already been written at that point: it holds the wanted value for the next boot,
  and a re-run fails again until the running value can be set (it never reports a false ok).
- An unknown key is an error found by the probe (`sysctl: cannot stat /proc/sys/...`), in check
  mode too.
- `state: "absent"` removes the key's lines from the file; the running value is left as it is.

| argument | required | default | meaning |
|---|---|---|---|
| `name` | yes | | the key, e.g. `net.ipv4.ip_forward` |
| `value` | with present | | the value (string, number or bool) |
| `state` | no | `present` | `present` or `absent` |
| `sysctl_file` | no | `/etc/sysctl.d/99-playbook.conf` | the file that keeps it |
| `reload` | no | true | set the running value with `sysctl -w` when it differs |

Result: `name`, `value` (wanted), `running` (the value before the task), `sysctl_file`.

```rhai
sysctl(#{ name: "net.ipv4.ip_forward", value: 1 })
sysctl(#{ name: "net.bridge.bridge-nf-call-iptables", value: "1",
          sysctl_file: "/etc/sysctl.d/k8s.conf" })
```
"#;

/// Whitespace-normalised value, as the kernel's parts.
pub fn normalise(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The key of a `key = value` line, if it is one (comments and blank lines have none).
fn line_key(line: &str) -> Option<&str> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
        return None;
    }
    let t = t.strip_prefix('-').unwrap_or(t);
    t.split_once('=').map(|(k, _)| k.trim())
}

/// Keys may be written with `/` or `.`.
fn same_key(a: &str, b: &str) -> bool {
    a.replace('/', ".") == b.replace('/', ".")
}

/// The file's text with the key set to `value` (Some) or removed (None).
pub fn edit(text: &str, name: &str, value: Option<&str>) -> String {
    let mut out = String::new();
    let mut done = false;
    for line in text.split_inclusive('\n') {
        if !line_key(line).is_some_and(|k| same_key(k, name)) {
            out.push_str(line);
            continue;
        }
        match value {
            Some(v) if !done => {
                let old = line.split_once('=').map(|(_, v)| v).unwrap_or_default();
                if normalise(old) == normalise(v) {
                    out.push_str(line);
                    if !line.ends_with('\n') {
                        out.push('\n');
                    }
                } else {
                    out.push_str(&format!("{name} = {v}\n"));
                }
                done = true;
            }
            _ => {}
        }
    }
    if let (Some(v), false) = (value, done) {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{name} = {v}\n"));
    }
    out
}

pub struct Plan {
    file: Option<content::Plan>,
    create: bool,
    set: bool,
    result: Value,
}

impl Args {
    fn file(&self) -> &str {
        self.sysctl_file.as_deref().unwrap_or(DEFAULT_FILE)
    }

    fn inspect(&self) -> Inspect<'_> {
        Inspect {
            path: self.file(),
            follow: true,
            into_dir: None,
            read: Some(Read::default()),
        }
    }
}

#[async_trait]
impl Module for Sysctl {
    const NAME: &'static str = "sysctl";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = Plan;

    fn check_args(a: &Args) -> Result<(), String> {
        let valid = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
        if a.name.is_empty() || !a.name.chars().all(valid) || a.name.starts_with(['/', '.']) {
            return Err(format!("name {:?} is not a sysctl key", a.name));
        }
        match (&a.state, &a.value) {
            (State::Present, None) => Err("value is required with state present".into()),
            (State::Present, Some(v)) if v.contains('\n') => {
                Err("value must be on one line".into())
            }
            (State::Absent, Some(_)) => Err("value is not used with state absent".into()),
            _ if a.file().is_empty() || a.file().ends_with('/') => {
                Err("sysctl_file must name a file".into())
            }
            _ => Ok(()),
        }
    }

    const SCRIPT_PROBE: bool = true;

    fn probe_script(
        &self,
        args: &Args,
        _cx: &ModuleContext<'_>,
    ) -> Result<Option<String>, ModuleError> {
        // The running value first: the file's content runs to the end of the output.
        let running_script = format!(
            "v=$(sysctl -n -- {} 2>&1); echo $?; printf '%s\\n' \"$v\" | tr '\\n' ' '; echo\n",
            quote(&args.name)?
        );
        let file_script: String = args.inspect().script().map_err(ModuleError::Args)?;
        Ok(Some(format!("{running_script}{file_script}")))
    }

    async fn decide(
        &self,
        args: &Args,
        out: Option<ExecOutput>,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<Plan>, ModuleError> {
        let inspect = args.inspect();
        let out = crate::shared::inspect::probe_output(out, &format!("inspecting {}", args.file()))?;
        if !out.success() {
            return Err(ModuleError::Failed(format!(
                "cannot inspect {}: {}",
                args.file(),
                out.stderr_text().trim()
            )));
        }
        let (rc, rest) = split_line(&out.stdout);
        let (running, rest) = split_line(rest);
        let running = running.trim().to_string();
        let want = args.value.as_deref().map(normalise);
        let read_ok = rc.trim() == "0";
        if args.state == State::Present && !read_ok {
            return Err(ModuleError::Failed(running));
        }
        let cur = inspect.parse(rest).map_err(ModuleError::Failed)?;
        let path = cur.path.clone();
        let text = match (cur.kind(), &cur.content) {
            (FileKind::File, Some(c)) => String::from_utf8(c.clone())
                .map_err(|_| ModuleError::Failed(format!("{path} is not UTF-8 text")))?,
            (FileKind::Absent, _) => String::new(),
            _ => return Err(ModuleError::Failed(format!("{path} is not a regular file"))),
        };
        let mut summary = Vec::new();
        let new = edit(&text, &args.name, args.value.as_deref());
        let file = if new == text {
            None
        } else {
            let label = match args.state {
                State::Present => format!(
                    "{} = {} in {path}",
                    args.name,
                    want.as_deref().unwrap_or("")
                ),
                State::Absent => format!("remove {} from {path}", args.name),
            };
            match content::decide(
                &cur,
                new.into_bytes(),
                &Wanted::default(),
                cx.want_diff,
                Some(label),
            )? {
                Probe::Change(c) => {
                    summary.push(c.summary);
                    Some((c.plan, c.diff))
                }
                _ => None,
            }
        };
        let set = args.state == State::Present
            && args.reload
            && want.as_deref() != Some(normalise(&running).as_str());
        if set {
            summary.push(format!(
                "sysctl -w {}={} (running: {})",
                args.name,
                want.as_deref().unwrap_or(""),
                normalise(&running)
            ));
        }
        let result = json!({
            "name": args.name,
            "value": want,
            "running": read_ok.then(|| normalise(&running)),
            "sysctl_file": path,
        });
        if file.is_none() && !set {
            return Ok(Probe::Unchanged(result));
        }
        let (file, diff) = match file {
            Some((f, d)) => (Some(f), d),
            None => (None, None),
        };
        let plan = Plan {
            file,
            create: !cur.exists(),
            set,
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
        if let Some(file) = &plan.file {
            if plan.create {
                crate::shared::content::ensure_parent(cx.host, &file.path).await?;
            }
            let opts = content::write_options(Wanted::default(), None, false);
            content::apply(cx.host, file, &opts).await?;
        }
        if plan.set {
            let value = args.value.as_deref().unwrap_or_default();
            let assign = format!("{}={}", args.name, normalise(value));
            let out = cx
                .host
                .run(&format!("sysctl -w -- {} >/dev/null", quote(&assign)?))
                .await?;
            if !out.success() {
                let written = if plan.file.is_some() {
                    format!(
                        " ({} was written; the running value is unchanged)",
                        args.file()
                    )
                } else {
                    String::new()
                };
                return Err(ModuleError::Failed(format!(
                    "sysctl -w {assign} failed{written}: {}",
                    out.stderr_text().trim()
                )));
            }
        }
        Ok(Applied::changed(plan.result))
    }
}

/// The first line of `b` (without its newline) and what follows it.
fn split_line(b: &[u8]) -> (String, &[u8]) {
    match b.iter().position(|c| *c == b'\n') {
        Some(i) => (String::from_utf8_lossy(&b[..i]).into_owned(), &b[i + 1..]),
        None => (String::from_utf8_lossy(b).into_owned(), &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Env;
    use engine::module::{DynModule, Status};

    #[test]
    fn edit_sets_replaces_and_removes_only_the_key() {
        let text = "# keep\nnet.a = 1\nvm.x=5\nnet.a=2\nother = 3";
        assert_eq!(
            edit(text, "net.a", Some("9")),
            "# keep\nnet.a = 9\nvm.x=5\nother = 3"
        );
        assert_eq!(edit("", "net.a", Some("1")), "net.a = 1\n");
        assert_eq!(edit("x = 1", "net.a", Some("1")), "x = 1\nnet.a = 1\n");
        // The same value, spaced differently, is left as written.
        let tabs = "net.ipv4.tcp_rmem=4096\t87380   6291456\n";
        assert_eq!(
            edit(tabs, "net.ipv4.tcp_rmem", Some("4096 87380 6291456")),
            tabs
        );
        assert_eq!(edit(text, "net.a", None), "# keep\nvm.x=5\nother = 3");
        assert_eq!(edit("# net.a = 1\n", "net.a", None), "# net.a = 1\n");
        assert_eq!(edit("net/a = 1\n", "net.a", None), "");
        assert_eq!(edit("-net.a = 1\n", "net.a", Some("1")), "-net.a = 1\n");
    }

    #[test]
    fn values_compare_with_whitespace_normalised() {
        assert_eq!(normalise("4096\t87380  6291456 "), "4096 87380 6291456");
    }

    #[test]
    fn args_are_checked() {
        let m = Sysctl;
        assert!(m
            .validate(&json!({"name": "net.ipv4.ip_forward", "value": 1}))
            .is_ok());
        assert!(m.validate(&json!({"name": "x.y", "value": true})).is_ok());
        let e = m.validate(&json!({"name": "x.y"})).unwrap_err();
        assert!(e.contains("value is required"), "{e}");
        let e = m
            .validate(&json!({"name": "x; rm", "value": 1}))
            .unwrap_err();
        assert!(e.contains("not a sysctl key"), "{e}");
        let e = m
            .validate(&json!({"name": "x.y", "value": 1, "reloads": 1}))
            .unwrap_err();
        assert!(e.contains("reload"), "{e}");
        let e = m
            .validate(&json!({"name": "x.y", "value": [1]}))
            .unwrap_err();
        assert!(e.contains("string or number"), "{e}");
    }

    #[tokio::test]
    async fn file_is_written_then_unchanged_and_unknown_keys_fail() {
        let env = Env::new();
        let file = env.path("d/k.conf");
        // kernel.ostype is readable everywhere; reload false keeps the kernel out of it.
        let args = json!({"name": "kernel.ostype", "value": "Linux", "sysctl_file": file,
                          "reload": false});
        assert_eq!(env.check(&Sysctl, args.clone()).await, Status::Changed);
        assert!(!std::path::Path::new(&file).exists());
        let out = env.apply(&Sysctl, args.clone()).await;
        assert_eq!(out.status, Status::Changed);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "kernel.ostype = Linux\n"
        );
        assert_eq!(out.result["running"], "Linux");
        assert_eq!(env.apply(&Sysctl, args).await.status, Status::Ok);
        // With reload, a running value equal to the wanted one needs nothing.
        let args = json!({"name": "kernel.ostype", "value": "Linux", "sysctl_file": file});
        assert_eq!(env.apply(&Sysctl, args).await.status, Status::Ok);
        let args = json!({"name": "kernel.ostype", "sysctl_file": file, "state": "absent"});
        assert_eq!(
            env.apply(&Sysctl, args.clone()).await.status,
            Status::Changed
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "");
        assert_eq!(env.apply(&Sysctl, args).await.status, Status::Ok);

        let args = json!({"name": "no.such.key_pb", "value": "1", "sysctl_file": file});
        let e = env.error(&Sysctl, args).await;
        assert!(
            e.contains("no/such/key_pb") || e.contains("no.such.key_pb"),
            "{e}"
        );
    }
}
