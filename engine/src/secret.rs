//! Values whose text must never reach output, logs, diffs or error messages.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The only way to read the text: call it where the value is used, never where it is shown.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[secret]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[secret]")
    }
}

/// Secret texts known to a run. Everything a run shows (messages, summaries, diffs, prints) passes
/// through `redact`, so a secret that a module or the inventory registered never reaches output.
#[derive(Debug, Default)]
pub struct Redactor {
    values: std::sync::RwLock<Vec<String>>,
}

/// Shorter texts are not redacted: they would blank out ordinary words.
const MIN_SECRET_LEN: usize = 4;

impl Redactor {
    pub fn add(&self, secret: &str) {
        if secret.len() < MIN_SECRET_LEN {
            return;
        }
        let mut v = self.values.write().unwrap_or_else(|e| e.into_inner());
        if !v.iter().any(|s| s == secret) {
            v.push(secret.to_string());
            // Longest first, so a secret that contains another is replaced whole.
            v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let v = self.values.read().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_string();
        for s in v.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "[secret]");
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.values
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_every_registered_secret_longest_first() {
        let r = Redactor::default();
        r.add("abc");
        r.add("token-123");
        r.add("token-123456");
        assert_eq!(
            r.redact("join with token-123456 or token-123, abc stays"),
            "join with [secret] or [secret], abc stays"
        );
        assert_eq!(format!("{:?}", Secret::new("pw")), "[secret]");
    }
}
