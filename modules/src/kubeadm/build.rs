//! Configuration files and command lines built from the fields.

use std::collections::BTreeMap;

use engine::{ModuleContext, ModuleError};
use serde_json::Value;

use super::args::{flags, local_endpoint, node_registration, preflight};
use super::config::{
    ApiServer, ApiVersion, BootstrapTokenDiscovery, ClusterConfiguration, Component, Config,
    Discovery, Doc, Etcd, ExternalEtcd, ExtraArgs, InitConfiguration, JoinConfiguration,
    JoinControlPlane, Networking, Purpose,
};
use super::{scrub, Args, JoinInfo};

/// `join --config FILE [--ignore-preflight-errors=…]`: everything else is in the file (the
/// control-plane role too: kubeadm refuses `--control-plane` next to `--config`).
pub(super) fn join_command(args: &Args, config: &str) -> Vec<String> {
    let mut cmd: Vec<String> = vec!["join".into(), "--config".into(), config.into()];
    cmd.extend(preflight(args));
    cmd
}

/// `init --config FILE [--upload-certs] [--ignore-preflight-errors=…]`.
pub(super) fn init_command(args: &Args, config: &str) -> Vec<String> {
    let mut cmd: Vec<String> = vec!["init".into(), "--config".into(), config.into()];
    if args.upload_certs != Some(false) {
        cmd.push("--upload-certs".into());
    }
    cmd.extend(preflight(args));
    cmd
}

/// The init configuration file's text: rendered from the template or built from the fields.
pub(super) fn init_config(args: &Args, cx: &ModuleContext<'_>) -> Result<String, ModuleError> {
    match &args.config_template {
        Some(t) => {
            let text = cx.templates.render_file(t)?;
            // Checked here so the error names the template.
            let parsed = Config::parse(&text, Purpose::Init)
                .map_err(|e| ModuleError::Failed(format!("{t}: {}", scrub(&e, &[]))))?;
            for s in parsed.secrets() {
                cx.secrets.add(&s);
            }
            Ok(text)
        }
        None => build_init(args).map_err(ModuleError::Args),
    }
}

/// Builds InitConfiguration + ClusterConfiguration from the fields.
pub fn build_init(args: &Args) -> Result<String, String> {
    let kv = args
        .kubernetes_version
        .clone()
        .ok_or("init needs `kubernetes_version`")?;
    let v = ApiVersion::for_kubernetes(&kv)?;
    let init = InitConfiguration {
        api_version: v.as_str().into(),
        kind: "InitConfiguration".into(),
        node_registration: node_registration(args, v)?,
        local_api_endpoint: local_endpoint(args),
        certificate_key: args.certificate_key.clone(),
        ..Default::default()
    };
    let comp =
        |m: &Option<BTreeMap<String, Value>>, field: &str| -> Result<Option<Component>, String> {
            Ok(flags(m, field)?.map(|m| Component {
                extra_args: Some(ExtraArgs::new(v, &m)),
                ..Default::default()
            }))
        };
    let api_args = flags(&args.api_server_extra_args, "api_server_extra_args")?;
    let api_server = (args.cert_sans.is_some() || api_args.is_some()).then(|| ApiServer {
        cert_sans: args.cert_sans.clone(),
        extra_args: api_args.map(|m| ExtraArgs::new(v, &m)),
        ..Default::default()
    });
    let networking = Networking {
        service_subnet: args.service_subnet.clone(),
        pod_subnet: args.pod_subnet.clone(),
        dns_domain: args.dns_domain.clone(),
    };
    let cluster = ClusterConfiguration {
        api_version: v.as_str().into(),
        kind: "ClusterConfiguration".into(),
        cluster_name: args.cluster_name.clone(),
        kubernetes_version: Some(if kv.starts_with(|c: char| c.is_ascii_digit()) {
            format!("v{kv}")
        } else {
            kv.clone()
        }),
        control_plane_endpoint: args.control_plane_endpoint.clone(),
        networking: (networking != Networking::default()).then_some(networking),
        etcd: args.etcd_external.as_ref().map(|e| Etcd {
            local: None,
            external: Some(ExternalEtcd {
                endpoints: e.endpoints.clone(),
                ca_file: e.ca_file.clone(),
                cert_file: e.cert_file.clone(),
                key_file: e.key_file.clone(),
            }),
        }),
        api_server,
        controller_manager: comp(
            &args.controller_manager_extra_args,
            "controller_manager_extra_args",
        )?,
        scheduler: comp(&args.scheduler_extra_args, "scheduler_extra_args")?,
        image_repository: args.image_repository.clone(),
        ..Default::default()
    };
    let config = Config {
        version: v,
        docs: vec![Doc::Init(init), Doc::Cluster(Box::new(cluster))],
    };
    config.check(Purpose::Init)?;
    config.render()
}

