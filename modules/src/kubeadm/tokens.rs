//! Join values made in the cluster (`token`, `upload_certs`, and init's refresh) and deleted
//! after the joins (`delete_tokens`).

use std::collections::BTreeSet;

use engine::host::quote;
use engine::{Applied, ModuleContext, ModuleError, Probe};
use serde_json::{json, Value};

use super::config;
use super::{Action, Args, JoinInfo, Kubeadm, Plan, INIT_CONFIG};

/// A bootstrap token and/or a certificate key to make: each is a new credential in the cluster
/// (a Secret in kube-system), so making one is a change, made by apply and never by probe.
pub struct Fresh {
    pub(super) token: bool,
    pub(super) certs: bool,
    pub(super) ttl: Option<String>,
    /// The values known before (init's endpoint and version); fresh ones win.
    pub(super) base: JoinInfo,
    /// The result's `msg` (and `initialised` for init).
    pub(super) extra: Value,
}

impl Kubeadm {
    /// The bootstrap tokens `from`'s results carry (init's, each `token` task's) that the cluster
    /// still has: a token outlives the joins it was made for by up to 24 hours, and anyone who
    /// saw it could join a node meanwhile.
    pub(super) async fn probe_delete_tokens(
        &self,
        args: &Args,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<Plan>, ModuleError> {
        let from = args.from.clone().unwrap_or(Value::Null);
        let items: Vec<&Value> = match &from {
            Value::Array(items) => items.iter().collect(),
            v => vec![v],
        };
        // A null result is one check mode does not know: its task would make the token.
        if cx.check && items.iter().any(|i| i.is_null()) {
            return Ok(Probe::change(
                Plan::Unknown,
                "would delete the bootstrap tokens made above (not known in check mode)",
                None,
            ));
        }
        let made: BTreeSet<String> = items
            .iter()
            .filter_map(|i| i.get("token")?.as_str())
            .filter(|t| config::is_token(t))
            .filter_map(|t| t.split('.').next().map(str::to_string))
            .collect();
        if made.is_empty() {
            return Ok(Probe::Unchanged(
                json!({ "msg": "no bootstrap token was made by this run" }),
            ));
        }
        let listed = self.run(cx, &["token".into(), "list".into()], &[]).await?;
        // `kubeadm token list` prints the whole token first on each line: keep only its ID.
        let present: BTreeSet<String> = listed
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.split_once('.'))
            .map(|(id, _)| id.to_string())
            .collect();
        let ids: Vec<String> = made.intersection(&present).cloned().collect();
        if ids.is_empty() {
            return Ok(Probe::Unchanged(
                json!({ "msg": "the bootstrap tokens this run made are gone already" }),
            ));
        }
        let summary = format!("delete {} bootstrap token(s) this run made", ids.len());
        Ok(Probe::change(Plan::DeleteTokens(ids), summary, None))
    }

    /// A fresh token (with the join command's endpoint and CA hash) and, when asked, a fresh
    /// certificate key.
    pub(super) async fn fresh_values(
        &self,
        cx: &ModuleContext<'_>,
        token_ttl: Option<&str>,
        token: bool,
        certs: bool,
    ) -> Result<JoinInfo, ModuleError> {
        let mut info = JoinInfo::default();
        if token {
            let mut a: Vec<String> = vec![
                "token".into(),
                "create".into(),
                "--print-join-command".into(),
            ];
            if let Some(t) = token_ttl {
                a.push(format!("--ttl={t}"));
            }
            let out = self.run(cx, &a, &[]).await?;
            let parsed = JoinInfo::parse(&out);
            parsed.register(cx);
            if parsed.token.is_none() {
                return Err(ModuleError::Failed(
                    "kubeadm token create printed no join command".into(),
                ));
            }
            info = parsed;
        }
        if certs {
            // With the init configuration where this node has it, as kubespray does: without it
            // kubeadm assumes stacked etcd and leaves the external etcd client files out of the
            // Secret, and every control-plane join then fails (kubeadm#1886).
            let config = self.path(INIT_CONFIG);
            let plain: Vec<String> = ["init", "phase", "upload-certs", "--upload-certs"]
                .map(String::from)
                .to_vec();
            let mut with_config = plain.clone();
            with_config.extend(["--config".to_string(), config.clone()]);
            let script = format!(
                "if [ -f {} ]; then {}; else {}; fi\n",
                quote(&config)?,
                self.command(&with_config).map_err(ModuleError::Args)?,
                self.command(&plain).map_err(ModuleError::Args)?
            );
            let what = format!("{} [--config {config}]", plain.join(" "));
            let out = self.run_script(cx, &what, &script, &info.secrets()).await?;
            let parsed = JoinInfo::parse(&out);
            parsed.register(cx);
            match parsed.certificate_key {
                Some(k) => info.certificate_key = Some(k),
                None => {
                    return Err(ModuleError::Failed(
                        "kubeadm init phase upload-certs printed no certificate key".into(),
                    ))
                }
            }
        }
        Ok(info)
    }

    pub(super) async fn apply_fresh(
        &self,
        f: Fresh,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        let made = self
            .fresh_values(cx, f.ttl.as_deref(), f.token, f.certs)
            .await?;
        let info = JoinInfo {
            api_endpoint: made.api_endpoint.or(f.base.api_endpoint),
            kubernetes_version: f.base.kubernetes_version,
            ..made
        };
        Ok(Applied::changed(info.result(f.extra)))
    }

    pub(super) async fn apply_delete_tokens(
        &self,
        ids: Vec<String>,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        let mut cmd: Vec<String> = vec!["token".into(), "delete".into()];
        cmd.extend(ids.iter().cloned());
        self.run(cx, &cmd, &[]).await?;
        Ok(Applied::changed(json!({
            "msg": format!("deleted {} bootstrap token(s) this run made", ids.len()),
            "deleted": ids,
        })))
    }
}

/// `token` and `upload_certs` always make a new credential: there is nothing to read first.
pub(super) fn probe_fresh(args: &Args) -> Probe<Plan> {
    let token = args.action == Action::Token;
    let (summary, msg) = if token {
        let ttl = args.ttl.as_deref().unwrap_or("24h");
        (
            format!("create a bootstrap token (valid for {ttl})"),
            format!("created a bootstrap token (valid for {ttl})"),
        )
    } else {
        (
            "upload the control-plane certificates with a new certificate key".to_string(),
            "uploaded the control-plane certificates; the certificate key is valid for 2 hours"
                .to_string(),
        )
    };
    let fresh = Fresh {
        token,
        certs: !token,
        ttl: args.ttl.clone(),
        base: JoinInfo::default(),
        extra: json!({ "msg": msg }),
    };
    Probe::change(Plan::Fresh(fresh), summary, None)
}
