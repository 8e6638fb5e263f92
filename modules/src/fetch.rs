//! `fetch`: reads a file from the target so later tasks (on any host) can use its content, and
//! optionally keeps a copy on the controller.

use std::path::Path;

use async_trait::async_trait;
use base64::Engine as _;
use engine::secret::Redactor;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::shared::inspect::{file_diff, sha256, Before};

pub struct Fetch;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The file to read on the target.
    pub src: String,
    /// Where to keep a copy on the controller, relative to the playbook's directory (an absolute
    /// path is used as it is). Parent directories are created; the file is written atomically.
    /// Several hosts fetching to one `dest` overwrite each other: put `{{ inventory_hostname }}`
    /// in it.
    pub dest: Option<String>,
    /// The content is a secret (a key, a token): it is registered with the run's secrets so it
    /// never reaches output, and `dest` is written with mode 0600 (else 0644).
    #[serde(default)]
    pub secret: bool,
    /// The controller copy's mode (octal): a snapshot of a database holding secrets wants 0600
    /// without registering its bytes as secret text.
    #[serde(default, deserialize_with = "crate::shared::perms::mode_arg")]
    pub mode: Option<String>,
}

impl Args {
    fn dest_mode(&self) -> u32 {
        match self.mode.as_deref().and_then(crate::shared::perms::octal) {
            Some(m) => m,
            None if self.secret => 0o600,
            None => 0o644,
        }
    }
}

pub const DOC: &str = r#"# fetch

Reads a file on the target and returns its content, so later tasks — on other hosts too — can
use it; optionally keeps a copy on the controller.

- Nothing changes on the target, ever. The task is `changed` only when `dest` on the controller
  was written (it did not exist or its content differed); otherwise `ok`.
- The result is `content` (the text, when it is UTF-8; null otherwise), `content_b64` (always,
  base64), `sha256`, `size`, `src`, and `dest` (the controller path, when given).
- `secret: true` registers the content with the run's secrets: it is shown as `[secret]`
  wherever it would appear in output, and `dest` gets mode 0600. No diff is shown for it.
- The file is read whole into memory on the controller: meant for certificates, tokens and
  config files, not for large data.
- In check mode the file is still read (that only reads); `dest` is not written.
- With `mode` or `secret`, `dest` is `changed` too when its mode differs (it is written again).

## Arguments

| name | type | |
|---|---|---|
| `src` | string | the file on the target (required) |
| `dest` | string | a copy on the controller, relative to the playbook directory |
| `secret` | bool | register the content as a secret; `dest` mode 0600 |
| `mode` | string | `dest`'s mode (octal, e.g. "0600"); default 0644, 0600 with `secret` |

## Example

```rhai
phase("share the CA", || {
    let ca = on(first("masters"), fetch(#{ src: "/etc/kubernetes/pki/ca.crt", dest: "pki/ca.crt" }));
    on(rest("masters"), copy(#{ content: ca.content, dest: "/etc/kubernetes/pki/ca.crt" }));
});
```
"#;

/// Writes a controller file atomically: a temporary file next to it (created with `mode`), then
/// a rename. Parent directories are created.
pub(crate) fn write_local(path: &Path, content: &[u8], mode: u32) -> Result<(), ModuleError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let fail =
        |e: std::io::Error| ModuleError::Failed(format!("cannot write {}: {e}", path.display()));
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.playbook-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(fail)
}

/// Registers a secret file's text, whole and line by line (long lines only), with the run.
fn register(secrets: &Redactor, text: &str) {
    secrets.add(text);
    secrets.add(text.trim());
    for line in text.lines().map(str::trim).filter(|l| l.len() >= 16) {
        secrets.add(line);
    }
}

fn result(args: &Args, bytes: &[u8], dest: Option<&Path>) -> Value {
    json!({
        "src": args.src,
        "content": std::str::from_utf8(bytes).ok(),
        "content_b64": base64::engine::general_purpose::STANDARD.encode(bytes),
        "sha256": sha256(bytes),
        "size": bytes.len(),
        "dest": dest.map(|d| d.display().to_string()),
    })
}

pub struct Plan {
    dest: std::path::PathBuf,
    content: Vec<u8>,
}

#[async_trait]
impl Module for Fetch {
    const NAME: &'static str = "fetch";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = Plan;

    fn check_args(args: &Args) -> Result<(), String> {
        if args.src.is_empty() || args.src.ends_with('/') {
            return Err(format!("src: {:?} must name a file", args.src));
        }
        if let Some(d) = &args.dest {
            if d.is_empty() || d.ends_with('/') {
                return Err(format!("dest: {d:?} must name a file"));
            }
        }
        if let Some(m) = &args.mode {
            if crate::shared::perms::octal(m).is_none() {
                return Err(format!(
                    "mode: {m:?} must be an octal mode like \"0600\" (the controller copy's)"
                ));
            }
            if args.dest.is_none() {
                return Err("mode is the controller copy's: it needs dest".into());
            }
        }
        Ok(())
    }

