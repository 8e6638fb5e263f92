//! `get_url`: downloads a file on the target from a URL, checked against a checksum.

use async_trait::async_trait;
use engine::host::{quote, Script};
use engine::remote::{temp_file_attributes, temp_file_beside, FileKind};
use engine::transport::ExecOutput;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::shared::inspect::{Current, Inspect};
use crate::shared::perms::{self, Wanted};

pub struct GetUrl;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// What to download: an `http://`, `https://`, `ftp://` or `file://` URL, fetched by the
    /// target itself (with curl, or wget where curl is missing).
    pub url: String,
    /// Where the file goes on the target. When it is an existing directory, or ends with `/`, the
    /// file goes inside it under the last part of the URL's path.
    pub dest: String,
    /// `sha256:HEX`, the published checksum of the file. The download must match it or nothing
    /// is replaced, and an existing `dest` that matches is not downloaded again; an existing
    /// `dest` that does not match is downloaded again.
    pub checksum: Option<String>,
    /// Permissions: octal ("0755") or symbolic. Default: kept for a replaced file, from the umask
    /// for a new one.
    #[serde(default, deserialize_with = "crate::shared::perms::mode_arg")]
    pub mode: Option<String>,
    /// Owner, by name or uid.
    pub owner: Option<String>,
    /// Group, by name or gid.
    pub group: Option<String>,
    /// Seconds to wait for the server to accept the connection (default 10).
    pub timeout: Option<u64>,
}

pub const DOC: &str = r#"# get_url

Downloads a file on the target from a URL (the target fetches it, with curl or else wget), as
Ansible's `get_url` does. Give the release's published `checksum` (`sha256:…`): the download must
match it before it replaces anything, and an existing file that matches is left alone, so a
converged host downloads nothing. Without a checksum an existing `dest` is kept as it is (Ansible's
default `force: no`): to follow a new release, change the URL's file name or give a checksum.

The download goes to a temporary file in `dest`'s directory, gets its mode and owner, and is then
renamed over `dest`: a cut connection or a wrong checksum leaves `dest` as it was. If only the mode,
owner or group of a matching file differ, those are fixed without downloading.

Check mode downloads nothing; it says whether the file would be downloaded (absent, or its sha256
differs from `checksum`) and which attributes would change.

## Arguments

| name | type | |
|---|---|---|
| `url` | string | `http(s)://`, `ftp://` or `file://` URL (required) |
| `dest` | string | target path, or a directory (required) |
| `checksum` | string | `sha256:HEX` the file must have |
| `mode` | string | "0755" or "u=rwx,g=rx,o=rx" |
| `owner`, `group` | string | names or numeric ids |
| `timeout` | int | seconds to wait for a connection (default 10) |

## Result

`dest`, `url`, `checksum` (the file's sha256) and `size`.

## Example

```rhai
get_url(#{ url: "https://github.com/etcd-io/etcd/releases/download/v3.5.25/etcd-v3.5.25-linux-amd64.tar.gz",
           dest: "/var/cache/etcd-v3.5.25-linux-amd64.tar.gz",
           checksum: "sha256:168af82b59772e1811a9af7b358d42f5c6df44e0d9767afb006ecf12c4bbd607" })
```
"#;

/// What a change does.
pub enum Plan {
    /// Download into `path`.
    Download { path: String },
    /// The file is right: run this script on `$p` to fix attributes. `done` is the result.
    Attrs {
        path: String,
        script: String,
        done: Value,
    },
}

impl Args {
    fn wanted(&self) -> Wanted<'_> {
        Wanted::new(&self.mode, &self.owner, &self.group)
    }

    /// The sha256 `checksum` names, in lower case.
    fn sha256(&self) -> Result<Option<String>, String> {
        let Some(c) = &self.checksum else {
            return Ok(None);
        };
        let bad = || {
            format!(
                "checksum: {c:?} is not \"sha256:\" and 64 hex digits (the only algorithm \
                 get_url checks)"
            )
        };
        let (algo, hex) = c.split_once(':').ok_or_else(bad)?;
        let hex = hex.trim();
        if !algo.eq_ignore_ascii_case("sha256")
            || hex.len() != 64
            || !hex.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(bad());
        }
        Ok(Some(hex.to_ascii_lowercase()))
    }

    /// The last part of the URL's path: the file's name in a directory `dest`.
    fn url_name(&self) -> Option<&str> {
        let path = self.url.split(['?', '#']).next()?;
        let path = path.split_once("://")?.1;
        let name = path.rsplit('/').next()?;
        (!name.is_empty() && path.contains('/')).then_some(name)
    }

    /// The file to write: `dest`, or the URL's file name in the directory `dest`.
    fn dest(&self) -> String {
        match (self.dest.ends_with('/'), self.url_name()) {
            (true, Some(name)) => format!("{}{name}", self.dest),
            _ => self.dest.clone(),
        }
    }

    fn inspect<'a>(&'a self, dest: &'a str) -> Inspect<'a> {
        Inspect {
            path: dest,
            follow: true,
            into_dir: self.url_name(),
            read: None,
        }
    }
}

