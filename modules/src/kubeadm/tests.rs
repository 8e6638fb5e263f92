//! The kubeadm module's whole actions on the stand-in (tests/standins/kubeadm), two nodes and
//! their cluster all local; and what the files' own tests share.

use super::*;
use crate::testutil::{snapshot, Env};
use engine::module::{DynModule, Outcome, Status};
use serde_json::{json, Map, Value};

pub(super) fn args(v: Value) -> Args {
    engine::module::parse_args(&v).unwrap()
}

pub(super) fn init_args() -> Value {
    json!({
        "action": "init", "kubernetes_version": "1.31.2",
        "control_plane_endpoint": "vip.test:9443", "advertise_address": "10.0.0.11",
        "node_name": "m1", "cert_sans": ["10.0.0.10", "vip.test"],
        "pod_subnet": "10.244.0.0/16",
        "api_server_extra_args": { "audit-log-maxage": 30 },
        "kubelet_extra_args": { "node-ip": "10.0.0.11" },
    })
}

pub(super) const HASH: &str = "sha256:1e1f95fd836ec6934b4c5fb92cfd9b1e94a976b89957113f007149d9d478f5c4";
pub(super) const KEY: &str = "a6c975776fb32960a76ce21cc05b1ad763955b0fb8a79932761304a98d254589";

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

/// The stand-in's `certs check-expiration` and `certs renew all` (what renew-certs.rhai runs):
/// kubeadm's table, new serials from the same CA with the same names, the kubeconfigs' embedded
/// client certificates renewed, and what kubeadm does without the CA key or on a worker.
#[tokio::test]
async fn the_stand_in_checks_and_renews_certificates_as_kubeadm() {
    let lab = Lab::new();
    lab.run("m1", init_args(), false).await.unwrap();
    let kubeadm = |node: &str, args: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{} {args}", lab.node(node).bin))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let openssl = |args: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("openssl {args}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pki = |f: &str| lab.file("m1", &format!("/etc/kubernetes/pki/{f}"));
    let embedded = |conf: &str| -> std::path::PathBuf {
        let text = std::fs::read_to_string(lab.file("m1", &format!("/etc/kubernetes/{conf}")))
            .unwrap();
        let b64 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("client-certificate-data: "))
            .unwrap();
        let pem = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap();
        let path = lab.file("m1", &format!("/{conf}.crt"));
        std::fs::write(&path, pem).unwrap();
        path
    };
    let facts = |crt: &std::path::Path| {
        openssl(&format!(
            "x509 -noout -serial -subject -ext subjectAltName -in {}",
            crt.display()
        ))
    };

    let (ok, table, err) = kubeadm("m1", "certs check-expiration");
    assert!(ok, "{err}");
    let header = table
        .lines()
        .find(|l| l.starts_with("CERTIFICATE "))
        .unwrap();
    assert_eq!(
        header,
        "CERTIFICATE                EXPIRES                  RESIDUAL TIME   CERTIFICATE AUTHORITY   EXTERNALLY MANAGED"
    );
    for name in ["admin.conf", "apiserver", "etcd-server", "front-proxy-client", "super-admin.conf"] {
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {table}"));
        assert!(line.contains(" 364d ") && line.ends_with("no      "), "{line}");
    }

    let before: Vec<String> = [pki("apiserver.crt"), pki("front-proxy-client.crt"), embedded("admin.conf")]
        .iter()
        .map(|p| facts(p))
        .collect();
    let (ok, out, err) = kubeadm("m1", "certs renew all");
    assert!(ok, "{err}");
    assert!(out.contains("certificate for serving the Kubernetes API renewed"), "{out}");
    assert!(out.contains("Done renewing certificates."), "{out}");
    let after: Vec<String> = [pki("apiserver.crt"), pki("front-proxy-client.crt"), embedded("admin.conf")]
        .iter()
        .map(|p| facts(p))
        .collect();
    for (b, a) in before.iter().zip(&after) {
        let serial = |s: &str| s.lines().next().unwrap().to_string();
        assert_ne!(serial(b), serial(a), "a new serial");
        let rest = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
        assert_eq!(rest(b), rest(a), "the same subject and names");
    }
    for (crt, ca) in [
        (pki("apiserver.crt"), pki("ca.crt")),
        (pki("front-proxy-client.crt"), pki("front-proxy-ca.crt")),
        (embedded("admin.conf"), pki("ca.crt")),
        (pki("etcd/server.crt"), pki("etcd/ca.crt")),
    ] {
        let v = openssl(&format!("verify -CAfile {} {}", ca.display(), crt.display()));
        assert!(v.trim().ends_with(": OK"), "{v}");
    }

    // Without the CA key kubeadm renews nothing the CA signed, and says so (exit 0).
    std::fs::rename(pki("ca.key"), lab.file("m1", "/ca.key")).unwrap();
    let (ok, out, _) = kubeadm("m1", "certs renew all");
    assert!(ok);
    assert!(
        out.contains("Detected external ca, certificate for serving the Kubernetes API can't be renewed"),
        "{out}"
    );
    let (_, table, _) = kubeadm("m1", "certs check-expiration");
    assert!(table.lines().any(|l| l.starts_with("ca ") && l.contains(" yes")), "{table}");
    // A worker (the CA certificate only): check-expiration fails, renew finds nothing.
    std::fs::create_dir_all(lab.file("m2", "/etc/kubernetes/pki")).unwrap();
    std::fs::copy(pki("ca.crt"), lab.file("m2", "/etc/kubernetes/pki/ca.crt")).unwrap();
    let (ok, _, err) = kubeadm("m2", "certs check-expiration");
    assert!(!ok && err.contains("failure loading API server certificate"), "{err}");
    let (ok, out, _) = kubeadm("m2", "certs renew all");
    assert!(ok && out.contains("MISSING! certificate for serving the Kubernetes API"), "{out}");
    let (ok, _, err) = kubeadm("m1", "certs renew all now");
    assert!(!ok && err.contains("unknown command \"now\""), "{err}");
}

