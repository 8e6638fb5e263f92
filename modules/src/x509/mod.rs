//! `x509`: a certificate authority kept on the controller, and certificates signed by it installed
//! on targets. Keys and certificates are made on the controller with `rcgen` (pure Rust) and read
//! with `x509-parser`; targets only need POSIX sh and coreutils.
//!
//! `spec` (what a certificate should say, and what an existing one says), `keys` (keys, serials,
//! time), `ca` (the CA on the controller and the `kind: ca` task), `cert` (the `kind: cert`
//! task), `target` (the two files on the target: read in one round trip, written).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use engine::remote::WriteOptions;
use engine::secret::Secret;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;

use crate::shared::content;
use crate::shared::perms::Wanted;

mod ca;
mod cert;
mod keys;
mod spec;
mod target;
#[cfg(test)]
mod tests;

pub use ca::Ca;
pub use spec::{parse_existing, reasons, Existing, Spec};
use spec::{EXT_KEY_USAGES, KEY_USAGES};

pub struct X509;

/// What a task makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ca,
    Cert,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// "ca": the certificate authority (created on the controller on first use, and installed on
    /// the target when `cert` / `key` are given); "cert": a certificate signed by it.
    pub kind: Kind,
    /// The controller directory holding the CA (`ca.crt`, and `ca.key` with mode 0600), relative
    /// to the playbook's directory (e.g. "pki/cluster-ca").
    pub ca_dir: String,
    /// Path of the certificate (PEM) on the target. Required for "cert"; for "ca", where to
    /// install the CA certificate.
    pub cert: Option<String>,
    /// Path of the private key (PEM, PKCS#8) on the target, mode 0600. Required for "cert"; for
    /// "ca", where to install the CA key.
    pub key: Option<String>,
    /// Subject common name. Required for "cert"; for "ca" it defaults to the last component of
    /// `ca_dir`.
    pub common_name: Option<String>,
    /// Subject organization (O), e.g. "system:masters".
    pub organization: Option<String>,
    /// DNS subject alternative names ("cert" only).
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// IP subject alternative names ("cert" only).
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    /// Key usages ("cert" only): digitalSignature, contentCommitment, keyEncipherment,
    /// dataEncipherment, keyAgreement, keyCertSign, cRLSign. Default: digitalSignature and
    /// keyEncipherment.
    pub key_usage: Option<Vec<String>>,
    /// Extended key usages ("cert" only): serverAuth, clientAuth, codeSigning, emailProtection,
    /// timeStamping, ocspSigning. Default: serverAuth.
    pub extended_key_usage: Option<Vec<String>>,
    /// How long a new certificate is valid, in days. Default 365 (3650 for a CA).
    pub validity_days: Option<u32>,
    /// Re-issue a certificate that expires within this many days. Default 30.
    pub renew_before_days: Option<u32>,
    /// Re-issue the certificate even when the existing one would be kept ("cert" only): a
    /// renewal on demand, reported changed on every run that asks for it. Default false.
    #[serde(default)]
    pub force: bool,
    /// Owner of the installed files (name or uid).
    pub owner: Option<String>,
    /// Group of the installed files (name or gid).
    pub group: Option<String>,
    /// Replace what a target has that the controller's CA did not make: a CA certificate or key
    /// of another CA ("ca"), a certificate no CA on the controller signed ("cert"). Every
    /// certificate the old CA signed stops being trusted. Default false: refuse, and say how to
    /// recover.
    #[serde(default)]
    pub replace: bool,
}

pub const DOC: &str = r#"# x509

A certificate authority on the controller, and certificates signed by it on the targets (the PKI
of a Kubernetes cluster, say).

## Design

- Keys and certificates are made **on the controller** in pure Rust (`rcgen`; ECDSA P-256 keys,
  SHA-256 signatures) and installed on targets atomically (a temporary file in the same directory,
  mode and owner set, then renamed): keys with mode 0600, certificates 0644, both with `owner` /
  `group` when given. Targets need only POSIX sh and coreutils (no openssl).
- The CA lives in the controller directory `ca_dir`, relative to the playbook's directory:
  `ca.crt` and `ca.key` (0600). It is created on first use, by a `kind: "ca"` task or by the first
  `kind: "cert"` task that needs it; afterwards it is only read. `common_name`, `organization`
  and `validity_days` of a CA apply when it is created. Keep `ca_dir` out of version control, or
  encrypt it: whoever has `ca.key` can sign certificates your cluster trusts.
- A `kind: "ca"` task with `cert` / `key` installs the CA's certificate / key on the target
  (e.g. `/etc/kubernetes/pki/ca.crt`), compared by sha256 on the target.
