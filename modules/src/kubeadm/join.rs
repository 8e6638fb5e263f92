//! `join`: a control-plane node or a worker joins the cluster.

use engine::host::quote;
use engine::{Applied, ModuleContext, ModuleError, Probe};
use serde_json::json;

use super::build::{join_command, join_config};
use super::config::{ApiVersion, Config, Purpose};
use super::{ran, scrub, Args, JoinInfo, Kubeadm, Plan, JOIN_CONFIG, KUBELET_CONF};

impl Kubeadm {
    pub(super) async fn probe_join(
        &self,
        args: &Args,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<Plan>, ModuleError> {
        let cp = args.control_plane == Some(true);
        let mut info = match &args.from {
            Some(v) => JoinInfo::from_value(v).map_err(ModuleError::Args)?,
            None => JoinInfo::default(),
        };
        info.api_endpoint = args.api_endpoint.clone().or(info.api_endpoint);
        info.token = args.token.clone().or(info.token);
        info.ca_cert_hash = args.ca_cert_hash.clone().or(info.ca_cert_hash);
        info.certificate_key = args.certificate_key.clone().or(info.certificate_key);
        info.kubernetes_version = args.kubernetes_version.clone().or(info.kubernetes_version);
        info.register(cx);
        // A template is rendered and checked before the host is touched.
        let template = match &args.config_template {
            Some(t) => {
                let text = cx.templates.render_file(t)?;
                let parsed = Config::parse(&text, Purpose::Join).map_err(|e| {
                    ModuleError::Failed(format!("{t}: {}", scrub(&e, &info.secrets())))
                })?;
                for s in parsed.secrets() {
                    cx.secrets.add(&s);
                }
                Some((text, parsed))
            }
            None => None,
        };
        let state = self
            .state(cx, template.is_none() && info.kubernetes_version.is_none())
            .await?;
        if state.kubelet_conf {
            return Ok(Probe::Unchanged(json!({
                "joined": true,
                "msg": format!("already joined ({KUBELET_CONF} exists)"),
            })));
        }
        let (config, secrets, display) = match template {
            Some((text, parsed)) => {
                let j = parsed.join().expect("checked: has a JoinConfiguration");
                let cp = j.control_plane.is_some();
                let has_key = j
                    .control_plane
                    .as_ref()
                    .is_some_and(|c| c.certificate_key.is_some());
                if cp && !has_key && !state.ca_key {
                    return Err(missing_key());
                }
                let ep = j
                    .discovery
                    .bootstrap_token
                    .as_ref()
                    .and_then(|b| b.api_server_endpoint.clone())
                    .unwrap_or_else(|| "(discovery file)".into());
                (text, parsed.secrets(), join_display(&ep, cp))
            }
            None => {
                let ep = info.api_endpoint.clone();
                let display = join_display(ep.as_deref().unwrap_or("(endpoint not known yet)"), cp);
                let missing: Vec<&str> = [
                    ("api_endpoint", info.api_endpoint.is_none()),
                    ("token", info.token.is_none()),
                    ("ca_cert_hash", info.ca_cert_hash.is_none()),
                ]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(n, _)| *n)
                .collect();
                if !missing.is_empty() {
                    if cx.check {
                        return Ok(Probe::change(
                            Plan::Unknown,
                            format!(
                                "would run {display} (the join values are not known in check mode)"
                            ),
                            None,
                        ));
                    }
                    return Err(ModuleError::Args(format!(
                        "join needs {} (give them, or `from` the init task)",
                        missing.join(", ")
                    )));
                }
                if cp && info.certificate_key.is_none() && !state.ca_key {
                    if cx.check {
                        return Ok(Probe::change(
                            Plan::Unknown,
                            format!("would run {display} (the certificate key is not known in check mode)"),
                            None,
                        ));
                    }
                    return Err(missing_key());
                }
                let version =
                    match info.kubernetes_version.clone().or(state.version.clone()) {
                        Some(v) => v,
                        None => return Err(ModuleError::Failed(
                            "join: give kubernetes_version (kubeadm version on the node did not \
                             answer)"
                                .into(),
                        )),
                    };
                let api = ApiVersion::for_kubernetes(&version).map_err(ModuleError::Args)?;
                let text = join_config(args, &info, api).map_err(ModuleError::Args)?;
                Config::parse(&text, Purpose::Join)
                    .map_err(|e| ModuleError::Failed(scrub(&e, &info.secrets())))?;
                (text, info.secrets(), display)
            }
        };
        let summary = ran(cx, &display);
        let diff = self.diff(cx, &self.path(JOIN_CONFIG), &config, &secrets);
        Ok(Probe::change(Plan::Join { config, display }, summary, diff))
    }

    pub(super) async fn apply_join(
        &self,
        args: &Args,
        config: String,
        display: String,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        let path = self.path(JOIN_CONFIG);
        self.write_config(cx, &path, &config).await?;
        let cmd = join_command(args, &path);
        // The file holds the token and the certificate key: removed whatever the outcome.
        let script = format!(
            "{}\nrc=$?\nrm -f -- {}\nexit $rc\n",
            self.command(&cmd).map_err(ModuleError::Args)?,
            quote(&path)?
        );
        let out = cx.host.run(&script).await?;
        let secrets = Config::parse(&config, Purpose::Join)
            .map(|c| c.secrets())
            .unwrap_or_default();
        if !out.success() {
            let mut msg = format!("{display} failed with rc {}", out.status);
            for (name, text) in [("stderr", out.stderr_text()), ("stdout", out.stdout_text())] {
                let lines: Vec<&str> = text.trim().lines().collect();
                if !lines.is_empty() {
                    let tail = &lines[lines.len().saturating_sub(15)..];
                    msg += &format!("\n{name}:\n{}", tail.join("\n"));
                }
            }
            return Err(ModuleError::Failed(scrub(&msg, &secrets)));
        }
        Ok(Applied::changed(json!({
            "joined": true,
            "control_plane": args.control_plane == Some(true),
            "msg": format!("joined: {display}"),
        })))
    }
}

fn missing_key() -> ModuleError {
    ModuleError::Args(format!(
        "a control-plane join needs `certificate_key` (from init with upload_certs, or action \
         \"upload_certs\" on a master) unless the shared certificates were copied to {}",
        "/etc/kubernetes/pki"
    ))
}

fn join_display(endpoint: &str, cp: bool) -> String {
    format!(
        "kubeadm join {endpoint}{}",
        if cp { " (control plane)" } else { "" }
    )
}
