//! `yum`: installs, upgrades and removes rpm packages with `yum` (or `dnf` where there is no
//! `yum` command). Decides with `rpm -q` and dnf's own resolution, in one round trip.

use std::collections::BTreeMap;

use async_trait::async_trait;
use engine::host::quote;
use engine::transport::ExecOutput;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;

use crate::shared::pkg::{self, Changes, Names, State, Upgrade};

pub struct Yum;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The package(s): a name (`httpd`), a name with a version (`httpd-2.4.57` or
    /// `httpd-2.4.57-5.el9`) or with an architecture (`httpd.x86_64`); one string or a list.
    pub name: Names,
    /// `present` (default): installed, any version. `latest`: installed and at the newest
    /// version the enabled repositories offer. `absent`: not installed.
    #[serde(default)]
    pub state: State,
    /// Repositories to enable for this task only (repo ids; one string or a list).
    #[serde(default)]
    pub enablerepo: Option<Names>,
    /// Repositories to disable for this task only (repo ids or globs; one string or a list).
    #[serde(default)]
    pub disablerepo: Option<Names>,
    /// Refresh the repositories' metadata before deciding (`--refresh`).
    #[serde(default)]
    pub update_cache: bool,
    /// Repositories whose `exclude=` does not apply to this task (`--disableexcludes`): "all",
    /// "main" or a repo id. Installs packages a repository holds back from updates.
    #[serde(default)]
    pub disable_excludes: Option<String>,
}

pub const DOC: &str = r#"# yum

Installs, upgrades or removes rpm packages with `yum`, or with `dnf` on hosts that have no `yum`
command. Nothing but rpm, and yum/dnf themselves, is needed on the target.

The decision is made first, in one round trip: `rpm -q` for every name says which are installed;
for `latest`, `check-update` says which of them have a newer version; names that must be
installed are resolved by dnf (`install --assumeno`, which changes nothing), so a name no
repository offers fails with dnf's message (`Unable to find a match: NAME`) in check mode too.
Only then does the task act, and only on the packages that differ; check mode lists exactly those:
`install: pbhello; upgrade: pbfoo 1.0-1 -> 1.1-1`.

Versions follow Ansible: `name: "foo-1.2"` is present when `rpm -q foo-1.2` finds it, and is
installed as `foo-1.2` otherwise (dnf may refuse a downgrade: the error is shown). With
`state: "latest"` give plain names (or `name.arch`), not versions. `state: "absent"` with a
version removes the package only when that version is installed. Globs, groups (`@x`), files and
URLs are not accepted.

A repository whose `.repo` file is newer than its cached metadata (one that a `yum_repository`
task just added or changed) is always read again: dnf itself expires such metadata, whatever
`metadata_expire` says (the lab test `yum_reads_a_repository_changed_above_however_fresh_the_cache`
proves it). In check mode after a change predicted on the same host, names no repository offers
yet are predicted as installed, and the summary says what is assumed.

