//! `x509`: a certificate authority kept on the controller, and certificates signed by it installed
//! on targets. Keys and certificates are made on the controller with `rcgen` (pure Rust) and read
//! with `x509-parser`; targets only need POSIX sh and coreutils.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use engine::remote::{FileKind, WriteOptions};
use engine::secret::{Redactor, Secret};
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::content::{self, Action};
use crate::inspect::{sha256, Current, Inspect};
use crate::perms::Wanted;

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

const KEY_USAGES: [&str; 7] = [
    "digitalSignature",
    "contentCommitment",
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "cRLSign",
];
const EXT_KEY_USAGES: [&str; 6] = [
    "serverAuth",
    "clientAuth",
    "codeSigning",
    "emailProtection",
    "timeStamping",
    "ocspSigning",
];

fn ku_purpose(name: &str) -> rcgen::KeyUsagePurpose {
    use rcgen::KeyUsagePurpose::*;
    match name {
        "digitalSignature" => DigitalSignature,
        "contentCommitment" => ContentCommitment,
        "keyEncipherment" => KeyEncipherment,
        "dataEncipherment" => DataEncipherment,
        "keyAgreement" => KeyAgreement,
        "keyCertSign" => KeyCertSign,
        _ => CrlSign,
    }
}

fn eku_purpose(name: &str) -> rcgen::ExtendedKeyUsagePurpose {
    use rcgen::ExtendedKeyUsagePurpose::*;
    match name {
        "serverAuth" => ServerAuth,
        "clientAuth" => ClientAuth,
        "codeSigning" => CodeSigning,
        "emailProtection" => EmailProtection,
        "timeStamping" => TimeStamping,
        _ => OcspSigning,
    }
}

/// What a certificate should say (the parts that are compared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub common_name: String,
    pub organization: Option<String>,
    pub dns: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
    pub key_usage: BTreeSet<String>,
    pub ext_key_usage: BTreeSet<String>,
}

/// What an existing certificate says, and how it relates to our CA and the key next to it.
#[derive(Debug, Clone)]
pub struct Existing {
    pub spec: Spec,
    pub is_ca: bool,
    /// Seconds since the epoch.
    pub not_after: i64,
    /// Its signature verifies with our CA's public key.
    pub signed_by_ca: bool,
    /// Its SubjectPublicKeyInfo (DER).
    pub spki: Vec<u8>,
}

/// Why a certificate must be (re)issued; empty when the existing one is kept.
///
/// `ca_exists` false means the CA is not created yet (check mode on a first run); `key_spki` is
/// the public key of the key on the target, None when it is missing or unreadable.
pub fn reasons(
    want: &Spec,
    have: Option<&Existing>,
    ca_exists: bool,
    key_spki: Option<&[u8]>,
    now: i64,
    renew_before_days: u32,
) -> Vec<String> {
    let Some(have) = have else {
        return vec!["missing".into()];
    };
    let mut why = Vec::new();
    let got = &have.spec;
    if got.common_name != want.common_name {
        why.push(format!(
            "common name {} -> {}",
            got.common_name, want.common_name
        ));
    }
    if got.organization != want.organization {
        let show = |o: &Option<String>| o.clone().unwrap_or_else(|| "(none)".into());
        why.push(format!(
            "organization {} -> {}",
            show(&got.organization),
            show(&want.organization)
        ));
    }
    let names = |s: &BTreeSet<IpAddr>| s.iter().map(|i| i.to_string()).collect::<Vec<_>>();
    let (want_ips, got_ips) = (names(&want.ips), names(&got.ips));
    for (label, wanted, present) in [
        (
            "SAN",
            want.dns.iter().cloned().collect::<Vec<_>>(),
            got.dns.iter().cloned().collect::<Vec<_>>(),
        ),
        ("SAN", want_ips, got_ips),
        (
            "key usage",
            want.key_usage.iter().cloned().collect(),
            got.key_usage.iter().cloned().collect(),
        ),
        (
            "extended key usage",
            want.ext_key_usage.iter().cloned().collect(),
            got.ext_key_usage.iter().cloned().collect(),
        ),
    ] {
        for w in wanted.iter().filter(|w| !present.contains(w)) {
            why.push(format!("{label} {w} missing"));
        }
        for p in present.iter().filter(|p| !wanted.contains(p)) {
            why.push(format!("{label} {p} not wanted"));
        }
    }
    if have.is_ca {
        why.push("is a CA certificate".into());
    }
    if !ca_exists {
        why.push("CA not created yet".into());
    } else if !have.signed_by_ca {
        why.push("issuer differs".into());
    }
    let left = have.not_after - now;
    if left < 0 {
        why.push(format!("expired {} days ago", (-left) / DAY));
    } else if left < i64::from(renew_before_days) * DAY {
        why.push(format!("expires in {} days", left / DAY));
    }
    match key_spki {
        None => why.push("key missing or unreadable".into()),
        Some(k) if k != have.spki.as_slice() => why.push("key does not match".into()),
        _ => {}
    }
    why
}

