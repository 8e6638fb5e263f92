//! The CA on the controller (taken from a target that holds its key when the controller has
//! none), and the `kind: ca` task that installs it on targets.

use std::path::{Path, PathBuf};

use engine::secret::{Redactor, Secret};
use engine::{Applied, ModuleContext, ModuleError, Probe};
use serde_json::Value;

use super::keys::*;
use super::spec::*;
use super::target::*;
use crate::shared::content;
use crate::shared::inspect::Current;

use super::{Args, Plan, Step, CERT_MODE, KEY_MODE, X509};

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
    pub(super) fn sign(
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

impl X509 {
    pub(super) async fn probe_ca(
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

    pub(super) async fn apply_ca(
        &self,
        args: &Args,
        plan: Plan,
        ca: &Ca,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
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
        Ok(Applied::changed(ca_result(args, ca)))
    }
}

pub(super) fn ca_result(args: &Args, ca: &Ca) -> Value {
    let mut r = cert_result(args, &ca.cert_pem);
    r["ca_dir"] = ca.dir.display().to_string().into();
    r
}
