//! kubeadm's configuration files, typed: `InitConfiguration`, `ClusterConfiguration` and
//! `JoinConfiguration` in the two API versions current kubeadm accepts, `kubeadm.k8s.io/v1beta4`
//! (kubeadm 1.31 and newer) and `kubeadm.k8s.io/v1beta3` (1.22 to 1.30; deprecated in 1.31,
//! still read up to 1.35, removed in kubeadm 1.36: kubernetes/kubernetes#136016). Only the fields our playbooks need and the common ones are typed; a few rarely used
//! subtrees (`extraVolumes`, `featureGates`, `patches`, `timeouts`, …) are kept as plain YAML.
//! Unknown fields are errors, so a typo (`certSans`) fails before any host is touched.
//!
//! The two versions differ where it matters to us: in v1beta4 `extraArgs` (and
//! `kubeletExtraArgs`) is a list of `{name, value}`, in v1beta3 a map; `timeoutForControlPlane`
//! and `discovery.timeout` exist only in v1beta3, `timeouts` and `encryptionAlgorithm` only in
//! v1beta4. `kubeadm.k8s.io/v1beta2` and older were removed in kubeadm 1.26 and are rejected.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Plain YAML for subtrees we pass through without typing them.
pub type Yaml = serde_yaml::Value;

pub const GROUP: &str = "kubeadm.k8s.io";

/// The kubeadm configuration API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ApiVersion {
    V1Beta3,
    V1Beta4,
}

/// A Kubernetes version as `major.minor` (patch and suffixes ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
}

impl KubeVersion {
    /// Reads "v1.31.2", "1.31", "1.30.0-rc.1" or "stable-1.31".
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let t = t.strip_prefix("stable-").unwrap_or(t);
        let t = t.strip_prefix('v').unwrap_or(t);
        let mut parts = t.split(|c: char| !c.is_ascii_digit());
        let major = parts.next().and_then(|p| p.parse().ok());
        let minor = parts.next().and_then(|p| p.parse().ok());
        match (major, minor) {
            (Some(major), Some(minor)) if t.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
                Ok(KubeVersion { major, minor })
            }
            _ => Err(format!(
                "kubernetes_version {text:?} is not a version like \"1.31.2\" or \"v1.31\""
            )),
        }
    }
}

impl std::fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl ApiVersion {
    /// The API version kubeadm of Kubernetes `version` wants: v1beta4 from 1.31, v1beta3 for
    /// 1.22–1.30; older releases need v1beta2, which current kubeadm rejects.
    pub fn for_kubernetes(version: &str) -> Result<Self, String> {
        let v = KubeVersion::parse(version)?;
        if v.major != 1 {
            return Err(format!(
                "kubernetes_version {version:?}: only Kubernetes 1.x is known"
            ));
        }
        match v.minor {
            31.. => Ok(ApiVersion::V1Beta4),
            22..=30 => Ok(ApiVersion::V1Beta3),
            _ => Err(format!(
                "kubernetes_version {version:?}: Kubernetes older than 1.22 needs kubeadm config \
                 API v1beta2, which kubeadm removed in 1.26; use Kubernetes 1.22 or newer"
            )),
        }
    }

