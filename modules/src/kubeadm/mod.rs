//! `kubeadm`: initialises a Kubernetes control plane, joins control-plane nodes and workers,
//! creates fresh join values (bootstrap token, certificate key) and resets nodes.
//!
//! `args` (the arguments and their checks per action), `join_info` (the values a join needs, read
//! from kubeadm's output and from earlier results), `build` (configs and command lines from the
//! fields), `config` (the typed kubeadm configs), and one file per action: `init`, `join`,
//! `tokens` (token, upload_certs, delete_tokens), `reset`.

use async_trait::async_trait;
use engine::diff::FileDiff;
use engine::host::quote;
use engine::remote::{write_file, WriteOptions};
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};

mod args;
mod build;
pub mod config;
mod init;
mod join;
mod join_info;
mod reset;
#[cfg(test)]
mod tests;
mod tokens;

pub use args::{templated, Action, Args, EtcdExternal};
pub use build::{build_init, join_config};
pub use join_info::{scrub, JoinInfo};
use tokens::Fresh;

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

/// The summary of a change that runs `command`: said before it runs in check mode, after it ran
/// otherwise (the summary is made by probe, before apply).
fn ran(cx: &ModuleContext<'_>, command: &str) -> String {
    if cx.check {
        format!("would run {command}")
    } else {
        format!("ran {command}")
    }
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

    /// Runs kubeadm; a failure names the command and the output's last lines, scrubbed.
    async fn run(
        &self,
        cx: &ModuleContext<'_>,
        args: &[String],
        secrets: &[String],
    ) -> Result<String, ModuleError> {
        let script = format!("{}\n", self.command(args).map_err(ModuleError::Args)?);
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
            Action::Token | Action::UploadCerts => Ok(tokens::probe_fresh(args)),
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
            Plan::Fresh(f) => self.apply_fresh(f, cx).await,
            Plan::DeleteTokens(ids) => self.apply_delete_tokens(ids, cx).await,
            Plan::Reset => self.apply_reset(cx).await,
        }
    }
}
