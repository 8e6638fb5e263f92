//! `k8s`: applies (or deletes) a Kubernetes manifest with the `kubectl` of the target host, as
//! Ansible's `kubernetes.core.k8s` does with `src` and `state`.

use async_trait::async_trait;
use engine::host::quote;
use engine::transport::ExecOutput;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::shared::content::controller_file;

pub struct K8s;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Present,
    Absent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// A manifest file on the controller (next to the playbook or in its `files/`).
    #[serde(default)]
    pub src: Option<String>,
    /// The manifest's YAML text itself.
    #[serde(default)]
    pub definition: Option<String>,
    /// A Jinja2 template of the manifest on the controller, rendered with the host's variables.
    #[serde(default)]
    pub template: Option<String>,
    /// A manifest URL, fetched by kubectl on the target.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub state: State,
    /// Default /etc/kubernetes/admin.conf.
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// The kubectl program (default `kubectl`).
    #[serde(default)]
    pub kubectl: Option<String>,
}

pub const DOC: &str = r#"# k8s

Applies a Kubernetes manifest (`state: present`, `kubectl apply`) or deletes its objects
(`state: absent`, `kubectl delete --ignore-not-found`), with the kubectl and kubeconfig of the
target host: a CNI manifest on the first control-plane node, say.

- The probe is a server-side dry run of the same command (`--dry-run=server`): the API server
  says, per object, whether it would be created, configured, unchanged or deleted. The task
  changes only when some object would; a second run reports ok.
- The real run runs the command, and reports changed when kubectl created, configured or deleted
  an object.
- A server dry run cannot create a namespace, so a manifest that makes a namespace and objects in
  it fails its dry run with `namespaces "X" not found` while the namespace is new. When the
  manifest itself makes that namespace (with `url`, which is not read here: assumed), the probe
  predicts the change (the namespace is new, so the apply creates it and what is in it);
  otherwise the task fails with kubectl's message.
- In check mode after a change predicted on the host (the `kubeadm init` that makes the cluster),
  a cluster that cannot be reached yet is assumed to be made by that change: the apply is
  predicted, saying so.
- The manifest goes to kubectl on stdin (`-f -`), so nothing is written on the target; with
  `url`, kubectl on the target fetches it (`-f URL`). Only object names are printed, never the
  manifest (it may hold Secrets).

| argument | required | default | meaning |
|---|---|---|---|
| `src` | one of `src`/`definition`/`template`/`url` | | a manifest file on the controller (next to the playbook or in its `files/`) |
| `definition` | one of them | | the manifest's YAML text |
| `template` | one of them | | a Jinja2 template of the manifest on the controller, rendered with the host's variables (as `file_template` renders) |
| `url` | one of them | | a manifest URL, fetched by kubectl on the target |
| `state` | no | `present` | `present` (apply) or `absent` (delete) |
| `kubeconfig` | no | `/etc/kubernetes/admin.conf` | the kubeconfig kubectl uses |
| `kubectl` | no | `kubectl` | the kubectl program |

Result: `objects`, a list of `{name, action}` (action: `created`, `configured`, `unchanged`,
`deleted`), as kubectl reported them.

```rhai
on(first("masters"), k8s(#{ src: "files/cni/kube-flannel.yml" }).name("apply the CNI"));
```
"#;

pub struct Plan {
    manifest: Option<Vec<u8>>,
}

/// The changing verbs kubectl prints after an object's name.
const CHANGING: [&str; 3] = ["created", "configured", "deleted"];

/// The objects and what kubectl did (or, in a dry run, would do) to each: `kind/name created`,
/// `kind "name" deleted`, with " (server dry run)" after it in a dry run.
fn objects(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let l = l.trim_end().trim_end_matches(" (server dry run)");
            let (name, verb) = l.rsplit_once(' ')?;
            let known = CHANGING.contains(&verb) || verb == "unchanged";
            known.then(|| (name.replace('"', ""), verb.to_string()))
        })
        .collect()
}

fn summary(objs: &[(String, String)]) -> String {
    let changing: Vec<String> = objs
        .iter()
        .filter(|(_, v)| CHANGING.contains(&v.as_str()))
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    let unchanged = objs.len() - changing.len();
    match unchanged {
        0 => changing.join(", "),
        n => format!("{}; {n} unchanged", changing.join(", ")),
    }
}

