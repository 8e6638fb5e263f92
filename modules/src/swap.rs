//! `swap`: turns swap off now and at boot (what kubeadm asks of a node).

use async_trait::async_trait;
use engine::remote::FileKind;
use engine::transport::ExecOutput;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::shared::content;
use crate::shared::inspect::{Inspect, Read};
use crate::shared::perms::Wanted;

pub struct Swap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Off,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// `off` (the default and only state): no active swap, and no swap entry in fstab.
    #[serde(default)]
    pub state: State,
    /// The fstab whose swap lines are commented out (default /etc/fstab).
    #[serde(default)]
    pub fstab: Option<String>,
}

pub const DOC: &str = r#"# swap

Turns swap off, now and for the next boot (kubeadm refuses to run with swap on).

- The probe reads `/proc/swaps` and the fstab in one round trip.
- When `/proc/swaps` lists any swap area, `swapoff -a` runs; a failure (say, not enough memory
  to move the pages back) fails the task with swapoff's message.
- Every active line of the fstab whose type (third field) is `swap` is commented out with a
  `# ` prefix; other lines are left as they are. The file is written atomically, only when
  something changed, so a second run reports ok.
- Check mode says what would change (`swapoff -a (/dev/sda2), comment out 1 swap line(s) in
  /etc/fstab`).

| argument | required | default | meaning |
|---|---|---|---|
| `state` | no | `off` | only `off` |
| `fstab` | no | `/etc/fstab` | the fstab to edit |

Result: `active` (the swap areas found), `commented` (fstab lines commented out).

```rhai
swap(#{ state: "off" })
```
"#;

/// The fstab with its active swap lines commented out, and how many there were.
pub fn comment_swap(text: &str) -> (String, usize) {
    let mut n = 0;
    let out = text
        .split_inclusive('\n')
        .map(|line| {
            let t = line.trim_start();
            let is_swap = !t.starts_with('#') && t.split_whitespace().nth(2) == Some("swap");
            if is_swap {
                n += 1;
                format!("# {line}")
            } else {
                line.to_string()
            }
        })
        .collect();
    (out, n)
}

