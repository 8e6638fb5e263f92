//! The `kubeadm` module over real SSH on two lab hosts (h3 = m1, h4 = m2) with the Kubernetes
//! stand-ins (tests/standins/): init on m1, a control-plane join of m2 with the values init
//! produced, idempotency, truthful check mode, secrets kept out of every output, and the configs
//! and flags real kubeadm refuses. Skipped (and saying so) when the lab is not up with 4+ light
//! hosts.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{lab_exec, lab_hosts, Conn, Output, Project, LAB_DIR};

const HOSTS: [(&str, &str, &str); 2] = [("m1", "h3", "10.77.0.13"), ("m2", "h4", "10.77.0.14")];
const STATE: &str = "/srv/lab/shared/standin-cluster";

/// Kubernetes state on the test's hosts and the stand-in cluster are removed on the way in and
/// on the way out (also when the test fails).
struct Fresh {
    cluster_dir: PathBuf,
}

impl Fresh {
    fn new(endpoint: &str) -> Self {
        let cluster_dir = Path::new(STATE).join(endpoint.replace(':', "_"));
        let f = Fresh { cluster_dir };
        f.clean();
        for (_, h, _) in HOSTS {
            let out = Command::new("bash")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/standins/install.sh"
                ))
                .arg(h)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "installing the stand-ins on {h}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        f
    }

    fn clean(&self) {
        for (_, h, _) in HOSTS {
            // Not lab_exec: this also runs while a failed test unwinds, and must not panic.
            let _ = Command::new("bash")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/lab.sh"))
                .args(["exec", h, "sh", "-c"])
                .arg("rm -rf /etc/kubernetes /var/lib/kubelet /var/lib/etcd /tmp/old.yaml")
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.cluster_dir);
        // The parent only when nothing else is in it.
        let _ = std::fs::remove_dir(STATE);
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        self.clean();
    }
}

/// A file on a lab host, read from the host's overlay upper directory.
fn upper(host: &str, path: &str) -> PathBuf {
    let path = path.trim_start_matches('/');
    let (top, rest) = path.split_once('/').unwrap();
    PathBuf::from(format!("{LAB_DIR}/hosts/{host}/ov/{top}/upper/{rest}"))
}

fn inventory() -> String {
    let mut inv = format!(
        "[defaults]\nconnection = \"ssh\"\nuser = \"root\"\n\
         identity_file = \"{LAB_DIR}/keys/id_lab\"\nknown_hosts = \"{LAB_DIR}/known_hosts\"\n\n"
    );
    for (name, _, ip) in HOSTS {
        inv += &format!("[hosts.{name}]\naddress = \"{ip}\"\n\n");
    }
    inv
}

fn playbook(endpoint: &str) -> String {
    format!(
        r#"
phase("control-plane", || {{
    let init = on("m1", kubeadm(#{{ action: "init", kubernetes_version: "1.31.2",
        control_plane_endpoint: "{endpoint}", advertise_address: "10.77.0.13", node_name: "m1",
        cert_sans: ["10.77.0.13", "10.77.0.14", "m1", "m2"], pod_subnet: "10.244.0.0/16",
        api_server_extra_args: #{{ "audit-log-maxage": 30 }}, refresh_join_info: false }})
        .name("init").register("init"));
    on("m1", debug(#{{ msg: "join token {{{{ init.token | default('unknown') }}}} key {{{{ init.certificate_key | default('unknown') }}}}" }})
        .name("show"));
    // Fresh values right before the control-plane join, only while m2 has to join: each is a
    // new credential in the cluster, a change.
    let joined = on("m2", shell(#{{ changed_when: false,
        cmd: "if [ -e /etc/kubernetes/kubelet.conf ]; then echo joined; else echo new; fi" }})
        .check_mode(false).name("joined?"));
    let pending = || joined.on_host("m2").stdout != "joined";
    let tok = on("m1", kubeadm(#{{ action: "token", ttl: "1h" }}).name("token").after(init)
        .when(pending));
    let certs = on("m1", kubeadm(#{{ action: "upload_certs" }}).name("certs").after(tok)
        .when(pending));
    on("m2", kubeadm(#{{ action: "join", control_plane: true, from: [init, tok, certs],
        advertise_address: "10.77.0.14", node_name: "m2" }}).name("join"));
}});
"#
    )
}