/// Builds a JoinConfiguration from the fields and the join values.
pub fn join_config(args: &Args, info: &JoinInfo, v: ApiVersion) -> Result<String, String> {
    let cp = args.control_plane == Some(true);
    let join = JoinConfiguration {
        api_version: v.as_str().into(),
        kind: "JoinConfiguration".into(),
        node_registration: node_registration(args, v)?,
        discovery: Discovery {
            bootstrap_token: Some(BootstrapTokenDiscovery {
                token: info.token.clone().unwrap_or_default(),
                api_server_endpoint: info.api_endpoint.clone(),
                ca_cert_hashes: info.ca_cert_hash.clone().map(|h| vec![h]),
                unsafe_skip_ca_verification: None,
            }),
            ..Default::default()
        },
        control_plane: cp.then(|| JoinControlPlane {
            local_api_endpoint: local_endpoint(args),
            certificate_key: info.certificate_key.clone(),
        }),
        ..Default::default()
    };
    let config = Config {
        version: v,
        docs: vec![Doc::Join(join)],
    };
    config.check(Purpose::Join)?;
    config.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeadm::tests::{args, init_args, KEY};
    use crate::kubeadm::{Kubeadm, DOC, INIT_CONFIG, JOIN_CONFIG};
    use engine::module::DynModule;
    use serde_json::json;

    #[test]
    fn init_config_follows_the_version() {
        let text = build_init(&args(init_args())).unwrap();
        assert!(
            text.contains("apiVersion: kubeadm.k8s.io/v1beta4"),
            "{text}"
        );
        assert!(
            text.contains("extraArgs:\n  - name: audit-log-maxage\n    value: '30'"),
            "{text}"
        );
        assert!(text.contains("kubernetesVersion: v1.31.2"), "{text}");
        assert!(text.contains("certSANs:"), "{text}");
        let parsed = Config::parse(&text, Purpose::Init).unwrap();
        assert_eq!(parsed.version, ApiVersion::V1Beta4);

        let mut old = init_args();
        old["kubernetes_version"] = json!("v1.29.4");
        let text = build_init(&args(old)).unwrap();
        assert!(
            text.contains("apiVersion: kubeadm.k8s.io/v1beta3"),
            "{text}"
        );
        assert!(
            text.contains("extraArgs:\n    audit-log-maxage: '30'"),
            "{text}"
        );
        assert!(text.contains("node-ip: 10.0.0.11"), "{text}");

        let mut ancient = init_args();
        ancient["kubernetes_version"] = json!("1.20.0");
        let e = Kubeadm::default().validate(&ancient).unwrap_err();
        assert!(e.contains("v1beta2"), "{e}");
    }

    #[test]
    fn no_command_has_a_removed_flag() {
        // kubeadm removed --experimental-control-plane; the module cannot produce it (nor any
        // flag from the playbook: values go into the config file).
        let a = args(json!({"action": "init", "kubernetes_version": "1.31",
                            "ignore_preflight_errors": ["all"]}));
        let cmd = init_command(&a, INIT_CONFIG).join(" ");
        assert_eq!(
            cmd,
            "init --config /etc/kubernetes/kubeadm-init.yaml --upload-certs --ignore-preflight-errors=all"
        );
        let j = args(
            json!({"action": "join", "control_plane": true, "certificate_key": KEY,
                            "ignore_preflight_errors": ["all,--experimental-control-plane"]}),
        );
        // A value is one argument: it cannot become a flag of its own.
        let cmd = join_command(&j, JOIN_CONFIG);
        assert_eq!(cmd.len(), 4, "{cmd:?}");
        assert!(!cmd
            .iter()
            .any(|w| w.starts_with("--experimental") || w == "--control-plane"));
        assert!(!DOC.contains("--experimental"));
    }

}
