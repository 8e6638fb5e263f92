//! `kubeadm`: initialises a Kubernetes control plane, joins control-plane nodes and workers,
//! creates fresh join values (bootstrap token, certificate key) and resets nodes.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use engine::diff::FileDiff;
use engine::host::quote;
use engine::remote::{write_file, WriteOptions};
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;
use serde_json::{json, Map, Value};

pub mod config;

use config::{
    ApiEndpoint, ApiServer, ApiVersion, BootstrapTokenDiscovery, ClusterConfiguration, Component,
    Config, Discovery, Doc, Etcd, ExternalEtcd, ExtraArgs, InitConfiguration, JoinConfiguration,
    JoinControlPlane, Networking, NodeRegistration, Purpose, Taint,
};

/// The module. The default runs `kubeadm` on the target's real paths; tests point it at a
/// scratch root and a stand-in.
pub struct Kubeadm {
    /// Prefix of every path on the target ("" in real use).
    root: String,
    /// The command that runs kubeadm (already quoted for sh).
    bin: String,
}

impl Default for Kubeadm {
    fn default() -> Self {
        Kubeadm {
            root: String::new(),
            bin: "kubeadm".into(),
        }
    }
}

pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
pub const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";
pub const KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";
pub const CA_KEY: &str = "/etc/kubernetes/pki/ca.key";
pub const INIT_CONFIG: &str = "/etc/kubernetes/kubeadm-init.yaml";
pub const JOIN_CONFIG: &str = "/etc/kubernetes/kubeadm-join.yaml";
const MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
    fn name(self) -> &'static str {
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
#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// What to do: "init", "join", "token", "upload_certs" or "reset".
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

pub const DOC: &str = r#"# kubeadm

Stands up a Kubernetes control plane with kubeadm: `init` on the first master, `join` of further
control-plane nodes and workers, fresh join values (`token`, `upload_certs`), deleting them after
the joins (`delete_tokens`) and `reset`.

Configuration is written to a file that kubeadm reads with `--config` (never as flags, so the
token and the certificate key are not visible in `ps`). It is either built from the fields below,
or rendered from `config_template`; either way it is parsed as typed InitConfiguration /
ClusterConfiguration / JoinConfiguration documents and checked before anything is written:
`kubeadm.k8s.io/v1beta4` for Kubernetes 1.31 and newer (`extraArgs` is a list of
`{name, value}`), `kubeadm.k8s.io/v1beta3` for 1.22–1.30 (a map; deprecated in 1.31 and removed
in kubeadm 1.36, so a v1beta3 `config_template` is refused for 1.36+); `v1beta2` (removed in
kubeadm 1.26), unknown versions and unknown fields are errors.

- **init** writes `/etc/kubernetes/kubeadm-init.yaml` (mode 600) and runs
  `kubeadm init --config /etc/kubernetes/kubeadm-init.yaml --upload-certs`, unless the node is
  already initialised (`/etc/kubernetes/admin.conf` or `/var/lib/kubelet/config.yaml` exists):
  then it is ok and says so. On a node that is not, init is refused (in check mode too) while
  anything answers https at the control-plane endpoint (asked with curl from the node, when it
  has curl): a cluster already runs behind it, and init would start a second one. Its result
  carries the join values: `api_endpoint`, `token`, `ca_cert_hash`, `certificate_key`,
  `kubernetes_version`. On an initialised node the values come
  from a fresh `kubeadm token create --print-join-command` and
  `kubeadm init phase upload-certs --upload-certs --config /etc/kubernetes/kubeadm-init.yaml`:
  new credentials in the cluster, so init then reports changed (check mode predicts it, the
  values not known yet); with `refresh_join_info: false` it makes none and reports ok.
- **join** writes `/etc/kubernetes/kubeadm-join.yaml` (mode 600; removed after the join) and runs
  `kubeadm join --config /etc/kubernetes/kubeadm-join.yaml`, unless `/etc/kubernetes/kubelet.conf`
  exists. A control-plane join needs the `certificate_key` unless the shared certificates were
  copied to `/etc/kubernetes/pki`.