/// The stand-in's `upgrade` and `config migrate` on a cluster the module initialised at 1.30
/// (kubeadm.k8s.io/v1beta3): kubeadm's version-skew refusals, `upgrade node` before `upgrade
/// apply`, `upgrade apply` without admin.conf; then apply moves the manifests' images and the
/// cluster's configuration (to v1beta4), and migrate converts the file init was given.
#[tokio::test]
async fn the_stand_in_upgrades_as_kubeadm_does_and_refuses_what_it_refuses() {
    let lab = Lab::new();
    let mut init = init_args();
    init["kubernetes_version"] = json!("1.30.6");
    lab.run("m1", init, false).await.unwrap();
    let kubeadm = |node: &str, version: &str, args: &[&str]| {
        let out = std::process::Command::new(format!(
            "{}/../tests/standins/kubeadm",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(args)
        .env("KUBEADM_STANDIN_ROOT", lab.env.path(node))
        .env("KUBEADM_STANDIN_STATE", &lab.state)
        .env("KUBEADM_STANDIN_VERSION", version)
        .output()
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + String::from_utf8_lossy(&out.stderr).as_ref();
        (out.status.success(), text)
    };
    let image = |comp: &str| {
        let text =
            std::fs::read_to_string(lab.file("m1", &format!("/etc/kubernetes/manifests/{comp}.yaml")))
                .unwrap();
        text.lines()
            .find_map(|l| l.trim().strip_prefix("image: ").map(str::to_string))
            .unwrap()
    };
    assert_eq!(image("kube-apiserver"), "registry.k8s.io/kube-apiserver:v1.30.6");

    let (ok, text) = kubeadm("m1", "v1.31.2", &["upgrade", "plan"]);
    assert!(ok && text.contains("[upgrade/versions] Cluster version: v1.30.6"), "{text}");
    let refused = [
        ("v1.32.0", "v1.32.0", "is too high; kubeadm can upgrade only 1 minor version at a time"),
        ("v1.31.2", "v1.30.2", "Kubeadm version v1.31.2 can only be used to upgrade to Kubernetes version 1.31"),
        ("v1.30.6", "v1.31.2", "at least one minor release higher than the kubeadm minor release (31 > 30)"),
    ];
    for (kubeadm_version, target, why) in refused {
        let (ok, text) = kubeadm("m1", kubeadm_version, &["upgrade", "apply", target, "-y"]);
        assert!(!ok && text.contains(why), "{kubeadm_version} to {target}: {text}");
    }
    let (ok, text) = kubeadm("m1", "v1.31.2", &["upgrade", "node"]);
    assert!(
        !ok && text.contains("run \"kubeadm upgrade apply\" on a control-plane node first"),
        "{text}"
    );
    let (ok, text) = kubeadm("m2", "v1.31.2", &["upgrade", "apply", "v1.31.2", "-y"]);
    assert!(
        !ok && text.contains("couldn't create a Kubernetes client from file \"/etc/kubernetes/admin.conf\""),
        "{text}"
    );
    assert_eq!(image("kube-apiserver"), "registry.k8s.io/kube-apiserver:v1.30.6");

    let (ok, text) = kubeadm("m1", "v1.31.2", &["upgrade", "apply", "v1.31.2", "-y"]);
    assert!(ok && text.contains("SUCCESS! Your cluster was upgraded to \"v1.31.2\""), "{text}");
    for comp in ["kube-apiserver", "kube-controller-manager", "kube-scheduler"] {
        assert_eq!(image(comp), format!("registry.k8s.io/{comp}:v1.31.2"));
    }
    let cluster: Value = serde_json::from_slice(
        &std::fs::read(std::path::Path::new(&lab.state).join("vip.test_9443/cluster.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cluster["kubernetesVersion"], "v1.31.2");
    assert_eq!(cluster["clusterConfiguration"]["apiVersion"], "kubeadm.k8s.io/v1beta4");
    assert_eq!(
        cluster["clusterConfiguration"]["apiServer"]["extraArgs"],
        json!([{"name": "audit-log-maxage", "value": "30"}])
    );
    let (ok, text) = kubeadm("m1", "v1.31.2", &["upgrade", "node"]);
    assert!(ok && text.contains("kube-apiserver are equal, skipping upgrade"), "{text}");
    let (ok, text) = kubeadm("m1", "v1.30.6", &["upgrade", "node"]);
    assert!(!ok && text.contains("is registered for version \"kubeadm.k8s.io/v1beta4\""), "{text}");

    let old = lab.file("m1", INIT_CONFIG);
    let new = lab.env.path("migrated.yaml");
    let (ok, text) = kubeadm(
        "m1",
        "v1.31.2",
        &["config", "migrate", "--old-config", old.to_str().unwrap(), "--new-config", &new],
    );
    assert!(ok, "{text}");
    let migrated = std::fs::read_to_string(&new).unwrap();
    let apis: Vec<&str> = migrated.lines().filter(|l| l.starts_with("apiVersion: kubeadm")).collect();
    assert_eq!(apis, ["apiVersion: kubeadm.k8s.io/v1beta4"; 2], "{migrated}");
    assert!(migrated.contains("- name: node-ip\n    value: 10.0.0.11"), "{migrated}");
}