    async fn probe(&self, args: &Args, cx: &ModuleContext<'_>) -> Result<Probe<Plan>, ModuleError> {
        let bytes = engine::remote::read_file(cx.host, &args.src)
            .await?
            .ok_or_else(|| ModuleError::Failed(format!("src {} does not exist", args.src)))?;
        if args.secret {
            register(cx.secrets, &String::from_utf8_lossy(&bytes));
        }
        let Some(dest) = &args.dest else {
            return Ok(Probe::Unchanged(result(args, &bytes, None)));
        };
        let dest = cx.base_dir.join(dest);
        let old = match std::fs::read(&dest) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ModuleError::Failed(format!(
                    "cannot read {}: {e}",
                    dest.display()
                )))
            }
        };
        let mode_now = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&dest).map(|m| m.permissions().mode() & 0o7777)
        };
        let same_content = old.as_deref() == Some(bytes.as_slice());
        // A default copy's mode is the user's business; a chosen or private one is kept.
        let same_mode = (args.mode.is_none() && !args.secret)
            || mode_now.as_ref().ok() == Some(&args.dest_mode());
        if same_content && same_mode {
            return Ok(Probe::Unchanged(result(args, &bytes, Some(&dest))));
        }
        let shown = dest.display().to_string();
        let summary = match (old.is_some(), same_content) {
            (false, _) => format!("write {shown} on the controller"),
            (true, true) => format!("set the mode of {shown} to {:04o}", args.dest_mode()),
            (true, false) => format!("update {shown} on the controller"),
        };
        let diff = (cx.want_diff && !args.secret).then(|| {
            let before = old.as_deref().map_or(Before::Absent, Before::Content);
            file_diff(&shown, before, Some(&bytes))
        });
        let plan = Plan {
            dest,
            content: bytes,
        };
        Ok(Probe::change(plan, summary, diff))
    }

    async fn apply(
        &self,
        args: &Args,
        plan: Plan,
        _cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        let mode = args.dest_mode();
        write_local(&plan.dest, &plan.content, mode)?;
        // The temporary file's mode went through the umask.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&plan.dest, std::fs::Permissions::from_mode(mode)).map_err(
            |e| ModuleError::Failed(format!("cannot set the mode of {}: {e}", plan.dest.display())),
        )?;
        Ok(Applied::changed(result(
            args,
            &plan.content,
            Some(&plan.dest),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{mode_of, Env};
    use engine::module::Status;
    use serde_json::json;

    #[tokio::test]
    async fn reads_without_changing_and_copies_to_the_controller_once() {
        let env = Env::new();
        let src = env.path("remote.txt");
        std::fs::write(&src, "hello\n").unwrap();
        let out = env.apply(&Fetch, json!({ "src": src })).await;
        assert_eq!(out.status, Status::Ok);
        assert_eq!(out.result["content"], "hello\n");
        assert_eq!(out.result["content_b64"], "aGVsbG8K");
        assert_eq!(out.result["sha256"], sha256(b"hello\n"));

        let args = json!({ "src": src, "dest": "copies/remote.txt" });
        assert_eq!(env.check(&Fetch, args.clone()).await, Status::Changed);
        assert!(
            !Path::new(&env.path("copies")).exists(),
            "check mode wrote nothing"
        );
        let out = env.apply(&Fetch, args.clone()).await;
        assert_eq!(out.status, Status::Changed);
        assert_eq!(
            std::fs::read_to_string(env.path("copies/remote.txt")).unwrap(),
            "hello\n"
        );
        assert_eq!(mode_of(&env.path("copies/remote.txt")), 0o644);
        assert_eq!(env.apply(&Fetch, args.clone()).await.status, Status::Ok);
        std::fs::write(&src, "bye\n").unwrap();
        let out = env.apply(&Fetch, args).await;
        assert!(out.diff.unwrap().unified().contains("-hello\n+bye\n"));
        let only: Vec<_> = std::fs::read_dir(env.path("copies")).unwrap().collect();
        assert_eq!(only.len(), 1, "no temporary file left");
    }

    #[tokio::test]
    async fn binary_secret_and_missing_files() {
        let env = Env::new();
        let bin = env.path("bin");
        std::fs::write(&bin, [0xff, 0, 1]).unwrap();
        let out = env.apply(&Fetch, json!({ "src": bin })).await;
        assert!(out.result["content"].is_null());
        assert_eq!(out.result["content_b64"], "/wAB");

        let key = env.path("token");
        std::fs::write(&key, "s3cr3t-token-value-0123456789\n").unwrap();
        let out = env
            .apply(&Fetch, json!({ "src": key, "dest": "t", "secret": true }))
            .await;
        assert!(out.diff.is_none());
        assert_eq!(mode_of(&env.path("t")), 0o600);

        // A private copy of a non-secret file; a mode that drifted is put back.
        let args = json!({ "src": bin, "dest": "snap.db", "mode": "0600" });
        assert_eq!(env.apply(&Fetch, args.clone()).await.status, Status::Changed);
        assert_eq!(mode_of(&env.path("snap.db")), 0o600);
        assert_eq!(env.apply(&Fetch, args.clone()).await.status, Status::Ok);
        std::fs::set_permissions(
            env.path("snap.db"),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        assert_eq!(env.check(&Fetch, args.clone()).await, Status::Changed);
        assert_eq!(mode_of(&env.path("snap.db")), 0o644, "check mode wrote nothing");
        assert_eq!(env.apply(&Fetch, args.clone()).await.status, Status::Changed);
        assert_eq!(mode_of(&env.path("snap.db")), 0o600);
        let err = env
            .error(&Fetch, json!({ "src": bin, "dest": "x", "mode": "u=rw" }))
            .await;
        assert!(err.contains("octal mode"), "{err}");

        let err = env.error(&Fetch, json!({ "src": env.path("nope") })).await;
        assert!(err.contains("does not exist"), "{err}");
        let err = env
            .error(&Fetch, json!({ "src": "/x", "flat": true }))
            .await;
        assert!(err.contains("unknown field `flat`"), "{err}");
    }

    #[test]
    fn secret_text_is_registered_line_by_line() {
        let r = Redactor::default();
        register(&r, "-----BEGIN X-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END X-----\n");
        assert_eq!(
            r.redact("leak: MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA"),
            "leak: [secret]"
        );
    }
}
