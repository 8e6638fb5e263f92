//! The arguments, and which of them each action takes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{self, ApiEndpoint, ApiVersion, ExtraArgs, NodeRegistration, Taint};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Init,
    Join,
    Token,
    UploadCerts,
    DeleteTokens,
    Reset,
}

impl Action {
    #[cfg(test)]
    pub(super) const ALL: [Action; 6] = [
        Action::Init,
        Action::Join,
        Action::Token,
        Action::UploadCerts,
        Action::DeleteTokens,
        Action::Reset,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Action::Init => "init",
            Action::Join => "join",
            Action::Token => "token",
            Action::UploadCerts => "upload_certs",
            Action::DeleteTokens => "delete_tokens",
            Action::Reset => "reset",
        }
    }
}

/// An external etcd cluster (`etcd.external`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdExternal {
    /// Client URLs of the members (`https://10.0.0.21:2379`).
    pub endpoints: Vec<String>,
    /// CA that signed the members' server certificates.
    pub ca_file: Option<String>,
    /// Client certificate and key of the apiservers.
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

// Serialize: which fields were given is read from the serialised form (`given`).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// What to do: "init", "join", "token", "upload_certs", "delete_tokens" or "reset".
    pub action: Action,
    /// Kubernetes version ("1.31.2"); chooses the config API: 1.31+ → kubeadm.k8s.io/v1beta4,
    /// 1.22–1.30 → v1beta3, older is refused. init: required unless `config_template`.
    /// join: default from `from`, else `kubeadm version` on the node.
    pub kubernetes_version: Option<String>,
    /// A template (relative to the playbook) rendering the whole kubeadm config file instead of
    /// the fields below. It is parsed and checked before anything is written.
    pub config_template: Option<String>,
    /// init: the stable address of the control plane (`VIP:port`).
    pub control_plane_endpoint: Option<String>,
    /// init, control-plane join: this node's apiserver address (`localAPIEndpoint`).
    pub advertise_address: Option<String>,
    /// init, control-plane join: this node's apiserver port (default 6443).
    pub bind_port: Option<u16>,
    /// init, join: the node's name (`nodeRegistration.name`).
    pub node_name: Option<String>,
    /// init, join: the CRI socket (`unix:///run/containerd/containerd.sock`).
    pub cri_socket: Option<String>,
    /// init, join: node taints, each `{key, value, effect}`.
    pub taints: Option<Vec<Taint>>,
    /// init, join: extra kubelet flags, name → value.
    pub kubelet_extra_args: Option<BTreeMap<String, Value>>,
    /// init: `networking.podSubnet`.
    pub pod_subnet: Option<String>,
    /// init: `networking.serviceSubnet`.
    pub service_subnet: Option<String>,
    /// init: `networking.dnsDomain`.
    pub dns_domain: Option<String>,
    /// init: extra names and addresses in the apiserver certificate (the VIP, every master).
    pub cert_sans: Option<Vec<String>>,
    /// init: extra kube-apiserver flags, name → value.
    pub api_server_extra_args: Option<BTreeMap<String, Value>>,
    /// init: extra kube-controller-manager flags.
    pub controller_manager_extra_args: Option<BTreeMap<String, Value>>,
    /// init: extra kube-scheduler flags.
    pub scheduler_extra_args: Option<BTreeMap<String, Value>>,
    /// init: use this external etcd cluster instead of stacked etcd.
    pub etcd_external: Option<EtcdExternal>,
    /// init: `clusterName`.
    pub cluster_name: Option<String>,
    /// init: `imageRepository`.
    pub image_repository: Option<String>,
    /// init: pass `--upload-certs` (default true) so control-plane nodes can join with the
    /// certificate key.
    pub upload_certs: Option<bool>,
    /// init on an already initialised node: create a fresh token and certificate key so the
    /// result still carries join values (default true).
    pub refresh_join_info: Option<bool>,
    /// init, join: preflight checks whose errors become warnings (`--ignore-preflight-errors`).
    pub ignore_preflight_errors: Option<Vec<String>>,
    /// join: the result of the `init` task (or a list of results, e.g. of `token` and
    /// `upload_certs`, merged in order); explicit fields below win.
    pub from: Option<Value>,
    /// join: the API endpoint to join (`VIP:port`).
    pub api_endpoint: Option<String>,
    /// join: the bootstrap token (a secret).
    pub token: Option<String>,
    /// join: the discovery-token-ca-cert-hash (`sha256:…`).
    pub ca_cert_hash: Option<String>,
    /// join: join as a control-plane node (default false).
    pub control_plane: Option<bool>,
    /// init: the key to encrypt the uploaded certificates with (default: kubeadm makes one).
    /// join: the key to download them with (a secret).
    pub certificate_key: Option<String>,
    /// token: the token's lifetime (kubeadm's default 24h).
    pub ttl: Option<String>,
    /// reset: must be true.
    pub confirm: Option<bool>,
}

