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
    /// Registers a secret and the forms it commonly takes on its way out: base64 (also inside a
    /// longer encoded text), URL-encoding, and lower and upper case.
    pub fn add(&self, secret: &str) {
        if secret.len() < MIN_SECRET_LEN {
            return;
        }
        let mut v = self.values.write().unwrap_or_else(|e| e.into_inner());
        for form in encodings(secret) {
            if form.len() >= MIN_SECRET_LEN && !v.contains(&form) {
                v.push(form);
            }
        }
        // Longest first, so a secret that contains another is replaced whole.
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// Registers every string inside a JSON value (a variable's value may be a list or a map).
    pub fn add_json(&self, value: &serde_json::Value) {
        match value {
            serde_json::Value::String(s) => self.add(s),
            serde_json::Value::Array(a) => a.iter().for_each(|v| self.add_json(v)),
            serde_json::Value::Object(m) => m.values().for_each(|v| self.add_json(v)),
            _ => {}
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

    /// Whether `text` holds a registered secret in any of its forms.
    pub fn contains_secret(&self, text: &str) -> bool {
        let v = self.values.read().unwrap_or_else(|e| e.into_inner());
        v.iter().any(|s| text.contains(s.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.values
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

/// The texts a secret may be shown as. Base64 depends on where the secret starts in the encoded
/// text: for each of the three alignments, the characters that encode only the secret's bytes.
fn encodings(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    let mut out = vec![
        secret.to_string(),
        secret.to_lowercase(),
        secret.to_uppercase(),
    ];
    let url: String = secret
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    out.push(url.replace("%20", "+"));
    out.push(url);
    for pad in 0..3usize {
        let mut bytes = vec![0u8; pad];
        bytes.extend_from_slice(secret.as_bytes());
        // Whole 3-byte groups of the secret alone: skip the group that holds padding bytes and
        // the last group, which depends on what follows.
        let skip = if pad == 0 { 0 } else { 3 };
        let end = bytes.len() / 3 * 3;
        if end <= skip {
            continue;
        }
        for engine in [
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            out.push(engine.encode(&bytes[skip..end]));
        }
    }
    out.dedup();
    out
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

    #[test]
    fn redacts_the_common_encodings_of_a_secret() {
        use base64::Engine as _;
        let r = Redactor::default();
        let canary = "Canary-7f3a9c/x y";
        r.add(canary);
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        for shown in [
            canary.to_uppercase(),
            canary.to_lowercase(),
            "Canary-7f3a9c%2Fx%20y".to_string(),
            "Canary-7f3a9c%2Fx+y".to_string(),
            b64(canary),
            b64(&format!("password={canary}\n")),
            b64(&format!("pw:{canary}")),
            b64(&format!("p:{canary}")),
        ] {
            let out = r.redact(&format!("before {shown} after"));
            assert!(out.contains("[secret]"), "{shown} was not redacted: {out}");
        }
        assert_eq!(r.redact("nothing here"), "nothing here");
    }
}
