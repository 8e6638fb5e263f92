//! The values a node needs to join, and keeping them out of what is shown.

use std::sync::LazyLock;

use engine::ModuleContext;
use regex::Regex;
use serde_json::{Map, Value};

use super::config;
use super::templated;

/// What a node needs to join: from `kubeadm init`'s output, `token create`, `upload-certs`, or
/// the playbook.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct JoinInfo {
    pub api_endpoint: Option<String>,
    pub token: Option<String>,
    pub ca_cert_hash: Option<String>,
    pub certificate_key: Option<String>,
    pub kubernetes_version: Option<String>,
}

impl JoinInfo {
    /// Reads the join command lines kubeadm prints (`kubeadm join EP --token T
    /// --discovery-token-ca-cert-hash sha256:H [--control-plane --certificate-key K]`, over
    /// several lines joined with `\`) and upload-certs' "Using certificate key:" line.
    pub fn parse(output: &str) -> JoinInfo {
        let joined = output.replace("\\\r\n", " ").replace("\\\n", " ");
        let mut info = JoinInfo::default();
        let mut lines = joined.lines().peekable();
        while let Some(line) = lines.next() {
            if line.contains("Using certificate key:") {
                if let Some(k) = lines.peek().map(|l| l.trim().to_string()) {
                    if config::check_certificate_key(&k).is_ok() && !templated(&k) {
                        info.certificate_key.get_or_insert(k);
                    }
                }
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(pos) = words
                .windows(2)
                .position(|w| w[0] == "kubeadm" && w[1] == "join")
            else {
                continue;
            };
            let mut it = words[pos + 2..].iter();
            while let Some(w) = it.next() {
                let (flag, inline) = match w.split_once('=') {
                    Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                    _ => (*w, None),
                };
                let mut value = || inline.clone().or_else(|| it.next().map(|s| s.to_string()));
                // Only well-formed values count ("<value withheld>" is not a key).
                match flag {
                    "--token" => {
                        let v = value().filter(|t| config::is_token(t));
                        if info.token.is_none() {
                            info.token = v;
                        }
                    }
                    "--discovery-token-ca-cert-hash" => {
                        let v = value().filter(|h| config::check_ca_hash(h).is_ok());
                        if info.ca_cert_hash.is_none() {
                            info.ca_cert_hash = v;
                        }
                    }
                    "--certificate-key" => {
                        let v = value().filter(|k| config::check_certificate_key(k).is_ok());
                        if info.certificate_key.is_none() {
                            info.certificate_key = v;
                        }
                    }
                    "--control-plane" => {}
                    f if !f.starts_with('-') && info.api_endpoint.is_none() => {
                        info.api_endpoint = Some(f.to_string());
                    }
                    _ => {}
                }
            }
        }
        info
    }

    /// Reads a task result (or a list of them, later ones winning) as `from` gives it.
    pub fn from_value(v: &Value) -> Result<JoinInfo, String> {
        let mut info = JoinInfo::default();
        let maps: Vec<&Map<String, Value>> = match v {
            Value::Null => vec![],
            Value::Object(m) => vec![m],
            // A null item is a result check mode does not know yet (the task would change).
            Value::Array(items) => items
                .iter()
                .filter(|i| !i.is_null())
                .map(|i| {
                    i.as_object()
                        .ok_or_else(|| "from: each item must be a task result (a map)".to_string())
                })
                .collect::<Result<_, _>>()?,
            _ => return Err("from: give the init task (or a list of task results)".into()),
        };
        for m in maps {
            let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
            info.api_endpoint = s("api_endpoint").or(info.api_endpoint);
            info.token = s("token").or(info.token);
            info.ca_cert_hash = s("ca_cert_hash").or(info.ca_cert_hash);
            info.certificate_key = s("certificate_key").or(info.certificate_key);
            info.kubernetes_version = s("kubernetes_version").or(info.kubernetes_version);
        }
        Ok(info)
    }

    pub(super) fn secrets(&self) -> Vec<String> {
        self.token
            .iter()
            .chain(self.certificate_key.iter())
            .cloned()
            .collect()
    }

    pub(super) fn register(&self, cx: &ModuleContext<'_>) {
        for s in self.secrets() {
            cx.secrets.add(&s);
        }
    }

    /// The task result: the values later tasks read (the secrets are registered, so output
    /// shows them as [secret] should anyone print them).
    pub(super) fn result(&self, extra: Value) -> Value {
        let mut m = Map::new();
        for (k, v) in [
            ("api_endpoint", &self.api_endpoint),
            ("token", &self.token),
            ("ca_cert_hash", &self.ca_cert_hash),
            ("certificate_key", &self.certificate_key),
            ("kubernetes_version", &self.kubernetes_version),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.clone().into());
            }
        }
        if let Value::Object(e) = extra {
            m.extend(e);
        }
        Value::Object(m)
    }
}

