//! File changes as the user sees them with --diff.

use serde::ser::{Serialize, SerializeStruct, Serializer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    pub path: String,
    /// None when the file does not exist yet.
    pub before: Option<String>,
    /// None when the file is removed.
    pub after: Option<String>,
}

/// In JSON events: the two sides, and the unified diff a program would otherwise have to make.
impl Serialize for FileDiff {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("FileDiff", 4)?;
        s.serialize_field("path", &self.path)?;
        s.serialize_field("before", &self.before)?;
        s.serialize_field("after", &self.after)?;
        s.serialize_field("unified", &self.unified())?;
        s.end()
    }
}

/// What a diff shows of a file whose content depends on a secret, on both sides: a rotated
/// password must not show the old one either.
pub const HIDDEN: &str = "[diff hidden: content depends on a secret]";

impl FileDiff {
    /// The diff of a file whose content depends on a secret: its path only.
    pub fn hidden(path: &str) -> Self {
        FileDiff {
            path: path.to_string(),
            before: Some(HIDDEN.to_string()),
            after: Some(HIDDEN.to_string()),
        }
    }

    /// Builds a diff from raw bytes; binary content is shown as a placeholder line.
    pub fn new(path: &str, before: Option<&[u8]>, after: Option<&[u8]>) -> Self {
        fn text(b: &[u8]) -> String {
            match std::str::from_utf8(b) {
                Ok(s) => s.to_string(),
                Err(_) => format!("[binary content, {} bytes]\n", b.len()),
            }
        }
        FileDiff {
            path: path.to_string(),
            before: before.map(text),
            after: after.map(text),
        }
    }

    /// A unified diff with `--- before` / `+++ after` headers.
    pub fn unified(&self) -> String {
        if self.before.as_deref() == Some(HIDDEN) {
            return format!("--- {0}\n+++ {0}\n{HIDDEN}\n", self.path);
        }
        let old = self.before.as_deref().unwrap_or("");
        let new = self.after.as_deref().unwrap_or("");
        let old_name = if self.before.is_some() {
            format!("{} (before)", self.path)
        } else {
            "/dev/null".to_string()
        };
        let new_name = if self.after.is_some() {
            format!("{} (after)", self.path)
        } else {
            "/dev/null".to_string()
        };
        similar::TextDiff::from_lines(old, new)
            .unified_diff()
            .context_radius(3)
            .header(&old_name, &new_name)
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_diff_shows_changed_lines() {
        let d = FileDiff::new("/etc/x", Some(b"a\nb\n"), Some(b"a\nc\n"));
        let u = d.unified();
        assert!(u.contains("--- /etc/x (before)"), "{u}");
        assert!(u.contains("-b\n") && u.contains("+c\n"), "{u}");
        let created = FileDiff::new("/etc/y", None, Some(b"new\n")).unified();
        assert!(
            created.contains("--- /dev/null") && created.contains("+new"),
            "{created}"
        );
    }
}
