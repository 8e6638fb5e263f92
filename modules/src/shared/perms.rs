//! Modes, owners and groups: what the desired attributes mean for a path's current ones, and the
//! commands that fix them. Symbolic modes are resolved here exactly as GNU chmod resolves them, so
//! a probe can tell whether `chmod u+rwX,g-w` would change anything without running it.

use engine::host::{quote, Script};
use engine::remote::normalize_mode;
use engine::transport::ExecOutput;
use engine::ModuleError;

const ISUID: u32 = 0o4000;
const ISGID: u32 = 0o2000;
const ISVTX: u32 = 0o1000;
const ALL: u32 = 0o7777;
const READ: u32 = 0o444;
const WRITE: u32 = 0o222;
const EXEC: u32 = 0o111;

/// A `mode` argument: a string ("0644", "u=rw,g=r"), or a number, taken as Ansible takes it: its
/// value is the mode (YAML's `mode: 0644` and Rhai's `0o644` arrive as 420, which is 0644). A
/// number written without the leading 0 (`mode: 644`) is 644 = 0o1204, as in Ansible; write modes
/// as strings.
pub fn mode_arg<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::Deserialize;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => match n.as_u64().filter(|v| *v <= ALL as u64) {
            Some(v) => Ok(Some(format!("{v:04o}"))),
            None => Err(serde::de::Error::custom(format!(
                "mode {n} is no file mode (a number up to 0o7777 = 4095, or a string like \"0644\")"
            ))),
        },
        Some(other) => Err(serde::de::Error::custom(format!(
            "mode must be a string like \"0644\" or a number, not {other}"
        ))),
    }
}

/// Parses an all-digit mode ("0644", "755") as octal.
pub fn octal(spec: &str) -> Option<u32> {
    let s = spec.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|v| *v <= ALL)
}

/// The mode a path ends up with when `spec` is applied to its `current` mode. `umask` applies to
/// symbolic clauses without a "who" (`+x`), as in chmod.
pub fn resolve_mode(spec: &str, current: u32, is_dir: bool, umask: u32) -> Result<u32, String> {
    let spec = normalize_mode(spec)?;
    if let Some(v) = octal(&spec) {
        return Ok(v);
    }
    let mut mode = current & ALL;
    for clause in spec.split(',') {
        let mut chars = clause.chars().peekable();
        let mut who = 0;
        while let Some(&c) = chars.peek() {
            who |= match c {
                'u' => ISUID | 0o700,
                'g' => ISGID | 0o070,
                'o' => ISVTX | 0o007,
                'a' => ALL,
                _ => break,
            };
            chars.next();
        }
        let mut rest: Vec<char> = chars.collect();
        if rest.is_empty() {
            return Err(format!("mode clause {clause:?} has no operator"));
        }
        while !rest.is_empty() {
            let op = rest.remove(0);
            let end = rest
                .iter()
                .position(|c| matches!(c, '+' | '-' | '='))
                .unwrap_or(rest.len());
            let perms: Vec<char> = rest.drain(..end).collect();
            let mut value = 0;
            let mut copy = false;
            let mut x_if_any = false;
            for p in &perms {
                match p {
                    'r' => value |= READ,
                    'w' => value |= WRITE,
                    'x' => value |= EXEC,
                    'X' => x_if_any = true,
                    's' => value |= ISUID | ISGID,
                    't' => value |= ISVTX,
                    'u' => (value, copy) = (0o700, true),
                    'g' => (value, copy) = (0o070, true),
                    'o' => (value, copy) = (0o007, true),
                    other => return Err(format!("mode clause {clause:?}: unknown {other:?}")),
                }
            }
            let mentioned = (if who == 0 { ALL } else { who }) & value;
            if copy {
                value &= mode;
                let mut spread = 0;
                for (bits, all) in [(0o444, READ), (0o222, WRITE), (0o111, EXEC)] {
                    if value & bits != 0 {
                        spread |= all;
                    }
                }
                value = spread;
            }
            if x_if_any && (is_dir || mode & EXEC != 0) {
                value |= EXEC;
            }
            let omit = if is_dir {
                (ISUID | ISGID) & !mentioned
            } else {
                0
            };
            value &= (if who != 0 { who } else { !umask }) & !omit;
            match op {
                '=' => {
                    let preserved = (if who != 0 { !who } else { 0 }) | omit;
                    mode = (mode & preserved) | value;
                }
                '+' => mode |= value,
                '-' => mode &= !value,
                _ => unreachable!("split on operators"),
            }
            mode &= ALL;
        }
    }
    Ok(mode)
}

/// Attributes a task asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanted<'a> {
    pub mode: Option<&'a str>,
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
}