/// Reads the first certificate of a PEM text. `ca_spki` is our CA's public key (DER), to verify
/// the signature with.
pub fn parse_existing(pem: &[u8], ca_cert_der: Option<&[u8]>) -> Result<Existing, String> {
    use x509_parser::extensions::GeneralName;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| e.to_string())?;
    let cert = pem.parse_x509().map_err(|e| e.to_string())?;
    let first = |mut it: Box<
        dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue> + '_,
    >| { it.next().and_then(|a| a.as_str().ok()).map(str::to_string) };
    let subject = cert.subject();
    let common_name = first(Box::new(subject.iter_common_name())).unwrap_or_default();
    let organization = first(Box::new(subject.iter_organization()));
    let (mut dns, mut ips) = (BTreeSet::new(), BTreeSet::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => {
                    dns.insert(d.to_string());
                }
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        ips.insert(IpAddr::from(a));
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        ips.insert(IpAddr::from(a));
                    }
                }
                _ => {}
            }
        }
    }
    let mut key_usage = BTreeSet::new();
    if let Ok(Some(ku)) = cert.key_usage() {
        let k = ku.value;
        for (name, on) in [
            ("digitalSignature", k.digital_signature()),
            ("contentCommitment", k.non_repudiation()),
            ("keyEncipherment", k.key_encipherment()),
            ("dataEncipherment", k.data_encipherment()),
            ("keyAgreement", k.key_agreement()),
            ("keyCertSign", k.key_cert_sign()),
            ("cRLSign", k.crl_sign()),
        ] {
            if on {
                key_usage.insert(name.to_string());
            }
        }
    }
    let mut ext_key_usage = BTreeSet::new();
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let e = eku.value;
        for (name, on) in [
            ("serverAuth", e.server_auth),
            ("clientAuth", e.client_auth),
            ("codeSigning", e.code_signing),
            ("emailProtection", e.email_protection),
            ("timeStamping", e.time_stamping),
            ("ocspSigning", e.ocsp_signing),
            ("any", e.any),
        ] {
            if on {
                ext_key_usage.insert(name.to_string());
            }
        }
        for o in &e.other {
            ext_key_usage.insert(o.to_id_string());
        }
    }
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let signed_by_ca = match ca_cert_der {
        Some(der) => match x509_parser::parse_x509_certificate(der) {
            Ok((_, ca)) => {
                cert.issuer() == ca.subject()
                    && cert.verify_signature(Some(ca.public_key())).is_ok()
            }
            Err(_) => false,
        },
        None => false,
    };
    Ok(Existing {
        spec: Spec {
            common_name,
            organization,
            dns,
            ips,
            key_usage,
            ext_key_usage,
        },
        is_ca,
        not_after: cert.validity().not_after.timestamp(),
        signed_by_ca,
        spki: cert.public_key().raw.to_vec(),
    })
}

/// Registers a private key's text (whole, and each line of its body) as a secret.
fn register_key(secrets: &Redactor, pem: &str) {
    secrets.add(pem);
    secrets.add(pem.trim());
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        secrets.add(line.trim());
    }
}

/// Whether a PEM key is the private key of a PEM certificate.
fn pem_pair_matches(cert_pem: &str, key_pem: &str) -> bool {
    let Some(key) = read_key(key_pem) else {
        return false;
    };
    match x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) {
        Ok((_, pem)) => pem
            .parse_x509()
            .is_ok_and(|c| c.public_key().raw == spki_of(&key).as_slice()),
        Err(_) => false,
    }
}

/// A key pair from PEM, if rcgen can read it.
fn read_key(pem: &str) -> Option<rcgen::KeyPair> {
    rcgen::KeyPair::from_pem(pem).ok()
}

fn spki_of(key: &rcgen::KeyPair) -> Vec<u8> {
    use rcgen::PublicKeyData;
    key.subject_public_key_info()
}

