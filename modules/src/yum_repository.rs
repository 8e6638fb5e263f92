//! `yum_repository`: a `.repo` file in /etc/yum.repos.d describing one repository, written
//! atomically when its text differs (through `content`, as `copy` and `file_template` write).

use async_trait::async_trait;
use engine::host::quote;
use engine::remote::FileKind;
use engine::transport::ExecOutput;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;
use serde_json::json;

use crate::shared::content;
use crate::shared::inspect::{sha256, Inspect, Read, DIFF_LIMIT};
use crate::shared::perms::Wanted;

pub struct YumRepository;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RepoState {
    #[default]
    Present,
    Absent,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The repository id: the `[section]` of the file, and what `enablerepo` names.
    pub name: String,
    /// The human-readable name (`name=` in the file); defaults to the id.
    #[serde(default)]
    pub description: Option<String>,
    /// The URL of the repository (`baseurl=`), e.g. "https://pkgs.k8s.io/core:/stable:/v1.30/rpm/".
    #[serde(default)]
    pub baseurl: Option<String>,
    /// Whether the repository is used (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Whether packages' GPG signatures are checked; left out of the file when not given (yum's
    /// default then applies).
    #[serde(default)]
    pub gpgcheck: Option<bool>,
    /// The URL of the signing key (`gpgkey=`).
    #[serde(default)]
    pub gpgkey: Option<String>,
    /// Packages this repository's updates may not touch (`exclude=`: names or globs, one string
    /// or a list): how pkgs.k8s.io holds kubelet, kubeadm and kubectl; a task installs them with
    /// `disable_excludes` (yum).
    #[serde(default)]
    pub exclude: Option<crate::shared::pkg::Names>,
    /// `present` (default) writes the file; `absent` removes it.
    #[serde(default)]
    pub state: RepoState,
    /// The file's name without `.repo` (default: the id).
    #[serde(default)]
    pub file: Option<String>,
    /// The directory of repository files (default "/etc/yum.repos.d"); it must exist.
    #[serde(default)]
    pub reposdir: Option<String>,
}

fn yes() -> bool {
    true
}

pub const DOC: &str = r#"# yum_repository

Describes one yum/dnf repository in its own file, `/etc/yum.repos.d/NAME.repo` (or `FILE.repo`).
The file's text is rendered from the arguments, always the same way, and written only when it
differs from what is there: atomically (a temporary file in the same directory, renamed), with
mode 0644, and shown as a diff with `--diff`. The file belongs to this task: it holds this one
repository, and any other text in it is replaced. `state: "absent"` removes the file.

The rendered file:

```ini
[kubernetes]
name=Kubernetes
baseurl=https://pkgs.k8s.io/core:/stable:/v1.30/rpm/
enabled=1
gpgcheck=1
gpgkey=https://pkgs.k8s.io/core:/stable:/v1.30/rpm/repodata/repomd.xml.key
```

| argument | type | default | |
|---|---|---|---|
| `name` | string | | repository id (`[name]`) |
| `description` | string | `name` | `name=` line |
| `baseurl` | string | | `baseurl=` (required with state present) |
| `enabled` | bool | true | `enabled=1/0` |
| `gpgcheck` | bool | | `gpgcheck=1/0` (left out when not given) |
| `gpgkey` | string | | `gpgkey=` |
| `exclude` | string or list | | `exclude=` (packages updates may not touch) |
| `state` | `present` \| `absent` | `present` | |
| `file` | string | `name` | file name without `.repo` |
| `reposdir` | string | `/etc/yum.repos.d` | directory of the file (must exist) |

## Result

`dest` (the file), `state`, and for a present file its `checksum` and `size`.

## Example

```rhai
yum_repository(#{ name: "kubernetes", description: "Kubernetes",
                  baseurl: "https://pkgs.k8s.io/core:/stable:/v1.30/rpm/",
                  gpgcheck: true,
                  gpgkey: "https://pkgs.k8s.io/core:/stable:/v1.30/rpm/repodata/repomd.xml.key" })
yum_repository(#{ name: "old-epel", state: "absent" })
```
"#;

/// The mode of the file.
const MODE: &str = "0644";

impl Args {
    /// What the probe reads of the repository file: its content only when a diff is wanted and
    /// it differs from `text`.
    fn inspect<'a>(&self, path: &'a str, text: &[u8], cx: &ModuleContext<'_>) -> Inspect<'a> {
        let read = (cx.want_diff && self.state == RepoState::Present).then(|| Read {
            limit: Some(DIFF_LIMIT),
            unless_sha256: Some(sha256(text)),
        });
        Inspect {
            path,
            follow: false,
            into_dir: None,
            read,
        }
    }

