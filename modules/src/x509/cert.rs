//! The `kind: cert` task: a certificate signed by the CA, and its key, on the target.

use engine::secret::Secret;
use engine::{Applied, ModuleContext, ModuleError, Probe};

use super::keys::*;
use super::spec::*;
use super::target::*;
use super::{Args, Ca, Plan, Step, CERT_MODE, KEY_MODE, X509};

impl X509 {
    pub(super) async fn probe_cert(
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
        if args.force && why.is_empty() {
            why.push("force".into());
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

    pub(super) async fn apply_cert(
        &self,
        args: &Args,
        plan: Plan,
        ca: &Ca,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
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
