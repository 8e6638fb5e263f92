//! `lineinfile`: makes sure one line is in a file (or is not), leaving the rest alone.

use async_trait::async_trait;
use engine::host::Script;
use engine::remote::FileKind;
use engine::template::python_replacement_to_rust;
use engine::transport::ExecOutput;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use fancy_regex::{Captures, Regex};
use serde::Deserialize;
use serde_json::json;

use crate::shared::content;
use crate::shared::inspect::{Inspect, Read};
use crate::shared::perms::Wanted;

pub struct LineInFile;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Present,
    Absent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The file to edit (Ansible's aliases `dest` and `name` work too).
    #[serde(alias = "dest", alias = "name")]
    pub path: String,
    /// The line to put in the file (required with state `present`); with `state: "absent"`
    /// and no `regexp`, lines equal to it are removed.
    pub line: Option<String>,
    /// A regular expression searched in every line: the last line it matches is replaced by
    /// `line` (with `absent`: every matching line is removed). Rust regex syntax, which covers
    /// Python's except look-around and backreferences inside the pattern.
    pub regexp: Option<String>,
    /// Like `regexp`, but a plain string the line must contain.
    pub search_string: Option<String>,
    /// `present` (default) or `absent`.
    pub state: Option<State>,
    /// Where to insert `line` when nothing matched: after the last line matching this regular
    /// expression, or `EOF` (the default) or `BOF`.
    pub insertafter: Option<String>,
    /// Where to insert `line` when nothing matched: before the last line matching this regular
    /// expression, or `BOF`.
    pub insertbefore: Option<String>,
    /// Use the first match of `regexp`/`insertafter`/`insertbefore` instead of the last.
    pub firstmatch: Option<bool>,
    /// Create the file when it is missing (default false: a missing file is an error).
    pub create: Option<bool>,
    /// `line` may use the groups of `regexp` (`\1`, `\g<name>`); when `regexp` matches nothing
    /// the file is left unchanged.
    pub backrefs: Option<bool>,
    /// Permissions: octal ("0644") or symbolic.
    #[serde(default, deserialize_with = "crate::shared::perms::mode_arg")]
    pub mode: Option<String>,
    /// Owner, by name or uid.
    pub owner: Option<String>,
    /// Group, by name or gid.
    pub group: Option<String>,
    /// Keep the old file as `PATH.<timestamp>~` when changing it.
    pub backup: Option<bool>,
    /// A command that checks the new file before it replaces the old one; `%s` is its path.
    pub validate: Option<String>,
    /// Accepted for Ansible compatibility and ignored: every write here is atomic (a temporary
    /// file beside the destination, renamed over it).
    #[serde(default)]
    pub unsafe_writes: Option<bool>,
}

pub const DOC: &str = r#"# lineinfile

Ensures a line is present in a file, or absent from it, without touching the other lines. The
file is read once, the new content is computed on the controller, and it is written (atomically)
only if it differs. Symbolic links are followed.

With `state: "present"` (Ansible's semantics):
- with `regexp` (or `search_string`), the **last** matching line (`firstmatch` for the first) is
  replaced by `line`;
- otherwise, or if nothing matches, a line equal to `line` already in the file means no change;
- otherwise `line` is inserted after the last line matching `insertafter`, before the last line
  matching `insertbefore`, at `BOF`, or at the end of the file (the default, also when the
  `insertafter`/`insertbefore` pattern matches nothing);
- with `backrefs`, `line` may refer to `regexp`'s groups (`\1`, `\g<name>`), and a file without a
  match is left unchanged.

With `state: "absent"`, every line matching `regexp` (or containing `search_string`, or equal to
`line`) is removed. A missing file is then fine.

A missing file is an error unless `create: true`. Regular expressions use Rust's syntax (no
look-around). With `--diff` the change is shown as a diff.

## Arguments

| name | type | |
|---|---|---|
| `path` (aliases `dest`, `name`) | string | the file (required) |
| `line` | string | the line |
| `regexp` / `search_string` | string | which line to replace or remove |
| `state` | string | `present` (default) or `absent` |
| `insertafter` / `insertbefore` | string | regex, or `EOF` / `BOF` |
| `firstmatch` | bool | use first matches instead of last |
| `create` | bool | create a missing file (default false) |
| `backrefs` | bool | expand `\1` in `line`; no match means no change |
| `mode`, `owner`, `group` | string | attributes of the file |
| `backup` | bool | keep the old file as `PATH.<timestamp>~` |
| `validate` | string | check command, `%s` is the new file |
| `unsafe_writes` | bool | accepted and ignored (writes are always atomic) |

