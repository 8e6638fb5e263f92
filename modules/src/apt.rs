//! `apt`: installs, upgrades and removes Debian packages with apt-get. Decides with `dpkg-query`
//! and `apt-cache policy` in one round trip.

use std::collections::BTreeMap;

use async_trait::async_trait;
use engine::transport::ExecOutput;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;

use crate::shared::pkg::{self, Changes, Names, State, Upgrade};

pub struct Apt;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The package(s): a name (`nginx`) or a name with an exact version (`nginx=1.22.1-9`); one
    /// string or a list. May be left out when only `update_cache` is wanted.
    #[serde(default)]
    pub name: Option<Names>,
    /// `present` (default): installed, any version. `latest`: installed at the candidate
    /// version of the package cache. `absent`: not installed (removed, configuration kept).
    #[serde(default)]
    pub state: State,
    /// Run `apt-get update` before deciding (not in check mode: see the module's doc).
    #[serde(default)]
    pub update_cache: bool,
    /// With `update_cache`: skip the update when the cache is younger than this many seconds.
    #[serde(default)]
    pub cache_valid_time: Option<u64>,
}

pub const DOC: &str = r#"# apt

Installs, upgrades or removes Debian packages with `apt-get`. Nothing but dpkg and apt is needed
on the target.

The decision comes first, in one round trip: `dpkg-query` says which packages are installed (status
`install ok installed`) and at which version, and `apt-cache policy` gives each one's candidate
version. Then only the packages that differ are acted on, with
`DEBIAN_FRONTEND=noninteractive apt-get -y -q install` (or `remove`), keeping changed
configuration files. Check mode lists exactly those packages:
`install: nginx; upgrade: curl 7.88.1-10 -> 7.88.1-10+deb12u5`. A package with no candidate
in the cache fails the task with its name (`Unable to locate package NAME`), in check mode too.

`name: "foo=1.2-1"` asks for that exact version: present when it is installed, else installed at
it (it must be in the cache). `state: "latest"` takes plain names.

`update_cache` runs `apt-get update` first, in a real run only: the update changes the cache, which
check mode must not do, so check mode decides from the cache as it is and says so in its summary
("decided from the current cache"). With `cache_valid_time`, the update is skipped when the cache
was updated less than that many seconds ago (by the newest mtime of
`/var/lib/apt/periodic/update-success-stamp`, `/var/lib/apt/lists` and
`/var/cache/apt/pkgcache.bin`), unless a package source changed since: a file under
`/etc/apt/sources.list.d`, `/etc/apt/sources.list`, a keyring under `/etc/apt/keyrings` or
`/etc/apt/trusted.gpg.d`, or one a source names with `signed-by`, newer than the cache always
makes the update run (the summary names it), so a source written just before is always read.
After a successful update the module touches `update-success-stamp`, as Debian's and Ubuntu's
own update hooks do. In check mode after a change predicted on the same host (a source written
above, say), packages the cache does not know yet are predicted as installed, and the summary says
what is assumed. Updating the cache alone is not reported as a change (`cache_updated` in the
result says it ran).

| argument | type | default | |
|---|---|---|---|
| `name` | string or list | | packages (`foo` or `foo=VERSION`) |
| `state` | `present` \| `latest` \| `absent` | `present` | |
| `update_cache` | bool | false | `apt-get update` first (real runs only) |
| `cache_valid_time` | seconds | | skip the update when the cache is younger (and no source is newer) |

## Result

`installed`, `upgraded`, `removed` (the packages acted on) and `cache_updated`.

## Example

```rhai
apt(#{ name: ["haproxy", "keepalived"], update_cache: true, cache_valid_time: 3600 })
apt(#{ name: "kubelet=1.30.2-1.1" })
apt(#{ name: "telnet", state: "absent" })
```
"#;

