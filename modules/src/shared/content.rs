//! What modules that write files share: given a path's current state and the content it should
//! have, decide between nothing, fixing attributes only, and writing the file; then do it. Also
//! where a controller file is found, and making the directory a file goes into.

use engine::host::{Host, Script};
use engine::remote::{write_script, written, FileKind, WriteOptions};
use engine::transport::ExecOutput;
use std::path::{Path, PathBuf};

use engine::quote::quote;
use engine::{ModuleError, Probe};
use serde_json::{json, Value};

use crate::shared::inspect::{file_diff, sha256, Before, Current};
use crate::shared::perms::{self, Fix, Wanted};

pub struct Plan {
    pub path: String,
    pub action: Action,
}

pub enum Action {
    /// Write this content (with the wanted attributes).
    Write(Vec<u8>),
    /// The content is right: run this script on `$p` to fix attributes.
    Attrs(String),
}

/// The result a file task registers.
pub fn result(path: &str, content: &[u8]) -> Value {
    json!({ "dest": path, "checksum": sha256(content), "size": content.len() })
}

/// Checks a `validate` command: it must name the file to check with `%s`.
pub fn check_validate(validate: Option<&str>) -> Result<(), String> {
    match validate {
        Some(v) if !v.contains("%s") => Err(format!(
            "validate: {v:?} must contain %s (the file to check)"
        )),
        _ => Ok(()),
    }
}

/// How the file is written: the wanted attributes, the `validate` command and `backup`.
pub fn write_options<'a>(
    wanted: Wanted<'a>,
    validate: Option<&'a str>,
    backup: bool,
) -> WriteOptions<'a> {
    WriteOptions {
        mode: wanted.mode,
        owner: wanted.owner,
        group: wanted.group,
        validate,
        backup,
        ..Default::default()
    }
}

/// What the attributes of `cur` need, when it is a regular file (nothing otherwise).
fn file_fix(cur: &Current, wanted: &Wanted) -> Result<Fix, String> {
    if cur.stat.kind == FileKind::File {
        perms::fix(wanted, &cur.entry(), cur.umask)
    } else {
        Ok(Fix::default())
    }
}

/// Nothing to do when `fix` is empty (the task's result is then `unchanged`), else fix attributes.
fn attributes(path: String, fix: Fix, unchanged: Value) -> Probe<Plan> {
    if fix.is_empty() {
        return Probe::Unchanged(unchanged);
    }
    let summary = fix.summary.join(", ");
    let action = Action::Attrs(fix.script);
    Probe::change(Plan { path, action }, summary, None)
}

/// Leaves the content of `cur` as it is (`force: false`), fixing only the attributes of a regular
/// file.
pub fn keep(cur: &Current, wanted: &Wanted) -> Result<Probe<Plan>, ModuleError> {
    Ok(attributes(
        cur.path.clone(),
        file_fix(cur, wanted).map_err(ModuleError::Args)?,
        current(cur),
    ))
}

/// The result a file task registers when it leaves the content of `cur` as it is.
pub fn current(cur: &Current) -> Value {
    json!({ "dest": cur.path, "checksum": cur.stat.sha256, "size": cur.size })
}

/// Compares `cur` (which must not be a directory) with `new` and the wanted attributes. `label`
/// replaces the default "create PATH" / "update PATH" in the summary.
pub fn decide(
    cur: &Current,
    new: Vec<u8>,
    wanted: &Wanted,
    want_diff: bool,
    label: Option<String>,
) -> Result<Probe<Plan>, ModuleError> {
    let path = cur.path.clone();
    let fix = file_fix(cur, wanted).map_err(ModuleError::Args)?;
    let same = cur.stat.kind == FileKind::File
        && cur.stat.sha256.as_deref() == Some(sha256(&new).as_str());
    if same {
        return Ok(attributes(path, fix, result(&cur.path, &new)));
    }
    let mut summary = vec![match cur.stat.kind {
        _ if label.is_some() => label.unwrap_or_default(),
        FileKind::Absent => format!("create {path}"),
        FileKind::File => format!("update {path}"),
        FileKind::Link => format!("replace link {path} with a file"),
        _ => format!("replace {path} with a file"),
    }];
    summary.extend(fix.summary);
    let diff = want_diff.then(|| {
        let before = match (&cur.stat.kind, &cur.content) {
            (FileKind::Absent, _) => Before::Absent,
            (FileKind::File, Some(c)) => Before::Content(c),
            _ => Before::Unread(cur.size),
        };
        file_diff(&path, before, Some(&new))
    });
    let action = Action::Write(new);
    Ok(Probe::change(
        Plan { path, action },
        summary.join(", "),
        diff,
    ))
}

/// Makes the change `decide` planned. Returns the backup's path when one was made.
pub async fn apply(
    host: &Host,
    plan: &Plan,
    opts: &WriteOptions<'_>,
) -> Result<Option<String>, ModuleError> {
    let out = host.run_script(&apply_script(plan, opts)?).await?;
    applied(plan, &out)
}

/// The script of `apply`, with the content to write on its stdin.
pub fn apply_script(plan: &Plan, opts: &WriteOptions<'_>) -> Result<Script, ModuleError> {
    match &plan.action {
        Action::Write(content) => write_script(&plan.path, content, opts),
        Action::Attrs(script) => perms::on_path(&plan.path, script),
    }
}

/// What the output of `apply_script` says: an error, or the backup's path when one was made.
pub fn applied(plan: &Plan, out: &ExecOutput) -> Result<Option<String>, ModuleError> {
    match &plan.action {
        Action::Write(_) => written(&plan.path, out),
        Action::Attrs(_) => perms::ran(&plan.path, out).map(|()| None),
    }
}

/// A controller file named by a task, found next to the playbook or in its `files/` directory.
pub fn controller_file(base: &Path, src: &str) -> PathBuf {
    let candidates = [base.join(src), base.join("files").join(src)];
    let found = candidates.iter().find(|p| p.exists());
    found.unwrap_or(&candidates[0]).clone()
}

/// Creates the directory `path` goes into (an extra round trip, for files not there yet).
pub async fn ensure_parent(host: &Host, path: &str) -> Result<(), ModuleError> {
    let out = host
        .run(&format!("mkdir -p -- \"$(dirname -- {})\"", quote(path)?))
        .await?;
    if !out.success() {
        return Err(ModuleError::Failed(format!(
            "cannot create the directory of {path}: {}",
            out.stderr_text().trim()
        )));
    }
    Ok(())
}
