//! `init`: the first control-plane node, or fresh join values where it is initialised.

use engine::host::quote;
use engine::{Applied, ModuleContext, ModuleError, Probe};
use serde_json::json;

use super::build::{init_command, init_config};
use super::config::{Config, Purpose};
use super::tokens::Fresh;
use super::{ran, Args, JoinInfo, Kubeadm, Plan, ADMIN_CONF, INIT_CONFIG};

impl Kubeadm {

    /// The HTTP status of `https://ENDPOINT/healthz` as the node sees it, when anything answers
    /// there (None when nothing does, or the node has no curl to ask with).
    pub(super) async fn endpoint_answers(
        &self,
        cx: &ModuleContext<'_>,
        endpoint: &str,
    ) -> Result<Option<u16>, ModuleError> {
        let url = quote(&format!("https://{endpoint}/healthz"))?;
        let script = format!(
            "if command -v curl >/dev/null 2>&1; then \
             curl -sk --connect-timeout 3 --max-time 5 -o /dev/null -w '%{{http_code}}' {url}; \
             fi; exit 0\n"
        );
        let out = cx.host.run(&script).await?;
        Ok(out
            .stdout_text()
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|code| *code != 0))
    }

    pub(super) async fn probe_init(
        &self,
        args: &Args,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<Plan>, ModuleError> {
        // The configuration is built (or rendered) and checked before the host is touched.
        let config = init_config(args, cx)?;
        let parsed = Config::parse(&config, Purpose::Init).map_err(ModuleError::Failed)?;
        let secrets = parsed.secrets();
        for s in &secrets {
            cx.secrets.add(s);
        }
        let cluster = parsed.cluster();
        let init = parsed.init();
        let endpoint = cluster
            .and_then(|c| c.control_plane_endpoint.clone())
            .or_else(|| {
                let ep = init.and_then(|i| i.local_api_endpoint.as_ref())?;
                Some(format!(
                    "{}:{}",
                    ep.advertise_address.as_ref()?,
                    ep.bind_port.unwrap_or(6443)
                ))
            });
        let base = JoinInfo {
            api_endpoint: endpoint,
            kubernetes_version: cluster.and_then(|c| c.kubernetes_version.clone()),
            certificate_key: init.and_then(|i| i.certificate_key.clone()),
            ..Default::default()
        };
        let state = self.state(cx, false).await?;
        if let Some(by) = state.initialised_by() {
            let mut msg = format!("already initialised ({by} exists)");
            if state
                .init_config_sha
                .as_deref()
                .is_some_and(|s| s != crate::shared::inspect::sha256(config.as_bytes()))
            {
                msg += &format!(
                    "; note: the configuration differs from {INIT_CONFIG}, and kubeadm does not \
                     reconfigure an initialised node"
                );
            }
            let unchanged = |note: String| {
                let info = JoinInfo {
                    certificate_key: None,
                    ..base.clone()
                };
                Ok(Probe::Unchanged(info.result(
                    json!({ "initialised": true, "msg": format!("{msg}{note}") }),
                )))
            };
            if args.refresh_join_info == Some(false) {
                return unchanged("; join values not refreshed (refresh_join_info: false)".into());
            }
            if !state.admin_conf {
                return unchanged(format!("; no {ADMIN_CONF}, so no join values"));
            }
            let certs = args.upload_certs != Some(false);
            let what = if certs {
                "a fresh join token and certificate key"
            } else {
                "a fresh join token"
            };
            let summary = format!("{msg}: create {what}");
            let fresh = Fresh {
                token: true,
                certs,
                ttl: None,
                base: JoinInfo {
                    certificate_key: None,
                    ..base
                },
                extra: json!({ "initialised": true, "msg": format!("{msg}; created {what}") }),
            };
            return Ok(Probe::change(Plan::Fresh(fresh), summary, None));
        }
        if let Some(endpoint) = &base.api_endpoint {
            if let Some(status) = self.endpoint_answers(cx, endpoint).await? {
                return Err(ModuleError::Failed(format!(
                    "refusing kubeadm init on {}: an API server already answers at {endpoint} \
                     (https /healthz: HTTP {status}), so a cluster runs behind this endpoint and \
                     init would start a second one. If this node was rebuilt, join it to that \
                     cluster as a control-plane node instead (in the shipped playbooks: list a \
                     master that still runs the cluster first in the group masters); if the \
                     endpoint is meant for a new cluster, stop what answers there first",
                    cx.host.name
                )));
            }
        }
        let cmd = init_command(args, &self.path(INIT_CONFIG));
        let summary = ran(cx, &format!("kubeadm {}", cmd.join(" ")));
        let diff = self.diff(cx, &self.path(INIT_CONFIG), &config, &secrets);
        Ok(Probe::change(
            Plan::Init { config, info: base },
            summary,
            diff,
        ))
    }

    pub(super) async fn apply_init(
        &self,
        args: &Args,
        config: String,
        base: JoinInfo,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        let secrets = base.secrets();
        self.write_config(cx, &self.path(INIT_CONFIG), &config)
            .await?;
        let cmd = init_command(args, &self.path(INIT_CONFIG));
        let out = self.run(cx, &cmd, &secrets).await?;
        let printed = JoinInfo::parse(&out);
        printed.register(cx);
        let mut info = JoinInfo {
            api_endpoint: printed.api_endpoint.or(base.api_endpoint),
            token: printed.token,
            ca_cert_hash: printed.ca_cert_hash,
            certificate_key: printed.certificate_key.or(base.certificate_key),
            kubernetes_version: base.kubernetes_version,
        };
        let uploads = args.upload_certs != Some(false);
        if info.token.is_none() || (uploads && info.certificate_key.is_none()) {
            // kubeadm printed no usable join command (e.g. --skip-token-print): make fresh ones.
            let fresh = self
                .fresh_values(
                    cx,
                    None,
                    info.token.is_none(),
                    uploads && info.certificate_key.is_none(),
                )
                .await?;
            info.api_endpoint = info.api_endpoint.or(fresh.api_endpoint);
            info.token = info.token.or(fresh.token);
            info.ca_cert_hash = info.ca_cert_hash.or(fresh.ca_cert_hash);
            info.certificate_key = info.certificate_key.or(fresh.certificate_key);
        }
        let msg = format!(
            "initialised the control plane at {}",
            info.api_endpoint.as_deref().unwrap_or("(unknown endpoint)")
        );
        Ok(Applied::changed(
            info.result(json!({ "initialised": true, "msg": msg })),
        ))
    }
}