/// The swap areas in /proc/swaps' text (its header skipped).
pub fn active_swaps(proc_swaps: &str) -> Vec<String> {
    proc_swaps
        .lines()
        .filter(|l| !l.starts_with("Filename"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

pub struct Plan {
    swapoff: bool,
    file: Option<content::Plan>,
    result: Value,
}

impl Args {
    fn inspect(&self) -> Inspect<'_> {
        Inspect {
            path: self.fstab(),
            follow: true,
            into_dir: None,
            read: Some(Read::default()),
        }
    }

    fn fstab(&self) -> &str {
        self.fstab.as_deref().unwrap_or("/etc/fstab")
    }
}

#[async_trait]
impl Module for Swap {
    const NAME: &'static str = "swap";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = Plan;

    fn check_args(a: &Args) -> Result<(), String> {
        if a.fstab().is_empty() || a.fstab().ends_with('/') {
            return Err("fstab must name a file".into());
        }
        Ok(())
    }

    const SCRIPT_PROBE: bool = true;

    fn probe_script(
        &self,
        args: &Args,
        _cx: &ModuleContext<'_>,
    ) -> Result<Option<String>, ModuleError> {
        // /proc/swaps first: the fstab's content runs to the end of the output.
        let fstab_script: String = args.inspect().script().map_err(ModuleError::Args)?;
        Ok(Some(format!(
            "cat /proc/swaps | tr '\\n' '|'; echo\n{fstab_script}"
        )))
    }

    async fn decide(
        &self,
        args: &Args,
        out: Option<ExecOutput>,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<Plan>, ModuleError> {
        let inspect = args.inspect();
        let out = crate::shared::inspect::probe_output(out, "reading swap state")?;
        if !out.success() {
            return Err(ModuleError::Failed(format!(
                "cannot read swap state: {}",
                out.stderr_text().trim()
            )));
        }
        let nl = out.stdout.iter().position(|b| *b == b'\n').unwrap_or(0);
        let swaps = String::from_utf8_lossy(&out.stdout[..nl]).replace('|', "\n");
        let active = active_swaps(&swaps);
        let cur = inspect
            .parse(out.stdout.get(nl + 1..).unwrap_or_default())
            .map_err(ModuleError::Failed)?;
        let path = cur.path.clone();
        let text = match (cur.kind(), &cur.content) {
            (FileKind::File, Some(c)) => String::from_utf8_lossy(c).into_owned(),
            (FileKind::Absent, _) => String::new(),
            _ => return Err(ModuleError::Failed(format!("{path} is not a regular file"))),
        };
        let (new, commented) = comment_swap(&text);
        let mut summary = Vec::new();
        if !active.is_empty() {
            summary.push(format!("swapoff -a ({})", active.join(", ")));
        }
        let mut file = None;
        let mut diff = None;
        if commented > 0 {
            let label = Some(format!("comment out {commented} swap line(s) in {path}"));
            if let Probe::Change(c) = content::decide(
                &cur,
                new.into_bytes(),
                &Wanted::default(),
                cx.want_diff,
                label,
            )? {
                summary.push(c.summary);
                file = Some(c.plan);
                diff = c.diff;
            }
        }
        let result = json!({ "active": active, "commented": commented, "fstab": path });
        if summary.is_empty() {
            return Ok(Probe::Unchanged(result));
        }
        let plan = Plan {
            swapoff: !active.is_empty(),
            file,
            result,
        };
        Ok(Probe::change(plan, summary.join(", "), diff))
    }

    async fn apply(
        &self,
        _args: &Args,
        plan: Plan,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        if plan.swapoff {
            let out = cx.host.run("swapoff -a").await?;
            if !out.success() {
                return Err(ModuleError::Failed(format!(
                    "swapoff -a failed: {}",
                    out.stderr_text().trim()
                )));
            }
        }
        if let Some(file) = &plan.file {
            let opts = content::write_options(Wanted::default(), None, false);
            content::apply(cx.host, file, &opts).await?;
        }
        Ok(Applied::changed(plan.result))
    }
}

/// How the project's tests say they skipped (shared with the integration tests).
#[cfg(test)]
#[path = "../../tests/support/skip.rs"]
mod test_skip;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Env;
    use engine::module::{DynModule, Status};
    use test_skip as skip;

    #[test]
    fn swap_lines_are_commented_once() {
        let fstab = "UUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n\
                     # /old none swap sw 0 0\n  /dev/sdb2\tnone\tswap\tdefaults 0 0";
        let (new, n) = comment_swap(fstab);
        assert_eq!(n, 2);
        assert_eq!(
            new,
            "UUID=1 / ext4 defaults 0 1\n# /swapfile none swap sw 0 0\n\
             # /old none swap sw 0 0\n#   /dev/sdb2\tnone\tswap\tdefaults 0 0"
        );
        assert_eq!(comment_swap(&new), (new.clone(), 0));
    }

    #[test]
    fn proc_swaps_is_read() {
        let none = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert!(active_swaps(none).is_empty());
        let one =
            format!("{none}/swapfile                               file\t\t1048572\t\t0\t\t-2\n");
        assert_eq!(active_swaps(&one), ["/swapfile"]);
        assert!(Swap.validate(&json!({"state": "on"})).is_err());
        assert!(Swap.validate(&json!({"fstab": "/etc/fstab"})).is_ok());
    }

    #[tokio::test]
    async fn fstab_is_edited_then_ok() {
        // This machine has no active swap (a precondition checked here, not assumed).
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
        if !active_swaps(&swaps).is_empty() {
            skip::skip(
                "swap is on here",
                "swap::tests::fstab_is_edited_then_ok",
                "needs a machine without active swap",
            );
            return;
        }
        let env = Env::new();
        let fstab = env.path("fstab");
        std::fs::write(
            &fstab,
            "/dev/x / ext4 defaults 0 1\n/swap none swap sw 0 0\n",
        )
        .unwrap();
        let args = json!({"fstab": fstab});
        let out = env.run(&Swap, args.clone(), true).await.unwrap();
        assert_eq!(
            out.summary.as_deref(),
            Some(format!("comment out 1 swap line(s) in {fstab}").as_str())
        );
        assert_eq!(env.apply(&Swap, args.clone()).await.status, Status::Changed);
        assert_eq!(
            std::fs::read_to_string(&fstab).unwrap(),
            "/dev/x / ext4 defaults 0 1\n# /swap none swap sw 0 0\n"
        );
        assert_eq!(env.apply(&Swap, args).await.status, Status::Ok);
    }
}