fn result(objs: &[(String, String)]) -> Value {
    json!({
        "objects": objs.iter().map(|(n, a)| json!({"name": n, "action": a})).collect::<Vec<_>>()
    })
}

/// The namespaces a manifest makes (its `kind: Namespace` objects).
fn namespaces_made(manifest: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(manifest);
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| serde_yaml::Value::deserialize(doc).ok())
        .filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some("Namespace"))
        .filter_map(|d| d.get("metadata")?.get("name")?.as_str().map(str::to_string))
        .collect()
}

/// The namespace named in kubectl's `namespaces "X" not found`.
fn missing_namespace(stderr: &str) -> Option<&str> {
    let rest = &stderr[stderr.find("namespaces \"")? + "namespaces \"".len()..];
    let end = rest.find("\" not found")?;
    Some(&rest[..end])
}

impl Args {
    fn manifest(&self, cx: &ModuleContext<'_>) -> Result<Option<Vec<u8>>, ModuleError> {
        if let Some(d) = &self.definition {
            return Ok(Some(d.clone().into_bytes()));
        }
        if let Some(t) = &self.template {
            return Ok(Some(cx.templates.render_file(t)?.into_bytes()));
        }
        let Some(src) = &self.src else {
            return Ok(None);
        };
        let path = controller_file(cx.base_dir, src);
        std::fs::read(&path)
            .map(Some)
            .map_err(|e| ModuleError::Failed(format!("cannot read src {}: {e}", path.display())))
    }

    /// The kubectl command line (a shell fragment), a server dry run or for real.
    fn command(&self, dry_run: bool) -> Result<String, ModuleError> {
        let q = |s: &str| quote(s).map_err(ModuleError::from);
        let kubectl = q(self.kubectl.as_deref().unwrap_or("kubectl"))?;
        let kubeconfig = q(self
            .kubeconfig
            .as_deref()
            .unwrap_or("/etc/kubernetes/admin.conf"))?;
        let verb = match self.state {
            State::Present => "apply",
            State::Absent => "delete --ignore-not-found",
        };
        let file = match &self.url {
            Some(u) => q(u)?,
            None => "-".into(),
        };
        let dry = if dry_run { " --dry-run=server" } else { "" };
        Ok(format!(
            "{kubectl} --kubeconfig {kubeconfig} {verb}{dry} -f {file}"
        ))
    }

    async fn kubectl(
        &self,
        cx: &ModuleContext<'_>,
        manifest: Option<&[u8]>,
        dry_run: bool,
    ) -> Result<ExecOutput, ModuleError> {
        let cmd = self.command(dry_run)?;
        Ok(cx
            .host
            .run_with_input(&cmd, manifest.unwrap_or_default())
            .await?)
    }

    fn what(&self) -> String {
        let source = match (&self.src, &self.template, &self.url) {
            (Some(s), _, _) | (None, Some(s), _) | (None, None, Some(s)) => s.clone(),
            _ => "the definition".into(),
        };
        match self.state {
            State::Present => format!("apply {source}"),
            State::Absent => format!("delete the objects of {source}"),
        }
    }
}

fn failure(cmd_what: &str, out: &ExecOutput) -> ModuleError {
    let mut msg = out.stderr_text().trim().to_string();
    if msg.is_empty() {
        msg = format!("exit status {}", out.status);
    }
    ModuleError::Failed(format!("kubectl ({cmd_what}): {msg}"))
}

#[async_trait]
impl Module for K8s {
    const NAME: &'static str = "k8s";
    const DOC: &'static str = DOC;
    const RENDERS_TEMPLATES: bool = true;

    /// Without `template` it reads no file: nothing more than its arguments need.
    fn template_files(args: &Value) -> Option<Vec<String>> {
        match args.get("template") {
            Some(t) => Some(vec![t.as_str()?.to_string()]),
            None => Some(Vec::new()),
        }
    }
    type Args = Args;
    type Plan = Plan;

    fn check_args(a: &Args) -> Result<(), String> {
        let given = [&a.src, &a.definition, &a.template, &a.url]
            .iter()
            .filter(|x| x.is_some())
            .count();
        if given != 1 {
            return Err("give exactly one of src, definition, template and url".into());
        }
        Ok(())
    }

