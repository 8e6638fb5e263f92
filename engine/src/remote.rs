//! File operations on a target that modules share: read state in one round trip, write atomically.
//! Only POSIX sh and coreutils are used on the target.

use std::sync::LazyLock;

use sha2::Digest;

use crate::error::ModuleError;
use crate::host::{Host, Script};
use crate::quote::quote;

/// What is at a path on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    Absent,
    File,
    Directory,
    Link,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    pub kind: FileKind,
    /// Octal permission bits as `stat %a` prints them, e.g. "644".
    pub mode: String,
    pub owner: String,
    pub group: String,
    /// sha256 of a regular file's content.
    pub sha256: Option<String>,
    /// Target of a symbolic link.
    pub link_target: Option<String>,
    /// Numeric owner and group, and the size in bytes.
    pub uid: String,
    pub gid: String,
    pub size: u64,
}

impl FileStat {
    pub fn absent() -> Self {
        FileStat {
            kind: FileKind::Absent,
            mode: String::new(),
            owner: String::new(),
            group: String::new(),
            sha256: None,
            link_target: None,
            uid: String::new(),
            gid: String::new(),
            size: 0,
        }
    }
    pub fn exists(&self) -> bool {
        self.kind != FileKind::Absent
    }
}

/// Shell that prints the state of the path in `$p` in the format `parse_stat` reads: its kind,
/// then (when it exists) one `stat` line and the link's target or the file's sha256 (when `hash`;
/// a caller that reads the content anyway hashes it itself). Modules embed it in their own probe
/// scripts to keep one round trip per task. It leaves `$k` (the kind), `$s` (the stat line,
/// whose last field is the size) and `$h` (sha256sum's output) for the shell that follows.
/// One `stat` and at most one other program: each is a process on the target.
pub fn stat_fragment(hash: bool) -> String {
    let file = if hash {
        r#"h=$(sha256sum < "$p"); echo "${h%% *}""#
    } else {
        "echo"
    };
    format!(
        r#"k=absent
if [ -L "$p" ]; then k=link; elif [ -d "$p" ]; then k=directory; elif [ -f "$p" ]; then k=file; elif [ -e "$p" ]; then k=other; fi
echo $k
if [ $k != absent ]; then
s=$(stat -c '%a %U %G %u %g %s' -- "$p"); echo "$s"
if [ $k = link ]; then readlink -- "$p"; elif [ $k = file ]; then {file}; else echo; fi
fi
"#
    )
}

/// Reads the lines written by `stat_fragment`.
pub fn parse_stat(text: &str) -> Result<FileStat, String> {
    let mut lines = text.lines();
    let kind = match lines.next() {
        Some("absent") => return Ok(FileStat::absent()),
        Some("file") => FileKind::File,
        Some("directory") => FileKind::Directory,
        Some("link") => FileKind::Link,
        Some("other") => FileKind::Other,
        other => return Err(format!("unexpected stat output: {other:?}")),
    };
    let attrs = lines.next().unwrap_or_default();
    let detail = lines.next().unwrap_or_default().to_string();
    let fields: Vec<&str> = attrs.split_whitespace().collect();
    let [mode, owner, group, uid, gid, size] = fields[..] else {
        return Err(format!("unexpected stat output: {attrs:?}"));
    };
    Ok(FileStat {
        sha256: (kind == FileKind::File && !detail.is_empty()).then(|| detail.clone()),
        link_target: (kind == FileKind::Link).then_some(detail),
        kind,
        mode: mode.to_string(),
        owner: owner.to_string(),
        group: group.to_string(),
        uid: uid.to_string(),
        gid: gid.to_string(),
        size: size.parse().unwrap_or(0),
    })
}

pub async fn stat(host: &Host, path: &str) -> Result<FileStat, ModuleError> {
    let script = format!("p={}\n{}", quote(path)?, stat_fragment(true));
    let out = host.run(&script).await?;
    if !out.success() {
        return Err(ModuleError::Failed(format!(
            "cannot inspect {path}: {}",
            out.stderr_text().trim()
        )));
    }
    parse_stat(&out.stdout_text()).map_err(ModuleError::Failed)
}