/// A fresh positive serial number, 16 bytes.
fn serial() -> rcgen::SerialNumber {
    use sha2::Digest;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut h = sha2::Sha256::new();
    h.update(now.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    // A fresh key's public part adds entropy from the system's random source.
    if let Ok(k) = rcgen::KeyPair::generate() {
        h.update(spki_of(&k));
    }
    let mut bytes = h.finalize()[..16].to_vec();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    rcgen::SerialNumber::from_slice(&bytes)
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn failed(what: impl std::fmt::Display) -> ModuleError {
    ModuleError::Failed(what.to_string())
}

/// The CA on the controller.
#[derive(Clone)]
pub struct Ca {
    pub dir: PathBuf,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    key_pem: Secret,
}

/// Serialises creating CAs within this process, so hosts running in parallel make one.
static CA_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// CAs taken from a target in check mode (which writes nothing on the controller either), so the
/// rest of the run decides as the real run will. A process makes one run.
static TAKEN_IN_CHECK_MODE: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<PathBuf, Ca>>,
> = std::sync::LazyLock::new(Default::default);

impl Ca {
    fn paths(dir: &Path) -> (PathBuf, PathBuf) {
        (dir.join("ca.crt"), dir.join("ca.key"))
    }

    /// The CA in `dir`, or None when it does not exist yet. Waits while another host of this run
    /// is creating it, so it never sees half a CA.
    /// In check mode, a CA taken from a target earlier in the run counts too.
    pub fn load(dir: &Path, secrets: &Redactor, check: bool) -> Result<Option<Ca>, ModuleError> {
        let _guard = CA_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        Self::load_unlocked(dir, secrets, check)
    }

    fn load_unlocked(
        dir: &Path,
        secrets: &Redactor,
        check: bool,
    ) -> Result<Option<Ca>, ModuleError> {
        let (crt, key) = Self::paths(dir);
        let (has_crt, has_key) = (crt.exists(), key.exists());
        if !has_crt && !has_key {
            if !check {
                return Ok(None);
            }
            let taken = TAKEN_IN_CHECK_MODE
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            return Ok(taken.get(dir).cloned());
        }
        if has_crt != has_key {
            return Err(failed(format!(
                "CA in {} is incomplete: it needs both ca.crt and ca.key",
                dir.display()
            )));
        }
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| failed(format!("cannot read {}: {e}", p.display())))
        };
        let key_pem = read(&key)?;
        register_key(secrets, &key_pem);
        let cert_pem = read(&crt)?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| failed(format!("{}: not a PEM certificate: {e}", crt.display())))?;
        if read_key(&key_pem).is_none() {
            return Err(failed(format!(
                "{}: not a private key rcgen can use (PKCS#8 ECDSA, Ed25519 or RSA)",
                key.display()
            )));
        }
        Ok(Some(Ca {
            dir: dir.to_path_buf(),
            cert_der: pem.contents,
            cert_pem,
            key_pem: Secret::new(key_pem),
        }))
    }

    /// The CA of a target, taken into `dir` (in a real run written there, in check mode kept
    /// in memory for the rest of the run), unless the controller has one by now: then that one.
    fn take(
        dir: &Path,
        cert_pem: &str,
        key_pem: &str,
        write: bool,
        secrets: &Redactor,
    ) -> Result<Ca, ModuleError> {
        let _guard = CA_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ca) = Self::load_unlocked(dir, secrets, !write)? {
            return Ok(ca);
        }
        register_key(secrets, key_pem);
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| failed(format!("the target's CA certificate is not PEM: {e}")))?;
        let ca = Ca {
            dir: dir.to_path_buf(),
            cert_der: pem.contents,
            cert_pem: cert_pem.to_string(),
            key_pem: Secret::new(key_pem.to_string()),
        };
        if write {
            std::fs::create_dir_all(dir)
                .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
            let (crt_path, key_path) = Self::paths(dir);
            crate::fetch::write_local(&key_path, key_pem.as_bytes(), 0o600)?;
            crate::fetch::write_local(&crt_path, cert_pem.as_bytes(), 0o644)?;
        } else {
            TAKEN_IN_CHECK_MODE
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(dir.to_path_buf(), ca.clone());
        }
        Ok(ca)
    }

    /// The CA in `dir`, created when it does not exist.
    pub fn load_or_create(
        dir: &Path,
        args: &Args,
        secrets: &Redactor,
    ) -> Result<(Ca, bool), ModuleError> {
        let _guard = CA_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ca) = Self::load_unlocked(dir, secrets, false)? {
            return Ok((ca, false));
        }
        let key = rcgen::KeyPair::generate().map_err(failed)?;
        let key_pem = key.serialize_pem();
        register_key(secrets, &key_pem);
        let cn = args.common_name.clone().unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "playbook CA".into())
        });
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = distinguished_name(&cn, args.organization.as_deref());
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, args.validity_days.unwrap_or(3650));
        let cert = params.self_signed(&key).map_err(failed)?;
        std::fs::create_dir_all(dir)
            .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
        let (crt_path, key_path) = Self::paths(dir);
        crate::fetch::write_local(&key_path, key_pem.as_bytes(), 0o600)?;
        crate::fetch::write_local(&crt_path, cert.pem().as_bytes(), 0o644)?;
        Ok((
            Ca {
                dir: dir.to_path_buf(),
                cert_pem: cert.pem(),
                cert_der: cert.der().to_vec(),
                key_pem: Secret::new(key_pem),
            },
            true,
        ))
    }

    /// Signs a certificate for `public` (a key pair whose public part is used).
    fn sign(
        &self,
        spec: &Spec,
        validity_days: u32,
        public: &rcgen::KeyPair,
    ) -> Result<String, ModuleError> {
        let ca_key = read_key(self.key_pem.expose())
            .ok_or_else(|| failed(format!("{}: CA key unreadable", self.dir.display())))?;
        let issuer = rcgen::Issuer::from_ca_cert_der(&self.cert_der.clone().into(), ca_key)
            .map_err(|e| failed(format!("{}: CA certificate: {e}", self.dir.display())))?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name =
            distinguished_name(&spec.common_name, spec.organization.as_deref());
        for d in &spec.dns {
            let name = rcgen::string::Ia5String::try_from(d.as_str())
                .map_err(|e| ModuleError::Args(format!("dns_names: {d:?}: {e}")))?;
            params.subject_alt_names.push(rcgen::SanType::DnsName(name));
        }
        for ip in &spec.ips {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(*ip));
        }
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = spec.key_usage.iter().map(|k| ku_purpose(k)).collect();
        params.extended_key_usages = spec.ext_key_usage.iter().map(|k| eku_purpose(k)).collect();
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity_days);
        let cert = params.signed_by(public, &issuer).map_err(failed)?;
        Ok(cert.pem())
    }
}

fn distinguished_name(cn: &str, org: Option<&str>) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    if let Some(o) = org {
        dn.push(rcgen::DnType::OrganizationName, o);
    }
    dn.push(rcgen::DnType::CommonName, cn);
    dn
}

fn set_validity(params: &mut rcgen::CertificateParams, days: u32) {
    let now = now();
    // An hour back, for clocks that are a little behind the controller's.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
    params.serial_number = Some(serial());
}

/// The result a task registers for a certificate.
fn cert_result(args: &Args, pem: &str) -> Value {
    let mut r = json!({ "cert": args.cert, "key": args.key, "certificate": pem });
    if let Ok((_, p)) = x509_parser::pem::parse_x509_pem(pem.as_bytes()) {
        r["sha256"] = sha256(&p.contents).into();
        if let Ok(c) = p.parse_x509() {
            r["serial"] = c.raw_serial_as_string().replace(':', "").into();
            r["not_after"] = c
                .validity()
                .not_after
                .to_datetime()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
                .into();
        }
    }
    r
}

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

