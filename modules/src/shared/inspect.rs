//! Everything a file-like module needs to know about one path on the target, in one round trip:
//! the engine's `stat_fragment` (kind, mode, owners, ids, size, hash), the umask, and optionally
//! the content.
//! Modules append their own shell after it (`Inspect::script`) and read what follows it from
//! `Current::rest`.

use engine::host::quote;
use engine::remote::{parse_stat, stat_fragment, FileKind, FileStat};
use engine::transport::ExecOutput;
use engine::ModuleError;

use crate::shared::perms::Entry;

/// Largest file whose old content is read to show a diff.
pub const DIFF_LIMIT: u64 = 256 * 1024;

/// When to send a regular file's content back.
#[derive(Debug, Clone, Default)]
pub struct Read {
    /// Only when it is at most this many bytes.
    pub limit: Option<u64>,
    /// Not when its sha256 is this one (the caller already has that content).
    pub unless_sha256: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Inspect<'a> {
    pub path: &'a str,
    /// Look at what a symbolic link points to, rather than at the link (when it resolves).
    pub follow: bool,
    /// When `path` is a directory, inspect this name inside it instead (copying into a directory).
    pub into_dir: Option<&'a str>,
    pub read: Option<Read>,
}

#[derive(Debug, Clone)]
pub struct Current {
    /// The path inspected: `path` itself, or where the link led when following.
    pub path: String,
    pub stat: FileStat,
    pub uid: String,
    pub gid: String,
    pub size: u64,
    pub umask: u32,
    /// The content, when it was asked for and the conditions held.
    pub content: Option<Vec<u8>>,
    /// Whatever the caller's own shell printed after the inspection.
    pub rest: Vec<u8>,
}

impl Current {
    pub fn kind(&self) -> &FileKind {
        &self.stat.kind
    }
    pub fn exists(&self) -> bool {
        self.stat.exists()
    }
    pub fn mode(&self) -> u32 {
        u32::from_str_radix(&self.stat.mode, 8).unwrap_or(0)
    }
    /// The attributes, for `perms::fix`.
    pub fn entry(&self) -> Entry {
        Entry {
            mode: self.mode(),
            is_dir: self.stat.kind == FileKind::Directory,
            is_link: self.stat.kind == FileKind::Link,
            owner: self.stat.owner.clone(),
            group: self.stat.group.clone(),
            uid: self.uid.clone(),
            gid: self.gid.clone(),
        }
    }
    pub fn rest_text(&self) -> String {
        String::from_utf8_lossy(&self.rest).into_owned()
    }
}

impl Inspect<'_> {
    /// The shell that prints the inspection. Leaves the inspected path in `$p`.
    pub fn script(&self) -> Result<String, String> {
        let mut s = format!("umask\np={}\n", quote(self.path)?);
        if self.follow {
            s += "if [ -L \"$p\" ] && [ -e \"$p\" ]; then p=$(readlink -f -- \"$p\"); fi\n";
        }
        if let Some(name) = self.into_dir {
            s += &format!(
                "if [ -d \"$p\" ]; then p=\"${{p%/}}\"/{}; fi\n",
                quote(name)?
            );
        }
        s += "printf '%s\\n' \"$p\"\n";
        // A file whose content is sent in any case is hashed here, not on the target.
        let always_read = matches!(
            &self.read,
            Some(Read {
                limit: None,
                unless_sha256: None
            })
        );
        s += &stat_fragment(!always_read);
        if let Some(r) = &self.read {
            let mut cond = String::from("[ $k = file ]");
            if let Some(limit) = r.limit {
                cond += &format!(" && [ \"${{s##* }}\" -le {limit} ]");
            }
            if let Some(sha) = &r.unless_sha256 {
                cond += &format!(" && [ \"${{h%% *}}\" != {} ]", quote(sha)?);
            }
            s += &format!("if {cond}; then echo content; cat -- \"$p\"; else echo none; fi\n");
        }
        Ok(s)
    }

    /// Reads what `script` printed (and what followed it).
    pub fn parse(&self, out: &[u8]) -> Result<Current, String> {
        let mut rest = out;
        let mut line = || -> Result<String, String> {
            let end = rest
                .iter()
                .position(|b| *b == b'\n')
                .ok_or_else(|| format!("inspecting {}: output ends early", self.path))?;
            let l = String::from_utf8_lossy(&rest[..end]).into_owned();
            rest = &rest[end + 1..];
            Ok(l)
        };
        let umask = u32::from_str_radix(line()?.trim(), 8).unwrap_or(0o022);
        let path = line()?;
        let kind = line()?;
        let mut stat_text = kind.clone() + "\n";
        if kind != "absent" {
            stat_text += &(line()? + "\n");
            stat_text += &(line()? + "\n");
        }
        let mut stat = parse_stat(&stat_text)?;
        let mut content = None;
        if self.read.is_some() && line()? == "content" {
            // The content runs to the end of the output: callers that read it add nothing after.
            content = Some(rest.to_vec());
            rest = &[];
        }
        if let (Some(c), None) = (&content, &stat.sha256) {
            stat.sha256 = Some(sha256(c));
        }
        Ok(Current {
            path,
            uid: stat.uid.clone(),
            gid: stat.gid.clone(),
            size: stat.size,
            stat,
            umask,
            content,
            rest: rest.to_vec(),
        })
    }

    /// `script` followed by `extra` (shell that may use `$p`): a module's whole probe script.
    /// The content, when read, runs to the end of the output: `extra` is then empty.
    pub fn script_with(&self, extra: &str) -> Result<String, ModuleError> {
        Ok(self.script().map_err(ModuleError::Args)? + extra)
    }

    /// Reads the output of `script_with`, however it was run.
    pub fn read(&self, out: &ExecOutput) -> Result<Current, ModuleError> {
        if !out.success() {
            return Err(ModuleError::Failed(format!(
                "cannot inspect {}: {}",
                self.path,
                out.stderr_text().trim()
            )));
        }
        self.parse(&out.stdout).map_err(ModuleError::Failed)
    }

    /// Runs `script_with(extra)` and reads its output (modules probe through `probe_script`).
    #[cfg(test)]
    pub async fn run(
        &self,
        host: &engine::host::Host,
        extra: &str,
    ) -> Result<Current, ModuleError> {
        let out = host.run(&self.script_with(extra)?).await?;
        self.read(&out)
    }

    /// Reads the output a module's `decide` was given (see `engine::Module::probe_script`).
    pub fn read_probe(&self, out: Option<ExecOutput>) -> Result<Current, ModuleError> {
        self.read(&probe_output(out, &format!("inspecting {}", self.path))?)
    }
}