    /// Reads an `apiVersion` of the kubeadm group.
    pub fn parse(api_version: &str) -> Result<Self, String> {
        match api_version {
            "kubeadm.k8s.io/v1beta4" => Ok(ApiVersion::V1Beta4),
            "kubeadm.k8s.io/v1beta3" => Ok(ApiVersion::V1Beta3),
            "kubeadm.k8s.io/v1beta2"
            | "kubeadm.k8s.io/v1beta1"
            | "kubeadm.k8s.io/v1alpha3"
            | "kubeadm.k8s.io/v1alpha2"
            | "kubeadm.k8s.io/v1alpha1" => Err(format!(
                "apiVersion {api_version} is no longer accepted by kubeadm (v1beta2 was removed \
                 in 1.26): use kubeadm.k8s.io/v1beta4 (Kubernetes 1.31+) or \
                 kubeadm.k8s.io/v1beta3 (1.22–1.30)"
            )),
            other => Err(format!(
                "apiVersion {other} is not a kubeadm configuration API: use \
                 kubeadm.k8s.io/v1beta4 (Kubernetes 1.31+) or kubeadm.k8s.io/v1beta3 (1.22–1.30)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1Beta3 => "kubeadm.k8s.io/v1beta3",
            ApiVersion::V1Beta4 => "kubeadm.k8s.io/v1beta4",
        }
    }
}

// ------------------------------------------------------------------------------------------ types

/// Extra command-line arguments of a component: a list of `{name, value}` in v1beta4 (a flag may
/// repeat), a map in v1beta3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExtraArgs {
    List(Vec<NamedArg>),
    Map(BTreeMap<String, String>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedArg {
    pub name: String,
    pub value: String,
}

impl ExtraArgs {
    /// The shape `version` wants, from name → value pairs.
    pub fn new(version: ApiVersion, args: &BTreeMap<String, String>) -> Self {
        match version {
            ApiVersion::V1Beta4 => ExtraArgs::List(
                args.iter()
                    .map(|(k, v)| NamedArg {
                        name: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
            ),
            ApiVersion::V1Beta3 => ExtraArgs::Map(args.clone()),
        }
    }

    fn check(&self, version: ApiVersion, at: &str) -> Result<(), String> {
        match (self, version) {
            (ExtraArgs::Map(m), ApiVersion::V1Beta4) if !m.is_empty() => Err(format!(
                "{at}: in kubeadm.k8s.io/v1beta4 this is a list of {{name, value}}, not a map"
            )),
            (ExtraArgs::List(l), ApiVersion::V1Beta3) if !l.is_empty() => Err(format!(
                "{at}: in kubeadm.k8s.io/v1beta3 this is a map of name: value, not a list"
            )),
            _ => Ok(()),
        }
    }

    /// The names and values, in order.
    pub fn pairs(&self) -> Vec<(String, String)> {
        match self {
            ExtraArgs::List(l) => l
                .iter()
                .map(|a| (a.name.clone(), a.value.clone()))
                .collect(),
            ExtraArgs::Map(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitConfiguration {
    pub api_version: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_tokens: Option<Vec<BootstrapToken>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_registration: Option<NodeRegistration>,
    #[serde(rename = "localAPIEndpoint", skip_serializing_if = "Option::is_none")]
    pub local_api_endpoint: Option<ApiEndpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_phases: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patches: Option<Yaml>,
    /// v1beta4 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Yaml>,
    /// v1beta4 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapToken {
    pub token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usages: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRegistration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cri_socket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taints: Option<Vec<Taint>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubelet_extra_args: Option<ExtraArgs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_preflight_errors: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// v1beta4 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_serial: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_added: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiEndpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_port: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfiguration {
    pub api_version: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub networking: Option<Networking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd: Option<Etcd>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_manager: Option<Component>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<Component>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Yaml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Yaml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificates_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_gates: Option<Yaml>,
    /// v1beta4 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
    /// v1beta4 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_validity_period: Option<String>,
    /// v1beta4 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_certificate_validity_period: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_subnet: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_subnet: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_domain: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Etcd {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalEtcd>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalEtcd>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalEtcd {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_args: Option<ExtraArgs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_envs: Option<Yaml>,
    #[serde(rename = "serverCertSANs", skip_serializing_if = "Option::is_none")]
    pub server_cert_sans: Option<Vec<String>>,
    #[serde(rename = "peerCertSANs", skip_serializing_if = "Option::is_none")]
    pub peer_cert_sans: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalEtcd {
    pub endpoints: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServer {
    #[serde(rename = "certSANs", skip_serializing_if = "Option::is_none")]
    pub cert_sans: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_args: Option<ExtraArgs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_volumes: Option<Yaml>,
    /// v1beta4 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_envs: Option<Yaml>,
    /// v1beta3 only (v1beta4 moved it to `InitConfiguration.timeouts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_for_control_plane: Option<String>,
}

/// The controller manager or the scheduler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Component {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_args: Option<ExtraArgs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_volumes: Option<Yaml>,
    /// v1beta4 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_envs: Option<Yaml>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinConfiguration {
    pub api_version: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_registration: Option<NodeRegistration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert_path: Option<String>,
    pub discovery: Discovery,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<JoinControlPlane>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_phases: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patches: Option<Yaml>,
    /// v1beta4 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Yaml>,
    /// v1beta4 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Discovery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_token: Option<BootstrapTokenDiscovery>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<Yaml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_bootstrap_token: Option<String>,
    /// v1beta3 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapTokenDiscovery {
    pub token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_server_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert_hashes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsafe_skip_ca_verification: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinControlPlane {
    #[serde(rename = "localAPIEndpoint", skip_serializing_if = "Option::is_none")]
    pub local_api_endpoint: Option<ApiEndpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_key: Option<String>,
}

// ------------------------------------------------------------------------------- document sets

/// One document of a configuration file.
#[derive(Debug, Clone, PartialEq)]
pub enum Doc {
    Init(InitConfiguration),
    Cluster(Box<ClusterConfiguration>),
    Join(JoinConfiguration),
    /// A document of another API kubeadm reads alongside its own (KubeletConfiguration,
    /// KubeProxyConfiguration) or one we do not type (v1beta4 ResetConfiguration,
    /// UpgradeConfiguration), kept as it is.
    Other(Yaml),
}

/// The documents of one kubeadm configuration file, all of one kubeadm API version.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub version: ApiVersion,
    pub docs: Vec<Doc>,
}

/// Other APIs whose documents kubeadm accepts in its configuration file.
const OTHER_APIS: &[(&str, &str)] = &[
    ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"),
    ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration"),
];

/// What a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Init,
    Join,
}

impl Config {
    /// Parses and checks a configuration file (one or more YAML documents).
    pub fn parse(text: &str, purpose: Purpose) -> Result<Self, String> {
        let mut version = None;
        let mut docs = Vec::new();
        for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let n = i + 1;
            let value = Yaml::deserialize(de).map_err(|e| format!("document {n}: {e}"))?;
            if value.is_null() {
                continue;
            }
            let field = |k: &str| {
                value
                    .get(k)
                    .and_then(Yaml::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| format!("document {n}: missing `{k}`"))
            };
            let (api_version, kind) = (field("apiVersion")?, field("kind")?);
            let at = format!("document {n} ({kind} {api_version})");
            if !api_version.starts_with(&format!("{GROUP}/")) {
                if OTHER_APIS.contains(&(api_version.as_str(), kind.as_str())) {
                    docs.push(Doc::Other(value));
                    continue;
                }
                return Err(format!(
                    "{at}: not a kind kubeadm reads; expected InitConfiguration, \
                     ClusterConfiguration or JoinConfiguration of kubeadm.k8s.io/v1beta4 or \
                     v1beta3, KubeletConfiguration or KubeProxyConfiguration"
                ));
            }
            let v = ApiVersion::parse(&api_version).map_err(|e| format!("document {n}: {e}"))?;
            match version {
                Some(other) if other != v => {
                    return Err(format!(
                        "{at}: all kubeadm documents must use one API version ({} above)",
                        ApiVersion::as_str(other)
                    ))
                }
                _ => version = Some(v),
            }
            let typed = |e: serde_yaml::Error| format!("{at}: {e}");
            let doc = match kind.as_str() {
                "InitConfiguration" => Doc::Init(serde_yaml::from_value(value).map_err(typed)?),
                "ClusterConfiguration" => {
                    Doc::Cluster(Box::new(serde_yaml::from_value(value).map_err(typed)?))
                }
                "JoinConfiguration" => Doc::Join(serde_yaml::from_value(value).map_err(typed)?),
                "ResetConfiguration" | "UpgradeConfiguration" if v == ApiVersion::V1Beta4 => {
                    Doc::Other(value)
                }
                _ => {
                    return Err(format!(
                        "{at}: kind {kind} is not part of {api_version} (InitConfiguration, \
                         ClusterConfiguration, JoinConfiguration)"
                    ))
                }
            };
            docs.push(doc);
        }
        let version = version.ok_or("the configuration has no kubeadm.k8s.io document")?;
        let config = Config { version, docs };
        config.check(purpose)?;
        Ok(config)
    }

    /// Checks what the types cannot: the shapes that differ between versions, which documents
    /// an init or a join needs, and the values kubeadm would refuse.
    pub fn check(&self, purpose: Purpose) -> Result<(), String> {
        let v = self.version;
        let beta4 = |present: bool, what: &str| -> Result<(), String> {
            if present && v != ApiVersion::V1Beta4 {
                return Err(format!("{what} exists only in kubeadm.k8s.io/v1beta4"));
            }
            Ok(())
        };
        let beta3 = |present: bool, what: &str| -> Result<(), String> {
            if present && v != ApiVersion::V1Beta3 {
                return Err(format!(
                    "{what} exists only in kubeadm.k8s.io/v1beta3 (v1beta4 has `timeouts`)"
                ));
            }
            Ok(())
        };
        let args = |a: &Option<ExtraArgs>, at: &str| match a {
            Some(a) => a.check(v, at),
            None => Ok(()),
        };
        let node = |n: &Option<NodeRegistration>, kind: &str| -> Result<(), String> {
            if let Some(n) = n {
                args(
                    &n.kubelet_extra_args,
                    &format!("{kind}.nodeRegistration.kubeletExtraArgs"),
                )?;
                beta4(
                    n.image_pull_serial.is_some(),
                    "nodeRegistration.imagePullSerial",
                )?;
                for t in n.taints.iter().flatten() {
                    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&t.effect.as_str())
                    {
                        return Err(format!(
                            "{kind}.nodeRegistration.taints: effect {:?} is not NoSchedule, \
                             PreferNoSchedule or NoExecute",
                            t.effect
                        ));
                    }
                }
            }
            Ok(())
        };
        let (mut init, mut cluster, mut join) = (0, 0, 0);
        for d in &self.docs {
            match d {
                Doc::Init(c) => {
                    init += 1;
                    node(&c.node_registration, "InitConfiguration")?;
                    beta4(c.timeouts.is_some(), "InitConfiguration.timeouts")?;
                    beta4(c.dry_run.is_some(), "InitConfiguration.dryRun")?;
                    if let Some(k) = &c.certificate_key {
                        check_certificate_key(k)?;
                    }
                    for t in c.bootstrap_tokens.iter().flatten() {
                        check_token(&t.token)?;
                    }
                }
                Doc::Cluster(c) => {
                    cluster += 1;
                    if let Some(a) = &c.api_server {
                        args(&a.extra_args, "ClusterConfiguration.apiServer.extraArgs")?;
                        beta4(a.extra_envs.is_some(), "apiServer.extraEnvs")?;
                        beta3(
                            a.timeout_for_control_plane.is_some(),
                            "apiServer.timeoutForControlPlane",
                        )?;
                    }
                    for (name, comp) in [
                        ("controllerManager", &c.controller_manager),
                        ("scheduler", &c.scheduler),
                    ] {
                        if let Some(comp) = comp {
                            args(
                                &comp.extra_args,
                                &format!("ClusterConfiguration.{name}.extraArgs"),
                            )?;
                            beta4(comp.extra_envs.is_some(), &format!("{name}.extraEnvs"))?;
                        }
                    }
                    if let Some(e) = &c.etcd {
                        if e.local.is_some() && e.external.is_some() {
                            return Err(
                                "ClusterConfiguration.etcd: give either local or external, not both"
                                    .into(),
                            );
                        }
                        if let Some(l) = &e.local {
                            args(&l.extra_args, "ClusterConfiguration.etcd.local.extraArgs")?;
                        }
                        if let Some(x) = &e.external {
                            if x.endpoints.is_empty() {
                                return Err(
                                    "ClusterConfiguration.etcd.external.endpoints is empty".into(),
                                );
                            }
                            let tls = [&x.ca_file, &x.cert_file, &x.key_file];
                            let given = tls.iter().filter(|f| f.is_some()).count();
                            if given != 0 && given != 3 {
                                return Err("ClusterConfiguration.etcd.external: give caFile, \
                                            certFile and keyFile together"
                                    .into());
                            }
                        }
                    }
                    beta4(c.encryption_algorithm.is_some(), "encryptionAlgorithm")?;
                    beta4(
                        c.certificate_validity_period.is_some(),
                        "certificateValidityPeriod",
                    )?;
                    beta4(
                        c.ca_certificate_validity_period.is_some(),
                        "caCertificateValidityPeriod",
                    )?;
                    if let Some(kv) = &c.kubernetes_version {
                        if !crate::kubeadm::templated(kv) {
                            check_version_fits(v, kv)?;
                        }
                    }
                }
                Doc::Join(c) => {
                    join += 1;
                    node(&c.node_registration, "JoinConfiguration")?;
                    beta4(c.timeouts.is_some(), "JoinConfiguration.timeouts")?;
                    beta4(c.dry_run.is_some(), "JoinConfiguration.dryRun")?;
                    beta3(c.discovery.timeout.is_some(), "discovery.timeout")?;
                    match (&c.discovery.bootstrap_token, &c.discovery.file) {
                        (Some(b), None) => {
                            check_token(&b.token)?;
                            if b.api_server_endpoint.is_none() {
                                return Err("JoinConfiguration.discovery.bootstrapToken needs \
                                            apiServerEndpoint"
                                    .into());
                            }
                            let hashes = b.ca_cert_hashes.as_deref().unwrap_or_default();
                            if hashes.is_empty() && b.unsafe_skip_ca_verification != Some(true) {
                                return Err("JoinConfiguration.discovery.bootstrapToken needs \
                                            caCertHashes (the discovery-token-ca-cert-hash)"
                                    .into());
                            }
                            for h in hashes {
                                check_ca_hash(h)?;
                            }
                        }
                        (None, Some(_)) => {}
                        _ => {
                            return Err("JoinConfiguration.discovery: give either bootstrapToken \
                                        or file"
                                .into())
                        }
                    }
                    if let Some(k) = c
                        .control_plane
                        .as_ref()
                        .and_then(|cp| cp.certificate_key.as_ref())
                    {
                        check_certificate_key(k)?;
                    }
                }
                Doc::Other(_) => {}
            }
        }
        if init > 1 || cluster > 1 || join > 1 {
            return Err("each kubeadm kind may appear only once in a configuration".into());
        }
        match purpose {
            Purpose::Init if join > 0 => Err(
                "a JoinConfiguration cannot be used for kubeadm init (use action \"join\")".into(),
            ),
            Purpose::Init if init + cluster == 0 => Err(
                "kubeadm init needs an InitConfiguration or a ClusterConfiguration document".into(),
            ),
            Purpose::Join if join == 0 => {
                Err("kubeadm join needs a JoinConfiguration document".into())
            }
            Purpose::Join if init + cluster > 0 => Err(
                "a join configuration holds only a JoinConfiguration (and kubelet/kube-proxy \
                 documents)"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    pub fn init(&self) -> Option<&InitConfiguration> {
        self.docs.iter().find_map(|d| match d {
            Doc::Init(c) => Some(c),
            _ => None,
        })
    }

    pub fn cluster(&self) -> Option<&ClusterConfiguration> {
        self.docs.iter().find_map(|d| match d {
            Doc::Cluster(c) => Some(&**c),
            _ => None,
        })
    }

    pub fn join(&self) -> Option<&JoinConfiguration> {
        self.docs.iter().find_map(|d| match d {
            Doc::Join(c) => Some(c),
            _ => None,
        })
    }

    /// The secrets the configuration holds: bootstrap tokens and certificate keys.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in &self.docs {
            match d {
                Doc::Init(c) => {
                    out.extend(c.certificate_key.clone());
                    out.extend(c.bootstrap_tokens.iter().flatten().map(|t| t.token.clone()));
                }
                Doc::Join(c) => {
                    out.extend(
                        c.discovery
                            .bootstrap_token
                            .as_ref()
                            .map(|b| b.token.clone()),
                    );
                    out.extend(c.discovery.tls_bootstrap_token.clone());
                    out.extend(
                        c.control_plane
                            .as_ref()
                            .and_then(|cp| cp.certificate_key.clone()),
                    );
                }
                _ => {}
            }
        }
        out
    }

    /// The file kubeadm reads: the documents as YAML, separated by `---`.
    pub fn render(&self) -> Result<String, String> {
        let mut parts = Vec::new();
        for d in &self.docs {
            let text = match d {
                Doc::Init(c) => serde_yaml::to_string(c),
                Doc::Cluster(c) => serde_yaml::to_string(c),
                Doc::Join(c) => serde_yaml::to_string(c),
                Doc::Other(v) => serde_yaml::to_string(v),
            }
            .map_err(|e| format!("cannot write the configuration: {e}"))?;
            parts.push(text);
        }
        Ok(parts.join("---\n"))
    }
}

/// kubeadm.k8s.io/v1beta3 was deprecated in kubeadm 1.31 and removed in 1.36
/// (kubernetes/kubernetes#136016); v1beta4 needs 1.31.
fn check_version_fits(v: ApiVersion, kubernetes_version: &str) -> Result<(), String> {
    let k = KubeVersion::parse(kubernetes_version)?;
    match v {
        ApiVersion::V1Beta4 if k.major == 1 && k.minor < 31 => Err(format!(
            "kubeadm.k8s.io/v1beta4 needs kubeadm 1.31 or newer, but kubernetesVersion is \
             {kubernetes_version}: use kubeadm.k8s.io/v1beta3"
        )),
        ApiVersion::V1Beta3 if k.major == 1 && k.minor >= 36 => Err(format!(
            "kubeadm {k} no longer reads kubeadm.k8s.io/v1beta3 (removed in 1.36): use \
             kubeadm.k8s.io/v1beta4"
        )),
        _ if k.major == 1 && k.minor < 22 => Err(format!(
            "kubernetesVersion {kubernetes_version}: Kubernetes older than 1.22 is not supported"
        )),
        _ => Ok(()),
    }
}

/// A bootstrap token: `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn check_token(token: &str) -> Result<(), String> {
    if crate::kubeadm::templated(token) || is_token(token) {
        Ok(())
    } else {
        // The token itself is not shown: it is a secret even when malformed.
        Err("the bootstrap token is not of the form [a-z0-9]{6}.[a-z0-9]{16}".into())
    }
}

pub fn is_token(token: &str) -> bool {
    let lower = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    matches!(token.split_once('.'), Some((id, secret)) if lower(id, 6) && lower(secret, 16))
}

/// A certificate key: 32 bytes as 64 hex digits.
pub fn check_certificate_key(key: &str) -> Result<(), String> {
    if crate::kubeadm::templated(key)
        || (key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Ok(())
    } else {
        Err(
            "the certificate key is not 64 hex digits (32 bytes, as `kubeadm certs \
             certificate-key` prints)"
                .into(),
        )
    }
}

/// A discovery-token-ca-cert-hash: `sha256:` and 64 hex digits.
pub fn check_ca_hash(hash: &str) -> Result<(), String> {
    let ok = hash
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok || crate::kubeadm::templated(hash) {
        Ok(())
    } else {
        Err(format!(
            "ca_cert_hash {hash:?} is not sha256:<64 hex digits> (the \
             --discovery-token-ca-cert-hash kubeadm init prints)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_selects_the_api() {
        assert_eq!(
            ApiVersion::for_kubernetes("1.31.2").unwrap(),
            ApiVersion::V1Beta4
        );
        assert_eq!(
            ApiVersion::for_kubernetes("v1.33").unwrap(),
            ApiVersion::V1Beta4
        );
        assert_eq!(
            ApiVersion::for_kubernetes("v1.30.5").unwrap(),
            ApiVersion::V1Beta3
        );
        assert_eq!(
            ApiVersion::for_kubernetes("1.22.0-rc.1").unwrap(),
            ApiVersion::V1Beta3
        );
        let e = ApiVersion::for_kubernetes("1.21.9").unwrap_err();
        assert!(e.contains("v1beta2") && e.contains("1.22"), "{e}");
        assert!(ApiVersion::for_kubernetes("latest").is_err());
        assert!(ApiVersion::for_kubernetes("2.0").is_err());
    }

    const V4: &str = r#"
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: 10.0.0.11
  bindPort: 6443
nodeRegistration:
  name: m1
  criSocket: unix:///run/containerd/containerd.sock
  kubeletExtraArgs:
  - name: node-ip
    value: 10.0.0.11
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.31.2
controlPlaneEndpoint: 10.0.0.10:9443
networking:
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/12
apiServer:
  certSANs: [10.0.0.10, m1]
  extraArgs:
  - name: audit-log-maxage
    value: "30"
etcd:
  external:
    endpoints: [https://10.0.0.21:2379]
    caFile: /etc/etcd/ca.crt
    certFile: /etc/etcd/client.crt
    keyFile: /etc/etcd/client.key
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
"#;

    #[test]
    fn a_v1beta4_file_parses_and_renders_back() {
        let c = Config::parse(V4, Purpose::Init).unwrap();
        assert_eq!(c.version, ApiVersion::V1Beta4);
        assert_eq!(c.docs.len(), 3);
        let cluster = c.cluster().unwrap();
        assert_eq!(
            cluster.control_plane_endpoint.as_deref(),
            Some("10.0.0.10:9443")
        );
        let ext = cluster.etcd.as_ref().unwrap().external.as_ref().unwrap();
        assert_eq!(ext.cert_file.as_deref(), Some("/etc/etcd/client.crt"));
        let again = Config::parse(&c.render().unwrap(), Purpose::Init).unwrap();
        assert_eq!(again, c);
        assert!(c.render().unwrap().contains("certSANs:"));
        assert!(c.render().unwrap().contains("localAPIEndpoint:"));
    }

    #[test]
    fn removed_and_unknown_versions_and_typos_are_rejected() {
        let old = V4.replace("v1beta4", "v1beta2");
        let e = Config::parse(&old, Purpose::Init).unwrap_err();
        assert!(e.contains("v1beta2") && e.contains("1.26"), "{e}");
        let e = Config::parse(&V4.replace("v1beta4", "v2"), Purpose::Init).unwrap_err();
        assert!(e.contains("not a kubeadm configuration API"), "{e}");
        let e = Config::parse(&V4.replace("certSANs", "certSans"), Purpose::Init).unwrap_err();
        assert!(e.contains("unknown field `certSans`"), "{e}");
        assert!(e.contains("ClusterConfiguration"), "{e}");
        let e = Config::parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
            Purpose::Init,
        )
        .unwrap_err();
        assert!(e.contains("not a kind kubeadm reads"), "{e}");
        let e = Config::parse(&V4.replacen("v1beta4", "v1beta3", 1), Purpose::Init).unwrap_err();
        assert!(e.contains("one API version"), "{e}");
        // v1beta3 was read up to kubeadm 1.35 and removed in 1.36.
        assert!(check_version_fits(ApiVersion::V1Beta3, "1.35.2").is_ok());
        let e = check_version_fits(ApiVersion::V1Beta3, "1.36.0").unwrap_err();
        assert!(e.contains("removed in 1.36"), "{e}");
    }

    #[test]
    fn extra_args_shape_follows_the_version() {
        // A v1beta3 map in a v1beta4 file.
        let bad = V4.replace(
            "  extraArgs:\n  - name: audit-log-maxage\n    value: \"30\"",
            "  extraArgs:\n    audit-log-maxage: \"30\"",
        );
        let e = Config::parse(&bad, Purpose::Init).unwrap_err();
        assert!(e.contains("list of {name, value}"), "{e}");
        let v3 = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n\
                  kubernetesVersion: 1.29.3\napiServer:\n  extraArgs:\n    - name: a\n      value: b\n";
        let e = Config::parse(v3, Purpose::Init).unwrap_err();
        assert!(e.contains("map of name: value"), "{e}");
        let ok = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n\
                  kubernetesVersion: 1.29.3\napiServer:\n  timeoutForControlPlane: 4m0s\n  extraArgs:\n    a: b\n";
        assert!(Config::parse(ok, Purpose::Init).is_ok());
        let early = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n\
                     kubernetesVersion: 1.29.3\n";
        let e = Config::parse(early, Purpose::Init).unwrap_err();
        assert!(e.contains("needs kubeadm 1.31"), "{e}");
        assert_eq!(
            ExtraArgs::new(
                ApiVersion::V1Beta4,
                &BTreeMap::from([("a".into(), "b".into())])
            ),
            ExtraArgs::List(vec![NamedArg {
                name: "a".into(),
                value: "b".into()
            }])
        );
    }

    #[test]
    fn init_and_join_need_their_documents() {
        let e = Config::parse(V4, Purpose::Join).unwrap_err();
        assert!(e.contains("JoinConfiguration"), "{e}");
        let join = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n\
                    discovery:\n  bootstrapToken:\n    token: abcdef.0123456789abcdef\n    \
                    apiServerEndpoint: 10.0.0.10:9443\n";
        let e = Config::parse(join, Purpose::Join).unwrap_err();
        assert!(e.contains("caCertHashes"), "{e}");
        let with_hash = format!("{join}    caCertHashes: [\"sha256:{}\"]\n", "a".repeat(64));
        let c = Config::parse(&with_hash, Purpose::Join).unwrap();
        assert_eq!(c.secrets(), ["abcdef.0123456789abcdef"]);
        assert!(Config::parse(&with_hash, Purpose::Init).is_err());
        let bad_token = with_hash.replace("abcdef.0123456789abcdef", "ABC.def");
        let e = Config::parse(&bad_token, Purpose::Join).unwrap_err();
        assert!(!e.contains("ABC.def"), "a token is never shown: {e}");
    }

    #[test]
    fn tokens_keys_and_hashes() {
        assert!(is_token("abcdef.0123456789abcdef"));
        assert!(!is_token("abcdef.0123456789abcde"));
        assert!(!is_token("ABCDEF.0123456789abcdef"));
        assert!(check_certificate_key(&"0a".repeat(32)).is_ok());
        assert!(check_certificate_key("short").is_err());
        assert!(check_ca_hash(&format!("sha256:{}", "f".repeat(64))).is_ok());
        assert!(check_ca_hash(&"f".repeat(64)).is_err());
    }
}