/// True when a value is still a template (plan time): its checks wait for the rendered value.
pub fn templated(s: &str) -> bool {
    engine::template::is_template(s)
}

fn flag_text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!(
            "a flag value must be a string, number or bool, not {other}"
        )),
    }
}

pub(super) fn flags(
    map: &Option<BTreeMap<String, Value>>,
    field: &str,
) -> Result<Option<BTreeMap<String, String>>, String> {
    let Some(map) = map else { return Ok(None) };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let name = k.trim_start_matches('-');
        if name.is_empty() || name.contains(char::is_whitespace) || name.contains('=') {
            return Err(format!("{field}: {k:?} is not a flag name"));
        }
        out.insert(
            name.to_string(),
            flag_text(v).map_err(|e| format!("{field}.{k}: {e}"))?,
        );
    }
    Ok(Some(out))
}

/// Which actions take each field, and whether it only builds a config (then it cannot be
/// combined with `config_template`), in the order Args declares them. The DOC's table says the
/// same; a test checks.
const FIELDS: &[(&str, &[Action], Builds)] = {
    use Action::*;
    use Builds::{Config, No};
    &[
        ("kubernetes_version", &[Init, Join], No),
        ("config_template", &[Init, Join], No),
        ("control_plane_endpoint", &[Init], Config),
        ("advertise_address", &[Init, Join], Config),
        ("bind_port", &[Init, Join], Config),
        ("node_name", &[Init, Join], Config),
        ("cri_socket", &[Init, Join], Config),
        ("taints", &[Init, Join], Config),
        ("kubelet_extra_args", &[Init, Join], Config),
        ("pod_subnet", &[Init], Config),
        ("service_subnet", &[Init], Config),
        ("dns_domain", &[Init], Config),
        ("cert_sans", &[Init], Config),
        ("api_server_extra_args", &[Init], Config),
        ("controller_manager_extra_args", &[Init], Config),
        ("scheduler_extra_args", &[Init], Config),
        ("etcd_external", &[Init], Config),
        ("cluster_name", &[Init], Config),
        ("image_repository", &[Init], Config),
        ("upload_certs", &[Init], No),
        ("refresh_join_info", &[Init], No),
        ("ignore_preflight_errors", &[Init, Join], No),
        ("from", &[Join, DeleteTokens], No),
        ("api_endpoint", &[Join], No),
        ("token", &[Join], No),
        ("ca_cert_hash", &[Join], No),
        ("control_plane", &[Join], No),
        ("certificate_key", &[Init, Join], No),
        ("ttl", &[Token], No),
        ("confirm", &[Reset], No),
    ]
};

#[derive(PartialEq)]
enum Builds {
    /// Only builds the config file: `config_template` writes the whole file instead.
    Config,
    No,
}

