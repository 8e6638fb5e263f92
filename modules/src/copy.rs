//! `copy`: puts content, given inline or from a file next to the playbook, into a file on the
//! target.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use engine::host::Script;
use engine::remote::{FileKind, WriteOptions};
use engine::transport::ExecOutput;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;

use crate::shared::content::{self, Plan};
use crate::shared::inspect::{sha256, Inspect, Read, DIFF_LIMIT};
use crate::shared::perms::Wanted;

pub struct Copy;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Where the file goes on the target. When it is a directory, or ends with `/`, the file is
    /// put inside it under the name of `src`.
    pub dest: String,
    /// The content to write, exactly (no newline is added). Give `content` or `src`.
    pub content: Option<String>,
    /// A file on the controller, relative to the playbook's directory (or its `files/`
    /// subdirectory). Directories are not copied.
    pub src: Option<String>,
    /// Permissions: octal ("0644") or symbolic ("u=rw,g=r,o=r"). Default: kept for an existing
    /// file, from the umask for a new one.
    #[serde(default, deserialize_with = "crate::shared::perms::mode_arg")]
    pub mode: Option<String>,
    /// Owner, by name or uid.
    pub owner: Option<String>,
    /// Group, by name or gid.
    pub group: Option<String>,
    /// Keep the old file as `DEST.<timestamp>~` when replacing it.
    pub backup: Option<bool>,
    /// A command that checks the new file before it replaces `dest`; `%s` is its path
    /// (`visudo -cf %s`). If it fails, `dest` is left as it was.
    pub validate: Option<String>,
    /// Replace `dest` when its content differs (default true). With false, an existing `dest` is
    /// left alone entirely.
    pub force: Option<bool>,
    /// Accepted for Ansible compatibility and ignored: there is no vault to decrypt from; the
    /// content is written as given.
    #[serde(default)]
    pub decrypt: Option<bool>,
    /// Accepted for Ansible compatibility and ignored: every write here is atomic (a temporary
    /// file beside the destination, renamed over it).
    #[serde(default)]
    pub unsafe_writes: Option<bool>,
}

pub const DOC: &str = r#"# copy

Writes a file on the target from `content` or from a controller file `src` (relative to the
playbook's directory, or its `files/` directory). The file is compared by sha256 on the target,
never downloaded: an identical file is left alone, and if only its mode, owner or group differ
those are fixed without rewriting it. Writes are atomic (a temporary file in the same directory,
validated, then renamed), so readers never see half a file.

With `--diff`, the old content is read to show what changes, except for files over 256 KiB or
binary files, which are shown as a placeholder.

When `dest` is a directory or ends with `/` (it is then created), the file goes inside it under
the name of `src`. A symbolic link at `dest` is replaced by a file (as Ansible does).

## Arguments

| name | type | |
|---|---|---|
| `dest` | string | target path (required) |
| `content` | string | the content (or `src`) |
| `src` | string | a controller file (or `content`) |
| `mode` | string or number | "0644" or "u=rw,g=r,o=r"; a number is the mode's value (YAML's `0644` arrives as 420) |
| `owner`, `group` | string | names or numeric ids |
| `backup` | bool | keep the old file as `DEST.<timestamp>~` |
| `validate` | string | check command run on the new file, `%s` is its path |
| `force` | bool | replace a different existing file (default true) |
| `decrypt`, `unsafe_writes` | bool | accepted and ignored (no vault yet; writes are always atomic) |

## Result

`dest`, `checksum` (sha256), `size`, and `backup_file` when a backup was made.

## Example

```rhai
copy(#{ content: "Authorized use only\n", dest: "/etc/motd", mode: "0644" })
copy(#{ src: "files/sudoers-deploy", dest: "/etc/sudoers.d/deploy", mode: "0440", validate: "visudo -cf %s" })
```
"#;