/// The output a `SCRIPT_PROBE` module's `decide` was given: its probe script always has one, so
/// none is an error naming what was being read.
pub fn probe_output(out: Option<ExecOutput>, what: &str) -> Result<ExecOutput, ModuleError> {
    out.ok_or_else(|| ModuleError::Failed(format!("{what}: no output")))
}

/// Shows what changes in a file with --diff, without reading or showing large content.
pub fn file_diff(path: &str, before: Before, after: Option<&[u8]>) -> engine::diff::FileDiff {
    let shown = |b: &[u8]| -> Vec<u8> {
        if b.len() as u64 > DIFF_LIMIT {
            format!("[content not shown: {} bytes]\n", b.len()).into_bytes()
        } else {
            b.to_vec()
        }
    };
    let before = match before {
        Before::Absent => None,
        Before::Content(c) => Some(shown(c)),
        Before::Unread(size) => Some(format!("[content not shown: {size} bytes]\n").into_bytes()),
    };
    let after = after.map(shown);
    engine::diff::FileDiff::new(path, before.as_deref(), after.as_deref())
}

/// The old side of a diff.
pub enum Before<'a> {
    Absent,
    Content(&'a [u8]),
    /// Not read (too large, or not a regular file): only its size is known.
    Unread(u64),
}

/// The sha256 of some bytes, as `sha256sum` prints it.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::local;

    #[tokio::test]
    async fn inspects_file_dir_link_and_absent_in_one_call() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, "hello\n").unwrap();
        let l = tmp.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        let host = local();
        let read = Some(Read::default());
        let path = f.to_str().unwrap();
        let cur = Inspect {
            path,
            follow: false,
            into_dir: None,
            read: read.clone(),
        }
        .run(&host, "")
        .await
        .unwrap();
        assert_eq!(cur.stat.kind, FileKind::File);
        assert_eq!(cur.size, 6);
        // Hashed here, from the content read anyway.
        assert_eq!(
            cur.stat.sha256.as_deref(),
            Some(sha256(b"hello\n").as_str())
        );
        assert_eq!(cur.content.as_deref(), Some(&b"hello\n"[..]));

        let lp = l.to_str().unwrap();
        let link = Inspect {
            path: lp,
            follow: false,
            into_dir: None,
            read: None,
        }
        .run(&host, "")
        .await
        .unwrap();
        assert_eq!(link.stat.kind, FileKind::Link);
        let followed = Inspect {
            path: lp,
            follow: true,
            into_dir: None,
            read: None,
        }
        .run(&host, "echo tail\n")
        .await
        .unwrap();
        assert_eq!(followed.stat.kind, FileKind::File);
        assert_eq!(followed.path, path);
        assert_eq!(followed.rest, b"tail\n");

        let same = Read {
            limit: None,
            unless_sha256: Some(sha256(b"hello\n")),
        };
        let cur = Inspect {
            path,
            follow: false,
            into_dir: None,
            read: Some(same),
        }
        .run(&host, "")
        .await
        .unwrap();
        assert!(cur.content.is_none(), "content already known is not sent");
        assert_eq!(
            cur.stat.sha256.as_deref(),
            Some(sha256(b"hello\n").as_str()),
            "hashed on the target"
        );

        let gone = tmp.path().join("nope");
        let cur = Inspect {
            path: gone.to_str().unwrap(),
            follow: true,
            into_dir: None,
            read,
        }
        .run(&host, "")
        .await
        .unwrap();
        assert!(!cur.exists());
    }
}