/// The two files' state, and the content of each when it is a small regular file.
struct Pair {
    cert: Option<Current>,
    key: Option<Current>,
    cert_content: Option<Vec<u8>>,
    key_content: Option<Vec<u8>>,
}

impl Pair {
    /// The key's text as read from the target: a secret from the moment it is read.
    fn key_text(&self, secrets: &Redactor) -> Option<String> {
        let text = self
            .key_content
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())?;
        register_key(secrets, &text);
        Some(text)
    }
}

/// One round trip: both paths' state, and their content when `read` (regular files up to 64 KiB).
async fn inspect_pair(
    cx: &ModuleContext<'_>,
    cert: Option<&str>,
    key: Option<&str>,
    read: bool,
) -> Result<Pair, ModuleError> {
    let inspects: Vec<Inspect> = [cert, key]
        .into_iter()
        .flatten()
        .map(|path| Inspect {
            path,
            follow: false,
            into_dir: None,
            read: None,
        })
        .collect();
    let mut script = String::new();
    for i in &inspects {
        script += &i.script().map_err(ModuleError::Args)?;
        if read {
            script += &format!(
                "if [ -f \"$p\" ] && ! [ -L \"$p\" ] && [ \"$(stat -c %s -- \"$p\")\" -le {READ_LIMIT} ]; \
                 then stat -c %s -- \"$p\"; cat -- \"$p\"; else echo -1; fi\n"
            );
        }
    }
    let out = cx.host.run(&script).await?;
    if !out.success() {
        return Err(failed(format!(
            "cannot inspect {}: {}",
            [cert, key]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", "),
            out.stderr_text().trim()
        )));
    }
    let mut rest = out.stdout;
    let mut found = Vec::new();
    for i in &inspects {
        let mut cur = i.parse(&rest).map_err(failed)?;
        rest = std::mem::take(&mut cur.rest);
        let mut content = None;
        if read {
            let nl = rest
                .iter()
                .position(|b| *b == b'\n')
                .ok_or_else(|| failed(format!("inspecting {}: output ends early", i.path)))?;
            let len: i64 = String::from_utf8_lossy(&rest[..nl])
                .trim()
                .parse()
                .unwrap_or(-1);
            rest.drain(..=nl);
            if len >= 0 {
                let len = len as usize;
                if rest.len() < len {
                    return Err(failed(format!("{} changed while being read", i.path)));
                }
                content = Some(rest.drain(..len).collect());
            }
        }
        if matches!(cur.kind(), FileKind::Directory | FileKind::Other) {
            return Err(failed(format!(
                "{} exists and is not a regular file",
                cur.path
            )));
        }
        found.push((cur, content));
    }
    let mut it = found.into_iter();
    let mut take = |given: Option<&str>| {
        if given.is_some() {
            it.next().map(|(c, b)| (Some(c), b)).unwrap_or((None, None))
        } else {
            (None, None)
        }
    };
    let (cert, cert_content) = take(cert);
    let (key, key_content) = take(key);
    Ok(Pair {
        cert,
        key,
        cert_content,
        key_content,
    })
}

/// A change of attributes only, or nothing.
fn keep_step(
    cur: &Current,
    wanted: &Wanted,
    summary: &mut Vec<String>,
) -> Result<Step, ModuleError> {
    Ok(match content::keep(cur, wanted)? {
        Probe::Change(c) => {
            summary.push(format!("{}: {}", cur.path, c.summary));
            Step::Content(c.plan)
        }
        _ => Step::None,
    })
}

