//! `package`: installs or removes
//! packages with the host's own package manager, by handing the task to `apt` or `yum` as the
//! host's facts say.

use async_trait::async_trait;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;

use crate::apt::{self, Apt};
use crate::shared::pkg::{Names, State};
use crate::yum::{self, Yum};

pub struct Package;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The package(s), one string or a list. Names differ between distributions; versions are
    /// written as the manager underneath expects them (`foo=1.2` for apt, `foo-1.2` for yum).
    pub name: Names,
    /// `present` (default), `latest` or `absent`.
    #[serde(default)]
    pub state: State,
}

pub const DOC: &str = r#"# package

Installs, upgrades or removes packages with whichever package manager the host uses: the
`pkg_mgr` system fact picks `apt` (Debian, Ubuntu) or `yum` (`dnf` or `yum`: RHEL, Fedora, Rocky,
Alma...). The task then behaves exactly as that module does with the same `name` and `state`: the
same decision in one round trip, the same check-mode summary (`install: haproxy`), the same result
(`installed`, `upgraded`, `removed`). Another package manager fails the task, naming it.

Use `apt` or `yum` directly for their own options (`update_cache`, `enablerepo`...).

| argument | type | default | |
|---|---|---|---|
| `name` | string or list | | packages |
| `state` | `present` \| `latest` \| `absent` | `present` | |

## Example

```rhai
package(#{ name: ["keepalived", "haproxy"] })
package(#{ name: "telnet", state: "absent" })
```
"#;

/// Which module does the work, with its arguments.
enum Via {
    Apt(apt::Args),
    Yum(yum::Args),
}

impl Args {
    fn apt(&self) -> apt::Args {
        apt::Args {
            name: Some(self.name.clone()),
            state: self.state,
            update_cache: false,
            cache_valid_time: None,
        }
    }

    fn yum(&self) -> yum::Args {
        yum::Args {
            name: self.name.clone(),
            state: self.state,
            enablerepo: None,
            disablerepo: None,
            update_cache: false,
            disable_excludes: None,
        }
    }

    /// The module for a `pkg_mgr` fact.
    fn via(&self, pkg_mgr: &str) -> Result<Via, String> {
        match pkg_mgr {
            "apt" => Ok(Via::Apt(self.apt())),
            "dnf" | "yum" => Ok(Via::Yum(self.yum())),
            "" => Err("no supported package manager found on the host (apt, dnf or yum)".into()),
            other => Err(format!(
                "the host's package manager {other:?} is not supported (apt, dnf, yum); \
                 use a command task"
            )),
        }
    }
}

/// What apply hands on to the module that probed.
pub enum Plan {
    Apt(apt::Args, apt::Plan),
    Yum(yum::Args, <Yum as Module>::Plan),
}

fn map<P>(probe: Probe<P>, wrap: impl FnOnce(P) -> Plan) -> Probe<Plan> {
    match probe {
        Probe::Unchanged(v) => Probe::Unchanged(v),
        Probe::Skipped(s) => Probe::Skipped(s),
        Probe::Change(c) => Probe::change(wrap(c.plan), c.summary, c.diff),
    }
}

#[async_trait]
impl Module for Package {
    const NAME: &'static str = "package";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = Plan;

    fn check_args(args: &Args) -> Result<(), String> {
        // Names must suit both managers' rules where the host is not known yet: check each
        // conversion, accepting what either accepts.
        let apt = Apt::check_args(&args.apt());
        let yum = Yum::check_args(&args.yum());
        match (apt, yum) {
            (Err(e), Err(_)) => Err(e),
            _ => Ok(()),
        }
    }

    async fn probe(&self, args: &Args, cx: &ModuleContext<'_>) -> Result<Probe<Plan>, ModuleError> {
        let facts = cx.system.get().await?;
        let pkg_mgr = facts["pkg_mgr"].as_str().unwrap_or_default();
        Ok(match args.via(pkg_mgr).map_err(ModuleError::Failed)? {
            Via::Apt(a) => {
                Apt::check_args(&a).map_err(ModuleError::Args)?;
                let probe = Apt.probe(&a, cx).await?;
                map(probe, |p| Plan::Apt(a, p))
            }
            Via::Yum(a) => {
                Yum::check_args(&a).map_err(ModuleError::Args)?;
                let probe = Yum.probe(&a, cx).await?;
                map(probe, |p| Plan::Yum(a, p))
            }
        })
    }

    async fn apply(
        &self,
        _args: &Args,
        plan: Plan,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        match plan {
            Plan::Apt(a, p) => Apt.apply(&a, p, cx).await,
            Plan::Yum(a, p) => Yum.apply(&a, p, cx).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::module::DynModule;
    use serde_json::json;

    fn args(v: serde_json::Value) -> Args {
        engine::module::parse_args(&v).unwrap()
    }

    #[test]
    fn picks_the_module_by_pkg_mgr() {
        let a = args(json!({"name": ["a1", "b2"], "state": "latest"}));
        match a.via("apt").unwrap() {
            Via::Apt(x) => {
                assert_eq!(x.name, Some(Names::Many(vec!["a1".into(), "b2".into()])));
                assert_eq!(x.state, State::Latest);
            }
            Via::Yum(_) => panic!("apt expected"),
        }
        assert!(matches!(a.via("dnf").unwrap(), Via::Yum(_)));
        assert!(matches!(a.via("yum").unwrap(), Via::Yum(_)));
        let e = a.via("zypper").err().unwrap();
        assert!(
            e.contains("\"zypper\"") && e.contains("not supported"),
            "{e}"
        );
        assert!(a.via("").err().unwrap().contains("no supported"));
    }

    #[test]
    fn args_are_checked() {
        let m = Package;
        assert!(m.validate(&json!({"name": "haproxy"})).is_ok());
        // A yum-style name is fine until the host says apt.
        assert!(m.validate(&json!({"name": "Foo-1.2"})).is_ok());
        let e = m.validate(&json!({"name": "a*b"})).unwrap_err();
        assert!(e.contains("not a package"), "{e}");
        let e = m
            .validate(&json!({"name": "x", "update_cache": true}))
            .unwrap_err();
        assert!(e.contains("unknown field `update_cache`"), "{e}");
    }
}