    async fn probe(&self, args: &Args, cx: &ModuleContext<'_>) -> Result<Probe<Plan>, ModuleError> {
        let manifest = args.manifest(cx)?;
        let out = args.kubectl(cx, manifest.as_deref(), true).await?;
        let plan = Plan { manifest };
        if !out.success() {
            let stderr = out.stderr_text();
            let what = args.what();
            // The manifest makes the namespace its objects need: it is new, so apply creates it.
            let new_ns = missing_namespace(&stderr).filter(|ns| {
                args.state == State::Present
                    && match &plan.manifest {
                        Some(m) => namespaces_made(m).iter().any(|n| n == ns),
                        None => true,
                    }
            });
            if let Some(ns) = new_ns {
                let summary = format!(
                    "{what}: namespace {ns} is new (a server dry run cannot create it), so its objects are created with it"
                );
                return Ok(Probe::change(plan, summary, None));
            }
            if cx.after_predicted_change {
                let summary = format!(
                    "{what} (assumed: the cluster is made by a change above; now: {})",
                    stderr.trim()
                );
                return Ok(Probe::change(plan, summary, None));
            }
            return Err(failure("server dry run", &out));
        }
        let objs = objects(&out.stdout_text());
        if !objs.iter().any(|(_, v)| CHANGING.contains(&v.as_str())) {
            return Ok(Probe::Unchanged(result(&objs)));
        }
        Ok(Probe::change(plan, summary(&objs), None))
    }