fn result(args: &Args, path: &str, sha256: Option<&str>, size: u64) -> Value {
    json!({ "dest": path, "url": args.url, "checksum": sha256, "size": size })
}

/// The download script: into a temporary file beside `path`, checked, then renamed over it.
fn download_script(args: &Args, path: &str, sha256: Option<&str>) -> Result<String, ModuleError> {
    let url = quote(&args.url)?;
    let timeout = args.timeout.unwrap_or(10);
    let mut s = temp_file_beside(path, false)?;
    s += &format!(
        "if command -v curl >/dev/null 2>&1; then\n\
         curl -fsSL --connect-timeout {timeout} --retry 3 -o \"$t\" -- {url} || exit 67\n\
         elif command -v wget >/dev/null 2>&1; then\n\
         wget -q -T {timeout} -t 3 -O \"$t\" -- {url} || exit 67\n\
         else echo 'neither curl nor wget is installed' >&2; exit 68; fi\n\
         h=$(sha256sum < \"$t\")\nh=${{h%% *}}\n"
    );
    if let Some(want) = sha256 {
        s += &format!(
            "if [ \"$h\" != {want} ]; then echo \"checksum mismatch: the download's sha256 is \
             $h, checksum says {want}; nothing was replaced\" >&2; exit 66; fi\n"
        );
    }
    let w = args.wanted();
    s += &temp_file_attributes(w.mode, w.owner, w.group)?;
    s += "mv -f -- \"$t\" \"$p\"\ntrap - EXIT\necho \"$h\"\nwc -c < \"$p\"\n";
    Ok(s)
}

fn decide_download(args: &Args, cur: &Current) -> Result<Probe<Plan>, ModuleError> {
    let path = cur.path.clone();
    let want = args.sha256().map_err(ModuleError::Args)?;
    let have = cur.stat.sha256.as_deref();
    let download = |why: String| {
        let summary = format!("download {} to {path}{why}", args.url);
        Ok(Probe::change(
            Plan::Download { path: path.clone() },
            summary,
            None,
        ))
    };
    match cur.kind() {
        FileKind::Directory => Err(ModuleError::Failed(format!(
            "dest {path} is a directory and the URL names no file to put in it"
        ))),
        FileKind::Absent => download(String::new()),
        FileKind::Link | FileKind::Other => download(" (replacing what is not a file)".into()),
        FileKind::File => match &want {
            Some(w) if have != Some(w.as_str()) => download(format!(
                " (its sha256 is {}, checksum says {w})",
                have.unwrap_or("unknown")
            )),
            _ => {
                let fix = perms::fix(&args.wanted(), &cur.entry(), cur.umask)
                    .map_err(ModuleError::Args)?;
                let done = result(args, &path, have, cur.size);
                if fix.is_empty() {
                    return Ok(Probe::Unchanged(done));
                }
                let summary = fix.summary.join(", ");
                let script = fix.script;
                Ok(Probe::change(
                    Plan::Attrs { path, script, done },
                    summary,
                    None,
                ))
            }
        },
    }
}

#[async_trait]
impl Module for GetUrl {
    const NAME: &'static str = "get_url";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = Plan;

    fn check_args(args: &Args) -> Result<(), String> {
        args.wanted().check()?;
        args.sha256()?;
        if !args.url.contains("://") {
            return Err(format!(
                "url: {:?} is not a URL (http://, https://, ftp:// or file://)",
                args.url
            ));
        }
        if args.dest.is_empty() {
            return Err("dest: is empty".into());
        }
        if args.dest.ends_with('/') && args.url_name().is_none() {
            return Err(format!(
                "dest: {} is a directory, and the URL {} names no file to put in it",
                args.dest, args.url
            ));
        }
        if args.timeout == Some(0) {
            return Err("timeout: must be at least 1 second".into());
        }
        Ok(())
    }