- **The CA on the targets is the source of truth**: a CA that exists on a host is never replaced
  without `replace: true` (replacing it invalidates every certificate and token it vouches for).
  When the controller has no CA in `ca_dir` (a fresh clone, another workstation) and a target
  has the CA's certificate and key (`cert` and `key` of a `kind: "ca"` task), the CA is taken
  from that target into `ca_dir` (check mode takes it in memory only) and the task is ok. When a
  target has a CA certificate but the controller has none and no key can be taken, or the
  controller's CA is another one, the task fails before changing anything and says how to
  recover (restore `ca_dir`, or take the CA from a host that has its key). A `kind: "cert"` task
  likewise refuses to create a CA while the target holds a certificate some other CA signed.
- A `kind: "cert"` task reads the certificate and the key on the target (a few KB; the key is
  registered as a secret at once and never shown) and keeps them when **all** hold:
  the common name and organization are as asked; the DNS and IP names are exactly those asked;
  the key usages and extended key usages are exactly those asked; the certificate is signed by
  the CA in `ca_dir` (its signature is verified); it does not expire within `renew_before_days`;
  and the key on the target is the certificate's key. Otherwise a new certificate is issued,
  and check mode says why: `missing`, `SAN 10.0.0.5 missing`, `SAN old.example not wanted`,
  `expires in 10 days`, `issuer differs`, `key does not match`, `common name a -> b`...
- `force: true` issues a new certificate (a new serial and validity, the same names) whatever
  the existing one says: a renewal on demand, changed on every run that asks for it.