    async fn apply(
        &self,
        args: &Args,
        plan: Plan,
        cx: &ModuleContext<'_>,
    ) -> Result<Applied, ModuleError> {
        let out = args.kubectl(cx, plan.manifest.as_deref(), false).await?;
        if !out.success() {
            return Err(failure(&args.what(), &out));
        }
        let objs = objects(&out.stdout_text());
        Ok(Applied {
            changed: objs.iter().any(|(_, v)| CHANGING.contains(&v.as_str())),
            result: result(&objs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Env;
    use engine::module::{DynModule, Status};

    /// A cluster for the kubectl STAND-IN (tests/standins/kubectl, not kubectl): its state in the
    /// test's directory, and a kubeconfig pointing at it.
    fn cluster(env: &Env) -> Value {
        let state = env.path("cluster");
        std::fs::create_dir_all(format!("{state}/10.0.0.1_6443")).unwrap();
        std::fs::write(
            env.path("admin.conf"),
            "clusters:\n- cluster:\n    server: https://10.0.0.1:6443\n",
        )
        .unwrap();
        let standin = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/standins/kubectl");
        let wrapper = env.path("kubectl");
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nKUBEADM_STANDIN_STATE={state} exec python3 {standin} \"$@\"\n"),
        )
        .unwrap();
        std::process::Command::new("chmod")
            .args(["+x", &wrapper])
            .status()
            .unwrap();
        json!({ "kubectl": wrapper, "kubeconfig": env.path("admin.conf") })
    }

    const MANIFEST: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kube-flannel\n---\n\
        apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: flannel\n  namespace: kube-flannel\n---\n\
        apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: kube-flannel-ds\n  namespace: kube-flannel\n\
        spec:\n  template:\n    spec:\n      containers: [{name: f, image: flannel:v1}]\n";

    fn with(base: &Value, extra: Value) -> Value {
        let mut v = base.clone();
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    }

    #[tokio::test]
    async fn applies_once_predicts_truthfully_and_deletes() {
        let env = Env::new();
        let base = cluster(&env);
        std::fs::write(env.path("cni.yaml"), MANIFEST).unwrap();
        let args = with(&base, json!({ "src": "cni.yaml" }));

        // A new namespace with its objects: the dry run cannot create it, the prediction says why.
        let check = env.run(&K8s, args.clone(), true).await.unwrap();
        assert_eq!(check.status, Status::Changed);
        let s = check.summary.unwrap();
        assert!(s.contains("namespace kube-flannel is new"), "{s}");

        let out = env.run(&K8s, args.clone(), false).await.unwrap();
        assert_eq!(out.status, Status::Changed);
        let names: Vec<&str> = out.result["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "namespace/kube-flannel",
                "serviceaccount/flannel",
                "daemonset.apps/kube-flannel-ds"
            ]
        );
        assert_eq!(env.check(&K8s, args.clone()).await, Status::Ok);
        assert_eq!(
            env.run(&K8s, args.clone(), false).await.unwrap().status,
            Status::Ok
        );

        // One object changed: predicted and made, the others unchanged.
        let changed = MANIFEST.replace("flannel:v1", "flannel:v2");
        let args2 = with(&base, json!({ "definition": changed }));
        let check = env.run(&K8s, args2.clone(), true).await.unwrap();
        assert_eq!(check.status, Status::Changed);
        assert_eq!(
            check.summary.as_deref(),
            Some("daemonset.apps/kube-flannel-ds configured; 2 unchanged")
        );
        assert_eq!(env.apply(&K8s, args2.clone()).await.status, Status::Changed);
        assert_eq!(env.check(&K8s, args2.clone()).await, Status::Ok);

        // Absent: the objects go, once.
        let gone = with(&args2, json!({ "state": "absent" }));
        assert_eq!(env.check(&K8s, gone.clone()).await, Status::Changed);
        assert_eq!(env.apply(&K8s, gone.clone()).await.status, Status::Changed);
        assert_eq!(env.check(&K8s, gone.clone()).await, Status::Ok);
        assert_eq!(env.apply(&K8s, gone).await.status, Status::Ok);
    }

    #[tokio::test]
    async fn an_unreachable_cluster_fails_unless_a_change_above_makes_it() {
        let mut env = Env::new();
        let mut args = with(&cluster(&env), json!({ "definition": MANIFEST }));
        args["kubeconfig"] = json!(env.path("missing.conf"));
        let e = env.error(&K8s, args.clone()).await;
        assert!(e.contains("kubectl (server dry run)"), "{e}");
        assert!(e.contains("connection to the server"), "{e}");

        env.after_predicted_change = true;
        let check = env.run(&K8s, args.clone(), true).await.unwrap();
        assert_eq!(check.status, Status::Changed);
        assert!(check.summary.unwrap().contains("assumed"));
        // Only check mode assumes: the real run fails as kubectl does.
        assert!(env.run(&K8s, args, false).await.is_err());
    }

    #[tokio::test]
    async fn a_template_is_rendered_with_the_hosts_variables() {
        let mut env = Env::new();
        let base = cluster(&env);
        std::fs::write(
            env.path("cfg.yaml.j2"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: net\n  namespace: kube-system\n\
             data:\n  network: \"{{ pod_subnet }}\"\n",
        )
        .unwrap();
        env.vars.insert("pod_subnet".into(), json!("10.200.0.0/16"));
        let args = with(&base, json!({ "template": "cfg.yaml.j2" }));
        let out = env.run(&K8s, args.clone(), false).await.unwrap();
        assert_eq!(out.status, Status::Changed);
        let applied = std::fs::read_to_string(env.path("cluster/10.0.0.1_6443/applied.json"));
        assert!(applied.unwrap().contains("10.200.0.0/16"));
        assert_eq!(env.check(&K8s, args.clone()).await, Status::Ok);

        // Another value is another manifest: predicted, then applied.
        env.vars.insert("pod_subnet".into(), json!("10.201.0.0/16"));
        let check = env.run(&K8s, args.clone(), true).await.unwrap();
        assert_eq!(
            check.summary.as_deref(),
            Some("configmap/net configured"),
            "{check:?}"
        );
        assert_eq!(env.apply(&K8s, args).await.status, Status::Changed);

        // A template error names the file, as file_template's do.
        std::fs::write(env.path("bad.j2"), "a: {{ nope( }}\n").unwrap();
        let e = env
            .error(&K8s, with(&base, json!({ "template": "bad.j2" })))
            .await;
        assert!(e.contains("bad.j2"), "{e}");
    }

    #[test]
    fn exactly_one_source() {
        for args in [
            json!({}),
            json!({ "src": "a", "url": "https://x/y.yaml" }),
            json!({ "definition": "a", "src": "b" }),
        ] {
            let e = K8s.validate(&args).unwrap_err();
            assert!(
                e.contains("exactly one of src, definition, template and url"),
                "{e}"
            );
        }
        assert!(K8s.validate(&json!({ "url": "https://x/y.yaml" })).is_ok());
    }

    #[test]
    fn reads_kubectl_output() {
        let out = "namespace/a created (server dry run)\nconfigmap/b unchanged (server dry run)\n\
                   serviceaccount \"c\" deleted\nWarning: something\n";
        assert_eq!(
            objects(out),
            [
                ("namespace/a".to_string(), "created".to_string()),
                ("configmap/b".into(), "unchanged".into()),
                ("serviceaccount c".into(), "deleted".into()),
            ]
        );
        assert_eq!(
            missing_namespace("Error from server (NotFound): error when creating \"STDIN\": namespaces \"kf\" not found"),
            Some("kf")
        );
    }
}