`update_cache` adds `--refresh` to the dnf commands that decide (also in check mode: like dnf's
own expiry of metadata, this refreshes only dnf's cache, never the installed packages).

| argument | type | default | |
|---|---|---|---|
| `name` | string or list | | packages |
| `state` | `present` \| `latest` \| `absent` | `present` | |
| `enablerepo` | string or list | | repo ids enabled for this task |
| `disablerepo` | string or list | | repo ids disabled for this task |
| `update_cache` | bool | false | refresh metadata first |
| `disable_excludes` | string | | `all`, `main` or a repo id whose `exclude=` this task ignores |

## Result

`installed`, `upgraded`, `removed`: the names acted on (empty lists when nothing changed).

## Example

```rhai
yum(#{ name: ["haproxy", "keepalived"] })
yum(#{ name: "kubelet", state: "latest", enablerepo: "kubernetes", update_cache: true })
yum(#{ name: "telnet", state: "absent" })
```
"#;

/// A package spec yum can take: a name, optionally with version, release and architecture.
fn valid_spec(n: &str) -> Result<(), String> {
    if n.starts_with('@') {
        return Err(format!("{n:?}: groups are not supported"));
    }
    let ok = n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._+-:~^".contains(c));
    if !ok {
        return Err(format!(
            "{n:?} is not a package name (globs, paths and URLs are not accepted)"
        ));
    }
    Ok(())
}

/// Whether a spec carries a version: `name-1.2`, `name-1.2-3` (a `-` followed by a digit).
fn has_version(spec: &str) -> bool {
    spec.match_indices('-')
        .any(|(i, _)| spec[i + 1..].starts_with(|c: char| c.is_ascii_digit()))
}

impl Args {
    fn names(&self) -> Vec<String> {
        self.name.list()
    }

    /// The options every yum/dnf command of this task gets, quoted.
    fn repo_opts(&self) -> Result<String, String> {
        let mut opts = Vec::new();
        for r in pkg::list(&self.enablerepo) {
            opts.push(format!("--enablerepo={r}"));
        }
        for r in pkg::list(&self.disablerepo) {
            opts.push(format!("--disablerepo={r}"));
        }
        if let Some(r) = &self.disable_excludes {
            opts.push(format!("--disableexcludes={r}"));
        }
        pkg::quote_all(&opts)
    }
}

/// What the probe script reported.
#[derive(Debug, Default, PartialEq)]
struct Report {
    /// The yum or dnf command found.
    mgr: String,
    /// Installed specs: their package name and version-release (one per installed instance).
    installed: BTreeMap<String, Vec<(String, String)>>,
    /// The specs rpm does not find installed.
    missing: Vec<String>,
    /// dnf's "Unable to find a match: ..." lines for specs to install.
    no_match: Vec<String>,
    /// The tokens check-update printed for available updates (name.arch, version, repo, ...).
    updates: Vec<String>,
    /// check-update's exit status and, when it failed, its message.
    check_failed: Option<String>,
}

/// The read-only script: which specs are installed, which of those to install exist, and (for
/// `latest`) which installed ones have updates.
fn probe_script(args: &Args) -> Result<String, String> {
    let opts = args.repo_opts()?;
    let refresh = if args.update_cache { " --refresh" } else { "" };
    let mut s = String::from(
        "export LC_ALL=C\n\
         mgr=$(command -v yum || command -v dnf) || { echo 'F neither yum nor dnf is installed'; exit 0; }\n\
         command -v rpm >/dev/null || { echo 'F rpm is not installed'; exit 0; }\n\
         printf 'M\\t%s\\n' \"$mgr\"\n\
         set --\ninst=\n",
    );
    s += &format!("for s in {}; do\n", pkg::quote_all(&args.names())?);
    s += "  if v=$(rpm -q --qf '%{NAME}\\t%{VERSION}-%{RELEASE}\\n' -- \"$s\" 2>/dev/null); then\n\
          \x20   printf '%s\\n' \"$v\" | while IFS= read -r l; do printf 'I\\t%s\\t%s\\n' \"$s\" \"$l\"; done\n\
          \x20   inst=\"$inst $s\"\n\
          \x20 else printf 'N\\t%s\\n' \"$s\"; set -- \"$@\" \"$s\"; fi\n\
          done\n";
    if args.state != State::Absent {
        s += &format!(
            "if [ $# -gt 0 ]; then\n\
             \x20 \"$mgr\" -q{refresh} {opts} install --assumeno -- \"$@\" 2>&1 | \
             grep -e 'Unable to find a match' -e 'There are no enabled repositories' | sed 's/^/X /'\n\
             fi\n"
        );
    }
    if args.state == State::Latest {
        // The specs were checked: no spaces or globs, so $inst splits into them.
        s += &format!(
            "if [ -n \"$inst\" ]; then\n\
             \x20 out=$(\"$mgr\" -q{refresh} {opts} check-update -- $inst 2>&1); rc=$?\n\
             \x20 case $rc in\n\
             \x20   0) ;;\n\
             \x20   100) printf '%s\\n' \"$out\" | sed 's/^/U /' ;;\n\
             \x20   *) printf '%s\\n' \"$out\" | tail -n 5 | sed 's/^/C /' ;;\n\
             \x20 esac\n\
             fi\n"
        );
    }
    s += "exit 0\n";
    Ok(s)
}

fn parse_report(out: &str) -> Result<Report, String> {
    let mut r = Report::default();
    let mut obsoletes = false;
    for line in out.lines() {
        let (tag, rest) = line.split_once(['\t', ' ']).unwrap_or((line, ""));
        match tag {
            "F" => return Err(rest.to_string()),
            "M" => r.mgr = rest.to_string(),
            "I" => {
                let mut parts = rest.splitn(3, '\t');
                let spec = parts.next().unwrap_or_default().to_string();
                let name = parts.next().unwrap_or_default().to_string();
                let version = parts.next().unwrap_or_default().to_string();
                r.installed.entry(spec).or_default().push((name, version));
            }
            "N" => r.missing.push(rest.to_string()),
            "X" => r.no_match.push(rest.trim().to_string()),
            "U" => {
                if rest.starts_with("Obsoleting") {
                    obsoletes = true;
                }
                if !obsoletes {
                    r.updates
                        .extend(rest.split_whitespace().map(str::to_string));
                }
            }
            "C" => {
                let msg = r.check_failed.get_or_insert_with(String::new);
                if !msg.is_empty() {
                    msg.push('\n');
                }
                msg.push_str(rest);
            }
            _ => {}
        }
    }
    Ok(r)
}

/// The newest version check-update offers for `spec` (a name or `name.arch`).
fn update_for(spec: &str, updates: &[String]) -> Option<String> {
    // check-update prints `name.arch version repo` triples (long names may wrap onto the next
    // line, which splitting into words undoes).
    updates.chunks(3).find_map(|t| {
        let na = t.first()?;
        let name = na.rsplit_once('.').map_or(na.as_str(), |(n, _)| n);
        (na == spec || name == spec)
            .then(|| t.get(1).cloned())
            .flatten()
    })
}

/// What must change for the wanted state, from what the probe reported.
fn decide(args: &Args, r: &Report) -> Result<Changes, String> {
    if !r.no_match.is_empty() {
        return Err(format!(
            "{}: no package in the enabled repositories: {}",
            r.mgr,
            r.no_match.join("; ")
        ));
    }
    let mut c = Changes::default();
    for spec in args.names() {
        let installed = r.installed.get(&spec);
        match (args.state, installed) {
            (State::Absent, Some(_)) => c.remove.push(spec),
            (State::Absent, None) => {}
            (_, None) => c.install.push(spec),
            (State::Present, Some(_)) => {}
            (State::Latest, Some(versions)) => {
                if let Some(msg) = &r.check_failed {
                    return Err(format!("{} check-update failed: {msg}", r.mgr));
                }
                if let Some(to) = update_for(&spec, &r.updates) {
                    let from = versions.last().map(|v| v.1.clone()).unwrap_or_default();
                    c.upgrade.push(Upgrade {
                        name: spec.clone(),
                        from,
                        to,
                    });
                }
            }
        }
    }
    Ok(c)
}

/// The script that makes the changes: install, upgrade, remove.
fn apply_script(args: &Args, c: &Changes) -> Result<String, String> {
    let opts = args.repo_opts()?;
    let mut s = String::from(
        "export LC_ALL=C\nmgr=$(command -v yum || command -v dnf) || exit 127\nset -e\n",
    );
    for (verb, specs) in [
        ("install", &c.install),
        ("upgrade", &c.upgrade_names()),
        ("remove", &c.remove),
    ] {
        if !specs.is_empty() {
            s += &format!("\"$mgr\" -y {opts} {verb} -- {}\n", pkg::quote_all(specs)?);
        }
    }
    Ok(s)
}

#[async_trait]
impl Module for Yum {
    const NAME: &'static str = "yum";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = Changes;

    fn check_args(args: &Args) -> Result<(), String> {
        pkg::check_names(&args.names(), valid_spec)?;
        if args.state == State::Latest {
            if let Some(v) = args.names().iter().find(|n| has_version(n)) {
                return Err(format!(
                    "name: {v:?} has a version; state \"latest\" takes names only"
                ));
            }
        }
        let excludes: Vec<String> = args.disable_excludes.iter().cloned().collect();
        for (field, repos, what) in [
            ("enablerepo", pkg::list(&args.enablerepo), "a repository id"),
            (
                "disablerepo",
                pkg::list(&args.disablerepo),
                "a repository id",
            ),
            (
                "disable_excludes",
                excludes,
                "\"all\", \"main\" or a repository id",
            ),
        ] {
            pkg::check_words(field, &repos, what)?;
            for r in &repos {
                quote(r)?;
            }
        }
        Ok(())
    }

    const SCRIPT_PROBE: bool = true;

    fn probe_script(
        &self,
        args: &Args,
        _cx: &ModuleContext<'_>,
    ) -> Result<Option<String>, ModuleError> {
        probe_script(args).map(Some).map_err(ModuleError::Args)
    }

    async fn decide(
        &self,
        args: &Args,
        out: Option<ExecOutput>,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<Changes>, ModuleError> {
        let out = crate::shared::inspect::probe_output(out, "querying packages")?;
        let report = parse_report(&out.stdout_text()).map_err(ModuleError::Failed)?;
        if !out.success() || report.mgr.is_empty() {
            return Err(ModuleError::Failed(format!(
                "cannot query packages: {}",
                out.stderr_text().trim()
            )));
        }
        let mut assumed = None;
        let changes = match decide(args, &report) {
            Ok(c) => c,
            // The packages may come from a repository a change above adds; dnf reads a
            // repository whose file is newer than its cached metadata, so the real run finds
            // them: predict what that run does, and say what is assumed.
            Err(e) if cx.after_predicted_change && !report.no_match.is_empty() => {
                assumed = Some(e);
                decide(
                    args,
                    &Report {
                        no_match: Vec::new(),
                        ..report
                    },
                )
                .map_err(ModuleError::Failed)?
            }
            Err(e) => return Err(ModuleError::Failed(e)),
        };
        if changes.is_empty() {
            return Ok(Probe::Unchanged(changes.result()));
        }
        let mut summary = changes.summary();
        if let Some(missing) = assumed {
            summary += &format!(
                "; assumed available once a change above adds their repository (now: {missing})"
            );
        }
        Ok(Probe::change(changes, summary, None))
    }

    async fn apply(
        &self,
        args: &Args,
        plan: Changes,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        let script = apply_script(args, &plan).map_err(ModuleError::Args)?;
        let out = cx.host.run(&script).await?;
        if !out.success() {
            let text = format!("{}\n{}", out.stdout_text(), out.stderr_text());
            return Err(ModuleError::Failed(format!(
                "{} failed with rc {}:\n{}",
                plan.summary(),
                out.status,
                pkg::tail(&text, 15)
            )));
        }
        Ok(Applied::changed(plan.result()))
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
    fn specs_are_checked() {
        let m = Yum;
        assert!(m
            .validate(&json!({"name": ["a", "b-1.0", "c.x86_64"]}))
            .is_ok());
        for (bad, why) in [
            (json!({"name": "*"}), "not a package"),
            (json!({"name": "/tmp/x.rpm"}), "not a package"),
            (json!({"name": "@core"}), "groups"),
            (json!({"name": []}), "at least one"),
            (json!({"name": "a-1.0", "state": "latest"}), "names only"),
            (json!({"name": "a", "state": "gone"}), "state"),
            (json!({"name": "a", "enablerepo": "a b"}), "enablerepo"),
            (
                json!({"name": "a", "disable_excludes": "a,b"}),
                "disable_excludes: \"a,b\" is not",
            ),
            (json!({"name": "a", "nam": "a"}), "unknown field `nam`"),
        ] {
            let e = m.validate(&bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(has_version("foo-1.2") && has_version("foo-bar-1.2-3.el9"));
        assert!(!has_version("foo-bar") && !has_version("python3-pip"));
    }

    const OUT: &str = "M\t/usr/bin/dnf\n\
        I\tpbhello\tpbhello\t1.0-1\n\
        I\tpbfoo\tpbfoo\t2.0-1\n\
        N\tpbnew\n\
        U\tpbhello.noarch   1.1-1   pbrepo\n\
        U\tverylongname-with-many-parts.noarch\n\
        U\t        3:4.5-6.el9    pbrepo\n";

    #[test]
    fn probe_output_is_parsed() {
        let r = parse_report(OUT).unwrap();
        assert_eq!(r.mgr, "/usr/bin/dnf");
        assert_eq!(
            r.installed["pbhello"],
            [("pbhello".to_string(), "1.0-1".to_string())]
        );
        assert_eq!(r.missing, ["pbnew"]);
        assert_eq!(update_for("pbhello", &r.updates).as_deref(), Some("1.1-1"));
        assert_eq!(
            update_for("verylongname-with-many-parts", &r.updates).as_deref(),
            Some("3:4.5-6.el9")
        );
        assert_eq!(update_for("pbfoo", &r.updates), None);
        let err = parse_report("F neither yum nor dnf is installed\n").unwrap_err();
        assert!(err.contains("neither"));
    }

    #[test]
    fn decisions_per_state() {
        let r = parse_report(OUT).unwrap();
        let names = json!(["pbhello", "pbfoo", "pbnew"]);
        let present = decide(&args(json!({"name": names})), &r).unwrap();
        assert_eq!(present.summary(), "install: pbnew");
        let latest = decide(&args(json!({"name": names, "state": "latest"})), &r).unwrap();
        assert_eq!(
            latest.summary(),
            "install: pbnew; upgrade: pbhello 1.0-1 -> 1.1-1"
        );
        let absent = decide(&args(json!({"name": names, "state": "absent"})), &r).unwrap();
        assert_eq!(absent.summary(), "remove: pbhello, pbfoo");
        let none = decide(&args(json!({"name": "pbnew", "state": "absent"})), &r).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn unknown_packages_and_failed_checks_are_errors() {
        let mut r = parse_report(OUT).unwrap();
        r.no_match = vec!["Error: Unable to find a match: pbnew".into()];
        let e = decide(&args(json!({"name": "pbnew"})), &r).unwrap_err();
        assert!(e.contains("Unable to find a match: pbnew"), "{e}");
        // A host with no repository at all (a fresh one, before yum_repository) offers nothing.
        let out =
            format!("{OUT}X Error: There are no enabled repositories in \"/etc/yum.repos.d\".\n");
        let r = parse_report(&out).unwrap();
        let e = decide(&args(json!({"name": "pbnew"})), &r).unwrap_err();
        assert!(e.contains("There are no enabled repositories"), "{e}");
        let s = probe_script(&args(json!({"name": "pbnew"}))).unwrap();
        assert!(s.contains("-e 'There are no enabled repositories'"), "{s}");
        let mut r = parse_report(OUT).unwrap();
        r.check_failed = Some("Error: repo down".into());
        let e = decide(&args(json!({"name": "pbhello", "state": "latest"})), &r).unwrap_err();
        assert!(e.contains("repo down"), "{e}");
    }

    #[test]
    fn scripts_quote_and_carry_repo_options() {
        let a = args(
            json!({"name": ["a", "b"], "state": "latest", "enablerepo": ["x"],
                            "disablerepo": "y*", "update_cache": true}),
        );
        let probe = probe_script(&a).unwrap();
        assert!(probe.contains("for s in a b; do"), "{probe}");
        assert!(
            probe.contains("-q --refresh '--enablerepo=x' '--disablerepo=y*' install --assumeno"),
            "{probe}"
        );
        assert!(probe.contains("check-update -- $inst"));
        let held = args(json!({"name": "kubelet-1.31.2", "disable_excludes": "kubernetes"}));
        let probe = probe_script(&held).unwrap();
        assert!(
            probe.contains("'--disableexcludes=kubernetes' install --assumeno"),
            "{probe}"
        );
        let c = Changes {
            install: vec!["a".into()],
            upgrade: vec![Upgrade {
                name: "b".into(),
                from: "1".into(),
                to: "2".into(),
            }],
            remove: vec![],
        };
        let apply = apply_script(&a, &c).unwrap();
        assert!(apply.contains("-y '--enablerepo=x' '--disablerepo=y*' install -- a\n"));
        assert!(apply.contains("upgrade -- b\n"));
        assert!(!apply.contains("remove"));
    }
}