impl Args {
    /// The names of the fields given (besides `action`), in their declared order.
    fn given(&self) -> Vec<&'static str> {
        let set = serde_json::to_value(self).expect("arguments serialise");
        engine::fields::struct_fields::<Args>()
            .iter()
            .copied()
            .filter(|f| *f != "action" && !set[f].is_null())
            .collect()
    }

    /// The fields `action` takes besides `action` itself.
    pub(super) fn allowed(action: Action) -> Vec<&'static str> {
        FIELDS
            .iter()
            .filter(|(_, actions, _)| actions.contains(&action))
            .map(|(name, ..)| *name)
            .collect()
    }

    pub(super) fn check(&self) -> Result<(), String> {
        let allowed = Args::allowed(self.action);
        for f in self.given() {
            if !allowed.contains(&f) {
                return Err(format!(
                    "`{f}` is not used by action \"{}\"{}",
                    self.action.name(),
                    if allowed.is_empty() {
                        String::new()
                    } else {
                        format!(" (it takes {})", allowed.join(", "))
                    }
                ));
            }
        }
        if self.config_template.is_some() {
            let builds = |f: &&str| {
                FIELDS
                    .iter()
                    .any(|(name, _, b)| name == f && *b == Builds::Config)
            };
            if let Some(f) = self.given().into_iter().find(builds) {
                return Err(format!(
                    "`{f}` cannot be combined with config_template: the template writes the \
                     whole configuration"
                ));
            }
        }
        if let Some(v) = self.kubernetes_version.as_deref().filter(|v| !templated(v)) {
            ApiVersion::for_kubernetes(v)?;
        }
        for e in self.ignore_preflight_errors.iter().flatten() {
            let ok = !e.is_empty()
                && e.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !ok && !templated(e) {
                return Err(format!(
                    "ignore_preflight_errors: {e:?} is not a preflight check name \
                     (e.g. \"Swap\", \"NumCPU\", \"all\")"
                ));
            }
        }
        for (field, m) in [
            ("kubelet_extra_args", &self.kubelet_extra_args),
            ("api_server_extra_args", &self.api_server_extra_args),
            (
                "controller_manager_extra_args",
                &self.controller_manager_extra_args,
            ),
            ("scheduler_extra_args", &self.scheduler_extra_args),
        ] {
            flags(m, field)?;
        }
        if let Some(k) = &self.certificate_key {
            config::check_certificate_key(k).map_err(|e| format!("certificate_key: {e}"))?;
        }
        if let Some(t) = &self.token {
            config::check_token(t).map_err(|e| format!("token: {e}"))?;
        }
        if let Some(h) = &self.ca_cert_hash {
            config::check_ca_hash(h)?;
        }
        match self.action {
            Action::Init => {
                if self.config_template.is_none() && self.kubernetes_version.is_none() {
                    return Err(
                        "init needs `kubernetes_version` (or a `config_template`)".to_string()
                    );
                }
            }
            Action::Join => {
                let cp = self.control_plane == Some(true);
                for (f, present) in [
                    ("advertise_address", self.advertise_address.is_some()),
                    ("bind_port", self.bind_port.is_some()),
                    ("certificate_key", self.certificate_key.is_some()),
                ] {
                    if present && !cp && self.config_template.is_none() {
                        return Err(format!(
                            "`{f}` is only for control-plane joins (control_plane: true)"
                        ));
                    }
                }
            }
            Action::Reset => {
                if self.confirm != Some(true) {
                    return Err(
                        "reset wipes the node's Kubernetes state: set `confirm: true`".into(),
                    );
                }
            }
            Action::Token => {
                if let Some(t) = self.ttl.as_deref().filter(|t| !templated(t)) {
                    let ok =
                        !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
                    if !ok {
                        return Err(format!(
                            "ttl {t:?} is not a duration like \"2h\" or \"30m\""
                        ));
                    }
                }
            }
            Action::UploadCerts => {}
            Action::DeleteTokens => {
                if self.from.is_none() {
                    return Err(
                        "delete_tokens: give `from`, the tasks that made the tokens (init, token)"
                            .into(),
                    );
                }
            }
        }
        Ok(())
    }
}