/// Removes secrets from text kubeadm printed: the known values, anything shaped like a bootstrap
/// token, the values of `--token` and `--certificate-key`, and bare 64-hex-digit keys (but not
/// `sha256:` CA hashes, which are public).
pub fn scrub(text: &str, known: &[String]) -> String {
    let mut out = text.to_string();
    let mut known: Vec<&String> = known.iter().filter(|s| s.len() >= 4).collect();
    known.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in known {
        out = out.replace(s.as_str(), "[secret]");
    }
    static TOKEN: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b").expect("valid regex"));
    static FLAG: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(--(?:token|certificate-key|tls-bootstrap-token)[ =])(\S+)")
            .expect("valid regex")
    });
    static KEY: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(sha256:)?\b([0-9a-fA-F]{64})\b").expect("valid regex"));
    out = TOKEN.replace_all(&out, "[secret]").into_owned();
    out = FLAG.replace_all(&out, "${1}[secret]").into_owned();
    out = KEY
        .replace_all(&out, |c: &regex::Captures| match c.get(1) {
            Some(_) => c[0].to_string(),
            None => "[secret]".to_string(),
        })
        .into_owned();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeadm::tests::{HASH, KEY};
    use serde_json::json;

    #[test]
    fn join_values_are_read_from_kubeadm_output() {
        let init = format!(
            "[upload-certs] Using certificate key:\n{KEY}\n\nYou can now join ...:\n\n  \
             kubeadm join vip:9443 --token abcdef.0123456789abcdef \\\n  \t--discovery-token-ca-cert-hash {HASH} \\\n  \
             \t--control-plane --certificate-key {KEY}\n\nkubeadm join vip:9443 --token abcdef.0123456789abcdef \\\n\
             \t--discovery-token-ca-cert-hash {HASH}\n"
        );
        let i = JoinInfo::parse(&init);
        assert_eq!(i.api_endpoint.as_deref(), Some("vip:9443"));
        assert_eq!(i.token.as_deref(), Some("abcdef.0123456789abcdef"));
        assert_eq!(i.ca_cert_hash.as_deref(), Some(HASH));
        assert_eq!(i.certificate_key.as_deref(), Some(KEY));
        let withheld = JoinInfo::parse(
            "kubeadm join vip:9443 --token abcdef.0123456789abcdef --control-plane --certificate-key <value withheld>",
        );
        assert_eq!(withheld.certificate_key, None);
        let token = JoinInfo::parse(&format!(
            "kubeadm join 10.0.0.10:6443 --token x1y2z3.0123456789abcdef --discovery-token-ca-cert-hash {HASH} \n"
        ));
        assert_eq!(token.api_endpoint.as_deref(), Some("10.0.0.10:6443"));
        let from = JoinInfo::from_value(&json!([
            {"api_endpoint": "a:1", "token": "t", "changed": false},
            {"certificate_key": "k"}
        ]))
        .unwrap();
        assert_eq!(
            (
                from.api_endpoint.as_deref(),
                from.certificate_key.as_deref()
            ),
            (Some("a:1"), Some("k"))
        );
    }

    #[test]
    fn scrub_removes_tokens_and_keys_but_keeps_hashes() {
        let text = format!(
            "kubeadm join vip:9443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash {HASH} \
             --certificate-key {KEY}\nUsing certificate key:\n{KEY}\n--token=zzz other"
        );
        let s = scrub(&text, &["other".into()]);
        assert!(
            !s.contains("abcdef.0123456789abcdef") && !s.contains(KEY),
            "{s}"
        );
        assert!(s.contains(HASH), "{s}");
        assert!(!s.contains("zzz") && !s.contains("other"), "{s}");
    }
}
