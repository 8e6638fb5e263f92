//! What the package modules (`yum`, `apt`, and `package` through them) share: name lists given
//! as a string or a list, the desired state, what would change (the summary check mode shows),
//! and the result a package task registers.

use serde::Deserialize;
use serde_json::{json, Value};

/// One name or a list of names (`name: "x"` or `name: ["x", "y"]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Names {
    One(String),
    Many(Vec<String>),
}

impl Names {
    pub fn list(&self) -> Vec<String> {
        match self {
            Names::One(s) => vec![s.clone()],
            Names::Many(v) => v.clone(),
        }
    }
}

impl Default for Names {
    fn default() -> Self {
        Names::Many(Vec::new())
    }
}

/// The names of `names` (none when absent).
pub fn list(names: &Option<Names>) -> Vec<String> {
    names.as_ref().map(Names::list).unwrap_or_default()
}

/// The state a package should be in.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Installed, whatever the version.
    #[default]
    Present,
    /// Not installed.
    Absent,
    /// Installed at the newest version the repositories offer.
    Latest,
}

/// Checks a list of package specs: not empty, no duplicates, each one accepted by `valid`
/// (which says what is wrong).
pub fn check_names(
    names: &[String],
    valid: impl Fn(&str) -> Result<(), String>,
) -> Result<(), String> {
    if names.is_empty() {
        return Err("name: give at least one package".into());
    }
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() {
            return Err("name: a package name is empty".into());
        }
        if n.starts_with('-') {
            return Err(format!("name: {n:?} looks like an option, not a package"));
        }
        if names[..i].contains(n) {
            return Err(format!("name: {n:?} is listed twice"));
        }
        valid(n).map_err(|e| format!("name: {e}"))?;
    }
    Ok(())
}

/// Checks that every value of a list field is one word of a yum/dnf option or repo file (a repo id,
/// a package name or glob): not empty, no spaces, no commas (which yum would split on).
pub fn check_words(field: &str, values: &[String], what: &str) -> Result<(), String> {
    for v in values {
        if v.is_empty() || v.contains(char::is_whitespace) || v.contains(',') {
            return Err(format!("{field}: {v:?} is not {what}"));
        }
    }
    Ok(())
}

/// One package to upgrade: its name and the versions before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    pub name: String,
    pub from: String,
    pub to: String,
}

/// What a package task changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Specs to install, as the user wrote them (`foo`, `foo-1.2`, `foo=1.2`).
    pub install: Vec<String>,
    pub upgrade: Vec<Upgrade>,
    /// Specs to remove.
    pub remove: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.install.is_empty() && self.upgrade.is_empty() && self.remove.is_empty()
    }

    /// "install: a, b; upgrade: c 1.0-1 -> 1.1-1; remove: d"
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.install.is_empty() {
            parts.push(format!("install: {}", self.install.join(", ")));
        }
        if !self.upgrade.is_empty() {
            let ups: Vec<String> = self
                .upgrade
                .iter()
                .map(|u| format!("{} {} -> {}", u.name, u.from, u.to))
                .collect();
            parts.push(format!("upgrade: {}", ups.join(", ")));
        }
        if !self.remove.is_empty() {
            parts.push(format!("remove: {}", self.remove.join(", ")));
        }
        parts.join("; ")
    }

    /// The names of the packages to install and upgrade, for one install command.
    pub fn upgrade_names(&self) -> Vec<String> {
        self.upgrade.iter().map(|u| u.name.clone()).collect()
    }

    /// `{"installed": [...], "upgraded": [...], "removed": [...]}`
    pub fn result(&self) -> Value {
        json!({
            "installed": self.install,
            "upgraded": self.upgrade_names(),
            "removed": self.remove,
        })
    }
}

/// Quotes every word for sh, joined by spaces.
pub fn quote_all(words: &[String]) -> Result<String, String> {
    Ok(words
        .iter()
        .map(|w| engine::host::quote(w))
        .collect::<Result<Vec<_>, _>>()?
        .join(" "))
}

/// The last lines of a command's output, for error messages.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_a_string_or_a_list() {
        let one: Names = serde_json::from_value(json!("a")).unwrap();
        let many: Names = serde_json::from_value(json!(["a", "b"])).unwrap();
        assert_eq!(one.list(), ["a"]);
        assert_eq!(many.list(), ["a", "b"]);
        assert!(serde_json::from_value::<Names>(json!(3)).is_err());
        assert_eq!(list(&None), Vec::<String>::new());
    }

    #[test]
    fn names_are_checked() {
        let ok = |_: &str| Ok(());
        assert!(check_names(&["a".into()], ok).is_ok());
        assert!(check_names(&[], ok).unwrap_err().contains("at least one"));
        let dup = check_names(&["a".into(), "a".into()], ok).unwrap_err();
        assert!(dup.contains("twice"), "{dup}");
        let opt = check_names(&["--force".into()], ok).unwrap_err();
        assert!(opt.contains("option"), "{opt}");
        let bad = check_names(&["x".into()], |n| Err(format!("{n} bad"))).unwrap_err();
        assert_eq!(bad, "name: x bad");
    }

    #[test]
    fn summary_and_result_list_every_change() {
        let c = Changes {
            install: vec!["labhello".into(), "b".into()],
            upgrade: vec![Upgrade {
                name: "labfoo".into(),
                from: "1.0-1".into(),
                to: "1.1-1".into(),
            }],
            remove: vec![],
        };
        assert_eq!(
            c.summary(),
            "install: labhello, b; upgrade: labfoo 1.0-1 -> 1.1-1"
        );
        assert_eq!(
            c.result(),
            json!({"installed": ["labhello", "b"], "upgraded": ["labfoo"], "removed": []})
        );
        assert!(!c.is_empty());
        assert!(Changes::default().is_empty());
        let r = Changes {
            remove: vec!["x".into()],
            ..Default::default()
        };
        assert_eq!(r.summary(), "remove: x");
    }
}
