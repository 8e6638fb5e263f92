//! `reset`: wipes what kubeadm left on a node.

use engine::host::quote;
use engine::{Applied, ModuleContext, ModuleError, Probe};
use serde_json::json;

use super::{ran, Kubeadm, Plan, INIT_CONFIG, JOIN_CONFIG};

impl Kubeadm {
    pub(super) async fn probe_reset(&self, cx: &ModuleContext<'_>) -> Result<Probe<Plan>, ModuleError> {
        let state = self.state(cx, false).await?;
        let anything = state.admin_conf
            || state.kubelet_conf
            || state.kubelet_config
            || state.ca_key
            || state.manifests;
        if !anything {
            return Ok(Probe::Unchanged(json!({ "msg": "nothing to reset" })));
        }
        let summary = ran(cx, "kubeadm reset -f");
        Ok(Probe::change(Plan::Reset, summary, None))
    }

    pub(super) async fn apply_reset(&self, cx: &ModuleContext<'_>) -> Result<Applied, ModuleError> {
        let cmd: Vec<String> = vec!["reset".into(), "-f".into()];
        self.run(cx, &cmd, &[]).await?;
        let script = format!(
            "rm -f -- {} {}",
            quote(&self.path(INIT_CONFIG))?,
            quote(&self.path(JOIN_CONFIG))?
        );
        cx.host.run(&script).await?;
        Ok(Applied::changed(json!({
            "msg": "reset: kubeadm reset -f (CNI configuration and iptables rules are \
                    not cleaned by kubeadm)"
        })))
    }
}