/// A Debian package name (policy: lower case, digits, `+ - .`), optionally `=VERSION`.
fn valid_spec(spec: &str) -> Result<(), String> {
    let (name, version) = split_spec(spec);
    let name_ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    let version_ok = version.is_none_or(|v| {
        !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".+-:~".contains(c))
    });
    if name_ok && version_ok {
        Ok(())
    } else {
        Err(format!(
            "{spec:?} is not a package name (NAME or NAME=VERSION; globs and paths are not accepted)"
        ))
    }
}

fn split_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    }
}

/// What the probe script reported.
#[derive(Debug, Default, PartialEq)]
struct Report {
    /// Seconds since the cache was last updated (when `update_cache` asked for it).
    age: Option<u64>,
    /// A package source or keyring changed since the last update (when `update_cache` asked).
    newer_source: Option<String>,
    /// Installed packages and their versions.
    installed: BTreeMap<String, String>,
    /// Per package known to the cache: the candidate ("(none)" when not installable) and the
    /// versions of its version table.
    policy: BTreeMap<String, Policy>,
}

#[derive(Debug, Default, PartialEq, Clone)]
struct Policy {
    candidate: String,
    versions: Vec<String>,
}

/// When the cache was last updated (the newest of these), and whether a package source or a
/// keyring is newer than that: a source added or changed since the last update has not been read,
/// however young the cache is. `find -newer` compares the full timestamps (not seconds), and
/// with several `-newer` a path must be newer than all of them. Prints `A AGE_SECONDS` and, for
/// the first newer source, `N PATH`.
const CACHE_AGE_SCRIPT: &str = r#"t=0
set --
for f in /var/lib/apt/periodic/update-success-stamp /var/lib/apt/lists /var/cache/apt/pkgcache.bin; do
  if [ -e "$f" ]; then
    m=$(stat -c %Y -- "$f"); if [ "$m" -gt "$t" ]; then t=$m; fi
    set -- "$@" -newer "$f"
  fi
done
echo "A $(( $(date +%s) - t ))"
keys=$(sed -n -e 's/.*signed-by=\([^] ,]*\).*/\1/p' -e 's/^Signed-By:[[:space:]]*\(\/[^[:space:]]*\).*/\1/p' \
  /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null)
{ for f in /etc/apt/sources.list /etc/apt/sources.list.d /etc/apt/trusted.gpg /etc/apt/trusted.gpg.d /etc/apt/keyrings; do
    echo "$f"; done; printf '%s\n' "$keys"; } |
while IFS= read -r f; do
  if [ -n "$f" ] && [ -e "$f" ]; then find "$f" "$@" ! -type d -print 2>/dev/null; fi
done | head -n 1 | sed 's/^/N /'
"#;

/// Marks a successful update the way Debian's and Ubuntu's own update hooks do, so the next
/// probe sees the cache as newer than every source it has read.
const UPDATE_SCRIPT: &str = "export LC_ALL=C DEBIAN_FRONTEND=noninteractive\n\
    apt-get -q update\n\
    mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/update-success-stamp\n";

fn probe_script(args: &Args, names: &[String]) -> Result<String, String> {
    let mut s = String::from(
        "export LC_ALL=C\n\
         command -v apt-get >/dev/null && command -v dpkg-query >/dev/null || \
         { echo 'F apt-get or dpkg-query is not installed'; exit 0; }\n",
    );
    if args.update_cache {
        s += CACHE_AGE_SCRIPT;
    }
    if names.is_empty() {
        return Ok(s);
    }
    let bare: Vec<String> = names.iter().map(|n| split_spec(n).0.to_string()).collect();
    let q = pkg::quote_all(&bare)?;
    s += &format!(
        "dpkg-query -W -f='S ${{Package}} ${{Status}} ${{Version}}\\n' -- {q} 2>/dev/null\n"
    );
    if args.state != State::Absent {
        s += &format!("apt-cache policy -- {q} 2>/dev/null | sed 's/^/P /'\n");
    }
    s += "exit 0\n";
    Ok(s)
}