pub(super) fn preflight(args: &Args) -> Option<String> {
    args.ignore_preflight_errors
        .as_ref()
        .filter(|l| !l.is_empty())
        .map(|l| format!("--ignore-preflight-errors={}", l.join(",")))
}

pub(super) fn node_registration(args: &Args, v: ApiVersion) -> Result<Option<NodeRegistration>, String> {
    let kubelet = flags(&args.kubelet_extra_args, "kubelet_extra_args")?;
    let n = NodeRegistration {
        name: args.node_name.clone(),
        cri_socket: args.cri_socket.clone(),
        taints: args.taints.clone(),
        kubelet_extra_args: kubelet.map(|m| ExtraArgs::new(v, &m)),
        ..Default::default()
    };
    Ok((n != NodeRegistration::default()).then_some(n))
}

pub(super) fn local_endpoint(args: &Args) -> Option<ApiEndpoint> {
    (args.advertise_address.is_some() || args.bind_port.is_some()).then(|| ApiEndpoint {
        advertise_address: args.advertise_address.clone(),
        bind_port: args.bind_port,
    })
}

#[cfg(test)]
mod tests {
    use crate::kubeadm::tests::init_args;
    use crate::kubeadm::Kubeadm;
    use engine::module::DynModule;
    use serde_json::json;

    #[test]
    fn arguments_are_checked_per_action() {
        let m = Kubeadm::default();
        assert!(m.validate(&init_args()).is_ok());
        let e = m.validate(&json!({"action": "reset"})).unwrap_err();
        assert!(e.contains("confirm: true"), "{e}");
        let e = m
            .validate(&json!({"action": "token", "control_plane": true}))
            .unwrap_err();
        assert!(
            e.contains("`control_plane` is not used by action \"token\""),
            "{e}"
        );
        let e = m
            .validate(&json!({"action": "init", "config_template": "t.j2", "pod_subnet": "x"}))
            .unwrap_err();
        assert!(e.contains("config_template"), "{e}");
        let e = m.validate(&json!({"action": "init"})).unwrap_err();
        assert!(e.contains("kubernetes_version"), "{e}");
        let e = m.validate(&json!({"action": "bootstrap"})).unwrap_err();
        assert!(e.contains("upload_certs"), "{e}");
        let e = m
            .validate(&json!({"action": "join", "certificate_key": "0".repeat(64)}))
            .unwrap_err();
        assert!(e.contains("control-plane joins"), "{e}");
        let e = m
            .validate(&json!({"action": "join", "ignore_preflight_errors": ["Swap --x"]}))
            .unwrap_err();
        assert!(e.contains("preflight"), "{e}");
        let e = m
            .validate(&json!({"action": "join", "token": "NOT-A-TOKEN-abcdefgh"}))
            .unwrap_err();
        assert!(!e.contains("NOT-A-TOKEN"), "a token is never shown: {e}");
        let e = m
            .validate(&json!({"action": "init", "kubernetes_version": "1.31", "pod_subnt": "x"}))
            .unwrap_err();
        assert!(e.contains("unknown field `pod_subnt`"), "{e}");
        // Templates wait for their values.
        assert!(m
            .validate(&json!({"action": "init", "kubernetes_version": "{{ k8s_version }}"}))
            .is_ok());
    }


    /// The DOC's argument table says which actions take each field; `allowed` decides it.
    #[test]
    fn the_doc_table_names_the_actions_each_field_is_for() {
        use super::{Action, Args};
        let mut documented = std::collections::BTreeMap::new();
        for row in crate::kubeadm::DOC.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let field = cells[1].trim_matches('`');
            let actions: Vec<&str> = cells[2].split(", ").collect();
            documented.insert(field, actions);
        }
        assert_eq!(documented.remove("action"), Some(vec!["all"]));
        for (field, actions) in documented {
            let allowed: Vec<&str> = Action::ALL
                .into_iter()
                .filter(|a| Args::allowed(*a).contains(&field))
                .map(|a| a.name())
                .collect();
            assert_eq!(actions, allowed, "the actions that take `{field}`");
        }
    }
}