impl Args {
    fn wanted(&self) -> Wanted<'_> {
        Wanted::new(&self.mode, &self.owner, &self.group)
    }

    fn write_options(&self) -> WriteOptions<'_> {
        let backup = self.backup.unwrap_or(false);
        let mut opts = content::write_options(self.wanted(), self.validate.as_deref(), backup);
        opts.create_parent = self.dest.ends_with('/');
        opts
    }

    /// The base name `src` is copied under when `dest` is a directory.
    fn src_name(&self) -> Option<&str> {
        let src = self.src.as_deref()?;
        Path::new(src).file_name()?.to_str()
    }

    fn src_path(&self, base: &Path) -> Option<PathBuf> {
        Some(crate::shared::content::controller_file(base, self.src.as_deref()?))
    }

    /// The file to write: `dest`, or the name of `src` in the directory `dest`.
    fn dest(&self) -> String {
        match (self.dest.ends_with('/'), self.src_name()) {
            (true, Some(name)) => format!("{}{name}", self.dest),
            _ => self.dest.clone(),
        }
    }

    /// What the probe reads of `dest`: with --diff also its old content, unless it is already
    /// the new content.
    fn inspect<'a>(
        &'a self,
        dest: &'a str,
        cx: &ModuleContext<'_>,
    ) -> Result<Inspect<'a>, ModuleError> {
        let read = match cx.want_diff {
            true => Some(Read {
                limit: Some(DIFF_LIMIT),
                unless_sha256: Some(sha256(&self.bytes(cx.base_dir)?)),
            }),
            false => None,
        };
        Ok(Inspect {
            path: dest,
            follow: false,
            into_dir: self.src_name(),
            read,
        })
    }

    fn bytes(&self, base: &Path) -> Result<Vec<u8>, ModuleError> {
        if let Some(c) = &self.content {
            return Ok(c.clone().into_bytes());
        }
        let path = self
            .src_path(base)
            .expect("check_args ensures content or src");
        if path.is_dir() {
            return Err(ModuleError::Args(format!(
                "src: {} is a directory; copy takes one file",
                path.display()
            )));
        }
        std::fs::read(&path)
            .map_err(|e| ModuleError::Failed(format!("cannot read src {}: {e}", path.display())))
    }
}

#[async_trait]
impl Module for Copy {
    const NAME: &'static str = "copy";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = Plan;

    fn check_args(args: &Args) -> Result<(), String> {
        args.wanted().check()?;
        match (&args.content, &args.src) {
            (Some(_), Some(_)) => return Err("give either content or src, not both".into()),
            (None, None) => return Err("missing field `content` (or `src`)".into()),
            (None, Some(_)) if args.src_name().is_none() => {
                return Err("src: must name a file".into())
            }
            _ => {}
        }
        if args.dest.is_empty() {
            return Err("dest: is empty".into());
        }
        if args.dest.ends_with('/') && args.content.is_some() {
            return Err("dest: a directory needs src (the file name comes from it)".into());
        }
        content::check_validate(args.validate.as_deref())
    }

    const SCRIPT_PROBE: bool = true;
    const CREATES: Option<&'static str> = Some("dest");

    fn probe_script(
        &self,
        args: &Args,
        cx: &ModuleContext<'_>,
    ) -> Result<Option<String>, ModuleError> {
        let dest = args.dest();
        args.inspect(&dest, cx)?.script_with("").map(Some)
    }