/// Every token and certificate key the stand-in cluster holds now.
fn secrets_of(cluster: &Path) -> Vec<String> {
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(cluster.join(f)).unwrap()).unwrap()
    };
    let mut v: Vec<String> = read("tokens.json")
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    v.push(read("certs.json")["key"].as_str().unwrap().to_string());
    v
}

fn text(o: &Output) -> String {
    format!("{}\n{}", o.stdout, o.stderr)
}

#[test]
fn init_and_control_plane_join_on_two_lab_hosts() {
    match lab_hosts() {
        Some(n) if n >= 4 => {}
        _ => {
            crate::support::lab_skip(
                "init_and_control_plane_join_on_two_lab_hosts",
                "needs the lab with 4 light hosts",
            );
            return;
        }
    }
    let p = Project::new(Conn::Lab);
    let endpoint = format!("kubeadm-test-{}.lab:6443", std::process::id());
    let fresh = Fresh::new(&endpoint);
    p.file("inventory.toml", &inventory())
        .file("site.rhai", &playbook(&endpoint))
        .file(
            "templates/old.yaml.j2",
            "apiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterConfiguration\nkubernetesVersion: v1.31.2\n",
        )
        .file(
            "old.rhai",
            "on(\"m2\", kubeadm(#{ action: \"init\", config_template: \"templates/old.yaml.j2\" }));\n",
        );
    let mut seen_outputs: Vec<String> = Vec::new();

    // Check mode on fresh hosts: says what it would do, writes nothing.
    let check = p.run(&[
        "run",
        "site.rhai",
        "-i",
        "inventory.toml",
        "--check",
        "--diff",
    ]);
    check.assert_code(0);
    let t = text(&check);
    assert!(
        t.contains(
            "would run kubeadm init --config /etc/kubernetes/kubeadm-init.yaml --upload-certs"
        ),
        "{t}"
    );
    assert!(
        t.contains("join") && t.contains("depends on a change above"),
        "{t}"
    );
    assert!(
        t.contains("+apiVersion: kubeadm.k8s.io/v1beta4"),
        "the diff shows the config: {t}"
    );
    for (_, h, _) in HOSTS {
        assert!(
            !upper(h, "/etc/kubernetes").exists(),
            "check mode wrote on {h}"
        );
    }
    seen_outputs.push(t);

    // The real run: init on m1, the join of m2 with the values init, token and certs produced.
    let first = p.play("site.rhai", &[]);
    first.assert_code(0);
    assert_eq!(
        first.changed(),
        [
            ("m1".to_string(), "certs".to_string()),
            ("m1".to_string(), "init".to_string()),
            ("m1".to_string(), "token".to_string()),
            ("m2".to_string(), "join".to_string())
        ],
        "{}",
        first.stdout
    );
    for f in [
        "/etc/kubernetes/admin.conf",
        "/etc/kubernetes/kubeadm-init.yaml",
        "/etc/kubernetes/pki/ca.key",
        "/etc/kubernetes/pki/apiserver.crt",
        "/etc/kubernetes/manifests/kube-apiserver.yaml",
        "/var/lib/kubelet/config.yaml",
    ] {
        assert!(upper("h3", f).exists(), "h3:{f}");
    }
    for f in [
        "/etc/kubernetes/kubelet.conf",
        "/etc/kubernetes/admin.conf",
        "/etc/kubernetes/manifests/kube-apiserver.yaml",
        "/var/lib/kubelet/config.yaml",
    ] {
        assert!(upper("h4", f).exists(), "h4:{f}");
    }
    assert!(
        !upper("h4", "/etc/kubernetes/kubeadm-join.yaml").exists(),
        "the join config (token, key) is removed after the join"
    );
    let ca = |h: &str| std::fs::read(upper(h, "/etc/kubernetes/pki/ca.crt")).unwrap();
    assert_eq!(
        ca("h3"),
        ca("h4"),
        "m2 got the cluster's CA through the certificate key"
    );
    let manifest =
        std::fs::read_to_string(upper("h3", "/etc/kubernetes/manifests/kube-apiserver.yaml"))
            .unwrap();
    assert!(manifest.contains("--audit-log-maxage=30"), "{manifest}");
    let nodes = std::fs::read_to_string(fresh.cluster_dir.join("nodes.json")).unwrap();
    assert!(
        nodes.contains("\"m1\"") && nodes.contains("\"m2\""),
        "{nodes}"
    );
    let shown = first
        .task_ends()
        .into_iter()
        .find(|e| e["task"] == "show")
        .unwrap();
    assert_eq!(
        shown["msg"], "join token [secret] key [secret]",
        "a playbook that prints the values sees them redacted"
    );
    let secrets = secrets_of(&fresh.cluster_dir);
    seen_outputs.push(text(&first));

    // Again: nothing to do, and no join values are made (no node has to join).
    let second = p.run(&["run", "site.rhai", "-i", "inventory.toml", "--diff"]);
    second.assert_code(0);
    let t = text(&second);
    assert!(
        t.contains("already initialised (/etc/kubernetes/admin.conf exists)"),
        "{t}"
    );
    assert!(
        t.contains("already joined (/etc/kubernetes/kubelet.conf exists)"),
        "{t}"
    );
    let json_again = p.play("site.rhai", &[]);
    json_again.assert_code(0);
    assert_eq!(json_again.total("changed"), 0, "{}", json_again.stdout);
    assert_eq!(
        secrets_of(&fresh.cluster_dir),
        secrets,
        "a re-run made join values"
    );
    seen_outputs.push(t);
    seen_outputs.push(text(&json_again));

    // Check mode on the converged hosts: no change, and no token is created.
    let tokens_before = secrets_of(&fresh.cluster_dir);
    let check = p.play("site.rhai", &["--check"]);
    check.assert_code(0);
    assert_eq!(check.total("changed"), 0, "{}", check.stdout);
    assert_eq!(
        secrets_of(&fresh.cluster_dir),
        tokens_before,
        "check mode made tokens"
    );
    assert_eq!(
        check.tasks_where(|e| e["status"] == "skipped"),
        [
            ("m1".to_string(), "certs".to_string()),
            ("m1".to_string(), "token".to_string())
        ],
        "{}",
        check.stdout
    );
    seen_outputs.push(text(&check));

    // The token and the certificate keys appear in no output, text or JSON.
    assert!(
        secrets.len() >= 3,
        "init's token, the fresh one, the key: {secrets:?}"
    );
    for out in &seen_outputs {
        for s in &secrets {
            assert!(!out.contains(s.as_str()), "a secret was shown:\n{out}");
        }
    }

    // A v1beta2 config is refused by the module before anything is written on the host.
    let before = std::fs::read_dir(upper("h4", "/etc/kubernetes"))
        .unwrap()
        .count();
    let old = p.play("old.rhai", &[]);
    old.assert_code(2);
    let failed = old
        .task_ends()
        .into_iter()
        .find(|e| e["status"] == "failed")
        .unwrap();
    let msg = failed["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("templates/old.yaml.j2: ")
            && msg.contains("v1beta2")
            && msg.contains("1.26"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_dir(upper("h4", "/etc/kubernetes"))
            .unwrap()
            .count(),
        before
    );
    // ...and the stand-in refuses it too, as real kubeadm does, as well as a removed flag.
    lab_exec(
        "h4",
        "printf 'apiVersion: kubeadm.k8s.io/v1beta2\\nkind: InitConfiguration\\n' > /tmp/old.yaml",
    );
    let refused = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/lab.sh"))
        .args(["exec", "h4", "sh", "-c"])
        .arg(
            "kubeadm init --config /tmp/old.yaml; echo rc=$?; \
             kubeadm join 10.77.0.13:6443 --experimental-control-plane; echo rc=$?",
        )
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        all.contains("your configuration file uses an old API spec: \"kubeadm.k8s.io/v1beta2\""),
        "{all}"
    );
    assert!(
        all.contains("unknown flag: --experimental-control-plane"),
        "{all}"
    );
    assert_eq!(all.matches("rc=1").count(), 2, "{all}");
    drop(fresh);
}