/// The content of a file, or None when it does not exist.
pub async fn read_file(host: &Host, path: &str) -> Result<Option<Vec<u8>>, ModuleError> {
    let script = format!(
        "p={}\nif [ -e \"$p\" ]; then cat -- \"$p\"; else exit 3; fi",
        quote(path)?
    );
    let out = host.run(&script).await?;
    match out.status {
        0 => Ok(Some(out.stdout)),
        3 => Ok(None),
        _ => Err(ModuleError::Failed(format!(
            "cannot read {path}: {}",
            out.stderr_text().trim()
        ))),
    }
}

/// Normalises a mode given as "0644", "644" or "u=rw,g=r,o=r" style. Octal modes are returned
/// without leading zeros as `stat %a` prints them; symbolic modes are passed to chmod as they are.
pub fn normalize_mode(mode: &str) -> Result<String, String> {
    let m = mode.trim();
    if !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()) {
        let value = u32::from_str_radix(m, 8)
            .map_err(|_| format!("mode {mode:?} is not an octal number"))?;
        if value > 0o7777 {
            return Err(format!("mode {mode:?} is larger than 07777"));
        }
        return Ok(format!("{value:o}"));
    }
    static SYMBOLIC: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r"^([ugoa]*[-+=][rwxXstugo]*)(,[ugoa]*[-+=][rwxXstugo]*)*$")
            .expect("valid regex")
    });
    if SYMBOLIC.is_match(m) {
        Ok(m.to_string())
    } else {
        Err(format!(
            "mode {mode:?} is neither octal (\"0644\") nor symbolic (\"u=rw,g=r\")"
        ))
    }
}

/// How to write a file.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions<'a> {
    pub mode: Option<&'a str>,
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
    /// A command run on the temporary file before it replaces the destination; `%s` stands for
    /// the temporary file's path.
    pub validate: Option<&'a str>,
    /// Keep a copy of the old file as `DEST.<timestamp>~` before replacing it.
    pub backup: bool,
    /// Create the destination's directory (with its parents) when it is missing.
    pub create_parent: bool,
}

/// Writes `content` to `path` atomically: a temporary file in the destination's directory gets the
/// content, mode and owner, is validated, and is then renamed over the destination. On any
/// failure the temporary file is removed and the destination is left as it was. Returns the
/// backup path when one was made.
pub async fn write_file(
    host: &Host,
    path: &str,
    content: &[u8],
    opts: &WriteOptions<'_>,
) -> Result<Option<String>, ModuleError> {
    let out = host.run_script(&write_script(path, content, opts)?).await?;
    written(path, &out)
}

/// The script of `write_file`, with the content on its stdin.
pub fn write_script(
    path: &str,
    content: &[u8],
    opts: &WriteOptions<'_>,
) -> Result<Script, ModuleError> {
    let mut s = temp_file_beside(path, opts.create_parent)?;
    s += &format!(
        "cat > \"$t\"\n\
         h=$(sha256sum < \"$t\")\nif [ \"${{h%% *}}\" != {sum} ]; then \
         echo 'the upload was cut short; nothing was replaced' >&2; exit 66; fi\n",
        // A connection that drops mid-upload ends stdin early, which `cat` takes for the end of
        // the content: only a complete upload may replace the destination.
        sum = hex::encode(sha2::Sha256::digest(content)),
    );
    s += &temp_file_attributes(opts.mode, opts.owner, opts.group)?;
    if let Some(v) = opts.validate {
        if !v.contains("%s") {
            return Err(ModuleError::Args(format!(
                "validate command {v:?} must contain %s (the file to check)"
            )));
        }
        let cmd = v.replace("%s", "\"$t\"");
        s += &format!(
            "set +e\nvout=$({cmd} 2>&1)\nvrc=$?\nset -e\nif [ $vrc -ne 0 ]; then \
             printf 'validation failed (%s): %s\\n' \"$vrc\" \"$vout\" >&2; exit 65; fi\n"
        );
    }
    if opts.backup {
        s += "if [ -f \"$p\" ]; then b=\"$p.$(date +%Y%m%d%H%M%S)~\"; cp -p -- \"$p\" \"$b\"; \
              echo \"$b\"; fi\n";
    }
    s += "mv -f -- \"$t\" \"$p\"\ntrap - EXIT\n";
    Ok(Script {
        text: s,
        stdin: content.to_vec(),
        ..Default::default()
    })
}