    fn path(&self) -> String {
        let dir = self.reposdir.as_deref().unwrap_or("/etc/yum.repos.d");
        let file = self.file.as_deref().unwrap_or(&self.name);
        format!("{}/{file}.repo", dir.trim_end_matches('/'))
    }

    /// The file's text: always the same for the same arguments.
    fn render(&self) -> String {
        let mut s = format!("[{}]\n", self.name);
        s += &format!(
            "name={}\n",
            self.description.as_deref().unwrap_or(&self.name)
        );
        if let Some(u) = &self.baseurl {
            s += &format!("baseurl={u}\n");
        }
        s += &format!("enabled={}\n", u8::from(self.enabled));
        if let Some(g) = self.gpgcheck {
            s += &format!("gpgcheck={}\n", u8::from(g));
        }
        if let Some(k) = &self.gpgkey {
            s += &format!("gpgkey={k}\n");
        }
        let exclude = crate::shared::pkg::list(&self.exclude);
        if !exclude.is_empty() {
            s += &format!("exclude={}\n", exclude.join(" "));
        }
        s
    }
}

/// What apply does.
pub enum Plan {
    Write(content::Plan),
    Remove(String),
}

fn one_line(field: &str, v: &str) -> Result<(), String> {
    if v.contains(['\n', '\r', '\0']) {
        Err(format!("{field}: must be one line"))
    } else {
        Ok(())
    }
}

#[async_trait]
impl Module for YumRepository {
    const NAME: &'static str = "yum_repository";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = Plan;