impl X509 {
    async fn probe_ca(
        &self,
        args: &Args,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<Plan>, ModuleError> {
        let dir = args.ca_path(cx.base_dir);
        let pair = inspect_pair(cx, args.cert.as_deref(), args.key.as_deref(), true).await?;
        let host_key = pair.key_text(cx.secrets);
        let host_cert = pair
            .cert_content
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let mut ca = Ca::load(&dir, cx.secrets, cx.check)?;
        if ca.is_none() && !args.replace {
            ca = match (&host_cert, &host_key) {
                (Some(cert), Some(key)) if pem_pair_matches(cert, key) => {
                    Some(Ca::take(&dir, cert, key, !cx.check, cx.secrets)?)
                }
                (Some(_), _) => {
                    return Err(failed(format!(
                        "{} has a CA certificate at {} but the controller has no CA in {}{}: \
                         certificates made now would not be trusted, and replacing the CA would \
                         invalidate every certificate it signed. Restore {} (ca.crt and ca.key) \
                         from where the cluster was made, or take it from a host that has its key \
                         (a kind \"ca\" task with `key`, running first); `replace: true` makes a \
                         new CA on purpose",
                        cx.host.name,
                        args.cert.as_deref().unwrap_or_default(),
                        args.ca_dir,
                        if host_key.is_some() {
                            ", and the key beside it is not that certificate's"
                        } else {
                            ""
                        },
                        args.ca_dir
                    )))
                }
                _ => None,
            };
        }
        if let (Some(ca), false) = (&ca, args.replace) {
            let other_cert = host_cert.as_deref().is_some_and(|pem| {
                x509_parser::pem::parse_x509_pem(pem.as_bytes())
                    .map_or(true, |(_, p)| p.contents != ca.cert_der)
            });
            let other_key = host_key.as_deref().is_some_and(|pem| {
                match (read_key(pem), read_key(ca.key_pem.expose())) {
                    (Some(theirs), Some(ours)) => spki_of(&theirs) != spki_of(&ours),
                    _ => true,
                }
            });
            if other_cert || other_key {
                return Err(failed(format!(
                    "{} has another CA than the controller's {} at {}: replacing it would \
                     invalidate every certificate it signed. If the controller's copy is the \
                     stale one, move {} away and run again (the CA is then taken from a host \
                     that has its key); `replace: true` installs the controller's CA on purpose",
                    cx.host.name,
                    args.ca_dir,
                    if other_cert {
                        args.cert.as_deref()
                    } else {
                        args.key.as_deref()
                    }
                    .unwrap_or_default(),
                    args.ca_dir
                )));
            }
        }
        let Some(ca) = ca else {
            let mut summary = vec![format!("create CA {}", args.ca_dir)];
            summary.extend(args.cert.iter().map(|c| format!("install {c}")));
            summary.extend(args.key.iter().map(|k| format!("install {k}")));
            let fresh = |given: &Option<String>| {
                if given.is_some() {
                    Step::Fresh
                } else {
                    Step::None
                }
            };
            let plan = Plan {
                key: fresh(&args.key),
                cert: fresh(&args.cert),
                reuse_key: None,
            };
            return Ok(Probe::change(plan, summary.join(", "), None));
        };
        let mut summary = Vec::new();
        let mut step = |cur: &Option<Current>,
                        bytes: &[u8],
                        mode: &str,
                        what: &str|
         -> Result<Step, ModuleError> {
            let Some(cur) = cur else {
                return Ok(Step::None);
            };
            let label = format!(
                "{} {what} {}",
                if cur.exists() { "update" } else { "install" },
                cur.path
            );
            Ok(
                match content::decide(cur, bytes.to_vec(), &args.wanted(mode), false, Some(label))?
                {
                    Probe::Change(c) => {
                        summary.push(c.summary);
                        Step::Content(c.plan)
                    }
                    _ => Step::None,
                },
            )
        };
        let cert = step(
            &pair.cert,
            ca.cert_pem.as_bytes(),
            CERT_MODE,
            "CA certificate",
        )?;
        let key = step(
            &pair.key,
            ca.key_pem.expose().as_bytes(),
            KEY_MODE,
            "CA key",
        )?;
        let result = ca_result(args, &ca);
        if summary.is_empty() {
            return Ok(Probe::Unchanged(result));
        }
        let plan = Plan {
            key,
            cert,
            reuse_key: None,
        };
        Ok(Probe::change(plan, summary.join(", "), None))
    }

    async fn probe_cert(
        &self,
        args: &Args,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<Plan>, ModuleError> {
        let spec = args.spec().map_err(ModuleError::Args)?;
        let dir = args.ca_path(cx.base_dir);
        let ca = Ca::load(&dir, cx.secrets, cx.check)?;
        let pair = inspect_pair(cx, args.cert.as_deref(), args.key.as_deref(), true).await?;
        let (Some(cert_cur), Some(key_cur)) = (&pair.cert, &pair.key) else {
            return Err(ModuleError::Args("cert and key are required".into()));
        };
        let key_pem = pair.key_text(cx.secrets);
        let key_pair = key_pem.as_deref().and_then(read_key);
        let key_spki = key_pair.as_ref().map(spki_of);
        let existing = match &pair.cert_content {
            Some(pem) => parse_existing(pem, ca.as_ref().map(|c| c.cert_der.as_slice())).ok(),
            None => None,
        };
        if ca.is_none() && existing.is_some() && !args.replace {
            return Err(failed(format!(
                "the controller has no CA in {} but {} holds a certificate at {} that a CA \
                 signed: a new CA would not be trusted by what trusts the old one. Restore {} \
                 from where the cluster was made, or take the CA from a host that has its key \
                 (a kind \"ca\" task with `key`, running first); `replace: true` issues from a \
                 new CA on purpose",
                args.ca_dir, cx.host.name, cert_cur.path, args.ca_dir
            )));
        }
        let mut why = reasons(
            &spec,
            existing.as_ref(),
            ca.is_some(),
            key_spki.as_deref(),
            now().unix_timestamp(),
            args.renew_before_days.unwrap_or(30),
        );
        if existing.is_none() && cert_cur.exists() {
            why = vec!["unreadable certificate".into()];
        }
        let mut summary = Vec::new();
        if why.is_empty() {
            let key = keep_step(key_cur, &args.wanted(KEY_MODE), &mut summary)?;
            let cert = keep_step(cert_cur, &args.wanted(CERT_MODE), &mut summary)?;
            let pem = String::from_utf8_lossy(pair.cert_content.as_deref().unwrap_or_default());
            if summary.is_empty() {
                return Ok(Probe::Unchanged(cert_result(args, &pem)));
            }
            let plan = Plan {
                key,
                cert,
                reuse_key: None,
            };
            return Ok(Probe::change(plan, summary.join(", "), None));
        }
        let mut line = format!("issue {} ({})", cert_cur.path, why.join(", "));
        let (key, reuse_key) = match (key_pair, key_pem) {
            (Some(_), Some(pem)) => {
                line += "; key kept";
                let step = keep_step(key_cur, &args.wanted(KEY_MODE), &mut summary)?;
                (step, Some(Secret::new(pem)))
            }
            _ => {
                line += "; new key";
                (Step::Fresh, None)
            }
        };
        if ca.is_none() {
            line = format!("create CA {}, {line}", args.ca_dir);
        }
        summary.insert(0, line);
        let plan = Plan {
            key,
            cert: Step::Fresh,
            reuse_key,
        };
        Ok(Probe::change(plan, summary.join(", "), None))
    }
}

fn ca_result(args: &Args, ca: &Ca) -> Value {
    let mut r = cert_result(args, &ca.cert_pem);
    r["ca_dir"] = ca.dir.display().to_string().into();
    r
}

async fn apply_step(
    cx: &ModuleContext<'_>,
    args: &Args,
    step: Step,
    path: Option<&String>,
    mode: &str,
    fresh: impl FnOnce() -> Option<Vec<u8>>,
) -> Result<(), ModuleError> {
    let plan = match (step, path) {
        (Step::None, _) | (_, None) => return Ok(()),
        (Step::Content(p), _) => p,
        (Step::Fresh, Some(path)) => match fresh() {
            Some(bytes) => content::Plan {
                path: path.clone(),
                action: Action::Write(bytes),
            },
            None => return Ok(()),
        },
    };
    content::apply(cx.host, &plan, &args.write_options(mode)).await?;
    Ok(())
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
            Kind::Ca => {
                let key = ca.key_pem.expose().as_bytes().to_vec();
                apply_step(cx, args, plan.key, args.key.as_ref(), KEY_MODE, || {
                    Some(key)
                })
                .await?;
                let crt = ca.cert_pem.as_bytes().to_vec();
                apply_step(cx, args, plan.cert, args.cert.as_ref(), CERT_MODE, || {
                    Some(crt)
                })
                .await?;
                Ok(Applied::changed(ca_result(args, &ca)))
            }
            Kind::Cert => {
                let spec = args.spec().map_err(ModuleError::Args)?;
                let (key_pair, new_key) = match &plan.reuse_key {
                    Some(pem) => (
                        read_key(pem.expose())
                            .ok_or_else(|| failed("the key on the target is unreadable"))?,
                        None,
                    ),
                    None => {
                        let k = rcgen::KeyPair::generate().map_err(failed)?;
                        let pem = k.serialize_pem();
                        register_key(cx.secrets, &pem);
                        (k, Some(pem.into_bytes()))
                    }
                };
                let issue = matches!(plan.cert, Step::Fresh);
                // The key first: a certificate never names a key that is not there yet.
                apply_step(cx, args, plan.key, args.key.as_ref(), KEY_MODE, || new_key).await?;
                let mut pem = None;
                if issue {
                    pem = Some(ca.sign(&spec, args.validity_days.unwrap_or(365), &key_pair)?);
                }
                let bytes = pem.clone().map(String::into_bytes);
                apply_step(cx, args, plan.cert, args.cert.as_ref(), CERT_MODE, || bytes).await?;
                let pem = match pem {
                    Some(p) => p,
                    None => {
                        let path = args.cert.as_deref().unwrap_or_default();
                        let now = engine::remote::read_file(cx.host, path)
                            .await?
                            .unwrap_or_default();
                        String::from_utf8_lossy(&now).into_owned()
                    }
                };
                Ok(Applied::changed(cert_result(args, &pem)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{mode_of, snapshot, Env};
    use engine::module::Status;
    use serde_json::json;

    fn spec() -> Spec {
        Spec {
            common_name: "api".into(),
            organization: None,
            dns: ["api.local".to_string()].into(),
            ips: ["10.0.0.5".parse().unwrap()].into(),
            key_usage: ["digitalSignature".to_string()].into(),
            ext_key_usage: ["serverAuth".to_string()].into(),
        }
    }

    fn existing() -> Existing {
        Existing {
            spec: spec(),
            is_ca: false,
            not_after: 1000 * DAY,
            signed_by_ca: true,
            spki: vec![1, 2, 3],
        }
    }

    #[test]
    fn keeps_a_matching_certificate_and_names_every_difference() {
        let key = [1u8, 2, 3];
        let r = |have: &Existing, now: i64| reasons(&spec(), Some(have), true, Some(&key), now, 30);
        assert!(r(&existing(), 0).is_empty());
        assert_eq!(reasons(&spec(), None, true, None, 0, 30), ["missing"]);

        let mut other = existing();
        other.spec.ips = ["10.0.0.6".parse().unwrap()].into();
        other.spec.dns.insert("old.local".into());
        other.spec.common_name = "apx".into();
        other.spec.ext_key_usage.insert("clientAuth".into());
        assert_eq!(
            r(&other, 0),
            [
                "common name apx -> api",
                "SAN old.local not wanted",
                "SAN 10.0.0.5 missing",
                "SAN 10.0.0.6 not wanted",
                "extended key usage clientAuth not wanted",
            ]
        );

        assert_eq!(r(&existing(), 990 * DAY), ["expires in 10 days"]);
        assert!(r(&existing(), 969 * DAY).is_empty(), "31 days left is fine");
        assert_eq!(r(&existing(), 1003 * DAY), ["expired 3 days ago"]);

        let mut foreign = existing();
        foreign.signed_by_ca = false;
        assert_eq!(r(&foreign, 0), ["issuer differs"]);
        assert_eq!(
            reasons(&spec(), Some(&existing()), false, Some(&key), 0, 30),
            ["CA not created yet"]
        );
        assert_eq!(
            reasons(&spec(), Some(&existing()), true, Some(&[9]), 0, 30),
            ["key does not match"]
        );
        assert_eq!(
            reasons(&spec(), Some(&existing()), true, None, 0, 30),
            ["key missing or unreadable"]
        );
    }

    fn cert_args(env: &Env, ips: &[&str]) -> Value {
        json!({
            "kind": "cert", "ca_dir": "pki/ca",
            "cert": env.path("server.crt"), "key": env.path("server.key"),
            "common_name": "server", "organization": "lab",
            "dns_names": ["server.lab"], "ip_addresses": ips,
            "extended_key_usage": ["serverAuth", "clientAuth"],
        })
    }

    #[tokio::test]
    async fn issues_keeps_and_reissues_for_a_new_san_keeping_the_key() {
        let env = Env::new();
        let args = cert_args(&env, &["10.0.0.5"]);
        let before = snapshot(env.dir.path());
        let check = env.run(&X509, args.clone(), true).await.unwrap();
        assert_eq!(check.status, Status::Changed);
        let summary = check.summary.unwrap();
        assert!(
            summary.contains("create CA pki/ca") && summary.contains("missing"),
            "{summary}"
        );
        assert_eq!(
            snapshot(env.dir.path()),
            before,
            "check mode wrote nothing anywhere"
        );

        let out = env.apply(&X509, args.clone()).await;
        assert_eq!(out.status, Status::Changed);
        assert_eq!(mode_of(&env.path("server.key")), 0o600);
        assert_eq!(mode_of(&env.path("server.crt")), 0o644);
        assert_eq!(mode_of(&env.path("pki/ca/ca.key")), 0o600);
        let crt = std::fs::read(env.path("server.crt")).unwrap();
        let ca = std::fs::read(env.path("pki/ca/ca.crt")).unwrap();
        let (_, ca_pem) = x509_parser::pem::parse_x509_pem(&ca).unwrap();
        let got = parse_existing(&crt, Some(&ca_pem.contents)).unwrap();
        assert!(got.signed_by_ca);
        assert_eq!(got.spec.ips.len(), 1);
        assert_eq!(out.result["not_after"].as_str().unwrap().len(), 20);

        assert_eq!(env.apply(&X509, args.clone()).await.status, Status::Ok);
        assert_eq!(env.check(&X509, args).await, Status::Ok);

        let key_before = std::fs::read(env.path("server.key")).unwrap();
        let args = cert_args(&env, &["10.0.0.5", "10.0.0.6"]);
        let check = env.run(&X509, args.clone(), true).await.unwrap();
        let summary = check.summary.unwrap();
        assert!(
            summary.contains("SAN 10.0.0.6 missing") && summary.contains("key kept"),
            "{summary}"
        );
        let out = env.apply(&X509, args.clone()).await;
        assert_eq!(out.status, Status::Changed);
        assert_eq!(std::fs::read(env.path("server.key")).unwrap(), key_before);
        assert_ne!(std::fs::read(env.path("server.crt")).unwrap(), crt);
        assert_eq!(env.apply(&X509, args).await.status, Status::Ok);
    }

    #[tokio::test]
    async fn ca_is_installed_and_a_foreign_certificate_is_replaced() {
        let env = Env::new();
        let ca = json!({ "kind": "ca", "ca_dir": "pki/ca", "cert": env.path("ca.crt"), "key": env.path("ca.key") });
        let out = env.apply(&X509, ca.clone()).await;
        assert_eq!(out.status, Status::Changed);
        assert_eq!(
            std::fs::read(env.path("ca.key")).unwrap(),
            std::fs::read(env.path("pki/ca/ca.key")).unwrap()
        );
        assert_eq!(mode_of(&env.path("ca.key")), 0o600);
        assert_eq!(env.apply(&X509, ca.clone()).await.status, Status::Ok);
        std::fs::set_permissions(
            env.path("ca.crt"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let out = env.apply(&X509, ca).await;
        assert!(out.summary.unwrap().contains("mode 600 -> 644"));

        // A certificate from another CA, with its key: issuer differs, the key is kept.
        let args = cert_args(&env, &[]);
        let mut other = args.clone();
        other["ca_dir"] = "pki/other".into();
        env.apply(&X509, other).await;
        let key = std::fs::read(env.path("server.key")).unwrap();
        let out = env.apply(&X509, args.clone()).await;
        let summary = out.summary.unwrap();
        assert!(summary.contains("issuer differs"), "{summary}");
        assert_eq!(std::fs::read(env.path("server.key")).unwrap(), key);
        // A key that does not belong to the certificate.
        std::fs::write(
            env.path("server.key"),
            rcgen::KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        let out = env.apply(&X509, args.clone()).await;
        assert!(out.summary.unwrap().contains("key does not match"));
        assert_eq!(env.apply(&X509, args).await.status, Status::Ok);
    }

    #[tokio::test]
    async fn the_ca_on_the_targets_is_never_replaced_and_is_taken_when_the_controller_lost_it() {
        let env = Env::new();
        let ca = json!({ "kind": "ca", "ca_dir": "pki/ca",
                         "cert": env.path("ca.crt"), "key": env.path("ca.key") });
        assert_eq!(env.apply(&X509, ca.clone()).await.status, Status::Changed);
        let cert = cert_args(&env, &[]);
        assert_eq!(env.apply(&X509, cert.clone()).await.status, Status::Changed);
        let issued = std::fs::read(env.path("server.crt")).unwrap();
        let original = (
            std::fs::read(env.path("pki/ca/ca.crt")).unwrap(),
            std::fs::read(env.path("pki/ca/ca.key")).unwrap(),
        );

        // A run from a fresh clone: the controller has no CA. Check mode takes the target's in
        // memory (nothing is written anywhere) and then finds the certificate signed by it.
        std::fs::remove_dir_all(env.path("pki/ca")).unwrap();
        let before = snapshot(env.dir.path());
        let outcomes = env
            .run_all(&[(&X509, ca.clone()), (&X509, cert.clone())], true, false)
            .await;
        let statuses: Vec<_> = outcomes
            .iter()
            .map(|o| o.as_ref().unwrap().status.clone())
            .collect();
        assert_eq!(statuses, [Status::Ok, Status::Ok]);
        assert_eq!(snapshot(env.dir.path()), before, "check mode wrote nothing");
        // The real run takes it onto the controller: the same CA, nothing re-issued.
        assert_eq!(env.apply(&X509, ca.clone()).await.status, Status::Ok);
        assert_eq!(env.apply(&X509, cert.clone()).await.status, Status::Ok);
        assert_eq!(
            std::fs::read(env.path("pki/ca/ca.crt")).unwrap(),
            original.0
        );
        assert_eq!(
            std::fs::read(env.path("pki/ca/ca.key")).unwrap(),
            original.1
        );
        assert_eq!(std::fs::read(env.path("server.crt")).unwrap(), issued);

        // The controller holds another CA: refused, naming the host and the file; the target
        // keeps its CA. `replace: true` installs the controller's on purpose.
        let mut other = ca.clone();
        other["ca_dir"] = "pki/other".into();
        other["cert"] = env.path("other.crt").into();
        other["key"] = env.path("other.key").into();
        env.apply(&X509, other).await;
        std::fs::remove_dir_all(env.path("pki/ca")).unwrap();
        std::fs::rename(env.path("pki/other"), env.path("pki/ca")).unwrap();
        for check in [true, false] {
            let e = env
                .run(&X509, ca.clone(), check)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("has another CA than the controller's pki/ca")
                    && e.contains(&env.path("ca.crt")),
                "{e}"
            );
        }
        assert_eq!(std::fs::read(env.path("ca.crt")).unwrap(), original.0);
        let mut replace = ca.clone();
        replace["replace"] = true.into();
        assert_eq!(env.apply(&X509, replace).await.status, Status::Changed);
        assert_ne!(std::fs::read(env.path("ca.crt")).unwrap(), original.0);

        // A target with a CA certificate but not its key, and no CA on the controller: nothing
        // to take, so refused rather than made anew; a certificate task likewise.
        std::fs::remove_dir_all(env.path("pki/ca")).unwrap();
        let cert_only = json!({ "kind": "ca", "ca_dir": "pki/ca", "cert": env.path("ca.crt") });
        // (A real run: this process's check runs above took the old CA in memory.)
        let e = env
            .run(&X509, cert_only, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("the controller has no CA in pki/ca"), "{e}");
        let e = env.run(&X509, cert, false).await.unwrap_err().to_string();
        assert!(e.contains("holds a certificate at"), "{e}");
        assert!(!env.dir.path().join("pki/ca").exists(), "no CA was made");
    }

    #[tokio::test]
    async fn the_private_key_never_appears_in_output() {
        let env = Env::new();
        let args = cert_args(&env, &["10.0.0.5"]);
        let mut shown = Vec::new();
        let mut record = |o: &engine::module::Outcome| {
            shown.push(format!(
                "{:?} {:?} {:?} {}",
                o.status, o.summary, o.diff, o.result
            ));
        };
        record(&env.run(&X509, args.clone(), true).await.unwrap());
        record(&env.apply(&X509, args.clone()).await);
        record(&env.apply(&X509, cert_args(&env, &["10.0.0.7"])).await);
        std::fs::write(
            env.path("server.key"),
            "-----BEGIN PRIVATE KEY-----\nnot really a key\n",
        )
        .unwrap();
        record(&env.apply(&X509, args.clone()).await);
        let ca = json!({ "kind": "ca", "ca_dir": "pki/ca", "key": env.path("ca.key") });
        record(&env.run(&X509, ca.clone(), true).await.unwrap());
        record(&env.apply(&X509, ca).await);
        let keys = [
            std::fs::read_to_string(env.path("server.key")).unwrap(),
            std::fs::read_to_string(env.path("pki/ca/ca.key")).unwrap(),
        ];
        let all = shown.join("\n");
        for k in keys {
            for line in k.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!all.contains(line), "key text in output: {all}");
            }
        }
        assert!(!all.contains("not really a key"));
        assert!(!all.contains("PRIVATE KEY"), "{all}");
    }

    #[tokio::test]
    async fn argument_errors() {
        let env = Env::new();
        let err = env
            .error(
                &X509,
                json!({ "kind": "cert", "ca_dir": "x", "cert": "/a", "key": "/b" }),
            )
            .await;
        assert!(err.contains("common_name"), "{err}");
        let err = env
            .error(&X509, json!({ "kind": "cert", "ca_dir": "x", "cert": "/a", "key": "/b", "common_name": "c", "ip_addresses": ["nope"] }))
            .await;
        assert!(err.contains("not an IP address"), "{err}");
        let err = env
            .error(&X509, json!({ "kind": "cert", "ca_dir": "x", "cert": "/a", "key": "/b", "common_name": "c", "key_usage": ["sign"] }))
            .await;
        assert!(err.contains("keyCertSign"), "{err}");
        let err = env
            .error(
                &X509,
                json!({ "kind": "ca", "ca_dir": "x", "dns_names": ["a"] }),
            )
            .await;
        assert!(err.contains("not used"), "{err}");
        let err = env
            .error(&X509, json!({ "kind": "leaf", "ca_dir": "x" }))
            .await;
        assert!(err.contains("kind"), "{err}");
        let err = env
            .error(&X509, json!({ "kind": "cert", "ca_dir": "x", "cert": "/a", "key": "/b", "common_name": "c", "validity_days": 10 }))
            .await;
        assert!(err.contains("renew_before_days"), "{err}");
    }
}