    async fn decide(
        &self,
        args: &Args,
        out: Option<ExecOutput>,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<Plan>, ModuleError> {
        let dest = args.dest();
        let cur = args.inspect(&dest, cx)?.read_probe(out)?;
        let new = args.bytes(cx.base_dir)?;
        if cur.stat.kind == FileKind::Directory {
            return Err(ModuleError::Failed(format!(
                "dest {} is a directory; give src to copy a file into it",
                cur.path
            )));
        }
        if cur.exists() && !args.force.unwrap_or(true) {
            return Ok(Probe::Unchanged(serde_json::json!({ "dest": cur.path })));
        }
        content::decide(&cur, new, &args.wanted(), cx.want_diff, None)
    }

    const SCRIPT_APPLY: bool = true;

    fn apply_script(
        &self,
        args: &Args,
        plan: &Plan,
        _cx: &ModuleContext<'_>,
    ) -> Result<Script, ModuleError> {
        content::apply_script(plan, &args.write_options())
    }

    async fn applied(
        &self,
        args: &Args,
        plan: Plan,
        out: ExecOutput,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        let backup = content::applied(&plan, &out)?;
        let bytes = args.bytes(cx.base_dir)?;
        let mut result = content::result(&plan.path, &bytes);
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
    use engine::module::{DynModule, Status};
    use serde_json::json;

    #[tokio::test]
    async fn writes_then_is_unchanged_and_check_mode_touches_nothing() {
        let env = Env::new();
        let dest = env.path("motd");
        let args = json!({ "content": "hello\n", "dest": dest, "mode": "0640" });
        let before = snapshot(env.dir.path());
        let out = env.run(&Copy, args.clone(), true).await.unwrap();
        assert_eq!(out.status, Status::Changed);
        assert_eq!(out.diff.unwrap().after.as_deref(), Some("hello\n"));
        assert_eq!(snapshot(env.dir.path()), before, "check mode wrote nothing");

        let out = env.apply(&Copy, args.clone()).await;
        assert_eq!(
            out.summary.as_deref(),
            Some(format!("create {dest}").as_str())
        );
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "hello\n");
        assert_eq!(mode_of(&dest), 0o640);
        assert_eq!(out.result["checksum"], sha256(b"hello\n"));
        let again = env.apply(&Copy, args).await;
        assert_eq!(again.status, Status::Ok);
        assert_eq!(again.result["dest"], dest);
    }

    /// What Ansible users write: a numeric mode (YAML's `0644` is 420), `decrypt` and
    /// `unsafe_writes`, and `file`'s and `lineinfile`'s `dest`/`name` aliases of `path`.
    #[tokio::test]
    async fn ansibles_argument_forms_are_taken() {
        let env = Env::new();
        let dest = env.path("motd");
        let args = json!({ "content": "hi\n", "dest": dest, "mode": 420, "decrypt": true,
                           "unsafe_writes": true });
        assert_eq!(env.apply(&Copy, args.clone()).await.status, Status::Changed);
        assert_eq!(mode_of(&dest), 0o644);
        assert_eq!(env.check(&Copy, args).await, Status::Ok);
        let e = Copy
            .validate(&json!({ "content": "x", "dest": dest, "mode": 70000 }))
            .unwrap_err();
        assert!(e.contains("mode 70000 is no file mode"), "{e}");

        let dir = env.path("d");
        let file = json!({ "dest": dir, "state": "directory", "mode": 0o750 });
        assert_eq!(
            env.apply(&crate::file::File, file).await.status,
            Status::Changed
        );
        assert_eq!(mode_of(&dir), 0o750);
        let line = json!({ "name": dest, "line": "second", "unsafe_writes": false });
        assert_eq!(
            env.apply(&crate::lineinfile::LineInFile, line).await.status,
            Status::Changed
        );
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "hi\nsecond\n");
    }