## Example

```rhai
lineinfile(#{ path: "/etc/ssh/sshd_config", regexp: "^#?PermitRootLogin", line: "PermitRootLogin no",
              validate: "sshd -t -f %s" })
lineinfile(#{ path: "/etc/hosts", line: "10.0.0.10 k8s-api", create: true })
lineinfile(#{ path: "/etc/fstab", regexp: "\\sswap\\s", state: "absent" })
```
"#;

/// The computed edit: plan for the file, and what happened to the lines.
pub struct Plan {
    file: content::Plan,
    msg: String,
    found: Option<usize>,
    create: bool,
}

/// How `line`'s place is searched.
struct Spec<'a> {
    line: Option<&'a str>,
    regexp: Option<Regex>,
    search_string: Option<&'a str>,
    insertafter: Option<&'a str>,
    insertbefore: Option<&'a str>,
    firstmatch: bool,
    backrefs: bool,
}

/// What an edit did.
#[derive(Debug, PartialEq, Eq)]
pub enum Edit {
    Unchanged,
    Added,
    Replaced,
    Removed(usize),
}

impl Edit {
    fn message(&self) -> String {
        match self {
            Edit::Unchanged => String::new(),
            Edit::Added => "line added".into(),
            Edit::Replaced => "line replaced".into(),
            Edit::Removed(n) => format!("{n} line(s) removed"),
        }
    }
}

fn strip(l: &str) -> &str {
    l.trim_end_matches(['\r', '\n'])
}

/// Expands Python-style group references (`\1`, `\g<name>`) in `template`, as the engine's
/// `regex_replace` filter does.
fn expand(template: &str, caps: &Captures) -> String {
    let mut out = String::new();
    caps.expand(&python_replacement_to_rust(template), &mut out);
    out
}

/// Applies `spec` to `text` with state present.
fn present(text: &str, s: &Spec) -> Result<(String, Edit), String> {
    let mut lines: Vec<String> = text.split_inclusive('\n').map(String::from).collect();
    let line = s.line.unwrap_or_default();
    let with_nl = |l: &str| {
        if l.ends_with('\n') {
            l.to_string()
        } else {
            format!("{l}\n")
        }
    };
    let ensure_last_newline = |lines: &mut Vec<String>| {
        if let Some(last) = lines.last_mut() {
            if !last.ends_with('\n') && !last.ends_with('\r') {
                last.push('\n');
            }
        }
    };
    let ins_re = match (s.insertafter, s.insertbefore) {
        (Some(a), _) if a != "BOF" && a != "EOF" => Some(a),
        (None, Some(b)) if b != "BOF" => Some(b),
        _ => None,
    }
    .map(|r| Regex::new(r).expect("checked in check_args"));
    let insertafter = s.insertafter.or(if s.insertbefore.is_none() {
        Some("EOF")
    } else {
        None
    });

    // The line regexp or search_string matches.
    let mut found: Option<(usize, Option<Captures>)> = None;
    for (i, l) in lines.iter().enumerate() {
        let hit = match (&s.regexp, s.search_string) {
            (Some(re), _) => re.captures(strip(l)).map_err(regex_failed)?.map(Some),
            (None, Some(ss)) => l.contains(ss).then_some(None),
            (None, None) => None,
        };
        if let Some(caps) = hit {
            found = Some((i, caps));
            if s.firstmatch {
                break;
            }
        }
    }
    let mut index: Option<usize> = found.as_ref().map(|(i, _)| *i);
    let mut insert_at: Option<usize> = None;
    if found.is_none() {
        for (i, l) in lines.iter().enumerate() {
            if strip(l) == line {
                index = Some(i);
            } else if match &ins_re {
                Some(re) => re.is_match(strip(l)).map_err(regex_failed)?,
                None => false,
            } {
                insert_at = Some(if s.insertbefore.is_some() { i } else { i + 1 });
                if s.firstmatch {
                    break;
                }
            }
        }
    }

    if let Some(i) = index {
        let new_line = match (&found, s.backrefs) {
            (Some((_, Some(caps))), true) => with_nl(&expand(line, caps)),
            _ => with_nl(line),
        };
        if lines[i] == new_line {
            return Ok((text.to_string(), Edit::Unchanged));
        }
        lines[i] = new_line;
        return Ok((lines.concat(), Edit::Replaced));
    }
    if s.backrefs {
        return Ok((text.to_string(), Edit::Unchanged));
    }
    let new_line = with_nl(line);
    if s.insertbefore == Some("BOF") || insertafter == Some("BOF") {
        lines.insert(0, new_line);
    } else if insertafter == Some("EOF") || insert_at.is_none() {
        ensure_last_newline(&mut lines);
        lines.push(new_line);
    } else {
        let at = insert_at.expect("checked above");
        if s.insertafter.is_some() {
            if at == lines.len() {
                if strip(&lines[at - 1]) == line {
                    return Ok((text.to_string(), Edit::Unchanged));
                }
                ensure_last_newline(&mut lines);
                lines.push(new_line);
            } else if strip(&lines[at]) == line {
                return Ok((text.to_string(), Edit::Unchanged));
            } else {
                lines.insert(at, new_line);
            }
        } else {
            lines.insert(at, new_line);
        }
    }
    Ok((lines.concat(), Edit::Added))
}