- When a new certificate is issued, the existing key on the target is kept whenever it can be
  read (PKCS#8 ECDSA, Ed25519 or RSA), so whatever uses the key is not disturbed; a new key is
  made only when there is none or it cannot be read. Only the public key is needed to sign.
- Private keys never appear in results, summaries, diffs or errors: every key read or made is
  registered with the run's secrets. Changes show no diff.
- Two hosts creating the same CA at once in one run make one CA (creation is serialised in the
  process; files are written to a temporary name and renamed).

## Arguments

| name | type | |
|---|---|---|
| `kind` | "ca" \| "cert" | required |
| `ca_dir` | string | controller directory of the CA, relative to the playbook (required) |
| `cert` | string | certificate path on the target (required for "cert") |
| `key` | string | key path on the target (required for "cert") |
| `common_name` | string | subject CN (required for "cert") |
| `organization` | string | subject O |
| `dns_names` | list | DNS SANs |
| `ip_addresses` | list | IP SANs |
| `key_usage` | list | default `["digitalSignature", "keyEncipherment"]` |
| `extended_key_usage` | list | default `["serverAuth"]` |
| `validity_days` | int | default 365 (CA: 3650) |
| `renew_before_days` | int | default 30 |
| `force` | bool | default false: re-issue even a certificate that would be kept ("cert") |
| `owner`, `group` | string | of the installed files |
| `replace` | bool | default false: never replace another CA's files on a target |

## Result

`cert`, `key`, `serial` (hex), `not_after` (RFC 3339), `sha256` (fingerprint of the DER
certificate), `certificate` (the PEM certificate; for "ca", the CA's). Never the key.

## Example

```rhai
on("masters", [
    x509(#{ kind: "ca", ca_dir: "pki/cluster-ca", common_name: "kubernetes",
            cert: "/etc/kubernetes/pki/ca.crt", key: "/etc/kubernetes/pki/ca.key" }),
    x509(#{ kind: "cert", ca_dir: "pki/cluster-ca",
            cert: "/etc/kubernetes/pki/apiserver.crt", key: "/etc/kubernetes/pki/apiserver.key",
            common_name: "kube-apiserver",
            dns_names: ["kubernetes", "kubernetes.default", "{{ inventory_hostname }}"],
            ip_addresses: ["10.96.0.1", "{{ ansible_host }}"],
            extended_key_usage: ["serverAuth"] }),
    x509(#{ kind: "cert", ca_dir: "pki/cluster-ca",
            cert: "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
            key: "/etc/kubernetes/pki/apiserver-kubelet-client.key",
            common_name: "kube-apiserver-kubelet-client", organization: "system:masters",
            extended_key_usage: ["clientAuth"] }),
]);
```
"#;

const KEY_MODE: &str = "0600";
const CERT_MODE: &str = "0644";
/// Larger files are not read (a certificate chain is a few KB).
const READ_LIMIT: u64 = 64 * 1024;
const DAY: i64 = 86_400;

impl Args {
    fn ca_path(&self, base: &Path) -> PathBuf {
        base.join(&self.ca_dir)
    }

    fn wanted<'a>(&'a self, mode: &'a str) -> Wanted<'a> {
        Wanted {
            mode: Some(mode),
            owner: self.owner.as_deref(),
            group: self.group.as_deref(),
        }
    }

    fn write_options<'a>(&'a self, mode: &'a str) -> WriteOptions<'a> {
        content::write_options(self.wanted(mode), None, false)
    }

    fn spec(&self) -> Result<Spec, String> {
        let ips = self
            .ip_addresses
            .iter()
            .map(|i| {
                i.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| format!("ip_addresses: {i:?} is not an IP address"))
            })
            .collect::<Result<_, _>>()?;
        let names = |given: &Option<Vec<String>>,
                     default: &[&str],
                     known: &[&str],
                     field: &str|
         -> Result<BTreeSet<String>, String> {
            let list: Vec<String> = match given {
                Some(l) => l.clone(),
                None => default.iter().map(|s| s.to_string()).collect(),
            };
            for n in &list {
                if !known.contains(&n.as_str()) {
                    return Err(format!(
                        "{field}: unknown {n:?}; known: {}",
                        known.join(", ")
                    ));
                }
            }
            Ok(list.into_iter().collect())
        };
        Ok(Spec {
            common_name: self.common_name.clone().unwrap_or_default(),
            organization: self.organization.clone(),
            dns: self
                .dns_names
                .iter()
                .map(|d| d.trim().to_string())
                .collect(),
            ips,
            key_usage: names(
                &self.key_usage,
                &["digitalSignature", "keyEncipherment"],
                &KEY_USAGES,
                "key_usage",
            )?,
            ext_key_usage: names(
                &self.extended_key_usage,
                &["serverAuth"],
                &EXT_KEY_USAGES,
                "extended_key_usage",
            )?,
        })
    }
}

/// What to do to one file on the target.
pub enum Step {
    /// Nothing.
    None,
    /// A decided change: fix attributes, or write known bytes.
    Content(content::Plan),
    /// Write what apply makes (a new key, a new certificate, the CA's files once created).
    Fresh,
}

pub struct Plan {
    key: Step,
    cert: Step,
    /// The key on the target that a new certificate is issued for (None: make a new key).
    reuse_key: Option<Secret>,
}

#[async_trait]
impl Module for X509 {
    const NAME: &'static str = "x509";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = Plan;

    fn check_args(args: &Args) -> Result<(), String> {
        if args.ca_dir.trim().is_empty() {
            return Err("ca_dir: is empty".into());
        }
        for (name, v) in [("cert", &args.cert), ("key", &args.key)] {
            if let Some(p) = v {
                if p.is_empty() || p.ends_with('/') {
                    return Err(format!("{name}: {p:?} must name a file"));
                }
            }
        }
        if args.validity_days == Some(0) {
            return Err("validity_days: must be at least 1".into());
        }
        match args.kind {
            Kind::Ca => {
                for (name, given) in [
                    ("dns_names", !args.dns_names.is_empty()),
                    ("ip_addresses", !args.ip_addresses.is_empty()),
                    ("key_usage", args.key_usage.is_some()),
                    ("extended_key_usage", args.extended_key_usage.is_some()),
                    ("renew_before_days", args.renew_before_days.is_some()),
                    ("force", args.force),
                ] {
                    if given {
                        return Err(format!("{name}: not used with kind \"ca\""));
                    }
                }
            }
            Kind::Cert => {
                for (name, v) in [
                    ("cert", &args.cert),
                    ("key", &args.key),
                    ("common_name", &args.common_name),
                ] {
                    if v.is_none() {
                        return Err(format!("missing field `{name}` (kind \"cert\" needs it)"));
                    }
                }
                if args.cert == args.key {
                    return Err("cert and key must be different files".into());
                }
                args.spec()?;
                let validity = args.validity_days.unwrap_or(365);
                let renew = args.renew_before_days.unwrap_or(30);
                if renew >= validity {
                    return Err(format!(
                        "renew_before_days ({renew}) must be less than validity_days ({validity}), \
                         or every run would re-issue"
                    ));
                }
            }
        }
        Ok(())
    }

    async fn probe(&self, args: &Args, cx: &ModuleContext<'_>) -> Result<Probe<Plan>, ModuleError> {
        match args.kind {
            Kind::Ca => self.probe_ca(args, cx).await,
            Kind::Cert => self.probe_cert(args, cx).await,
        }
    }

    async fn apply(
        &self,
        args: &Args,
        plan: Plan,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        let dir = args.ca_path(cx.base_dir);
        let (ca, _) = Ca::load_or_create(&dir, args, cx.secrets)?;
        match args.kind {
            Kind::Ca => self.apply_ca(args, plan, &ca, cx).await,
            Kind::Cert => self.apply_cert(args, plan, &ca, cx).await,
        }
    }
}