impl<'a> Wanted<'a> {
    /// The `mode`, `owner` and `group` arguments of a module.
    pub fn new(
        mode: &'a Option<String>,
        owner: &'a Option<String>,
        group: &'a Option<String>,
    ) -> Self {
        Wanted {
            mode: mode.as_deref(),
            owner: owner.as_deref(),
            group: group.as_deref(),
        }
    }

    /// Checks the mode's syntax without a host.
    pub fn check(&self) -> Result<(), String> {
        if let Some(m) = self.mode {
            resolve_mode(m, 0o644, false, 0o022)?;
        }
        Ok(())
    }
}

/// The attributes one path has.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub mode: u32,
    pub is_dir: bool,
    pub is_link: bool,
    pub owner: String,
    pub group: String,
    pub uid: String,
    pub gid: String,
}

/// What has to change on a path: one summary part and one command per attribute. Commands act on
/// the path in `$p`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fix {
    pub summary: Vec<String>,
    pub script: String,
}

impl Fix {
    pub fn is_empty(&self) -> bool {
        self.summary.is_empty()
    }
}

fn same_user(wanted: &str, name: &str, id: &str) -> bool {
    wanted == name || wanted == id
}

/// What differs between `w` and one path's attributes. Modes of symbolic links are left alone
/// (Linux has none); their owner is changed with `chown -h`.
pub fn fix(w: &Wanted, e: &Entry, umask: u32) -> Result<Fix, String> {
    let mut f = Fix::default();
    if let (Some(spec), false) = (w.mode, e.is_link) {
        let want = resolve_mode(spec, e.mode, e.is_dir, umask)?;
        if want != e.mode {
            f.summary.push(format!("mode {:o} -> {:o}", e.mode, want));
            f.script += &format!("chmod {want:05o} -- \"$p\"\n");
        }
    }
    let h = if e.is_link { "-h " } else { "" };
    if let Some(o) = w.owner.filter(|o| !same_user(o, &e.owner, &e.uid)) {
        f.summary.push(format!("owner {} -> {o}", e.owner));
        f.script += &format!("chown {h}{} -- \"$p\"\n", quote(o)?);
    }
    if let Some(g) = w.group.filter(|g| !same_user(g, &e.group, &e.gid)) {
        f.summary.push(format!("group {} -> {g}", e.group));
        f.script += &format!("chgrp {h}{} -- \"$p\"\n", quote(g)?);
    }
    Ok(f)
}

/// A script acting on the path in `$p` (a fix, a link, a removal), stopping at its first failure.
pub fn on_path(path: &str, script: &str) -> Result<Script, ModuleError> {
    Ok(Script {
        text: format!("set -e\np={}\n{script}", quote(path)?),
        ..Default::default()
    })
}

/// What the output of an `on_path` script says: nothing, or an error naming `path`.
pub fn ran(path: &str, out: &ExecOutput) -> Result<(), ModuleError> {
    match out.success() {
        true => Ok(()),
        false => Err(ModuleError::Failed(format!(
            "{path}: {}",
            out.stderr_text().trim()
        ))),
    }
}

/// The commands that set attributes on a path just created, where nothing needs comparing.
pub fn set_script(w: &Wanted) -> Result<String, String> {
    let mut s = String::new();
    if let Some(m) = w.mode {
        s += &format!("chmod {} -- \"$p\"\n", quote(&normalize_mode(m)?)?);
    }
    if let Some(o) = w.owner {
        s += &format!("chown {} -- \"$p\"\n", quote(o)?);
    }
    if let Some(g) = w.group {
        s += &format!("chgrp {} -- \"$p\"\n", quote(g)?);
    }
    Ok(s)
}

/// A shell fragment listing the distinct attribute sets found under `$p` (links excluded), one
/// `Entry` per line as `parse_tree` reads them. Distinct sets only, so a large tree with uniform
/// attributes prints a line or two.
pub const TREE_FRAGMENT: &str = r#"{ find "$p" -type d -exec stat -c 'd %a|%U|%G|%u|%g' -- {} +
find "$p" ! -type d ! -type l -exec stat -c 'f %a|%U|%G|%u|%g' -- {} +; } | sort -u"#;

pub fn parse_tree(text: &str) -> Result<Vec<Entry>, String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let bad = || format!("unexpected listing line {line:?}");
            let (head, rest) = line.split_once('|').ok_or_else(bad)?;
            let (kind, mode) = head.split_once(' ').ok_or_else(bad)?;
            let parts: Vec<&str> = rest.split('|').collect();
            let [owner, group, uid, gid] = parts[..] else {
                return Err(bad());
            };
            Ok(Entry {
                mode: u32::from_str_radix(mode, 8).map_err(|_| bad())?,
                is_dir: kind == "d",
                is_link: false,
                owner: owner.into(),
                group: group.into(),
                uid: uid.into(),
                gid: gid.into(),
            })
        })
        .collect()
}