    fn check_args(args: &Args) -> Result<(), String> {
        let id_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        };
        if !id_ok(&args.name) {
            return Err(format!(
                "name: {:?} is not a repository id (letters, digits, - _ . :)",
                args.name
            ));
        }
        if let Some(f) = &args.file {
            if !id_ok(f) || f.starts_with('.') {
                return Err(format!(
                    "file: {f:?} must be a plain file name (without .repo)"
                ));
            }
        }
        for (field, v) in [
            ("description", &args.description),
            ("baseurl", &args.baseurl),
            ("gpgkey", &args.gpgkey),
            ("reposdir", &args.reposdir),
        ] {
            if let Some(v) = v {
                one_line(field, v)?;
                if v.trim().is_empty() {
                    return Err(format!("{field}: must not be empty"));
                }
            }
        }
        crate::shared::pkg::check_words(
            "exclude",
            &crate::shared::pkg::list(&args.exclude),
            "a package name or glob",
        )?;
        if args.state == RepoState::Present && args.baseurl.is_none() {
            return Err("baseurl: required with state \"present\"".into());
        }
        Ok(())
    }

    const SCRIPT_PROBE: bool = true;

    fn probe_script(
        &self,
        args: &Args,
        cx: &ModuleContext<'_>,
    ) -> Result<Option<String>, ModuleError> {
        let path = args.path();
        let text = args.render().into_bytes();
        // When the file is absent nothing is read, so this line is what follows the inspection.
        Ok(Some(args.inspect(&path, &text, cx).script_with(
            "if ! [ -e \"$p\" ]; then if [ -d \"${p%/*}\" ]; then echo dir; else echo nodir; fi; fi\n",
        )?))
    }

    async fn decide(
        &self,
        args: &Args,
        out: Option<ExecOutput>,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<Plan>, ModuleError> {
        let path = args.path();
        let text = args.render().into_bytes();
        let cur = args.inspect(&path, &text, cx).read_probe(out)?;
        match (args.state, cur.kind()) {
            (_, FileKind::Directory | FileKind::Other) => Err(ModuleError::Failed(format!(
                "{path} exists and is not a regular file"
            ))),
            (RepoState::Absent, FileKind::Absent) => {
                Ok(Probe::Unchanged(json!({ "dest": path, "state": "absent" })))
            }
            (RepoState::Absent, _) => Ok(Probe::change(
                Plan::Remove(path.clone()),
                format!("remove {path}"),
                None,
            )),
            (RepoState::Present, kind) => {
                if *kind == FileKind::Absent && cur.rest_text().trim() == "nodir" {
                    return Err(ModuleError::Failed(format!(
                        "repository directory {} does not exist",
                        &path[..path.rfind('/').unwrap_or(0)]
                    )));
                }
                let mode = Some(MODE.to_string());
                let probe = content::decide(
                    &cur,
                    text.clone(),
                    &Wanted::new(&mode, &None, &None),
                    cx.want_diff,
                    None,
                )?;
                Ok(match probe {
                    Probe::Change(c) => Probe::change(Plan::Write(c.plan), c.summary, c.diff),
                    Probe::Unchanged(mut r) => {
                        r["state"] = "present".into();
                        Probe::Unchanged(r)
                    }
                    Probe::Skipped(s) => Probe::Skipped(s),
                })
            }
        }
    }

    async fn apply(
        &self,
        args: &Args,
        plan: Plan,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        match plan {
            Plan::Write(file) => {
                let mode = Some(MODE.to_string());
                let opts = content::write_options(Wanted::new(&mode, &None, &None), None, false);
                content::apply(cx.host, &file, &opts).await?;
                let mut result = content::result(&file.path, args.render().as_bytes());
                result["state"] = "present".into();
                Ok(Applied::changed(result))
            }
            Plan::Remove(path) => {
                let out = cx.host.run(&format!("rm -f -- {}", quote(&path)?)).await?;
                if !out.success() {
                    return Err(ModuleError::Failed(format!(
                        "cannot remove {path}: {}",
                        out.stderr_text().trim()
                    )));
                }
                Ok(Applied::changed(json!({ "dest": path, "state": "absent" })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{mode_of, Env};
    use engine::module::{DynModule, Status};

    fn args(v: serde_json::Value) -> Args {
        engine::module::parse_args(&v).unwrap()
    }

    #[test]
    fn renders_deterministically() {
        let a = args(json!({"name": "k8s", "description": "Kubernetes",
                            "baseurl": "https://x/rpm/", "gpgcheck": true, "gpgkey": "https://x/key"}));
        assert_eq!(
            a.render(),
            "[k8s]\nname=Kubernetes\nbaseurl=https://x/rpm/\nenabled=1\ngpgcheck=1\ngpgkey=https://x/key\n"
        );
        assert_eq!(a.path(), "/etc/yum.repos.d/k8s.repo");
        let held = args(json!({"name": "k8s", "baseurl": "https://x/rpm/",
                               "exclude": ["kubelet", "kubeadm", "kubectl"]}));
        assert!(held.render().ends_with("exclude=kubelet kubeadm kubectl\n"));
        let b = args(
            json!({"name": "lab", "baseurl": "file:///r", "enabled": false,
                            "file": "other", "reposdir": "/tmp/r/"}),
        );
        assert_eq!(
            b.render(),
            "[lab]\nname=lab\nbaseurl=file:///r\nenabled=0\n"
        );
        assert_eq!(b.path(), "/tmp/r/other.repo");
    }

    #[test]
    fn args_are_checked() {
        let m = YumRepository;
        for (bad, why) in [
            (json!({"name": "a b", "baseurl": "x"}), "repository id"),
            (json!({"name": "a"}), "baseurl"),
            (json!({"name": "a", "baseurl": "x\ny=1"}), "one line"),
            (
                json!({"name": "a", "baseurl": "x", "exclude": ["kubelet", "a b"]}),
                "exclude: \"a b\" is not a package name",
            ),
            (
                json!({"name": "a", "baseurl": "x", "file": "../etc/x"}),
                "file",
            ),
            (
                json!({"name": "a", "baseurl": "x", "gpg": true}),
                "unknown field `gpg`",
            ),
        ] {
            let e = m.validate(&bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(m.validate(&json!({"name": "a", "state": "absent"})).is_ok());
    }

    #[tokio::test]
    async fn writes_then_is_unchanged_then_removes() {
        let env = Env::new();
        let dir = env.path("repos");
        let file = format!("{dir}/lab.repo");
        let a = json!({"name": "lab", "baseurl": "file:///srv/repo", "gpgcheck": false,
                       "reposdir": dir});
        // A missing directory is a clear error.
        let e = env.error(&YumRepository, a.clone()).await;
        assert!(e.contains("does not exist"), "{e}");
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(env.check(&YumRepository, a.clone()).await, Status::Changed);
        assert!(
            !std::path::Path::new(&file).exists(),
            "check mode writes nothing"
        );
        let out = env.apply(&YumRepository, a.clone()).await;
        assert_eq!(
            out.summary.as_deref(),
            Some(format!("create {file}").as_str())
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "[lab]\nname=lab\nbaseurl=file:///srv/repo\nenabled=1\ngpgcheck=0\n"
        );
        assert_eq!(mode_of(&file), 0o644);
        assert_eq!(
            env.apply(&YumRepository, a.clone()).await.status,
            Status::Ok
        );

        let mut changed = a.clone();
        changed["enabled"] = false.into();
        let out = env.apply(&YumRepository, changed).await;
        let diff = out.diff.unwrap().unified();
        assert!(
            diff.contains("-enabled=1") && diff.contains("+enabled=0"),
            "{diff}"
        );

        let mut gone = a.clone();
        gone["state"] = "absent".into();
        gone.as_object_mut().unwrap().remove("baseurl");
        let out = env.apply(&YumRepository, gone.clone()).await;
        assert_eq!(
            out.summary.as_deref(),
            Some(format!("remove {file}").as_str())
        );
        assert!(!std::path::Path::new(&file).exists());
        assert_eq!(env.apply(&YumRepository, gone).await.status, Status::Ok);
    }
}