fn parse_report(out: &str) -> Result<Report, String> {
    let mut r = Report::default();
    let mut current: Option<String> = None;
    let mut in_table = false;
    for line in out.lines() {
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "F" => return Err(rest.to_string()),
            "A" => r.age = Some(rest.trim().parse().unwrap_or(u64::MAX)),
            "N" => r.newer_source = Some(rest.to_string()),
            "S" => {
                // S package want flag status [version]
                let w: Vec<&str> = rest.split_whitespace().collect();
                if w.len() >= 4 && w[3] == "installed" {
                    let version = w.get(4).copied().unwrap_or_default().to_string();
                    r.installed.insert(w[0].to_string(), version);
                }
            }
            "P" => {
                if !rest.starts_with(' ') {
                    let name = rest.trim_end().trim_end_matches(':').to_string();
                    r.policy.insert(name.clone(), Policy::default());
                    current = Some(name);
                    in_table = false;
                    continue;
                }
                let Some(p) = current.as_ref().and_then(|n| r.policy.get_mut(n)) else {
                    continue;
                };
                let t = rest.trim();
                if let Some(c) = t.strip_prefix("Candidate:") {
                    p.candidate = c.trim().to_string();
                } else if t.starts_with("Version table:") {
                    in_table = true;
                } else if in_table {
                    // "     1.0 500" or " *** 1.0 100"; source lines ("        500 http://...")
                    // are indented deeper.
                    let indent = rest.len() - rest.trim_start().len();
                    let t = t.strip_prefix("*** ").unwrap_or(t);
                    if indent <= 5 {
                        if let Some(v) = t.split_whitespace().next() {
                            p.versions.push(v.to_string());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(r)
}

/// What must change. With `lenient`, packages the cache does not know are still listed for
/// installation (an `apt-get update` will run before anything is decided for real).
fn decide(state: State, names: &[String], r: &Report, lenient: bool) -> Result<Changes, String> {
    let mut c = Changes::default();
    let mut unknown = Vec::new();
    for spec in names {
        let (name, version) = split_spec(spec);
        let installed = r.installed.get(name);
        let policy = r.policy.get(name).filter(|p| p.candidate != "(none)");
        let available = match (policy, version) {
            (None, _) => false,
            (Some(p), Some(v)) => p.versions.iter().any(|x| x == v),
            (Some(_), None) => true,
        };
        match state {
            State::Absent => {
                if installed.is_some_and(|i| version.is_none_or(|v| v == i)) {
                    c.remove.push(spec.clone());
                }
            }
            State::Present => {
                if installed.is_some_and(|i| version.is_none_or(|v| v == i)) {
                    continue;
                }
                if !available {
                    unknown.push(spec.clone());
                }
                c.install.push(spec.clone());
            }
            State::Latest => match (installed, policy) {
                (None, _) => {
                    if !available {
                        unknown.push(spec.clone());
                    }
                    c.install.push(spec.clone());
                }
                (Some(from), Some(p)) if &p.candidate != from => c.upgrade.push(Upgrade {
                    name: spec.clone(),
                    from: from.clone(),
                    to: p.candidate.clone(),
                }),
                (Some(_), _) => {}
            },
        }
    }
    if !unknown.is_empty() && !lenient {
        let what: Vec<String> = unknown
            .iter()
            .map(|s| match split_spec(s) {
                (n, Some(v)) if r.policy.contains_key(n) => format!("version {v} of {n} not found"),
                (n, _) if r.policy.contains_key(n) => {
                    format!("package {n} has no installation candidate")
                }
                (n, _) => format!("Unable to locate package {n}"),
            })
            .collect();
        return Err(what.join("; "));
    }
    Ok(c)
}

/// What apply does: update the cache first (then decide again), and the changes.
pub struct Plan {
    update: bool,
    changes: Changes,
}

impl Args {
    fn names(&self) -> Vec<String> {
        pkg::list(&self.name)
    }

    fn update_due(&self, r: &Report) -> bool {
        self.update_cache
            && (r.newer_source.is_some()
                || match (self.cache_valid_time, r.age) {
                    (Some(valid), Some(age)) => age > valid,
                    _ => true,
                })
    }

    async fn report(&self, cx: &ModuleContext<'_>) -> Result<Report, ModuleError> {
        let script = probe_script(self, &self.names()).map_err(ModuleError::Args)?;
        self.read_report(&cx.host.run(&script).await?)
    }

    fn read_report(&self, out: &ExecOutput) -> Result<Report, ModuleError> {
        let report = parse_report(&out.stdout_text()).map_err(ModuleError::Failed)?;
        if !out.success() {
            return Err(ModuleError::Failed(format!(
                "cannot query packages: {}",
                out.stderr_text().trim()
            )));
        }
        Ok(report)
    }
}

/// The script that makes the changes: `apt-get install` for new and upgraded packages, then
/// `apt-get remove`.
fn apply_script(c: &Changes) -> Result<String, String> {
    let mut s = String::from(
        "export DEBIAN_FRONTEND=noninteractive LC_ALL=C\nset -e\n\
         o='-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold'\n",
    );
    let mut install = c.install.clone();
    install.extend(c.upgrade_names());
    if !install.is_empty() {
        s += &format!(
            "apt-get -y -q $o install -- {}\n",
            pkg::quote_all(&install)?
        );
    }
    if !c.remove.is_empty() {
        s += &format!(
            "apt-get -y -q $o remove -- {}\n",
            pkg::quote_all(&c.remove)?
        );
    }
    Ok(s)
}

async fn run(cx: &ModuleContext<'_>, what: &str, script: &str) -> Result<(), ModuleError> {
    let out = cx.host.run(script).await?;
    if !out.success() {
        let text = format!("{}\n{}", out.stdout_text(), out.stderr_text());
        return Err(ModuleError::Failed(format!(
            "{what} failed with rc {}:\n{}",
            out.status,
            pkg::tail(&text, 15)
        )));
    }
    Ok(())
}

#[async_trait]
impl Module for Apt {
    const NAME: &'static str = "apt";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = Plan;

    fn check_args(args: &Args) -> Result<(), String> {
        if args.name.is_none() {
            return if args.update_cache {
                Ok(())
            } else {
                Err("missing field `name` (or update_cache: true)".into())
            };
        }
        pkg::check_names(&args.names(), valid_spec)?;
        if args.state == State::Latest {
            if let Some(v) = args.names().iter().find(|n| n.contains('=')) {
                return Err(format!(
                    "name: {v:?} has a version; state \"latest\" takes names only"
                ));
            }
        }
        if args.cache_valid_time.is_some() && !args.update_cache {
            return Err("cache_valid_time: only with update_cache: true".into());
        }
        Ok(())
    }

    const SCRIPT_PROBE: bool = true;

    fn probe_script(
        &self,
        args: &Args,
        _cx: &ModuleContext<'_>,
    ) -> Result<Option<String>, ModuleError> {
        probe_script(args, &args.names())
            .map(Some)
            .map_err(ModuleError::Args)
    }

    async fn decide(
        &self,
        args: &Args,
        out: Option<ExecOutput>,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<Plan>, ModuleError> {
        let out = crate::shared::inspect::probe_output(out, "querying packages")?;
        let report = args.read_report(&out)?;
        let names = args.names();
        let update = args.update_due(&report);
        if update && !cx.check {
            // The update runs first and the decision is made again after it; this is the
            // prediction from the cache as it is now.
            let changes =
            decide(args.state, &names, &report, true).map_err(ModuleError::Failed)?;
            let mut summary = "update cache".to_string();
            if let Some(source) = &report.newer_source {
                summary += &format!(" ({source} is newer than the cache)");
            }
            if !changes.is_empty() {
                summary += &format!("; {}", changes.summary());
            }
            return Ok(Probe::change(Plan { update, changes }, summary, None));
        }
        let mut assumed = None;
        let changes = match decide(args.state, &names, &report, false) {
            Ok(c) => c,
            // The packages may come from a source a change above adds: the real run then finds
            // that source newer than the cache and updates it first, however young the cache.
            Err(e) if args.update_cache && cx.after_predicted_change => {
                assumed = Some(e);
                decide(args.state, &names, &report, true).map_err(ModuleError::Failed)?
            }
            Err(e) if update => {
                return Err(ModuleError::Failed(format!(
                    "{e} (decided from the current cache: update_cache is not run in check mode)"
                )))
            }
            Err(e) => return Err(ModuleError::Failed(e)),
        };
        if changes.is_empty() {
            let mut result = changes.result();
            result["cache_updated"] = false.into();
            return Ok(Probe::Unchanged(result));
        }
        let mut summary = changes.summary();
        if update {
            summary += " (decided from the current cache: update_cache is not run in check mode)";
        }
        if let Some(missing) = assumed {
            summary += &format!(
                "; assumed available once a change above adds their source (now: {missing})"
            );
        }
        Ok(Probe::change(
            Plan {
                update: false,
                changes,
            },
            summary,
            None,
        ))
    }

    async fn apply(
        &self,
        args: &Args,
        plan: Plan,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        let mut changes = plan.changes;
        if plan.update {
            run(cx, "apt-get update", UPDATE_SCRIPT).await?;
            // Decide again from the fresh cache, with the same code as the probe.
            let report = args.report(cx).await?;
            changes = decide(args.state, &args.names(), &report, false)
                .map_err(ModuleError::Failed)?;
        }
        if !changes.is_empty() {
            let script = apply_script(&changes).map_err(ModuleError::Args)?;
            run(cx, &changes.summary(), &script).await?;
        }
        let mut result = changes.result();
        result["cache_updated"] = plan.update.into();
        Ok(Applied {
            changed: !changes.is_empty(),
            result,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::module::DynModule;
    use serde_json::json;

    const OUT: &str = "A 120\n\
        S bash install ok installed 5.2.15-2+b8\n\
        S oldpkg deinstall ok config-files 1.0\n\
        S held hold ok installed 2.0\n\
        P bash:\n\
        P   Installed: 5.2.15-2+b8\n\
        P   Candidate: 5.2.15-2+b13\n\
        P   Version table:\n\
        P      5.2.15-2+b13 500\n\
        P         500 http://deb.debian.org/debian bookworm/main amd64 Packages\n\
        P  *** 5.2.15-2+b8 100\n\
        P         100 /var/lib/dpkg/status\n\
        P newpkg:\n\
        P   Installed: (none)\n\
        P   Candidate: 1.1\n\
        P   Version table:\n\
        P      1.1 500\n\
        P         500 file:/srv/repo ./ Packages\n\
        P      1.0 500\n\
        P         500 file:/srv/repo ./ Packages\n\
        P virtual:\n\
        P   Installed: (none)\n\
        P   Candidate: (none)\n\
        P   Version table:\n";

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn probe_output_is_parsed() {
        let r = parse_report(OUT).unwrap();
        assert_eq!(r.age, Some(120));
        assert_eq!(r.installed.len(), 2, "config-files is not installed");
        assert_eq!(r.installed["held"], "2.0");
        assert_eq!(r.policy["bash"].candidate, "5.2.15-2+b13");
        assert_eq!(r.policy["bash"].versions, ["5.2.15-2+b13", "5.2.15-2+b8"]);
        assert_eq!(r.policy["newpkg"].versions, ["1.1", "1.0"]);
        assert_eq!(r.policy["virtual"].candidate, "(none)");
    }

    #[test]
    fn decisions_per_state() {
        let r = parse_report(OUT).unwrap();
        let c = decide(State::Present, &names(&["bash", "newpkg"]), &r, false).unwrap();
        assert_eq!(c.summary(), "install: newpkg");
        let c = decide(State::Latest, &names(&["bash", "newpkg"]), &r, false).unwrap();
        assert_eq!(
            c.summary(),
            "install: newpkg; upgrade: bash 5.2.15-2+b8 -> 5.2.15-2+b13"
        );
        let c = decide(
            State::Absent,
            &names(&["bash", "newpkg", "oldpkg"]),
            &r,
            false,
        )
        .unwrap();
        assert_eq!(c.summary(), "remove: bash");
        let c = decide(
            State::Present,
            &names(&["newpkg=1.0", "bash=5.2.15-2+b8"]),
            &r,
            false,
        )
        .unwrap();
        assert_eq!(c.summary(), "install: newpkg=1.0");
        let c = decide(State::Absent, &names(&["bash=1"]), &r, false).unwrap();
        assert!(c.is_empty(), "another version is installed");
    }

    #[test]
    fn unknown_packages_fail_unless_an_update_comes_first() {
        let r = parse_report(OUT).unwrap();
        let e = decide(
            State::Present,
            &names(&["nosuch", "virtual", "newpkg=9"]),
            &r,
            false,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "Unable to locate package nosuch; package virtual has no installation candidate; \
             version 9 of newpkg not found"
        );
        let c = decide(State::Latest, &names(&["nosuch"]), &r, true).unwrap();
        assert_eq!(c.install, ["nosuch"]);
    }

    #[test]
    fn cache_age_decides_the_update() {
        let r = parse_report(OUT).unwrap();
        let a = |v| -> Args { engine::module::parse_args(&v).unwrap() };
        assert!(a(json!({"update_cache": true})).update_due(&r));
        assert!(!a(json!({"update_cache": true, "cache_valid_time": 3600})).update_due(&r));
        assert!(a(json!({"update_cache": true, "cache_valid_time": 60})).update_due(&r));
        assert!(!a(json!({"name": "x"})).update_due(&r));
    }

    #[test]
    fn a_source_newer_than_the_cache_is_always_read() {
        let out = format!("{OUT}N /etc/apt/sources.list.d/kubernetes.list\n");
        let r = parse_report(&out).unwrap();
        assert_eq!(
            r.newer_source.as_deref(),
            Some("/etc/apt/sources.list.d/kubernetes.list")
        );
        let a = |v| -> Args { engine::module::parse_args(&v).unwrap() };
        assert!(
            a(json!({"update_cache": true, "cache_valid_time": 3600})).update_due(&r),
            "the cache is 120 s old, but a source changed since"
        );
        assert!(!a(json!({"name": "x"})).update_due(&r), "no update_cache");
    }

    #[test]
    fn args_are_checked() {
        let m = Apt;
        assert!(m
            .validate(&json!({"name": ["nginx", "libc6=2.36-9"]}))
            .is_ok());
        assert!(m.validate(&json!({"update_cache": true})).is_ok());
        for (bad, why) in [
            (json!({}), "name"),
            (json!({"name": "Foo"}), "not a package"),
            (json!({"name": "a*"}), "not a package"),
            (json!({"name": "ab=1", "state": "latest"}), "names only"),
            (json!({"name": "ab", "cache_valid_time": 5}), "update_cache"),
            (
                json!({"name": "ab", "upgrade": true}),
                "unknown field `upgrade`",
            ),
        ] {
            let e = m.validate(&bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn scripts_quote_every_name() {
        let a: Args = engine::module::parse_args(&json!({"name": ["ab", "cd=1:2.0"]})).unwrap();
        let s = probe_script(&a, &a.names()).unwrap();
        assert!(s.contains("-- ab cd 2>/dev/null"), "{s}");
        assert!(s.contains("apt-cache policy -- ab cd"), "{s}");
        assert!(!s.contains("stat -c"), "no cache age without update_cache");
        let c = Changes {
            install: names(&["cd=1:2.0"]),
            upgrade: vec![Upgrade {
                name: "ab".into(),
                from: "1".into(),
                to: "2".into(),
            }],
            remove: names(&["ef"]),
        };
        let s = apply_script(&c).unwrap();
        assert!(s.contains("install -- 'cd=1:2.0' ab\n"), "{s}");
        assert!(s.contains("remove -- ef\n"), "{s}");
    }
}