/// What differs anywhere under a tree, and the recursive commands that fix it.
pub fn fix_tree(w: &Wanted, entries: &[Entry], umask: u32) -> Result<Fix, String> {
    let mut mode_differs = false;
    let mut owners = std::collections::BTreeSet::new();
    let mut groups = std::collections::BTreeSet::new();
    for e in entries {
        let f = fix(w, e, umask)?;
        mode_differs |= f.summary.iter().any(|s| s.starts_with("mode "));
        if f.summary.iter().any(|s| s.starts_with("owner ")) {
            owners.insert(e.owner.clone());
        }
        if f.summary.iter().any(|s| s.starts_with("group ")) {
            groups.insert(e.group.clone());
        }
    }
    let mut f = Fix::default();
    if let (Some(spec), true) = (w.mode, mode_differs) {
        let arg = match octal(spec) {
            Some(v) => format!("{v:05o}"),
            None => quote(&normalize_mode(spec)?)?,
        };
        f.summary.push(format!("mode -> {spec} (recursively)"));
        f.script += &format!("chmod -R {arg} -- \"$p\"\n");
    }
    let join = |s: std::collections::BTreeSet<String>| s.into_iter().collect::<Vec<_>>().join(",");
    if let (Some(o), false) = (w.owner, owners.is_empty()) {
        f.summary
            .push(format!("owner {} -> {o} (recursively)", join(owners)));
        f.script += &format!("chown -R {} -- \"$p\"\n", quote(o)?);
    }
    if let (Some(g), false) = (w.group, groups.is_empty()) {
        f.summary
            .push(format!("group {} -> {g} (recursively)", join(groups)));
        f.script += &format!("chgrp -R {} -- \"$p\"\n", quote(g)?);
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `spec` with the real chmod and compares with `resolve_mode`.
    fn chmod_agrees(spec: &str, start: u32, dir: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x");
        if dir {
            std::fs::create_dir(&p).unwrap();
        } else {
            std::fs::write(&p, "").unwrap();
        }
        let sh = |s: &str| {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(s)
                .arg("sh")
                .arg(&p)
                .output()
                .unwrap();
            assert!(out.status.success(), "{s}: {:?}", out);
            String::from_utf8(out.stdout).unwrap()
        };
        sh(&format!("chmod {start:05o} \"$1\""));
        let umask = u32::from_str_radix(sh("umask").trim(), 8).unwrap();
        sh(&format!("chmod {spec} \"$1\""));
        let real = u32::from_str_radix(sh("stat -c %a \"$1\"").trim(), 8).unwrap();
        let ours = resolve_mode(spec, start, dir, umask).unwrap();
        assert_eq!(
            ours, real,
            "{spec} on {start:o} (dir {dir}): {ours:o} vs {real:o}"
        );
    }

    #[test]
    fn symbolic_modes_match_chmod() {
        for spec in [
            "u+x",
            "g-w",
            "o=",
            "a=r",
            "u=rw,g=r,o=r",
            "u+rwX,g+rX,o-rwx",
            "+x",
            "+w",
            "=r",
            "go=u",
            "g=u",
            "u+s",
            "g+s",
            "+t",
            "a-x",
            "o+X",
            "ug=rwx,o=rx",
            "u-s",
        ] {
            for start in [0o644, 0o755, 0o600, 0o2755, 0o4711, 0o1777, 0o000] {
                chmod_agrees(spec, start, false);
                chmod_agrees(spec, start, true);
            }
        }
    }

    #[test]
    fn octal_modes_and_errors() {
        assert_eq!(resolve_mode("0640", 0o777, false, 0o022).unwrap(), 0o640);
        assert_eq!(resolve_mode("2755", 0, true, 0o022).unwrap(), 0o2755);
        assert!(resolve_mode("0999", 0, false, 0).is_err());
        assert!(resolve_mode("rwx", 0, false, 0).is_err());
    }

    #[test]
    fn fixes_name_each_attribute() {
        let e = Entry {
            mode: 0o755,
            is_dir: true,
            is_link: false,
            owner: "bob".into(),
            group: "staff".into(),
            uid: "1000".into(),
            gid: "50".into(),
        };
        let w = Wanted {
            mode: Some("0700"),
            owner: Some("root"),
            group: Some("50"),
        };
        let f = fix(&w, &e, 0o022).unwrap();
        assert_eq!(f.summary, ["mode 755 -> 700", "owner bob -> root"]);
        assert!(f.script.contains("chmod 00700 -- \"$p\""), "{}", f.script);
        let same = Wanted {
            mode: Some("u=rwx,go=rx"),
            owner: Some("1000"),
            group: Some("staff"),
        };
        assert!(fix(&same, &e, 0o022).unwrap().is_empty());
    }
}