/// The start of a script that replaces `path` (in `$p`) atomically: `set -e`, a temporary file
/// `$t` in the same directory (`$d`, made first when `create_parent`), removed on exit and on
/// signals unless the script renames it over `$p` and clears the EXIT trap.
pub fn temp_file_beside(path: &str, create_parent: bool) -> Result<String, ModuleError> {
    let mkdir = match create_parent {
        true => "[ -d \"$d\" ] || mkdir -p -- \"$d\"\n",
        false => "",
    };
    Ok(format!(
        "set -e\np={}\ncase $p in */*) d=${{p%/*}};; *) d=.;; esac\n{mkdir}t=$(mktemp \"$d/.playbook.XXXXXX\")\n\
         trap 'rm -f -- \"$t\"' EXIT\ntrap 'rm -f -- \"$t\"; exit 129' HUP INT TERM PIPE\n",
        quote(path)?
    ))
}

/// Shell giving the temporary file `$t`, which is to replace `$p`, its mode, owner and group:
/// those asked for, else those of the file it replaces (a new file: the umask's mode, and the
/// owner of whoever writes it).
pub fn temp_file_attributes(
    mode: Option<&str>,
    owner: Option<&str>,
    group: Option<&str>,
) -> Result<String, ModuleError> {
    let mut s = match mode {
        Some(m) => format!(
            "chmod {} \"$t\"\n",
            quote(&normalize_mode(m).map_err(ModuleError::Args)?)?
        ),
        None => "if [ -e \"$p\" ]; then chmod --reference=\"$p\" \"$t\"; \
                 else chmod \"$(printf '%o' $((0666 & ~$(umask))))\" \"$t\"; fi\n"
            .to_string(),
    };
    if owner.is_none() && group.is_none() {
        s += "if [ -e \"$p\" ]; then chown --reference=\"$p\" \"$t\" 2>/dev/null || true; fi\n";
    }
    if let Some(o) = owner {
        s += &format!("chown {} \"$t\"\n", quote(o)?);
    }
    if let Some(g) = group {
        s += &format!("chgrp {} \"$t\"\n", quote(g)?);
    }
    Ok(s)
}

/// What the output of `write_script` says: an error, or the backup's path when one was made.
pub fn written(
    path: &str,
    out: &crate::transport::ExecOutput,
) -> Result<Option<String>, ModuleError> {
    if !out.success() {
        let why = out.stderr_text().trim().to_string();
        return Err(ModuleError::Failed(if out.status == 65 {
            format!("{path} not written: {why}")
        } else {
            format!("cannot write {path}: {why}")
        }));
    }
    let backup = out.stdout_text().trim().to_string();
    Ok((!backup.is_empty()).then_some(backup))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::LocalTransport;
    use std::sync::Arc;

    fn local() -> Host {
        Host::new("local", Arc::new(LocalTransport))
    }

    #[test]
    fn modes_normalise() {
        assert_eq!(normalize_mode("0644").unwrap(), "644");
        assert_eq!(normalize_mode("0755").unwrap(), "755");
        assert_eq!(normalize_mode("u=rw,g=r").unwrap(), "u=rw,g=r");
        assert!(normalize_mode("0999").is_err());
        assert!(normalize_mode("rw").is_err());
    }

    #[tokio::test]
    async fn write_then_stat_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a b'c.txt");
        let path = path.to_str().unwrap();
        let host = local();
        assert_eq!(stat(&host, path).await.unwrap().kind, FileKind::Absent);
        let opts = WriteOptions {
            mode: Some("0600"),
            ..Default::default()
        };
        write_file(&host, path, b"hello\n", &opts).await.unwrap();
        let st = stat(&host, path).await.unwrap();
        assert_eq!(st.kind, FileKind::File);
        assert_eq!(st.mode, "600");
        assert_eq!(
            st.sha256.as_deref(),
            Some("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
        );
        assert_eq!(read_file(&host, path).await.unwrap().unwrap(), b"hello\n");
        let only = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(only, 1, "no temporary file is left behind");
    }

    #[tokio::test]
    async fn failed_validation_leaves_destination_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conf");
        std::fs::write(&path, "old").unwrap();
        let opts = WriteOptions {
            validate: Some("grep -q good %s"),
            ..Default::default()
        };
        let err = write_file(&local(), path.to_str().unwrap(), b"bad", &opts)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("validation failed"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