/// Applies `spec` to `text` with state absent.
fn absent(text: &str, s: &Spec) -> Result<(String, Edit), String> {
    let mut removed = 0;
    let mut kept = String::new();
    for l in text.split_inclusive('\n') {
        let hit = match (&s.regexp, s.search_string, s.line) {
            (Some(re), _, _) => re.is_match(strip(l)).map_err(regex_failed)?,
            (None, Some(ss), _) => l.contains(ss),
            (None, None, Some(line)) => strip(l) == line,
            _ => false,
        };
        removed += usize::from(hit);
        if !hit {
            kept.push_str(l);
        }
    }
    Ok(if removed == 0 {
        (text.to_string(), Edit::Unchanged)
    } else {
        (kept, Edit::Removed(removed))
    })
}

/// A pattern that could not be matched (fancy-regex gives up on runaway backtracking).
fn regex_failed(e: fancy_regex::Error) -> String {
    format!("regexp: {e}")
}

impl Args {
    fn state(&self) -> State {
        self.state.unwrap_or_default()
    }

    /// The probe reads the file (through links) and its content.
    fn inspect(&self) -> Inspect<'_> {
        Inspect {
            path: &self.path,
            follow: true,
            into_dir: None,
            read: Some(Read::default()),
        }
    }

    fn spec(&self) -> Result<Spec<'_>, String> {
        let compile = |name: &str, r: &Option<String>| -> Result<Option<Regex>, String> {
            r.as_deref()
                .map(|r| Regex::new(r).map_err(|e| format!("{name}: {e}")))
                .transpose()
        };
        compile(
            "insertafter",
            &self
                .insertafter
                .clone()
                .filter(|a| a != "EOF" && a != "BOF"),
        )?;
        compile(
            "insertbefore",
            &self.insertbefore.clone().filter(|b| b != "BOF"),
        )?;
        Ok(Spec {
            line: self.line.as_deref(),
            regexp: compile("regexp", &self.regexp)?,
            search_string: self.search_string.as_deref(),
            insertafter: self.insertafter.as_deref(),
            insertbefore: self.insertbefore.as_deref(),
            firstmatch: self.firstmatch.unwrap_or(false),
            backrefs: self.backrefs.unwrap_or(false),
        })
    }

    fn wanted(&self) -> Wanted<'_> {
        Wanted::new(&self.mode, &self.owner, &self.group)
    }
}

#[async_trait]
impl Module for LineInFile {
    const NAME: &'static str = "lineinfile";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = Plan;

    fn check_args(a: &Args) -> Result<(), String> {
        a.wanted().check()?;
        a.spec()?;
        let both = |x: bool, y: bool, msg: &str| if x && y { Err(msg.to_string()) } else { Ok(()) };
        both(
            a.insertafter.is_some(),
            a.insertbefore.is_some(),
            "give insertafter or insertbefore, not both",
        )?;
        both(
            a.regexp.is_some(),
            a.search_string.is_some(),
            "give regexp or search_string, not both",
        )?;
        both(
            a.backrefs == Some(true),
            a.search_string.is_some(),
            "backrefs needs regexp, not search_string",
        )?;
        match a.state() {
            State::Present if a.line.is_none() => {
                return Err("line is required with state present".into())
            }
            State::Present if a.backrefs == Some(true) && a.regexp.is_none() => {
                return Err("regexp is required with backrefs".into())
            }
            State::Absent
                if a.line.is_none() && a.regexp.is_none() && a.search_string.is_none() =>
            {
                return Err(
                    "one of line, search_string or regexp is required with state absent".into(),
                )
            }
            _ => {}
        }
        content::check_validate(a.validate.as_deref())
    }