- **token** runs `kubeadm token create --print-join-command` and returns `api_endpoint`, `token`,
  `ca_cert_hash`. **upload_certs** runs `kubeadm init phase upload-certs --upload-certs` (with
  `--config /etc/kubernetes/kubeadm-init.yaml` where the node has it: without the init
  configuration kubeadm assumes stacked etcd and uploads no external etcd client files,
  kubeadm#1886) and returns `certificate_key`. Each makes a new credential in the cluster, so
  each reports changed; check mode predicts the change (its result, the values, is not known
  until the real run). Run them only while a node has to join (`.when(…)`, as the shipped
  playbooks do), and a converged re-run reports nothing changed.
- **delete_tokens** deletes the bootstrap tokens that the results in `from` carry (init's, each
  `token` task's) and the cluster still has (`kubeadm token list`, then `kubeadm token delete ID…`):
  run it on the first master after the joins, so no token that was handed around outlives them
  (kubeadm keeps them 24 hours). Nothing to delete is ok. In check mode a result that is not known
  yet (its task would make the token) is predicted as a deletion, so guard the task with the same
  condition as the token tasks.
- **reset** runs `kubeadm reset -f` where anything of kubeadm's is left; needs `confirm: true`.

The certificate key expires 2 hours after the certificates were uploaded, a token after 24
hours: run `token` and `upload_certs` on the first master right before each control-plane join,
and join control-plane nodes one at a time (order them with `.after`).

The token and the certificate key are secrets: they are never shown in summaries, messages,
diffs or errors.

## Arguments

| name | actions | |
|---|---|---|
| `action` | all | `init`, `join`, `token`, `upload_certs`, `delete_tokens`, `reset` |
| `kubernetes_version` | init, join | "1.31.2": chooses the config API version |
| `config_template` | init, join | template of the whole config file instead of the fields |
| `control_plane_endpoint` | init | `VIP:port` |
| `advertise_address` | init, join | this node's apiserver address (control-plane join) |
| `bind_port` | init, join | this node's apiserver port (control-plane join) |
| `node_name` | init, join | `nodeRegistration.name` |
| `cri_socket` | init, join | `nodeRegistration.criSocket` |
| `taints` | init, join | list of `{key, value, effect}` |
| `kubelet_extra_args` | init, join | map of kubelet flags |
| `pod_subnet` | init | `networking.podSubnet` |
| `service_subnet` | init | `networking.serviceSubnet` |
| `dns_domain` | init | `networking.dnsDomain` |
| `cert_sans` | init | `apiServer.certSANs` |
| `api_server_extra_args` | init | map of kube-apiserver flags |
| `controller_manager_extra_args` | init | map of kube-controller-manager flags |
| `scheduler_extra_args` | init | map of kube-scheduler flags |
| `etcd_external` | init | `{endpoints, ca_file, cert_file, key_file}` |
| `cluster_name` | init | `clusterName` |
| `image_repository` | init | `imageRepository` |
| `upload_certs` | init | pass `--upload-certs` (default true) |
| `refresh_join_info` | init | fresh join values on an initialised node (default true) |
| `ignore_preflight_errors` | init, join | list of preflight checks |
| `from` | join, delete_tokens | the init task (or a list of `token`/`upload_certs` tasks) |
| `api_endpoint` | join | endpoint to join |
| `token` | join | bootstrap token (secret) |
| `ca_cert_hash` | join | `sha256:…` |
| `control_plane` | join | join as a control-plane node |
| `certificate_key` | init, join | certificate key (secret) |
| `ttl` | token | token lifetime |
| `confirm` | reset | must be true |

## Example

```rhai
let init = on(first("masters"), kubeadm(#{ action: "init", kubernetes_version: "1.31.2",
    control_plane_endpoint: "10.0.0.10:9443", cert_sans: ["10.0.0.10", "m1", "m2"],
    pod_subnet: "10.244.0.0/16" }));
// before each control-plane join: fresh values, then one join at a time; only while m2 has
// not joined, so that a re-run makes no token for it
let joined = on("m2", shell(#{ changed_when: false,
    cmd: "if [ -e /etc/kubernetes/kubelet.conf ]; then echo joined; else echo new; fi" })
    .check_mode(false));
let pending = || joined.on_host("m2").stdout != "joined";
let tok = on(first("masters"), kubeadm(#{ action: "token" })).after(init).when(pending);
let certs = on(first("masters"), kubeadm(#{ action: "upload_certs" })).after(tok).when(pending);
on("m2", kubeadm(#{ action: "join", control_plane: true, from: [init, tok, certs],
    advertise_address: "10.0.0.12" }));
// init on an initialised node makes fresh values for the workers (a change on every run; the
// shipped playbooks set refresh_join_info: false and make a token only while a worker joins)
on("workers", kubeadm(#{ action: "join", from: init }));
```
"#;

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

fn flags(
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

/// Fields that only build a config (not allowed with `config_template`).
const BUILD_FIELDS: &[&str] = &[
    "control_plane_endpoint",
    "advertise_address",
    "bind_port",
    "node_name",
    "cri_socket",
    "taints",
    "kubelet_extra_args",
    "pod_subnet",
    "service_subnet",
    "dns_domain",
    "cert_sans",
    "api_server_extra_args",
    "controller_manager_extra_args",
    "scheduler_extra_args",
    "etcd_external",
    "cluster_name",
    "image_repository",
];

impl Args {
    /// The names of the fields given (besides `action`).
    fn given(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut add = |present: bool, name: &'static str| {
            if present {
                v.push(name)
            }
        };
        add(self.kubernetes_version.is_some(), "kubernetes_version");
        add(self.config_template.is_some(), "config_template");
        add(
            self.control_plane_endpoint.is_some(),
            "control_plane_endpoint",
        );
        add(self.advertise_address.is_some(), "advertise_address");
        add(self.bind_port.is_some(), "bind_port");
        add(self.node_name.is_some(), "node_name");
        add(self.cri_socket.is_some(), "cri_socket");
        add(self.taints.is_some(), "taints");
        add(self.kubelet_extra_args.is_some(), "kubelet_extra_args");
        add(self.pod_subnet.is_some(), "pod_subnet");
        add(self.service_subnet.is_some(), "service_subnet");
        add(self.dns_domain.is_some(), "dns_domain");
        add(self.cert_sans.is_some(), "cert_sans");
        add(
            self.api_server_extra_args.is_some(),
            "api_server_extra_args",
        );
        add(
            self.controller_manager_extra_args.is_some(),
            "controller_manager_extra_args",
        );
        add(self.scheduler_extra_args.is_some(), "scheduler_extra_args");
        add(self.etcd_external.is_some(), "etcd_external");
        add(self.cluster_name.is_some(), "cluster_name");
        add(self.image_repository.is_some(), "image_repository");
        add(self.upload_certs.is_some(), "upload_certs");
        add(self.refresh_join_info.is_some(), "refresh_join_info");
        add(
            self.ignore_preflight_errors.is_some(),
            "ignore_preflight_errors",
        );
        add(self.from.is_some(), "from");
        add(self.api_endpoint.is_some(), "api_endpoint");
        add(self.token.is_some(), "token");
        add(self.ca_cert_hash.is_some(), "ca_cert_hash");
        add(self.control_plane.is_some(), "control_plane");
        add(self.certificate_key.is_some(), "certificate_key");
        add(self.ttl.is_some(), "ttl");
        add(self.confirm.is_some(), "confirm");
        v
    }

    fn allowed(&self) -> &'static [&'static str] {
        match self.action {
            Action::Init => &[
                "kubernetes_version",
                "config_template",
                "control_plane_endpoint",
                "advertise_address",
                "bind_port",
                "node_name",
                "cri_socket",
                "taints",
                "kubelet_extra_args",
                "pod_subnet",
                "service_subnet",
                "dns_domain",
                "cert_sans",
                "api_server_extra_args",
                "controller_manager_extra_args",
                "scheduler_extra_args",
                "etcd_external",
                "cluster_name",
                "image_repository",
                "upload_certs",
                "refresh_join_info",
                "ignore_preflight_errors",
                "certificate_key",
            ],
            Action::Join => &[
                "kubernetes_version",
                "config_template",
                "advertise_address",
                "bind_port",
                "node_name",
                "cri_socket",
                "taints",
                "kubelet_extra_args",
                "ignore_preflight_errors",
                "from",
                "api_endpoint",
                "token",
                "ca_cert_hash",
                "control_plane",
                "certificate_key",
            ],
            Action::Token => &["ttl"],
            Action::UploadCerts => &[],
            Action::DeleteTokens => &["from"],
            Action::Reset => &["confirm"],
        }
    }

    fn check(&self) -> Result<(), String> {
        let allowed = self.allowed();
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
            if let Some(f) = self.given().into_iter().find(|f| BUILD_FIELDS.contains(f)) {
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

// ------------------------------------------------------------------------------ join values

/// What a node needs to join: from `kubeadm init`'s output, `token create`, `upload-certs`, or
/// the playbook.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct JoinInfo {
    pub api_endpoint: Option<String>,
    pub token: Option<String>,
    pub ca_cert_hash: Option<String>,
    pub certificate_key: Option<String>,
    pub kubernetes_version: Option<String>,
}

impl JoinInfo {
    /// Reads the join command lines kubeadm prints (`kubeadm join EP --token T
    /// --discovery-token-ca-cert-hash sha256:H [--control-plane --certificate-key K]`, over
    /// several lines joined with `\`) and upload-certs' "Using certificate key:" line.
    pub fn parse(output: &str) -> JoinInfo {
        let joined = output.replace("\\\r\n", " ").replace("\\\n", " ");
        let mut info = JoinInfo::default();
        let mut lines = joined.lines().peekable();
        while let Some(line) = lines.next() {
            if line.contains("Using certificate key:") {
                if let Some(k) = lines.peek().map(|l| l.trim().to_string()) {
                    if config::check_certificate_key(&k).is_ok() && !templated(&k) {
                        info.certificate_key.get_or_insert(k);
                    }
                }
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(pos) = words
                .windows(2)
                .position(|w| w[0] == "kubeadm" && w[1] == "join")
            else {
                continue;
            };
            let mut it = words[pos + 2..].iter();
            while let Some(w) = it.next() {
                let (flag, inline) = match w.split_once('=') {
                    Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                    _ => (*w, None),
                };
                let mut value = || inline.clone().or_else(|| it.next().map(|s| s.to_string()));
                // Only well-formed values count ("<value withheld>" is not a key).
                match flag {
                    "--token" => {
                        let v = value().filter(|t| config::is_token(t));
                        if info.token.is_none() {
                            info.token = v;
                        }
                    }
                    "--discovery-token-ca-cert-hash" => {
                        let v = value().filter(|h| config::check_ca_hash(h).is_ok());
                        if info.ca_cert_hash.is_none() {
                            info.ca_cert_hash = v;
                        }
                    }
                    "--certificate-key" => {
                        let v = value().filter(|k| config::check_certificate_key(k).is_ok());
                        if info.certificate_key.is_none() {
                            info.certificate_key = v;
                        }
                    }
                    "--control-plane" => {}
                    f if !f.starts_with('-') && info.api_endpoint.is_none() => {
                        info.api_endpoint = Some(f.to_string());
                    }
                    _ => {}
                }
            }
        }
        info
    }

    /// Reads a task result (or a list of them, later ones winning) as `from` gives it.
    pub fn from_value(v: &Value) -> Result<JoinInfo, String> {
        let mut info = JoinInfo::default();
        let maps: Vec<&Map<String, Value>> = match v {
            Value::Null => vec![],
            Value::Object(m) => vec![m],
            // A null item is a result check mode does not know yet (the task would change).
            Value::Array(items) => items
                .iter()
                .filter(|i| !i.is_null())
                .map(|i| {
                    i.as_object()
                        .ok_or_else(|| "from: each item must be a task result (a map)".to_string())
                })
                .collect::<Result<_, _>>()?,
            _ => return Err("from: give the init task (or a list of task results)".into()),
        };
        for m in maps {
            let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
            info.api_endpoint = s("api_endpoint").or(info.api_endpoint);
            info.token = s("token").or(info.token);
            info.ca_cert_hash = s("ca_cert_hash").or(info.ca_cert_hash);
            info.certificate_key = s("certificate_key").or(info.certificate_key);
            info.kubernetes_version = s("kubernetes_version").or(info.kubernetes_version);
        }
        Ok(info)
    }

    fn secrets(&self) -> Vec<String> {
        self.token
            .iter()
            .chain(self.certificate_key.iter())
            .cloned()
            .collect()
    }

    fn register(&self, cx: &ModuleContext<'_>) {
        for s in self.secrets() {
            cx.secrets.add(&s);
        }
    }

    /// The task result: the values later tasks read (the secrets are registered, so output
    /// shows them as [secret] should anyone print them).
    fn result(&self, extra: Value) -> Value {
        let mut m = Map::new();
        for (k, v) in [
            ("api_endpoint", &self.api_endpoint),
            ("token", &self.token),
            ("ca_cert_hash", &self.ca_cert_hash),
            ("certificate_key", &self.certificate_key),
            ("kubernetes_version", &self.kubernetes_version),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.clone().into());
            }
        }
        if let Value::Object(e) = extra {
            m.extend(e);
        }
        Value::Object(m)
    }
}

/// Removes secrets from text kubeadm printed: the known values, anything shaped like a bootstrap
/// token, the values of `--token` and `--certificate-key`, and bare 64-hex-digit keys (but not
/// `sha256:` CA hashes, which are public).
pub fn scrub(text: &str, known: &[String]) -> String {
    let mut out = text.to_string();
    let mut known: Vec<&String> = known.iter().filter(|s| s.len() >= 4).collect();
    known.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in known {
        out = out.replace(s.as_str(), "[secret]");
    }
    let token = regex::Regex::new(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b").expect("valid regex");
    out = token.replace_all(&out, "[secret]").into_owned();
    let flag = regex::Regex::new(r"(--(?:token|certificate-key|tls-bootstrap-token)[ =])(\S+)")
        .expect("valid regex");
    out = flag.replace_all(&out, "${1}[secret]").into_owned();
    let key = regex::Regex::new(r"(sha256:)?\b([0-9a-fA-F]{64})\b").expect("valid regex");
    out = key
        .replace_all(&out, |c: &regex::Captures| match c.get(1) {
            Some(_) => c[0].to_string(),
            None => "[secret]".to_string(),
        })
        .into_owned();
    out
}

// --------------------------------------------------------------------------------- the module

/// What apply needs.
pub enum Plan {
    Init {
        config: String,
        info: JoinInfo,
    },
    Join {
        config: String,
        display: String,
    },
    Reset,
    /// Fresh join values to make in the cluster.
    Fresh(Fresh),
    /// Bootstrap tokens to delete, by their IDs.
    DeleteTokens(Vec<String>),
    /// Check mode only: a join whose values are not known yet.
    Unknown,
}

/// A bootstrap token and/or a certificate key to make: each is a new credential in the cluster
/// (a Secret in kube-system), so making one is a change, made by apply and never by probe.
pub struct Fresh {
    token: bool,
    certs: bool,
    ttl: Option<String>,
    /// The values known before (init's endpoint and version); fresh ones win.
    base: JoinInfo,
    /// The result's `msg` (and `initialised` for init).
    extra: Value,
}

/// What probe reads on the node in one round trip.
#[derive(Debug, Default)]
struct NodeState {
    admin_conf: bool,
    kubelet_conf: bool,
    kubelet_config: bool,
    ca_key: bool,
    manifests: bool,
    init_config_sha: Option<String>,
    version: Option<String>,
}

impl NodeState {
    fn initialised_by(&self) -> Option<&'static str> {
        if self.admin_conf {
            Some(ADMIN_CONF)
        } else if self.kubelet_config {
            Some(KUBELET_CONFIG)
        } else {
            None
        }
    }
}

impl Kubeadm {
    /// A module that prefixes every path with `root` and runs `bin` (already quoted) as kubeadm.
    pub fn with_paths(root: impl Into<String>, bin: impl Into<String>) -> Self {
        Kubeadm {
            root: root.into(),
            bin: bin.into(),
        }
    }

    fn path(&self, p: &str) -> String {
        format!("{}{p}", self.root)
    }

    /// The command line for kubeadm with these arguments, quoted.
    fn command(&self, args: &[String]) -> Result<String, String> {
        let mut s = self.bin.clone();
        for a in args {
            s.push(' ');
            s.push_str(&quote(a)?);
        }
        Ok(s)
    }

    async fn state(&self, cx: &ModuleContext<'_>, version: bool) -> Result<NodeState, ModuleError> {
        let mut s = String::new();
        for p in [ADMIN_CONF, KUBELET_CONF, KUBELET_CONFIG, CA_KEY, MANIFEST] {
            s += &format!(
                "if [ -e {} ]; then echo yes; else echo no; fi\n",
                quote(&self.path(p))?
            );
        }
        s += &format!(
            "if [ -f {p} ]; then sha256sum < {p} | cut -d' ' -f1; else echo -; fi\n",
            p = quote(&self.path(INIT_CONFIG))?
        );
        if version {
            s += &format!("{} version -o short 2>/dev/null || echo -\n", self.bin);
        }
        let out = cx.host.run(&s).await?;
        if !out.success() {
            return Err(ModuleError::Failed(format!(
                "cannot inspect the node: {}",
                out.stderr_text().trim()
            )));
        }
        let text = out.stdout_text();
        let lines: Vec<&str> = text.lines().collect();
        let yes = |i: usize| lines.get(i) == Some(&"yes");
        let opt = |i: usize| {
            lines
                .get(i)
                .map(|l| l.trim())
                .filter(|l| !l.is_empty() && *l != "-")
                .map(str::to_string)
        };
        Ok(NodeState {
            admin_conf: yes(0),
            kubelet_conf: yes(1),
            kubelet_config: yes(2),
            ca_key: yes(3),
            manifests: yes(4),
            init_config_sha: opt(5),
            version: if version { opt(6) } else { None },
        })
    }

    /// The HTTP status of `https://ENDPOINT/healthz` as the node sees it, when anything answers
    /// there (None when nothing does, or the node has no curl to ask with).
    async fn endpoint_answers(
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

    /// The bootstrap tokens `from`'s results carry (init's, each `token` task's) that the cluster
    /// still has: a token outlives the joins it was made for by up to 24 hours, and anyone who
    /// saw it could join a node meanwhile.
    async fn probe_delete_tokens(
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

    /// Runs kubeadm; a failure names the command and the output's last lines, scrubbed.
    async fn run(
        &self,
        cx: &ModuleContext<'_>,
        args: &[String],
        secrets: &[String],
    ) -> Result<String, ModuleError> {
        let script = format!("{}\n", self.command(args)?);
        self.run_script(cx, &args.join(" "), &script, secrets).await
    }

    /// Runs a script of kubeadm commands; `what` names them in a failure.
    async fn run_script(
        &self,
        cx: &ModuleContext<'_>,
        what: &str,
        script: &str,
        secrets: &[String],
    ) -> Result<String, ModuleError> {
        let out = cx.host.run(script).await?;
        let stdout = out.stdout_text();
        if !out.success() {
            let mut msg = format!("kubeadm {what} failed with rc {}", out.status);
            for (name, text) in [("stderr", out.stderr_text()), ("stdout", stdout)] {
                let lines: Vec<&str> = text.trim().lines().collect();
                if !lines.is_empty() {
                    let tail = &lines[lines.len().saturating_sub(15)..];
                    msg += &format!("\n{name}:\n{}", tail.join("\n"));
                }
            }
            return Err(ModuleError::Failed(scrub(&msg, secrets)));
        }
        Ok(stdout)
    }

    /// A fresh token (with the join command's endpoint and CA hash) and, when asked, a fresh
    /// certificate key.
    async fn fresh_values(
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
                self.command(&with_config)?,
                self.command(&plain)?
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

    fn diff(
        &self,
        cx: &ModuleContext<'_>,
        path: &str,
        text: &str,
        secrets: &[String],
    ) -> Option<FileDiff> {
        cx.want_diff
            .then(|| FileDiff::new(path, None, Some(scrub(text, secrets).as_bytes())))
    }

    async fn write_config(
        &self,
        cx: &ModuleContext<'_>,
        path: &str,
        text: &str,
    ) -> Result<(), ModuleError> {
        let dir = self.path("/etc/kubernetes");
        let out = cx
            .host
            .run(&format!("mkdir -p -- {}", quote(&dir)?))
            .await?;
        if !out.success() {
            return Err(ModuleError::Failed(format!(
                "cannot create {dir}: {}",
                out.stderr_text().trim()
            )));
        }
        let opts = WriteOptions {
            mode: Some("0600"),
            ..Default::default()
        };
        write_file(cx.host, path, text.as_bytes(), &opts).await?;
        Ok(())
    }

    async fn probe_init(
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
                .is_some_and(|s| s != crate::inspect::sha256(config.as_bytes()))
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
        let summary = if cx.check {
            format!("would run kubeadm {}", cmd.join(" "))
        } else {
            format!("ran kubeadm {}", cmd.join(" "))
        };
        let diff = self.diff(cx, &self.path(INIT_CONFIG), &config, &secrets);
        Ok(Probe::change(
            Plan::Init { config, info: base },
            summary,
            diff,
        ))
    }

    async fn apply_init(
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

    async fn probe_join(
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
        let summary = if cx.check {
            format!("would run {display}")
        } else {
            format!("ran {display}")
        };
        let diff = self.diff(cx, &self.path(JOIN_CONFIG), &config, &secrets);
        Ok(Probe::change(Plan::Join { config, display }, summary, diff))
    }

    async fn apply_join(
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
            self.command(&cmd)?,
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

    async fn probe_reset(&self, cx: &ModuleContext<'_>) -> Result<Probe<Plan>, ModuleError> {
        let state = self.state(cx, false).await?;
        let anything = state.admin_conf
            || state.kubelet_conf
            || state.kubelet_config
            || state.ca_key
            || state.manifests;
        if !anything {
            return Ok(Probe::Unchanged(json!({ "msg": "nothing to reset" })));
        }
        let summary = if cx.check {
            "would run kubeadm reset -f"
        } else {
            "ran kubeadm reset -f"
        };
        Ok(Probe::change(Plan::Reset, summary, None))
    }
}

/// `token` and `upload_certs` always make a new credential: there is nothing to read first.
fn probe_fresh(args: &Args) -> Probe<Plan> {
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

fn preflight(args: &Args) -> Option<String> {
    args.ignore_preflight_errors
        .as_ref()
        .filter(|l| !l.is_empty())
        .map(|l| format!("--ignore-preflight-errors={}", l.join(",")))
}

/// `join --config FILE [--ignore-preflight-errors=…]`: everything else is in the file (the
/// control-plane role too: kubeadm refuses `--control-plane` next to `--config`).
fn join_command(args: &Args, config: &str) -> Vec<String> {
    let mut cmd: Vec<String> = vec!["join".into(), "--config".into(), config.into()];
    cmd.extend(preflight(args));
    cmd
}

/// `init --config FILE [--upload-certs] [--ignore-preflight-errors=…]`.
fn init_command(args: &Args, config: &str) -> Vec<String> {
    let mut cmd: Vec<String> = vec!["init".into(), "--config".into(), config.into()];
    if args.upload_certs != Some(false) {
        cmd.push("--upload-certs".into());
    }
    cmd.extend(preflight(args));
    cmd
}

/// The init configuration file's text: rendered from the template or built from the fields.
fn init_config(args: &Args, cx: &ModuleContext<'_>) -> Result<String, ModuleError> {
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

fn node_registration(args: &Args, v: ApiVersion) -> Result<Option<NodeRegistration>, String> {
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

fn local_endpoint(args: &Args) -> Option<ApiEndpoint> {
    (args.advertise_address.is_some() || args.bind_port.is_some()).then(|| ApiEndpoint {
        advertise_address: args.advertise_address.clone(),
        bind_port: args.bind_port,
    })
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

#[async_trait]
impl Module for Kubeadm {
    const NAME: &'static str = "kubeadm";
    const DOC: &'static str = DOC;
    const SHOWS_MSG: bool = true;
    const RENDERS_TEMPLATES: bool = true;
    // A join on a node that has not joined is predicted without the init's values.
    const PREDICTS_WITH_UNKNOWN_RESULTS: bool = true;
    type Args = Args;
    type Plan = Plan;

    fn check_args(args: &Args) -> Result<(), String> {
        args.check()?;
        // A config built from plain fields is built and checked at plan time already.
        if args.action == Action::Init && args.config_template.is_none() {
            let plain = args
                .kubernetes_version
                .as_deref()
                .is_some_and(|v| !templated(v));
            if plain {
                build_init(args)?;
            }
        }
        Ok(())
    }

    async fn probe(&self, args: &Args, cx: &ModuleContext<'_>) -> Result<Probe<Plan>, ModuleError> {
        match args.action {
            Action::Init => self.probe_init(args, cx).await,
            Action::Join => self.probe_join(args, cx).await,
            Action::Reset => self.probe_reset(cx).await,
            Action::DeleteTokens => self.probe_delete_tokens(args, cx).await,
            Action::Token | Action::UploadCerts => Ok(probe_fresh(args)),
        }
    }

    async fn apply(
        &self,
        args: &Args,
        plan: Plan,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        match plan {
            Plan::Init { config, info } => self.apply_init(args, config, info, cx).await,
            Plan::Join { config, display } => self.apply_join(args, config, display, cx).await,
            // Only check mode plans a join without its values, and check mode never applies.
            Plan::Unknown => Err(ModuleError::Failed("the join values are not known".into())),
            Plan::Fresh(f) => {
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
            Plan::DeleteTokens(ids) => {
                let mut cmd: Vec<String> = vec!["token".into(), "delete".into()];
                cmd.extend(ids.iter().cloned());
                self.run(cx, &cmd, &[]).await?;
                Ok(Applied::changed(json!({
                    "msg": format!("deleted {} bootstrap token(s) this run made", ids.len()),
                    "deleted": ids,
                })))
            }
            Plan::Reset => {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{snapshot, Env};
    use engine::module::{DynModule, Outcome, Status};

    fn args(v: Value) -> Args {
        engine::module::parse_args(&v).unwrap()
    }

    fn init_args() -> Value {
        json!({
            "action": "init", "kubernetes_version": "1.31.2",
            "control_plane_endpoint": "vip.test:9443", "advertise_address": "10.0.0.11",
            "node_name": "m1", "cert_sans": ["10.0.0.10", "vip.test"],
            "pod_subnet": "10.244.0.0/16",
            "api_server_extra_args": { "audit-log-maxage": 30 },
            "kubelet_extra_args": { "node-ip": "10.0.0.11" },
        })
    }

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

    const HASH: &str = "sha256:1e1f95fd836ec6934b4c5fb92cfd9b1e94a976b89957113f007149d9d478f5c4";
    const KEY: &str = "a6c975776fb32960a76ce21cc05b1ad763955b0fb8a79932761304a98d254589";

    #[test]
    fn join_values_are_read_from_kubeadm_output() {
        let init = format!(
            "[upload-certs] Using certificate key:\n{KEY}\n\nYou can now join ...:\n\n  \
             kubeadm join vip:9443 --token abcdef.0123456789abcdef \\\n  \t--discovery-token-ca-cert-hash {HASH} \\\n  \
             \t--control-plane --certificate-key {KEY}\n\nkubeadm join vip:9443 --token abcdef.0123456789abcdef \\\n\
             \t--discovery-token-ca-cert-hash {HASH}\n"
        );
        let i = JoinInfo::parse(&init);
        assert_eq!(i.api_endpoint.as_deref(), Some("vip:9443"));
        assert_eq!(i.token.as_deref(), Some("abcdef.0123456789abcdef"));
        assert_eq!(i.ca_cert_hash.as_deref(), Some(HASH));
        assert_eq!(i.certificate_key.as_deref(), Some(KEY));
        let withheld = JoinInfo::parse(
            "kubeadm join vip:9443 --token abcdef.0123456789abcdef --control-plane --certificate-key <value withheld>",
        );
        assert_eq!(withheld.certificate_key, None);
        let token = JoinInfo::parse(&format!(
            "kubeadm join 10.0.0.10:6443 --token x1y2z3.0123456789abcdef --discovery-token-ca-cert-hash {HASH} \n"
        ));
        assert_eq!(token.api_endpoint.as_deref(), Some("10.0.0.10:6443"));
        let from = JoinInfo::from_value(&json!([
            {"api_endpoint": "a:1", "token": "t", "changed": false},
            {"certificate_key": "k"}
        ]))
        .unwrap();
        assert_eq!(
            (
                from.api_endpoint.as_deref(),
                from.certificate_key.as_deref()
            ),
            (Some("a:1"), Some("k"))
        );
    }

    #[test]
    fn scrub_removes_tokens_and_keys_but_keeps_hashes() {
        let text = format!(
            "kubeadm join vip:9443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash {HASH} \
             --certificate-key {KEY}\nUsing certificate key:\n{KEY}\n--token=zzz other"
        );
        let s = scrub(&text, &["other".into()]);
        assert!(
            !s.contains("abcdef.0123456789abcdef") && !s.contains(KEY),
            "{s}"
        );
        assert!(s.contains(HASH), "{s}");
        assert!(!s.contains("zzz") && !s.contains("other"), "{s}");
    }

    // ------------------------------------------------------------ whole actions on the stand-in

    /// Two nodes (`m1`, `m2`) with their own roots, one stand-in cluster state, all local.
    struct Lab {
        env: Env,
        state: String,
    }

    impl Lab {
        fn new() -> Self {
            let env = Env::new();
            let state = env.path("cluster-state");
            for node in ["m1", "m2"] {
                std::fs::create_dir_all(env.path(node)).unwrap();
            }
            Lab { env, state }
        }
        fn node(&self, name: &str) -> Kubeadm {
            let root = self.env.path(name);
            let bin = format!(
                "KUBEADM_STANDIN_ROOT={} KUBEADM_STANDIN_STATE={} {}/../tests/standins/kubeadm",
                quote(&root).unwrap(),
                quote(&self.state).unwrap(),
                env!("CARGO_MANIFEST_DIR")
            );
            Kubeadm::with_paths(root, bin)
        }
        fn file(&self, node: &str, path: &str) -> std::path::PathBuf {
            std::path::PathBuf::from(self.env.path(node)).join(path.trim_start_matches('/'))
        }
        async fn run(&self, node: &str, a: Value, check: bool) -> Result<Outcome, ModuleError> {
            self.env.run(&self.node(node), a, check).await
        }
        /// A token (made with `token_args`) and a certificate key from m1, as before a join.
        async fn fresh_join_values(&self, token_args: Value) -> (Outcome, Outcome) {
            let tok = self.run("m1", token_args, false).await.unwrap();
            let certs = self
                .run("m1", json!({"action": "upload_certs"}), false)
                .await
                .unwrap();
            (tok, certs)
        }
    }

    /// Everything the user sees of an outcome.
    fn shown(o: &Outcome) -> String {
        format!(
            "{:?} {:?} {} {:?}",
            o.status,
            o.summary,
            o.result["msg"],
            o.diff.as_ref().map(|d| d.unified())
        )
    }

    fn assert_hidden(text: &str, secrets: &[&str]) {
        for s in secrets {
            assert!(!text.contains(s), "a secret is shown: {text}");
        }
    }

    #[tokio::test]
    async fn init_then_control_plane_join_on_the_stand_in() {
        let lab = Lab::new();
        // Check mode on a fresh node says what it would do and writes nothing.
        let before = snapshot(lab.env.dir.path());
        let check = lab.run("m1", init_args(), true).await.unwrap();
        assert_eq!(check.status, Status::Changed);
        let summary = check.summary.clone().unwrap();
        assert!(
            summary.starts_with("would run kubeadm init --config "),
            "{summary}"
        );
        assert!(
            summary.ends_with("kubeadm-init.yaml --upload-certs"),
            "{summary}"
        );
        assert_eq!(snapshot(lab.env.dir.path()), before);

        let init = lab.run("m1", init_args(), false).await.unwrap();
        assert_eq!(init.status, Status::Changed);
        let r = &init.result;
        let token = r["token"].as_str().unwrap().to_string();
        let key = r["certificate_key"].as_str().unwrap().to_string();
        assert!(config::is_token(&token));
        assert_eq!(r["api_endpoint"], "vip.test:9443");
        assert!(r["ca_cert_hash"].as_str().unwrap().starts_with("sha256:"));
        assert_hidden(&shown(&init), &[&token, &key]);
        for f in [
            ADMIN_CONF,
            KUBELET_CONFIG,
            "/etc/kubernetes/pki/ca.crt",
            MANIFEST,
            INIT_CONFIG,
        ] {
            assert!(lab.file("m1", f).exists(), "{f}");
        }
        assert_eq!(
            crate::testutil::mode_of(lab.file("m1", INIT_CONFIG).to_str().unwrap()),
            0o600
        );

        // Again: the node is as asked, but the result still carries join values, which are made
        // afresh: a new token in the cluster, so a change.
        let again = lab.run("m1", init_args(), false).await.unwrap();
        assert_eq!(again.status, Status::Changed);
        let msg = again.result["msg"].as_str().unwrap();
        assert!(
            msg.contains("already initialised") && msg.contains("fresh"),
            "{msg}"
        );
        let token2 = again.result["token"].as_str().unwrap().to_string();
        let key2 = again.result["certificate_key"]
            .as_str()
            .unwrap()
            .to_string();
        assert_ne!(token2, token);
        assert_hidden(&shown(&again), &[&token2, &key2]);
        // Check mode predicts that change; its values are not known.
        let check = lab.run("m1", init_args(), true).await.unwrap();
        assert_eq!(check.status, Status::Changed);
        assert_eq!(
            check.summary.as_deref(),
            Some("already initialised (/etc/kubernetes/admin.conf exists): create a fresh join token and certificate key")
        );
        assert_eq!(check.result, Value::Null);
        // Without the refresh a re-run is no change.
        let mut keep = init_args();
        keep["refresh_join_info"] = json!(false);
        let kept = lab.run("m1", keep, false).await.unwrap();
        assert_eq!(kept.status, Status::Ok);
        assert!(kept.result.get("token").is_none());

        // A control-plane join without a certificate key fails before running kubeadm.
        let mut join = json!({"action": "join", "control_plane": true, "from": again.result,
                              "advertise_address": "10.0.0.12", "node_name": "m2"});
        join["from"]
            .as_object_mut()
            .unwrap()
            .remove("certificate_key");
        let e = lab
            .run("m2", join.clone(), false)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("certificate_key"), "{e}");
        assert!(!lab.file("m2", JOIN_CONFIG).exists());

        // A wrong token: the stand-in refuses as kubeadm does, and the error shows no secret.
        let mut wrong = join.clone();
        wrong["from"]["token"] = json!("zzzzzz.zzzzzzzzzzzzzzzz");
        wrong["certificate_key"] = json!(key2);
        let e = lab.run("m2", wrong, false).await.unwrap_err().to_string();
        assert!(e.contains("could not find a JWS signature"), "{e}");
        assert_hidden(&e, &["zzzzzz.zzzzzzzzzzzzzzzz", &key2]);
        assert!(
            !lab.file("m2", JOIN_CONFIG).exists(),
            "the join config is removed"
        );

        join["certificate_key"] = json!(key2);
        let check = lab.run("m2", join.clone(), true).await.unwrap();
        assert_eq!(
            check.summary.as_deref(),
            Some("would run kubeadm join vip.test:9443 (control plane)")
        );
        let joined = lab.run("m2", join.clone(), false).await.unwrap();
        assert_eq!(joined.status, Status::Changed);
        assert_hidden(&shown(&joined), &[&token2, &key2]);
        for f in [
            KUBELET_CONF,
            ADMIN_CONF,
            "/etc/kubernetes/pki/ca.key",
            MANIFEST,
        ] {
            assert!(lab.file("m2", f).exists(), "{f}");
        }
        assert!(!lab.file("m2", JOIN_CONFIG).exists());
        assert_eq!(
            std::fs::read(lab.file("m1", "/etc/kubernetes/pki/ca.crt")).unwrap(),
            std::fs::read(lab.file("m2", "/etc/kubernetes/pki/ca.crt")).unwrap()
        );
        let again = lab.run("m2", join, false).await.unwrap();
        assert_eq!(again.status, Status::Ok);
        assert!(again.result["msg"]
            .as_str()
            .unwrap()
            .contains("already joined"));
    }

    /// The module contract: a probe only reads. The join values (`token`, `upload_certs`, and
    /// those of init on an initialised node) are made by apply: a real run's probe leaves the
    /// stand-in cluster's tokens and uploaded certificates as they were.
    #[tokio::test]
    async fn a_real_run_probe_makes_no_token_and_uploads_no_certificates() {
        let lab = Lab::new();
        let init = lab.run("m1", init_args(), false).await.unwrap();
        let cluster = std::path::Path::new(&lab.state).join("vip.test_9443");
        let read =
            || ["tokens.json", "certs.json"].map(|f| std::fs::read(cluster.join(f)).unwrap());
        let before = read();
        let join = json!({"action": "join", "from": init.result, "node_name": "m2"});
        let delete = json!({"action": "delete_tokens", "from": init.result});
        for (node, a) in [
            ("m1", json!({"action": "token"})),
            ("m1", json!({"action": "upload_certs"})),
            ("m1", init_args()),
            ("m2", join),
            ("m1", delete),
        ] {
            let probe = lab.env.probe(&lab.node(node), a.clone()).await.unwrap();
            assert!(matches!(probe, Probe::Change(_)), "a change is due: {a}");
            assert!(read() == before, "the probe changed the cluster: {a}");
        }
    }

    #[tokio::test]
    async fn an_expired_certificate_key_is_refused_and_upload_certs_renews_it() {
        let lab = Lab::new();
        let init = lab.run("m1", init_args(), false).await.unwrap();
        // Two hours and a minute later, as far as the stand-in's cluster knows.
        let certs = std::path::Path::new(&lab.state).join("vip.test_9443/certs.json");
        let mut c: Value = serde_json::from_slice(&std::fs::read(&certs).unwrap()).unwrap();
        c["uploaded_at"] = json!(c["uploaded_at"].as_f64().unwrap() - 7260.0);
        std::fs::write(&certs, c.to_string()).unwrap();
        let join = json!({"action": "join", "control_plane": true, "from": init.result,
                          "node_name": "m2"});
        let e = lab.run("m2", join, false).await.unwrap_err().to_string();
        assert!(e.contains("might have expired"), "{e}");

        // Fresh values from the first master, right before the join.
        let check = lab
            .run("m1", json!({"action": "upload_certs"}), true)
            .await
            .unwrap();
        assert_eq!(
            (check.status, check.summary.as_deref(), check.result),
            (
                Status::Changed,
                Some("upload the control-plane certificates with a new certificate key"),
                Value::Null
            )
        );
        let (tok, certs) = lab
            .fresh_join_values(json!({"action": "token", "ttl": "1h"}))
            .await;
        assert_eq!(
            (tok.status.clone(), tok.summary.as_deref()),
            (
                Status::Changed,
                Some("create a bootstrap token (valid for 1h)")
            )
        );
        assert_eq!(certs.status, Status::Changed);
        assert_hidden(&shown(&tok), &[tok.result["token"].as_str().unwrap()]);
        let key = certs.result["certificate_key"].as_str().unwrap();
        assert_hidden(&shown(&certs), &[key]);
        let join = json!({"action": "join", "control_plane": true, "node_name": "m2",
                          "from": [init.result, tok.result, certs.result]});
        assert_eq!(
            lab.run("m2", join, false).await.unwrap().status,
            Status::Changed
        );
    }

    #[tokio::test]
    async fn external_etcd_client_files_reach_a_control_plane_join_through_upload_certs() {
        let lab = Lab::new();
        // What the playbook puts on the first master before init: the external etcd cluster's
        // CA and the apiserver's client certificate.
        let files = [
            ("/etc/kubernetes/pki/etcd/ca.crt", "etcd CA\n"),
            (
                "/etc/kubernetes/pki/apiserver-etcd-client.crt",
                "client cert\n",
            ),
            (
                "/etc/kubernetes/pki/apiserver-etcd-client.key",
                "client key\n",
            ),
        ];
        for (path, text) in files {
            let f = lab.file("m1", path);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, text).unwrap();
        }
        let mut init_args = init_args();
        init_args["etcd_external"] = json!({
            "endpoints": ["https://10.0.0.21:2379"],
            "ca_file": files[0].0, "cert_file": files[1].0, "key_file": files[2].0,
        });
        // No etcd runs here and the files are not PEM: init's etcd version check fails, and
        // is made a warning as a user would.
        init_args["ignore_preflight_errors"] = json!(["ExternalEtcdVersion"]);
        let init = lab.run("m1", init_args, false).await.unwrap();
        // Fresh values right before the join, as the playbooks make them.
        let (tok, certs) = lab.fresh_join_values(json!({"action": "token"})).await;
        let join = json!({"action": "join", "control_plane": true, "node_name": "m2",
                          "from": [init.result, tok.result, certs.result]});
        let joined = lab.run("m2", join, false).await;
        assert_eq!(
            joined.map(|o| o.status).map_err(|e| e.to_string()),
            Ok(Status::Changed),
            "kubeadm uploads the external etcd files only when given the init configuration"
        );
        for (path, text) in files {
            assert_eq!(std::fs::read_to_string(lab.file("m2", path)).unwrap(), text);
        }
        let nodes = std::path::Path::new(&lab.state).join("vip.test_9443/nodes.json");
        let nodes: Value = serde_json::from_slice(&std::fs::read(nodes).unwrap()).unwrap();
        assert_eq!(nodes["m2"]["role"], "control-plane", "{nodes}");
    }

    /// A real etcd on loopback (Debian's etcd-server, the machine's /usr/bin/etcd), over http.
    struct LocalEtcd {
        child: std::process::Child,
        endpoint: String,
        _data: tempfile::TempDir,
    }

    impl LocalEtcd {
        fn start() -> Option<LocalEtcd> {
            let free = || {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            };
            let (client, peer) = (free(), free());
            let data = tempfile::tempdir().unwrap();
            let endpoint = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let child = std::process::Command::new("etcd")
                .args(["--name", "t", "--data-dir"])
                .arg(data.path())
                .args(["--listen-client-urls", &endpoint])
                .args(["--advertise-client-urls", &endpoint])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("t={peer_url}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()?;
            let etcd = LocalEtcd {
                child,
                endpoint,
                _data: data,
            };
            for _ in 0..100 {
                if etcd.version().is_some() {
                    return Some(etcd);
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            panic!("etcd did not answer on {}", etcd.endpoint);
        }
        fn version(&self) -> Option<String> {
            let out = std::process::Command::new("curl")
                .args(["-fsS", &format!("{}/version", self.endpoint)])
                .output()
                .ok()?;
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            v["etcdserver"].as_str().map(String::from)
        }
    }

    impl Drop for LocalEtcd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn an_external_etcd_older_than_kubeadm_supports_is_refused() {
        let Some(etcd) = LocalEtcd::start() else {
            panic!("etcd is needed (apt-get install etcd-server, as tests/lab/lab.sh deps does)");
        };
        let version = etcd.version().unwrap();
        assert!(version.starts_with("3.4."), "Debian 12's etcd: {version}");
        let lab = Lab::new();
        let mut args = init_args();
        args["etcd_external"] = json!({ "endpoints": [etcd.endpoint] });
        let e = lab
            .run("m1", args.clone(), false)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "[ERROR ExternalEtcdVersion]: this version of kubeadm only supports external etcd \
                 version >= 3.5.24-0. Current version: {version}"
            )),
            "{e}"
        );
        assert!(!lab.file("m1", ADMIN_CONF).exists(), "refused before init");
        // The documented opt-in: the check becomes a warning and init goes on.
        args["ignore_preflight_errors"] = json!(["ExternalEtcdVersion"]);
        assert_eq!(
            lab.run("m1", args, false).await.unwrap().status,
            Status::Changed
        );
    }

    /// The tokens init and a `token` task made are deleted after the joins, and only those: a
    /// token made by someone else stays, and a second run finds nothing to delete.
    #[tokio::test]
    async fn the_tokens_a_run_made_are_deleted_after_the_joins() {
        let lab = Lab::new();
        let init = lab.run("m1", init_args(), false).await.unwrap();
        let (tok, certs) = lab.fresh_join_values(json!({"action": "token"})).await;
        let join = json!({"action": "join", "control_plane": true, "advertise_address": "10.0.0.2",
                          "from": [init.result, tok.result, certs.result]});
        assert_eq!(
            lab.run("m2", join, false).await.unwrap().status,
            Status::Changed
        );
        let theirs = lab
            .run("m1", json!({"action": "token"}), false)
            .await
            .unwrap();
        let id = |o: &Outcome| o.result["token"].as_str().unwrap()[..6].to_string();
        let tokens_file = std::path::PathBuf::from(&lab.state).join("vip.test_9443/tokens.json");
        let listed = || std::fs::read_to_string(&tokens_file).unwrap();
        for o in [&init, &tok, &theirs] {
            assert!(listed().contains(&id(o)), "{}", listed());
        }

        let delete = json!({"action": "delete_tokens", "from": [init.result, tok.result]});
        let check = lab.run("m1", delete.clone(), true).await.unwrap();
        assert_eq!(check.status, Status::Changed);
        assert_eq!(
            check.summary.as_deref(),
            Some("delete 2 bootstrap token(s) this run made")
        );
        let done = lab.run("m1", delete.clone(), false).await.unwrap();
        assert_eq!(done.status, Status::Changed);
        assert_hidden(&shown(&done), &[tok.result["token"].as_str().unwrap()]);
        assert!(!listed().contains(&id(&init)) && !listed().contains(&id(&tok)));
        assert!(listed().contains(&id(&theirs)), "only this run's tokens go");
        assert_eq!(
            lab.run("m1", delete, false).await.unwrap().status,
            Status::Ok
        );

        // Check mode before the tokens exist (their tasks would make them): a deletion.
        let unknown = json!({"action": "delete_tokens", "from": [Value::Null, Value::Null]});
        let check = lab.run("m1", unknown.clone(), true).await.unwrap();
        assert_eq!(check.status, Status::Changed);
        // A run whose token tasks were skipped (nothing to join) has nothing to delete.
        assert_eq!(
            lab.run("m1", unknown, false).await.unwrap().status,
            Status::Ok
        );
        let e = Kubeadm::default()
            .validate(&json!({"action": "delete_tokens"}))
            .unwrap_err();
        assert!(e.contains("give `from`"), "{e}");
    }

    #[tokio::test]
    async fn a_kubelet_newer_than_the_control_plane_is_refused() {
        let lab = Lab::new();
        // The node's kubelet comes from the 1.31 package repository.
        let kubelet = lab.file("m1", "/usr/bin/kubelet");
        std::fs::create_dir_all(kubelet.parent().unwrap()).unwrap();
        std::fs::write(&kubelet, "#!/bin/sh\necho 'Kubernetes v1.31.2'\n").unwrap();
        std::fs::set_permissions(
            &kubelet,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mut older = init_args();
        older["kubernetes_version"] = "1.30.6".into();
        let e = lab.run("m1", older, false).await.unwrap_err().to_string();
        assert!(
            e.contains("[ERROR KubeletVersion]: the kubelet version is higher than the control plane version")
                && e.contains("Kubelet version: \"1.31.2\" Control plane version: \"v1.30.6\""),
            "{e}"
        );
        assert!(!lab.file("m1", ADMIN_CONF).exists());
        assert_eq!(
            lab.run("m1", init_args(), false).await.unwrap().status,
            Status::Changed,
            "the same minor is fine"
        );
    }

    #[tokio::test]
    async fn templates_are_checked_before_anything_is_written() {
        let lab = Lab::new();
        std::fs::write(
            lab.env.path("old.yaml.j2"),
            "apiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterConfiguration\nkubernetesVersion: v1.31.2\n",
        )
        .unwrap();
        let before = snapshot(lab.env.dir.path());
        let e = lab
            .run(
                "m1",
                json!({"action": "init", "config_template": "old.yaml.j2"}),
                false,
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("old.yaml.j2: ") && e.contains("v1beta2"),
            "{e}"
        );
        assert_eq!(snapshot(lab.env.dir.path()), before, "nothing written");

        std::fs::write(
            lab.env.path("ok.yaml.j2"),
            "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n\
             kubernetesVersion: v1.30.1\ncontrolPlaneEndpoint: {{ vip }}:6443\n",
        )
        .unwrap();
        let mut env_vars = Map::new();
        env_vars.insert("vip".into(), json!("tpl.test"));
        let mut lab = lab;
        lab.env.vars = env_vars;
        let out = lab
            .run(
                "m1",
                json!({"action": "init", "config_template": "ok.yaml.j2"}),
                false,
            )
            .await
            .unwrap();
        assert_eq!(out.result["api_endpoint"], "tpl.test:6443");
        assert_eq!(out.result["kubernetes_version"], "v1.30.1");
    }

    #[tokio::test]
    async fn reset_needs_confirmation_and_leaves_nothing() {
        let lab = Lab::new();
        lab.run("m1", init_args(), false).await.unwrap();
        let reset = json!({"action": "reset", "confirm": true});
        assert_eq!(
            lab.run("m1", reset.clone(), true).await.unwrap().status,
            Status::Changed
        );
        assert!(lab.file("m1", ADMIN_CONF).exists());
        assert_eq!(
            lab.run("m1", reset.clone(), false).await.unwrap().status,
            Status::Changed
        );
        assert!(!lab.file("m1", ADMIN_CONF).exists());
        assert!(!lab.file("m1", MANIFEST).exists());
        assert_eq!(
            lab.run("m1", reset, false).await.unwrap().status,
            Status::Ok
        );
        // And init works again.
        assert_eq!(
            lab.run("m1", init_args(), false).await.unwrap().status,
            Status::Changed
        );
    }
}