    #[tokio::test]
    async fn changed_content_shows_a_diff_and_keeps_a_backup() {
        let env = Env::new();
        let dest = env.path("conf");
        std::fs::write(&dest, "a\nb\n").unwrap();
        let args = json!({ "content": "a\nc\n", "dest": dest, "backup": true });
        let out = env.apply(&Copy, args.clone()).await;
        assert_eq!(
            out.summary.as_deref(),
            Some(format!("update {dest}").as_str())
        );
        let diff = out.diff.unwrap();
        assert_eq!(diff.before.as_deref(), Some("a\nb\n"));
        assert!(diff.unified().contains("-b\n+c\n"), "{}", diff.unified());
        let backup = out.result["backup_file"].as_str().unwrap().to_string();
        assert_eq!(std::fs::read_to_string(backup).unwrap(), "a\nb\n");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "a\nc\n");
    }

    #[tokio::test]
    async fn same_content_only_fixes_attributes() {
        let env = Env::new();
        let dest = env.path("same");
        std::fs::write(&dest, "x").unwrap();
        let ino = std::fs::metadata(&dest)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        let out = env
            .apply(
                &Copy,
                json!({ "content": "x", "dest": dest, "mode": "0600", "owner": "nobody" }),
            )
            .await;
        assert_eq!(
            out.summary.as_deref(),
            Some("mode 644 -> 600, owner root -> nobody")
        );
        assert!(out.diff.is_none());
        let md = std::fs::metadata(&dest).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&md),
            ino,
            "not rewritten"
        );
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&md), 65534);
        assert_eq!(mode_of(&dest), 0o600);
    }

    #[tokio::test]
    async fn src_is_copied_into_directories() {
        let env = Env::new();
        std::fs::create_dir(env.path("files")).unwrap();
        std::fs::write(env.path("files/app.conf"), "conf\n").unwrap();
        std::fs::create_dir(env.path("etc")).unwrap();
        let out = env
            .apply(&Copy, json!({ "src": "app.conf", "dest": env.path("etc") }))
            .await;
        assert_eq!(out.result["dest"], env.path("etc/app.conf"));
        assert_eq!(
            std::fs::read_to_string(env.path("etc/app.conf")).unwrap(),
            "conf\n"
        );
        let args = json!({ "src": "files/app.conf", "dest": env.path("new/dir/") });
        env.apply(&Copy, args.clone()).await;
        assert_eq!(
            std::fs::read_to_string(env.path("new/dir/app.conf")).unwrap(),
            "conf\n"
        );
        assert_eq!(env.apply(&Copy, args).await.status, Status::Ok);
        let err = env
            .error(&Copy, json!({ "content": "x", "dest": env.path("etc") }))
            .await;
        assert!(err.contains("is a directory"), "{err}");
        let err = env
            .error(&Copy, json!({ "src": "nope", "dest": env.path("x") }))
            .await;
        assert!(err.contains("cannot read src"), "{err}");
    }

    #[tokio::test]
    async fn force_false_and_validate() {
        let env = Env::new();
        let dest = env.path("keep");
        std::fs::write(&dest, "mine").unwrap();
        let out = env
            .apply(
                &Copy,
                json!({ "content": "theirs", "dest": dest, "force": false }),
            )
            .await;
        assert_eq!(out.status, Status::Ok);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "mine");
        let err = env
            .error(
                &Copy,
                json!({ "content": "bad", "dest": dest, "validate": "grep -q good %s" }),
            )
            .await;
        assert!(err.contains("validation failed"), "{err}");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "mine");
    }

    #[tokio::test]
    async fn large_and_binary_files_are_not_shown() {
        let env = Env::new();
        let dest = env.path("big");
        std::fs::write(&dest, vec![b'a'; 300 * 1024]).unwrap();
        let out = env
            .run(&Copy, json!({ "content": "small\n", "dest": dest }), true)
            .await
            .unwrap();
        let diff = out.diff.unwrap();
        assert_eq!(
            diff.before.as_deref(),
            Some("[content not shown: 307200 bytes]\n")
        );
        let bin = env.path("bin");
        std::fs::write(&bin, [0xff, 0xfe, 0]).unwrap();
        let out = env
            .run(&Copy, json!({ "content": "t", "dest": bin }), true)
            .await
            .unwrap();
        assert_eq!(
            out.diff.unwrap().before.as_deref(),
            Some("[binary content, 3 bytes]\n")
        );
    }

    #[tokio::test]
    async fn argument_errors() {
        let env = Env::new();
        let err = env
            .error(&Copy, json!({ "content": "x", "dst": "/x" }))
            .await;
        assert!(
            err.contains("unknown field `dst`") && err.contains("`dest`"),
            "{err}"
        );
        let err = env.error(&Copy, json!({ "dest": "/x" })).await;
        assert!(err.contains("content"), "{err}");
        let err = env
            .error(&Copy, json!({ "dest": "/x", "content": "a", "src": "b" }))
            .await;
        assert!(err.contains("not both"), "{err}");
        let err = env
            .error(
                &Copy,
                json!({ "dest": "/x", "content": "a", "validate": "check" }),
            )
            .await;
        assert!(err.contains("%s"), "{err}");
        let err = env
            .error(&Copy, json!({ "dest": "/x", "content": 5 }))
            .await;
        assert!(err.contains("content"), "{err}");
    }
}