    const SCRIPT_PROBE: bool = true;

    fn probe_script(
        &self,
        args: &Args,
        _cx: &ModuleContext<'_>,
    ) -> Result<Option<String>, ModuleError> {
        let dest = args.dest();
        args.inspect(&dest).script_with("").map(Some)
    }

    async fn decide(
        &self,
        args: &Args,
        out: Option<ExecOutput>,
        _cx: &ModuleContext<'_>,
    ) -> Result<Probe<Plan>, ModuleError> {
        let dest = args.dest();
        let cur = args.inspect(&dest).read_probe(out)?;
        decide_download(args, &cur)
    }

    const SCRIPT_APPLY: bool = true;

    fn apply_script(
        &self,
        args: &Args,
        plan: &Plan,
        _cx: &ModuleContext<'_>,
    ) -> Result<Script, ModuleError> {
        match plan {
            Plan::Download { path } => Ok(Script {
                text: download_script(
                    args,
                    path,
                    args.sha256().map_err(ModuleError::Args)?.as_deref(),
                )?,
                ..Default::default()
            }),
            Plan::Attrs { path, script, .. } => perms::on_path(path, script),
        }
    }

    async fn applied(
        &self,
        args: &Args,
        plan: Plan,
        out: ExecOutput,
        _cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        match plan {
            Plan::Attrs { path, done, .. } => {
                perms::ran(&path, &out)?;
                Ok(Applied::changed(done))
            }
            Plan::Download { path } => {
                if !out.success() {
                    let why = out.stderr_text().trim().to_string();
                    return Err(ModuleError::Failed(match out.status {
                        66 | 68 => format!("{path} not downloaded: {why}"),
                        _ => format!("cannot download {} to {path}: {why}", args.url),
                    }));
                }
                let text = out.stdout_text();
                let mut lines = text.lines();
                let sha = lines.next().unwrap_or_default().to_string();
                let size = lines.next().and_then(|l| l.trim().parse::<u64>().ok());
                Ok(Applied::changed(result(
                    args,
                    &path,
                    Some(&sha),
                    size.unwrap_or(0),
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::inspect::sha256;
    use crate::testutil::{mode_of, snapshot, Env};
    use engine::module::Status;
    use serde_json::json;

    /// A "release" on the local file system, served by file:// URLs.
    fn release(env: &Env, name: &str, content: &[u8]) -> (String, String) {
        std::fs::create_dir_all(env.path("srv")).unwrap();
        let path = env.path(&format!("srv/{name}"));
        std::fs::write(&path, content).unwrap();
        (
            format!("file://{path}"),
            format!("sha256:{}", sha256(content)),
        )
    }

    #[tokio::test]
    async fn downloads_once_checked_and_check_mode_fetches_nothing() {
        let env = Env::new();
        let (url, checksum) = release(&env, "etcd.tar.gz", b"release bytes");
        std::fs::create_dir(env.path("cache")).unwrap();
        let dest = env.path("cache/etcd.tar.gz");
        let args = json!({ "url": url, "dest": dest, "checksum": checksum, "mode": "0640" });
        let before = snapshot(std::path::Path::new(&env.path("cache")));
        let out = env.run(&GetUrl, args.clone(), true).await.unwrap();
        assert_eq!(out.status, Status::Changed);
        assert_eq!(out.summary.unwrap(), format!("download {url} to {dest}"));
        assert_eq!(
            snapshot(std::path::Path::new(&env.path("cache"))),
            before,
            "check mode wrote nothing"
        );

        let out = env.apply(&GetUrl, args.clone()).await;
        assert_eq!(out.status, Status::Changed);
        assert_eq!(std::fs::read(&dest).unwrap(), b"release bytes");
        assert_eq!(mode_of(&dest), 0o640);
        assert_eq!(out.result["checksum"], sha256(b"release bytes"));
        assert_eq!(out.result["size"], 13);
        let again = env.apply(&GetUrl, args.clone()).await;
        assert_eq!(again.status, Status::Ok);
        assert_eq!(again.result["checksum"], sha256(b"release bytes"));
        assert_eq!(env.check(&GetUrl, args).await, Status::Ok);
    }

    #[tokio::test]
    async fn a_wrong_checksum_or_a_failed_download_replaces_nothing() {
        let env = Env::new();
        let (url, _) = release(&env, "tool", b"tampered");
        std::fs::create_dir(env.path("bin")).unwrap();
        let dest = env.path("bin/tool");
        std::fs::write(&dest, "old").unwrap();
        let good = format!("sha256:{}", sha256(b"genuine"));
        let err = env
            .error(
                &GetUrl,
                json!({ "url": url, "dest": dest, "checksum": good }),
            )
            .await;
        assert!(
            err.contains("checksum mismatch")
                && err.contains(&sha256(b"tampered"))
                && err.contains("nothing was replaced"),
            "{err}"
        );
        let missing = format!("file://{}", env.path("srv/none"));
        let err = env
            .error(
                &GetUrl,
                json!({ "url": missing, "dest": env.path("bin/new") }),
            )
            .await;
        assert!(
            err.contains("cannot download") && err.contains("curl"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old");
        let left: Vec<_> = std::fs::read_dir(env.path("bin"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["tool"], "no temporary file is left behind");
    }

    #[tokio::test]
    async fn an_existing_file_is_replaced_only_when_its_checksum_differs() {
        let env = Env::new();
        let (url, checksum) = release(&env, "v2", b"version 2");
        let dest = env.path("tool");
        std::fs::write(&dest, "version 1").unwrap();
        let out = env
            .apply(&GetUrl, json!({ "url": url, "dest": dest }))
            .await;
        assert_eq!(
            out.status,
            Status::Ok,
            "no checksum: an existing file is kept"
        );
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "version 1");
        let out = env
            .apply(
                &GetUrl,
                json!({ "url": url, "dest": dest, "checksum": checksum }),
            )
            .await;
        assert_eq!(out.status, Status::Changed);
        assert!(out.summary.unwrap().contains(&format!(
            "(its sha256 is {}, checksum says {})",
            sha256(b"version 1"),
            sha256(b"version 2")
        )),);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "version 2");
    }

    #[tokio::test]
    async fn attributes_are_fixed_without_downloading_and_directories_take_the_url_name() {
        let env = Env::new();
        let (url, checksum) = release(&env, "kit.tgz", b"kit");
        std::fs::create_dir(env.path("dl")).unwrap();
        let args = json!({ "url": url, "dest": env.path("dl"), "checksum": checksum });
        let out = env.apply(&GetUrl, args).await;
        assert_eq!(out.result["dest"], env.path("dl/kit.tgz"));
        assert_eq!(std::fs::read(env.path("dl/kit.tgz")).unwrap(), b"kit");
        // The source is gone: fixing the mode must not download.
        std::fs::remove_file(env.path("srv/kit.tgz")).unwrap();
        let args = json!({ "url": url, "dest": format!("{}/", env.path("dl")),
                           "checksum": checksum, "mode": "0600" });
        let out = env.apply(&GetUrl, args.clone()).await;
        assert_eq!(out.summary.as_deref(), Some("mode 644 -> 600"));
        assert_eq!(out.result["checksum"], sha256(b"kit"));
        assert_eq!(mode_of(&env.path("dl/kit.tgz")), 0o600);
        assert_eq!(env.apply(&GetUrl, args).await.status, Status::Ok);
    }

    #[tokio::test]
    async fn argument_errors() {
        let env = Env::new();
        let dest = env.path("x");
        for (args, want) in [
            (
                json!({ "url": "file:///a", "dest": dest, "checksum": "md5:abc" }),
                "sha256:",
            ),
            (
                json!({ "url": "file:///a", "dest": dest, "checksum": "sha256:12" }),
                "64 hex",
            ),
            (
                json!({ "url": "example.com/a", "dest": dest }),
                "is not a URL",
            ),
            (
                json!({ "url": "https://example.com/", "dest": "/tmp/" }),
                "names no file",
            ),
            (
                json!({ "url": "file:///a", "dest": dest, "timeout": 0 }),
                "timeout",
            ),
            (
                json!({ "url": "file:///a", "dst": dest }),
                "unknown field `dst`",
            ),
        ] {
            let err = env.error(&GetUrl, args).await;
            assert!(err.contains(want), "{want}: {err}");
        }
    }
}