    const SCRIPT_PROBE: bool = true;

    fn probe_script(
        &self,
        args: &Args,
        _cx: &ModuleContext<'_>,
    ) -> Result<Option<String>, ModuleError> {
        args.inspect().script_with("").map(Some)
    }

    async fn decide(
        &self,
        args: &Args,
        out: Option<ExecOutput>,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<Plan>, ModuleError> {
        let spec = args.spec().map_err(ModuleError::Args)?;
        let cur = args.inspect().read_probe(out)?;
        let path = cur.path.clone();
        let text = match (cur.kind(), &cur.content) {
            (FileKind::Directory, _) => {
                return Err(ModuleError::Failed(format!("path {path} is a directory")))
            }
            (FileKind::File, Some(bytes)) => String::from_utf8(bytes.clone()).map_err(|_| {
                ModuleError::Failed(format!(
                    "{path} is not UTF-8 text; lineinfile edits text files"
                ))
            })?,
            (FileKind::File, None) => {
                return Err(ModuleError::Failed(format!("cannot read {path}")))
            }
            _ if args.state() == State::Absent => {
                return Ok(Probe::Unchanged(
                    json!({ "dest": path, "msg": "file not present" }),
                ))
            }
            _ if !args.create.unwrap_or(false) => {
                return Err(ModuleError::Failed(format!(
                    "{path} does not exist (use create: true to create it)"
                )))
            }
            _ => String::new(),
        };
        let (new, edit) = match args.state() {
            State::Present => present(&text, &spec),
            State::Absent => absent(&text, &spec),
        }
        .map_err(ModuleError::Failed)?;
        let msg = edit.message();
        let label = match &edit {
            Edit::Unchanged => None,
            Edit::Added => Some(format!("line added to {path}")),
            Edit::Replaced => Some(format!("line replaced in {path}")),
            Edit::Removed(n) => Some(format!("{n} line(s) removed from {path}")),
        };
        let found = match edit {
            Edit::Removed(n) => Some(n),
            _ if args.state() == State::Absent => Some(0),
            _ => None,
        };
        let create = !cur.exists();
        let probe = content::decide(&cur, new.into_bytes(), &args.wanted(), cx.want_diff, label)?;
        Ok(match probe {
            Probe::Unchanged(mut r) => {
                r["msg"] = msg.into();
                if let Some(n) = found {
                    r["found"] = n.into();
                }
                Probe::Unchanged(r)
            }
            Probe::Skipped(s) => Probe::Skipped(s),
            Probe::Change(c) => Probe::change(
                Plan {
                    file: c.plan,
                    msg,
                    found,
                    create,
                },
                c.summary,
                c.diff,
            ),
        })
    }

    const SCRIPT_APPLY: bool = true;

    fn apply_script(
        &self,
        args: &Args,
        plan: &Plan,
        _cx: &ModuleContext<'_>,
    ) -> Result<Script, ModuleError> {
        let backup = args.backup.unwrap_or(false);
        let mut opts = content::write_options(args.wanted(), args.validate.as_deref(), backup);
        opts.create_parent = plan.create;
        content::apply_script(&plan.file, &opts)
    }

    async fn applied(
        &self,
        _args: &Args,
        plan: Plan,
        out: ExecOutput,
        _cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        let backup = content::applied(&plan.file, &out)?;
        let mut result = json!({ "dest": plan.file.path, "msg": plan.msg });
        if let Some(n) = plan.found {
            result["found"] = n.into();
        }
        if let Some(b) = backup {
            result["backup_file"] = b.into();
        }
        Ok(Applied::changed(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{mode_of, snapshot, Env};
    use engine::module::Status;

    fn edit(text: &str, args: serde_json::Value) -> (String, Edit) {
        let args: Args = engine::module::parse_args(&args).unwrap();
        LineInFile::check_args(&args).unwrap();
        let spec = args.spec().unwrap();
        match args.state() {
            State::Present => present(text, &spec),
            State::Absent => absent(text, &spec),
        }
        .unwrap()
    }

    /// Python's look-ahead and a backreference in the pattern, as Ansible's regexp takes them.
    #[test]
    fn regexp_takes_pythons_regex_features() {
        let t = "#Port 22\nPort 2222\nx\n";
        let (out, e) = edit(t, serde_json::json!({ "path": "f", "regexp": "^(?!#)Port ", "line": "Port 2200" }));
        assert_eq!((out.as_str(), e), ("#Port 22\nPort 2200\nx\n", Edit::Replaced));
        let (out, e) = edit("a a\nb c\n", serde_json::json!({ "path": "f", "regexp": "^(\\w) \\1$", "state": "absent" }));
        assert_eq!((out.as_str(), e), ("b c\n", Edit::Removed(1)));
    }

    #[test]
    fn regexp_replaces_the_last_match() {
        let t = "#Port 22\nPort 2222\nx\nPort 1\n";
        let (out, e) = edit(
            t,
            json!({ "path": "/f", "regexp": "^#?Port ", "line": "Port 22" }),
        );
        assert_eq!(out, "#Port 22\nPort 2222\nx\nPort 22\n");
        assert_eq!(e, Edit::Replaced);
        let (out, _) = edit(
            t,
            json!({ "path": "/f", "regexp": "^#?Port ", "line": "Port 22", "firstmatch": true }),
        );
        assert_eq!(out, "Port 22\nPort 2222\nx\nPort 1\n");
        let (_, e) = edit(
            "Port 22\n",
            json!({ "path": "/f", "regexp": "^Port", "line": "Port 22" }),
        );
        assert_eq!(e, Edit::Unchanged);
    }

    #[test]
    fn insertion_points() {
        let t = "[a]\nk=1\n[b]\nk=2\n";
        let after = |re: &str| edit(t, json!({ "path": "/f", "line": "new", "insertafter": re })).0;
        assert_eq!(
            after("^\\["),
            "[a]\nk=1\n[b]\nnew\nk=2\n",
            "after the last match"
        );
        assert_eq!(
            after("^nomatch"),
            "[a]\nk=1\n[b]\nk=2\nnew\n",
            "no match: at EOF"
        );
        assert_eq!(after("BOF"), "new\n[a]\nk=1\n[b]\nk=2\n");
        assert_eq!(after("^k=2"), "[a]\nk=1\n[b]\nk=2\nnew\n");
        let before = edit(
            t,
            json!({ "path": "/f", "line": "new", "insertbefore": "^\\[" }),
        )
        .0;
        assert_eq!(before, "[a]\nk=1\nnew\n[b]\nk=2\n");
        let (out, _) = edit(
            t,
            json!({ "path": "/f", "line": "new", "insertbefore": "^\\[", "firstmatch": true }),
        );
        assert_eq!(out, "new\n[a]\nk=1\n[b]\nk=2\n");
        // An identical line anywhere means no change, even when regexp matches nothing.
        let (_, e) = edit(
            t,
            json!({ "path": "/f", "line": "k=1", "regexp": "^nomatch" }),
        );
        assert_eq!(e, Edit::Unchanged);
        // A file without a final newline gets one before the added line.
        assert_eq!(edit("a", json!({ "path": "/f", "line": "b" })).0, "a\nb\n");
        assert_eq!(edit("", json!({ "path": "/f", "line": "b" })).0, "b\n");
    }

    #[test]
    fn backrefs_expand_or_leave_the_file_alone() {
        let t = "listen 80 default\n";
        let args = json!({ "path": "/f", "regexp": "^listen (\\d+) (?P<rest>.*)$",
                           "line": "listen 8080 \\g<rest> # was \\1", "backrefs": true });
        assert_eq!(edit(t, args.clone()).0, "listen 8080 default # was 80\n");
        assert_eq!(edit("other\n", args), ("other\n".into(), Edit::Unchanged));
        // `$` is literal (Python syntax), and a group that did not match expands to nothing.
        let args = json!({ "path": "/f", "regexp": "^listen (\\d+)(x)?", "backrefs": true,
                           "line": "port=$1 \\1[\\2]" });
        assert_eq!(edit(t, args).0, "port=$1 80[]\n");
    }

    #[test]
    fn absent_removes_every_match() {
        let t = "a\nswap x\nb\nswap y\n";
        assert_eq!(
            edit(
                t,
                json!({ "path": "/f", "regexp": "^swap", "state": "absent" })
            ),
            ("a\nb\n".into(), Edit::Removed(2))
        );
        assert_eq!(
            edit(t, json!({ "path": "/f", "line": "b", "state": "absent" })).0,
            "a\nswap x\nswap y\n"
        );
        assert_eq!(
            edit(
                t,
                json!({ "path": "/f", "search_string": "x", "state": "absent" })
            )
            .1,
            Edit::Removed(1)
        );
    }

    #[tokio::test]
    async fn edits_a_real_file_once() {
        let env = Env::new();
        let f = env.path("sshd_config");
        std::fs::write(&f, "Port 22\n#PermitRootLogin yes\n").unwrap();
        let args = json!({ "path": f, "regexp": "^#?PermitRootLogin", "line": "PermitRootLogin no", "mode": "0600" });
        let before = snapshot(env.dir.path());
        let checked = env.run(&LineInFile, args.clone(), true).await.unwrap();
        assert_eq!(checked.status, Status::Changed);
        assert_eq!(snapshot(env.dir.path()), before, "check mode wrote nothing");
        let diff = checked.diff.unwrap().unified();
        assert!(
            diff.contains("-#PermitRootLogin yes\n+PermitRootLogin no\n"),
            "{diff}"
        );

        let out = env.apply(&LineInFile, args.clone()).await;
        assert_eq!(
            out.summary.as_deref(),
            Some(format!("line replaced in {f}, mode 644 -> 600").as_str())
        );
        assert_eq!(out.result["msg"], "line replaced");
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "Port 22\nPermitRootLogin no\n"
        );
        assert_eq!(mode_of(&f), 0o600);
        assert_eq!(env.apply(&LineInFile, args).await.status, Status::Ok);
    }

    #[tokio::test]
    async fn missing_files_and_links() {
        let env = Env::new();
        let f = env.path("sub/hosts");
        let args = json!({ "path": f, "line": "10.0.0.1 api" });
        let err = env.error(&LineInFile, args.clone()).await;
        assert!(
            err.contains("does not exist") && err.contains("create"),
            "{err}"
        );
        let absent = env
            .apply(
                &LineInFile,
                json!({ "path": f, "line": "x", "state": "absent" }),
            )
            .await;
        assert_eq!(absent.status, Status::Ok);
        let create = json!({ "path": f, "line": "10.0.0.1 api", "create": true });
        env.apply(&LineInFile, create.clone()).await;
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "10.0.0.1 api\n");
        assert_eq!(env.apply(&LineInFile, create).await.status, Status::Ok);

        // Through a link: the target is edited and the link stays.
        let l = env.path("link");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        env.apply(&LineInFile, json!({ "path": l, "line": "more" }))
            .await;
        assert!(std::fs::symlink_metadata(&l)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "10.0.0.1 api\nmore\n");
        let out = env
            .apply(
                &LineInFile,
                json!({ "path": l, "regexp": "^more", "state": "absent", "backup": true }),
            )
            .await;
        assert_eq!(out.result["found"], 1);
        assert!(out.result["backup_file"].is_string());
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "10.0.0.1 api\n");
    }

    #[tokio::test]
    async fn argument_errors() {
        let env = Env::new();
        let err = env
            .error(&LineInFile, json!({ "path": "/f", "lines": "x" }))
            .await;
        assert!(
            err.contains("unknown field `lines`") && err.contains("`line`"),
            "{err}"
        );
        let err = env.error(&LineInFile, json!({ "path": "/f" })).await;
        assert!(err.contains("line is required"), "{err}");
        let err = env
            .error(
                &LineInFile,
                json!({ "path": "/f", "line": "x", "regexp": "(" }),
            )
            .await;
        assert!(err.starts_with("regexp:"), "{err}");
        let err = env
            .error(
                &LineInFile,
                json!({ "path": "/f", "line": "x", "backrefs": true }),
            )
            .await;
        assert!(err.contains("regexp is required"), "{err}");
        let err = env
            .error(
                &LineInFile,
                json!({ "path": "/f", "line": "x", "insertafter": "a", "insertbefore": "b" }),
            )
            .await;
        assert!(err.contains("not both"), "{err}");
        let err = env
            .error(
                &LineInFile,
                json!({ "path": "/f", "line": "x", "state": "gone" }),
            )
            .await;
        assert!(err.contains("state") && err.contains("absent"), "{err}");
        let err = env
            .error(&LineInFile, json!({ "path": env.path(""), "line": "x" }))
            .await;
        assert!(err.contains("is a directory"), "{err}");
    }
}
