//! The shipped HA playbooks (playbooks/ha-*.rhai), proven on the lab's systemd hosts with real
//! systemd, keepalived, haproxy, containerd and etcd, and the Kubernetes STAND-INS
//! (tests/standins/: kubeadm, kubelet, kube-apiserver, kube-controller-manager, kube-scheduler,
//! kubectl — not Kubernetes) installed from a stand-in apt repository the test builds.
//!
//! For each layout: check mode on fresh hosts changes nothing, and what it predicts is what the
//! real run then does; the run converges; a second run and check mode report 0 changed; the VIP
//! answers https /healthz through haproxy and moves to another master within 5 s when haproxy or
//! the kube-apiserver stops on its holder; no token or certificate key appears in any output.
//! Skipped (and saying so) unless the lab is up with 7+ systemd hosts (`lab.sh up 10 --systemd 7`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod day2;
mod renew;
mod upgrade;

use crate::support::{
    lab_exec, lab_sh, lab_skip, lab_systemd_hosts, playbook, sh, snapshot_tree, Conn, Output,
    Project, LAB_DIR,
};

const VIP: &str = "10.77.0.100";
const LB_PORT: u16 = 9443;
/// The kube-apiserver's port: the endpoint's port with kube-vip (no haproxy in front).
const APISERVER_PORT: u16 = 6443;
const MASTERS: [(&str, &str); 3] = [("m1", "s1"), ("m2", "s2"), ("m3", "s3")];
const WORKER: (&str, &str) = ("w1", "s4");
const ETCD: [(&str, &str); 3] = [("e1", "s5"), ("e2", "s6"), ("e3", "s7")];
const SYSTEMD_HOSTS: usize = 7;
const REPO: &str = "/srv/lab/shared/k8s-repo";
/// The stand-in packages' versions in REPO: a repository per minor, as pkgs.k8s.io has.
const STANDIN_PACKAGE_VERSIONS: [&str; 2] = ["1.31.2-1.1", "1.30.6-1.1"];
const CLUSTERS: &str = "/srv/lab/shared/standin-cluster";
/// The external etcd "release" the lab installs: no etcd release can be downloaded here, so the
/// test packs the machine's etcd (Debian 12's 3.4.23) as etcd's release archives are laid out.
const ETCD_RELEASE: &str = "/srv/lab/shared/etcd-release";

/// Packs /usr/bin/etcd and etcdctl as `etcd-vVERSION-linux-amd64.tar.gz` (the layout of etcd's
/// GitHub releases) and returns the inventory lines that install it from there.
fn etcd_release_vars() -> String {
    let (ok, version) = sh("etcd --version | sed -n 's/^etcd Version: //p'");
    assert!(
        ok && !version.trim().is_empty(),
        "etcd --version: {version}"
    );
    let version = version.trim();
    let name = format!("etcd-v{version}-linux-amd64");
    let (ok, out) = sh(&format!(
        "set -e; rm -rf {ETCD_RELEASE}; mkdir -p {ETCD_RELEASE}/{name}; cd {ETCD_RELEASE}; \
         cp /usr/bin/etcd /usr/bin/etcdctl {name}/; tar -czf {name}.tar.gz {name}; rm -rf {name}; \
         sha256sum {name}.tar.gz"
    ));
    assert!(ok, "packing etcd: {out}");
    let sha = out.split_whitespace().next().unwrap();
    format!(
        "etcd_version = \"{version}\"\n\
         etcd_release_url = \"file://{ETCD_RELEASE}/{name}.tar.gz\"\n\
         etcd_release_checksum = \"sha256:{sha}\"\n\
         # kubeadm refuses an external etcd older than 3.5 (the stand-in too); the lab has only\n\
         # Debian 12's 3.4.23, so it takes the documented opt-in\n\
         kubeadm_ignore_preflight_errors = [\"ExternalEtcdVersion\"]\n"
    )
}

/// lab.sh, which must succeed.
fn lab(args: &[&str]) {
    let out = lab_sh(args);
    assert!(
        out.status.success(),
        "lab.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn address(lab_host: &str) -> String {
    let n: u32 = lab_host[1..].parse().unwrap();
    format!("10.77.0.{}", 200 + n)
}

/// A test project on fresh systemd hosts: the shipped playbooks copied into it (so the CAs the
/// x509 module makes stay in the test's directory), the stand-in repository, and an inventory.
struct Lab {
    project: Project,
    /// The control-plane endpoint's port: haproxy's, or the apiserver's with kube-vip.
    port: u16,
}

/// The systemd hosts are made fresh again afterwards (also when the test fails), so the tests
/// after this one find no keepalived, VIP or cluster left behind.
impl Drop for Lab {
    fn drop(&mut self) {
        for args in [
            &["remove-systemd"][..],
            &["add-systemd", &SYSTEMD_HOSTS.to_string()],
        ] {
            let _ = lab_sh(args);
        }
        let _ = std::fs::remove_dir_all(cluster_dir(self.port));
    }
}

/// The stand-in cluster's state for the endpoint VIP:port.
fn cluster_dir(port: u16) -> PathBuf {
    Path::new(CLUSTERS).join(format!("{VIP}_{port}"))
}

impl Lab {
    /// `extra_vars`: TOML lines added to the inventory's [vars] (`lb_mode = "kube-vip"`).
    fn new(test: &str, extra_vars: &str) -> Option<Lab> {
        // The lab lock first: the test before this one makes the systemd hosts again at its end.
        let project = Project::new(Conn::Lab);
        if lab_systemd_hosts().len() < SYSTEMD_HOSTS {
            lab_skip(
                test,
                &format!("needs the lab with {SYSTEMD_HOSTS} systemd hosts (tests/lab/lab.sh up 10 --systemd {SYSTEMD_HOSTS})"),
            );
            return None;
        }
        // Fresh hosts: every systemd host is made again from the machine's root.
        lab(&["remove-systemd"]);
        lab(&["add-systemd", &SYSTEMD_HOSTS.to_string()]);
        // Lab hosts share the machine's packages; a fresh node has no kubectl (this machine may
        // have one from another repository, which `apt` would then leave in place).
        for (_, h) in MASTERS.iter().chain([&WORKER]).chain(ETCD.iter()) {
            lab_exec(
                h,
                "if dpkg -s kubectl >/dev/null 2>&1; then dpkg --purge kubectl >/dev/null; fi",
            );
        }
        let port = if extra_vars.contains("kube-vip") {
            APISERVER_PORT
        } else {
            LB_PORT
        };
        let _ = std::fs::remove_dir_all(cluster_dir(port));
        // pkgs.k8s.io's layout: a repository per minor version (REPO/v1.31/deb/).
        let (ok, out) = sh(&format!(
            "rm -rf {REPO} && bash {}/tests/standins/build-debs.sh {REPO} {}",
            env!("CARGO_MANIFEST_DIR"),
            STANDIN_PACKAGE_VERSIONS.join(" ")
        ));
        assert!(ok, "building the stand-in repository: {out}");
        let (ok, out) = sh(&format!(
            "cp -r {}/playbooks/. {} && rm -rf {}/pki",
            env!("CARGO_MANIFEST_DIR"),
            project.path().display(),
            project.path().display()
        ));
        assert!(ok, "{out}");
        let mut inv = format!(
            "[defaults]\nconnection = \"ssh\"\nuser = \"root\"\n\
             identity_file = \"{LAB_DIR}/keys/id_lab\"\nknown_hosts = \"{LAB_DIR}/known_hosts\"\n\n\
             [vars]\ncluster_name = \"lab\"\n{version}vip = \"{VIP}\"\n\
             lb_port = {LB_PORT}\n\
             # the stand-in packages (tests/standins/build-debs.sh); lab hosts cannot download\n\
             k8s_apt_url = \"file:{REPO}\"\nk8s_apt_options = \"trusted=yes\"\n\
             # lab hosts share the machine's kernel: no modules to load, no bridge sysctls\n\
             manage_kernel = false\n\
             # where ha-binary.rhai takes the Kubernetes programs from (stand-ins here)\n\
             k8s_bin_dir = \"{dir}/tests/standins\"\n{etcd}{extra_vars}\n\n",
            dir = env!("CARGO_MANIFEST_DIR"),
            etcd = etcd_release_vars(),
            version = if extra_vars.contains("kubernetes_version") {
                ""
            } else {
                "kubernetes_version = \"1.31.2\"\n"
            }
        );
        for (name, host) in MASTERS.iter().chain([&WORKER]).chain(ETCD.iter()) {
            inv += &format!("[hosts.{name}]\naddress = \"{}\"\n", address(host));
        }
        inv += "\n[groups.masters]\nhosts = [\"m1\", \"m2\", \"m3\"]\n\
                [groups.workers]\nhosts = [\"w1\"]\n\
                [groups.k8s]\nchildren = [\"masters\", \"workers\"]\n\
                [groups.etcd]\nhosts = [\"e1\", \"e2\", \"e3\"]\n";
        std::fs::write(project.path().join("inventory.toml"), inv).unwrap();
        Some(Lab { project, port })
    }

    /// What installing Debian's etcd-server does on a real host: etcd enabled and started with
    /// the package's defaults, a one-member cluster in /var/lib/etcd/default named after the
    /// host. (Lab hosts share the machine's installed packages, whose postinst ran under a
    /// policy-rc.d that kept every service from starting.)
    fn start_etcd_as_the_package_does(&self) {
        for (_, h) in ETCD {
            lab_exec(h, "systemctl enable --now etcd && systemctl is-active etcd");
        }
    }

    fn play(&self, playbook_file: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "run",
            playbook_file,
            "-i",
            "inventory.toml",
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        playbook(self.project.path(), &args)
    }
}

/// What installing haproxy, keepalived and containerd does on a real Debian host: the service is
/// enabled and started with the package's own configuration (keepalived's unit waits for a
/// configuration file, so it is enabled but stays down). Lab hosts share the machine's installed
/// packages, whose postinst ran under a policy-rc.d that kept them from starting, so the
/// playbook's `package` tasks find them installed but neither enabled nor running: this makes
/// them what the playbook meets on a real host. `services` are the layout's (keepalived and
/// haproxy on the masters, containerd on every Kubernetes node).
fn start_services_as_their_packages_do(services: &[&str]) {
    for (name, h) in MASTERS.iter().chain([&WORKER]) {
        let units: Vec<&str> = services
            .iter()
            .copied()
            .filter(|s| match *s {
                "haproxy" | "keepalived" => MASTERS.iter().any(|(m, _)| m == name),
                "containerd" => true,
                _ => false,
            })
            .collect();
        if units.is_empty() {
            continue;
        }
        lab_exec(h, &format!("systemctl enable --now {}", units.join(" ")));
    }
}

/// Every file under /etc, /usr, /opt and /var/lib of every systemd host (from their overlay
/// upper directories): what check mode must leave alone.
fn hosts_state() -> Vec<(String, std::collections::BTreeMap<String, String>)> {
    let mut v = Vec::new();
    for (h, _) in lab_systemd_hosts() {
        for dir in ["etc", "usr", "opt"] {
            let p = PathBuf::from(format!("{LAB_DIR}/hosts/{h}/ov/{dir}/upper"));
            v.push((format!("{h}:/{dir}"), snapshot_tree(&p)));
        }
        let lib = PathBuf::from(format!("{LAB_DIR}/hosts/{h}/ov/var/upper/lib"));
        let mut t = snapshot_tree(&lib);
        // systemd and apt bookkeeping, and a running etcd's data, move by themselves
        t.retain(|k, _| {
            !k.starts_with("systemd")
                && !k.starts_with("apt/lists/partial")
                && !k.starts_with("etcd")
        });
        v.push((format!("{h}:/var/lib"), t));
    }
    v
}

type Pairs = BTreeSet<(String, String)>;

fn with_status(o: &Output, pred: impl Fn(&serde_json::Value) -> bool) -> Pairs {
    o.tasks_where(pred).into_iter().collect()
}

fn depends_on_change(e: &serde_json::Value) -> bool {
    e["status"] == "skipped"
        && e["msg"]
            .as_str()
            .unwrap_or("")
            .contains("depends on a change above")
}

/// The VIP holder among the masters (by lab host), if any.
fn vip_holder() -> Vec<&'static str> {
    MASTERS
        .iter()
        .filter(|(_, h)| {
            let out = lab_exec(h, "ip -4 -o addr show");
            String::from_utf8_lossy(&out.stdout).contains(&format!(" {VIP}/"))
        })
        .map(|(_, h)| *h)
        .collect()
}

fn vip_healthz(port: u16) -> (bool, String) {
    sh(&format!(
        "curl -sk --max-time 3 https://{VIP}:{port}/healthz"
    ))
}

/// Waits until one master has held the VIP for 4 s in a row: after a master recovers it takes the
/// VIP back (preemption) once its check rises and the current holder's adverts time out.
fn settled_vip_holder() {
    let t0 = Instant::now();
    let mut since = Instant::now();
    let mut last = vip_holder();
    while last.len() != 1 || since.elapsed() < Duration::from_secs(4) {
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "the VIP did not settle: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
        let now = vip_holder();
        if now != last {
            since = Instant::now();
            last = now;
        }
    }
}

/// Runs `stop` on the VIP holder and waits until another master holds the VIP; returns the time it
/// took and the new holder. `start` undoes it afterwards.
fn vip_moves(stop: &str, start: &str, port: u16) -> (Duration, &'static str) {
    settled_vip_holder();
    let holders = vip_holder();
    assert_eq!(
        holders.len(),
        1,
        "exactly one master holds the VIP: {holders:?}"
    );
    let old = holders[0];
    lab_exec(old, stop);
    let t0 = Instant::now();
    let new = loop {
        let now = vip_holder();
        if now.len() == 1 && now[0] != old {
            break now[0];
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the VIP did not move away from {old} (holders now: {now:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = t0.elapsed();
    // Requests through the VIP succeed again (haproxy on the new holder, healthy apiservers).
    let mut ok = vip_healthz(port);
    let t1 = Instant::now();
    // (Generous: on a loaded 2-core machine the stand-in apiservers answer slowly; this asserts
    // that service comes back, the failover time is measured above.)
    while ok.1.trim() != "ok" && t1.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
        ok = vip_healthz(port);
    }
    assert_eq!(
        ok.1.trim(),
        "ok",
        "/healthz through the VIP after it moved to {new}"
    );
    lab_exec(old, start);
    (took, new)
}

/// Every token and certificate key the stand-in cluster ever held.
fn cluster_secrets(port: u16) -> Vec<String> {
    let dir = cluster_dir(port);
    let read = |f: &str| -> serde_json::Value {
        std::fs::read(dir.join(f))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    let mut v: Vec<String> = read("tokens.json")
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if let Some(k) = read("certs.json")["key"].as_str() {
        v.push(k.to_string());
    }
    v
}

/// Where a run's time went (seen with --nocapture and on failure): the tasks that took over 5 s.
fn report_slow_tasks(run: &str, out: &Output) {
    for e in out.task_ends() {
        let ms = e["duration_ms"].as_u64().unwrap_or(0);
        if ms > 5000 {
            eprintln!("{run}: {} on {} took {ms} ms", e["task"], e["host"]);
        }
    }
}

/// The steps every layout shares; returns the outputs of all runs (for the secrets check).
fn converge_and_prove(lab: &Lab, file: &str, services: &[&str]) -> Vec<Output> {
    start_services_as_their_packages_do(services);
    // Check mode on fresh hosts: changes nothing.
    let before = hosts_state();
    let check = lab.play(file, &["--check"]);
    check.assert_code(0);
    let after = hosts_state();
    for ((name, a), (_, b)) in before.iter().zip(after.iter()) {
        assert_eq!(a, b, "check mode changed files on {name}");
    }
    let predicted = with_status(&check, |e| e["status"] == "changed");
    // Every task decides in check mode, also those after a predicted change (packages from a
    // source added above, the unit they bring, joins without init's values).
    let undecided = with_status(&check, depends_on_change);
    assert!(
        undecided.is_empty(),
        "check mode left tasks undecided: {undecided:?}"
    );

    // The real run converges and does exactly what check mode said.
    let apply = lab.play(file, &[]);
    report_slow_tasks("apply", &apply);
    apply.assert_code(0);
    assert_eq!(apply.total("failed"), 0, "{}", apply.stdout);
    let changed = with_status(&apply, |e| e["status"] == "changed");
    let missed: Vec<_> = predicted.difference(&changed).collect();
    assert!(
        missed.is_empty(),
        "check mode predicted changes the run did not make: {missed:?}"
    );
    let surprise: Vec<_> = changed.difference(&predicted).collect();
    assert!(
        surprise.is_empty(),
        "the run made changes check mode did not predict: {surprise:?}"
    );

    // Idempotent, and check mode on converged hosts agrees.
    let again = lab.play(file, &[]);
    report_slow_tasks("second run", &again);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "second run:\n{}", again.stdout);
    let check2 = lab.play(file, &["--check"]);
    check2.assert_code(0);
    assert_eq!(
        check2.total("changed"),
        0,
        "check on converged hosts:\n{}",
        check2.stdout
    );
    assert!(
        with_status(&check2, depends_on_change).is_empty(),
        "{}",
        check2.stdout
    );

    // The services run on every master.
    for (_, h) in MASTERS {
        let out = lab_exec(
            h,
            &format!("systemctl is-active {} || true", services.join(" ")),
        );
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(
            s.lines().filter(|l| *l == "active").count(),
            services.len(),
            "{h}: {services:?}: {s}"
        );
    }
    vec![check, apply, again, check2]
}

/// The VIP answers through haproxy, and moves when haproxy or the apiserver fails on its holder.
fn prove_vip_failover(apiserver_stop: &str, apiserver_start: &str) {
    let (ok, body) = vip_healthz(LB_PORT);
    assert!(
        ok && body.trim() == "ok",
        "https /healthz through the VIP: {body}"
    );
    let (took, new) = vip_moves("systemctl stop haproxy", "systemctl start haproxy", LB_PORT);
    eprintln!("haproxy stopped: the VIP moved to {new} in {took:?}");
    assert!(
        took <= Duration::from_secs(5),
        "VIP moved after {took:?} (haproxy stopped)"
    );
    let (took, new) = vip_moves(apiserver_stop, apiserver_start, LB_PORT);
    eprintln!("kube-apiserver stopped: the VIP moved to {new} in {took:?}");
    assert!(
        took <= Duration::from_secs(5),
        "VIP moved after {took:?} (apiserver stopped)"
    );
}

/// No token, certificate key or private key (of any master's /etc/kubernetes/pki) in any output.
fn assert_no_secrets(outputs: &[Output], kubeadm: bool, port: u16) {
    let mut secrets = cluster_secrets(port);
    assert_eq!(
        !secrets.is_empty(),
        kubeadm,
        "the stand-in cluster holds a token and a key"
    );
    for (_, h) in MASTERS {
        let out = lab_exec(
            h,
            "cat /etc/kubernetes/pki/*.key /etc/kubernetes/pki/etcd/*.key 2>/dev/null || true",
        );
        let keys = String::from_utf8_lossy(&out.stdout).to_string();
        // One base64 line of every key is enough to recognise it.
        secrets.extend(
            keys.lines()
                .filter(|l| l.len() >= 40 && !l.starts_with("-----"))
                .map(str::to_string),
        );
    }
    assert!(secrets.len() > 3, "found the keys: {}", secrets.len());
    for o in outputs {
        for s in &secrets {
            assert!(
                !o.stdout.contains(s.as_str()) && !o.stderr.contains(s.as_str()),
                "a secret appeared in the output"
            );
        }
    }
}

/// The nodes of the stand-in cluster (nodes.json: name -> {role}).
fn joined_nodes(port: u16) -> BTreeSet<String> {
    let p = cluster_dir(port).join("nodes.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    v.as_object()
        .expect("nodes.json is a map")
        .keys()
        .cloned()
        .collect()
}

/// The objects in the stand-in cluster, by "apiVersion namespace kind/name": what `kubectl apply`
/// (the stand-in) recorded.
fn applied_objects(port: u16) -> serde_json::Map<String, serde_json::Value> {
    let p = cluster_dir(port).join("applied.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    v.as_object().expect("applied.json is a map").clone()
}

/// Every master and the worker joined the stand-in cluster, and the pod network is applied.
fn assert_kubeadm_cluster_formed(port: u16, pod_subnet: &str) {
    let nodes = joined_nodes(port);
    for n in ["m1", "m2", "m3", "w1"] {
        assert!(nodes.contains(n), "{n} joined the cluster: {nodes:?}");
    }
    assert_pod_network_applied(port, pod_subnet);
    // The join tokens (init's and the fresh ones) are deleted once every node has joined.
    let tokens = std::fs::read_to_string(cluster_dir(port).join("tokens.json")).unwrap();
    assert_eq!(tokens.trim(), "{}", "bootstrap tokens left after the joins");
}

/// Flannel's objects are in the cluster, its network is the cluster's pod subnet (what kubeadm
/// init was given) and its interface is every node's cluster address, whatever holds the default
/// route.
fn assert_pod_network_applied(port: u16, pod_subnet: &str) {
    let objects = applied_objects(port);
    for o in [
        "v1  namespace/kube-flannel",
        "v1 kube-flannel serviceaccount/flannel",
        "rbac.authorization.k8s.io/v1  clusterrolebinding/flannel",
        "v1 kube-flannel configmap/kube-flannel-cfg",
        "apps/v1 kube-flannel daemonset/kube-flannel-ds",
    ] {
        assert!(objects.contains_key(o), "{o} applied: {:?}", objects.keys());
    }
    let net_conf = objects["v1 kube-flannel configmap/kube-flannel-cfg"]["data"]["net-conf.json"]
        .as_str()
        .unwrap();
    let net: serde_json::Value = serde_json::from_str(net_conf).unwrap();
    assert_eq!(net["Network"], pod_subnet, "{net_conf}");
    let init: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cluster_dir(port).join("cluster.json")).unwrap())
            .unwrap();
    assert_eq!(
        init["clusterConfiguration"]["networking"]["podSubnet"], pod_subnet,
        "kubeadm init's pod subnet: {init}"
    );
    let args = &objects["apps/v1 kube-flannel daemonset/kube-flannel-ds"]["spec"]["template"]
        ["spec"]["containers"][0]["args"];
    let ifaces: Vec<&str> = args
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str()?.strip_prefix("--iface="))
        .collect();
    let nodes: Vec<String> = MASTERS
        .iter()
        .chain([&WORKER])
        .map(|(_, h)| address(h))
        .collect();
    assert_eq!(ifaces, nodes, "flannel's --iface list: {args}");
}

const KUBEADM_SERVICES: &[&str] = &["keepalived", "haproxy", "containerd", "kubelet"];

// The static pod's process dies; the kubelet starts it again after its back-off (10 s), so
// "start" only waits for that.
const STOP_STATIC_APISERVER: &str =
    "pkill -f '^python3 /usr/lib/kubelet-standin/images/kube-apiserver'";
const START_STATIC_APISERVER: &str =
    "for i in $(seq 60); do curl -sk --max-time 1 https://127.0.0.1:6443/healthz >/dev/null && exit 0; sleep 0.5; done; exit 1";

#[test]
fn ha_stacked_converges_fails_over_and_keeps_secrets() {
    // Not flannel's default network: it must reach flannel's manifest. Installed at 1.30
    // (kubeadm.k8s.io/v1beta3), as the ha-external-etcd test installs 1.31, so that the upgrade
    // below goes to 1.31 (and v1beta4).
    let Some(lab) = Lab::new(
        "ha_stacked_converges_fails_over_and_keeps_secrets",
        "pod_subnet = \"10.200.0.0/16\"\nkubernetes_version = \"1.30.6\"\n",
    ) else {
        return;
    };
    give_the_nodes_a_second_network();
    let outputs = converge_and_prove(&lab, "ha-stacked.rhai", KUBEADM_SERVICES);
    assert_kubeadm_cluster_formed(lab.port, "10.200.0.0/16");
    assert_the_cluster_network_is_used("keepalived");
    prove_vip_failover(STOP_STATIC_APISERVER, START_STATIC_APISERVER);
    renew::prove_certificates_are_renewed(&lab, true);
    assert_no_secrets(&outputs, true, lab.port);
    upgrade::prove_the_cluster_upgrades(&lab);
    prove_a_rebuilt_first_master_starts_no_second_cluster(&lab);
}

/// The Kubernetes nodes get what a VirtualBox VM has (the example inventory's layout): a second
/// NIC, eth1 on another network, which the default route goes to; the cluster network (their
/// inventory address) stays on eth0.
fn give_the_nodes_a_second_network() {
    for (_, h) in MASTERS.iter().chain([&WORKER]) {
        lab(&["add-nic", h]);
        let route = lab_exec(h, "ip route show default");
        assert!(
            String::from_utf8_lossy(&route.stdout).contains("dev eth1"),
            "the default route on {h} goes to the second NIC"
        );
    }
}

/// On hosts with two networks, what serves the cluster is on the cluster network (eth0, the
/// inventory address), not on the default route's: the VIP's interface (`vip_by`: keepalived's or
/// kube-vip's) and the kubelet's node IP on every node.
fn assert_the_cluster_network_is_used(vip_by: &str) {
    for (name, h) in MASTERS.iter().chain([&WORKER]) {
        let flags = lab_exec(h, "cat /var/lib/kubelet/kubeadm-flags.env");
        assert!(
            String::from_utf8_lossy(&flags.stdout).contains(&format!("--node-ip={}", address(h))),
            "the kubelet on {name}: {}",
            String::from_utf8_lossy(&flags.stdout)
        );
    }
    for (name, h) in MASTERS {
        let config = match vip_by {
            "keepalived" => "grep -E '^ *interface ' /etc/keepalived/keepalived.conf",
            _ => "grep -A1 'name: vip_interface' /etc/kubernetes/manifests/kube-vip.yaml | tail -1",
        };
        let text = String::from_utf8_lossy(&lab_exec(h, config).stdout).to_string();
        assert!(
            text.contains("eth0") && !text.contains("eth1"),
            "the VIP's interface on {name}: {text}"
        );
    }
}

/// The first master loses its cluster state (rebuilt, or `kubeadm reset`) while m2 and m3 run the
/// cluster: the playbook refuses init on it (the other masters are members), and so does the
/// kubeadm module on its own (an API server answers at the endpoint); the cluster is untouched.
fn prove_a_rebuilt_first_master_starts_no_second_cluster(lab: &Lab) {
    lab_exec("s1", "kubeadm reset -f >/dev/null 2>&1");
    let cluster = cluster_dir(lab.port).join("cluster.json");
    let before = std::fs::read(&cluster).unwrap();
    let nodes = joined_nodes(lab.port);

    let out = lab.play("ha-stacked.rhai", &[]);
    out.assert_code(2);
    let refused: Vec<_> = out
        .task_ends()
        .into_iter()
        .filter(|e| e["task"] == "one cluster behind the endpoint" && e["status"] == "failed")
        .collect();
    assert_eq!(refused.len(), 1, "{}", out.stdout);
    let msg = refused[0]["msg"].as_str().unwrap();
    assert!(
        msg.contains("refusing kubeadm init on m1") && msg.contains("m2, m3"),
        "{msg}"
    );
    assert!(
        out.tasks_where(|e| e["task"] == "kubeadm init").is_empty(),
        "init did not run: {}",
        out.stdout
    );

    let init = format!(
        r#"on("m1", kubeadm(#{{ action: "init", kubernetes_version: "1.31.2",
            control_plane_endpoint: "{VIP}:{}", node_name: "m1" }}));"#,
        lab.port
    );
    std::fs::write(lab.project.path().join("init-only.rhai"), init).unwrap();
    let out = lab.play("init-only.rhai", &[]);
    out.assert_code(2);
    let end = &out.task_ends()[0];
    let msg = end["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("refusing kubeadm init on m1: an API server already answers at"),
        "{end}"
    );
    // (lab_exec fails the test when the command fails.)
    lab_exec("s1", "test ! -e /etc/kubernetes/admin.conf");
    assert_eq!(
        std::fs::read(&cluster).unwrap(),
        before,
        "the cluster's state"
    );
    assert_eq!(joined_nodes(lab.port), nodes);
}

/// One etcd cluster of the three members, over TLS, from a master with the apiservers' etcd
/// client certificate: every member lists exactly the three (three one-member clusters would
/// each answer `endpoint health`), a key written through one member is read through another,
/// and a client without a certificate is refused. The members run the release archive's etcd
/// (under /opt/etcd), not the distribution's package.
fn prove_etcd_over_tls(ca: &str, cert: &str, key: &str) {
    for (_, h) in ETCD {
        let exe = lab_exec(
            h,
            "readlink -f /proc/$(systemctl show -p MainPID --value etcd)/exe",
        );
        let exe = String::from_utf8_lossy(&exe.stdout);
        assert!(
            exe.trim().starts_with("/opt/etcd/v") && exe.trim().ends_with("/etcd"),
            "etcd on {h} runs {exe}"
        );
    }
    let endpoints: Vec<String> = ETCD
        .iter()
        .map(|(_, h)| format!("https://{}:2379", address(h)))
        .collect();
    let etcdctl = |endpoint: &str, cmd: &str| {
        let out = lab_exec(
            "s1",
            &format!(
                "ETCDCTL_API=3 etcdctl --endpoints={endpoint} --cacert={ca} --cert={cert} \
                 --key={key} {cmd} 2>&1"
            ),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let text = etcdctl(&endpoints.join(","), "endpoint health");
    assert_eq!(text.matches("is healthy").count(), 3, "{text}");
    let wanted: Vec<String> = ETCD
        .iter()
        .map(|(name, h)| format!("started,{name},https://{}:2380", address(h)))
        .collect();
    for endpoint in &endpoints {
        let list = etcdctl(endpoint, "member list");
        // "ID, started, NAME, PEER URLS, CLIENT URLS, IS LEARNER"
        let mut members: Vec<String> = list
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(", ").collect();
                f.get(1..4)
                    .map(|f| f.join(","))
                    .unwrap_or_else(|| l.to_string())
            })
            .collect();
        members.sort();
        assert_eq!(members, wanted, "members as {endpoint} sees them:\n{list}");
    }
    let value = format!("written-through-e1-{}", std::process::id());
    assert_eq!(
        etcdctl(&endpoints[0], &format!("put /playbook-test {value}")),
        "OK"
    );
    let read = etcdctl(&endpoints[2], "get /playbook-test --print-value-only");
    assert_eq!(read, value, "a key written through e1, read through e3");
    let refused = lab_sh(&[
        "exec",
        "s1",
        "sh",
        "-c",
        &format!(
            "ETCDCTL_API=3 etcdctl --endpoints={} --cacert={ca} --command-timeout=3s \
             endpoint health 2>&1",
            endpoints.join(",")
        ),
    ]);
    let text = String::from_utf8_lossy(&refused.stdout).to_string();
    assert!(
        !refused.status.success(),
        "a client without a certificate was let in: {text}"
    );
    assert_eq!(text.matches("is healthy").count(), 0, "{text}");
}

/// A routine change on every etcd member (here: a drifted environment file put back) restarts
/// them one at a time, in inventory order, each only after the one before is healthy again: the
/// cluster keeps its quorum throughout. A writer on m1 puts a key every few hundred ms through
/// all three members with a 2 s timeout; not one put may fail while the run restarts them.
fn prove_etcd_restarts_roll(lab: &Lab, file: &str) {
    for (_, h) in ETCD {
        lab_exec(h, "echo '# drifted' >> /etc/etcd/etcd.env");
    }
    let endpoints: Vec<String> = ETCD
        .iter()
        .map(|(_, h)| format!("https://{}:2379", address(h)))
        .collect();
    let put = format!(
        "ETCDCTL_API=3 etcdctl --endpoints={} --cacert=/etc/kubernetes/pki/etcd/ca.crt \
         --cert=/etc/kubernetes/pki/apiserver-etcd-client.crt \
         --key=/etc/kubernetes/pki/apiserver-etcd-client.key --command-timeout=2s \
         put /playbook-rolling \"$(date +%s.%N)\" 2>&1",
        endpoints.join(",")
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut puts, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let out = lab_sh(&["exec", MASTERS[0].1, "sh", "-c", &put]);
                puts += 1;
                if !out.status.success() {
                    failed.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (puts, failed)
        })
    };
    let run = lab.play(file, &[]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (puts, failed) = writer.join().unwrap();
    run.assert_code(0);
    let restarts: Vec<(String, String, u64)> = run
        .events()
        .iter()
        .filter(|e| e["task"] == "restart etcd")
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["host"].as_str().unwrap().to_string(),
                e["duration_ms"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(
        puts >= 5,
        "the writer ran through the restarts ({puts} puts)"
    );
    assert!(
        failed.is_empty(),
        "{} of {puts} writes failed while the members restarted: {failed:?}",
        failed.len()
    );
    let order: Vec<(&str, &str)> = restarts
        .iter()
        .map(|(ev, h, _)| (ev.as_str(), h.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("task_start", "e1"),
            ("task_end", "e1"),
            ("task_start", "e2"),
            ("task_end", "e2"),
            ("task_start", "e3"),
            ("task_end", "e3"),
        ],
        "one member at a time, in inventory order"
    );
}

/// With one member hung (its process stopped: systemd still says active, so the run does not
/// start it, but it answers nothing), restarting another would leave the cluster without quorum:
/// the etcd handler refuses on the first member it reaches, the rolling run stops there, and
/// neither working member is restarted.
fn prove_an_etcd_restart_that_would_lose_quorum_is_refused(lab: &Lab, file: &str) {
    let main_pid = |h: &str| {
        let out = lab_exec(h, "systemctl show -p MainPID --value etcd");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (e1, e2, e3) = (ETCD[0].1, ETCD[1].1, ETCD[2].1);
    let hang = "kill -STOP $(systemctl show -p MainPID --value etcd)";
    lab_exec(e3, hang);
    let before = [main_pid(e1), main_pid(e2)];
    for h in [e1, e2] {
        lab_exec(h, "echo '# drifted again' >> /etc/etcd/etcd.env");
    }
    let run = lab.play(file, &[]);
    run.assert_code(2);
    let refused = run.tasks_where(|e| {
        e["status"] == "failed"
            && e["msg"]
                .as_str()
                .is_some_and(|m| m.contains("the cluster would lose its quorum"))
    });
    assert_eq!(
        refused,
        [("e1".to_string(), "restart etcd".to_string())],
        "{}",
        run.stdout
    );
    let skipped = run.tasks_where(|e| {
        e["status"] == "skipped"
            && e["msg"]
                .as_str()
                .is_some_and(|m| m.contains("the rolling run of this handler stopped at e1"))
    });
    assert_eq!(skipped, [("e2".to_string(), "restart etcd".to_string())]);
    assert_eq!(
        [main_pid(e1), main_pid(e2)],
        before,
        "no running member was restarted"
    );
    // The member comes back; the cluster is whole again.
    lab_exec(e3, "kill -CONT $(systemctl show -p MainPID --value etcd)");
    prove_etcd_over_tls(
        "/etc/kubernetes/pki/etcd/ca.crt",
        "/etc/kubernetes/pki/apiserver-etcd-client.crt",
        "/etc/kubernetes/pki/apiserver-etcd-client.key",
    );
}

#[test]
fn ha_external_etcd_converges_fails_over_and_keeps_secrets() {
    let Some(lab) = Lab::new(
        "ha_external_etcd_converges_fails_over_and_keeps_secrets",
        "",
    ) else {
        return;
    };
    lab.start_etcd_as_the_package_does();
    let outputs = converge_and_prove(&lab, "ha-external-etcd.rhai", KUBEADM_SERVICES);
    for (_, h) in ETCD {
        let out = lab_exec(h, "systemctl is-active etcd || true");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "active",
            "etcd on {h}"
        );
    }
    prove_etcd_over_tls(
        "/etc/kubernetes/pki/etcd/ca.crt",
        "/etc/kubernetes/pki/apiserver-etcd-client.crt",
        "/etc/kubernetes/pki/apiserver-etcd-client.key",
    );
    assert_kubeadm_cluster_formed(lab.port, "10.244.0.0/16");
    prove_etcd_restarts_roll(&lab, "ha-external-etcd.rhai");
    prove_a_run_without_the_controllers_pki_changes_nothing(
        &lab,
        "ha-external-etcd.rhai",
        &[("etcd-ca", "s5", "/etc/etcd/pki/ca.crt")],
    );
    prove_vip_failover(STOP_STATIC_APISERVER, START_STATIC_APISERVER);
    prove_an_etcd_restart_that_would_lose_quorum_is_refused(&lab, "ha-external-etcd.rhai");
    renew::prove_certificates_are_renewed(&lab, true);
    day2::prove_etcd_backup_and_restore(&lab);
    day2::prove_nodes_are_removed(&lab);
    assert_no_secrets(&outputs, true, lab.port);
}

#[test]
fn ha_binary_converges_fails_over_and_keeps_secrets() {
    // A service subnet of its own: the `kubernetes` service's address (its first) follows it.
    let Some(lab) = Lab::new(
        "ha_binary_converges_fails_over_and_keeps_secrets",
        "service_subnet = \"10.32.0.0/16\"",
    ) else {
        return;
    };
    lab.start_etcd_as_the_package_does();
    let outputs = converge_and_prove(
        &lab,
        "ha-binary.rhai",
        &[
            "keepalived",
            "haproxy",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ],
    );
    prove_etcd_over_tls(
        "/etc/kubernetes/pki/etcd/ca.crt",
        "/etc/kubernetes/pki/apiserver-etcd-client.crt",
        "/etc/kubernetes/pki/apiserver-etcd-client.key",
    );
    let sans = lab_exec(
        "s1",
        "openssl x509 -in /etc/kubernetes/pki/apiserver.crt -noout -ext subjectAltName",
    );
    let sans = String::from_utf8_lossy(&sans.stdout);
    assert!(
        sans.contains("IP Address:10.32.0.1") && !sans.contains("10.96.0.1"),
        "{sans}"
    );
    // The controller-manager and scheduler stand-ins reached their apiserver over TLS with the
    // client certificates and kubeconfigs the playbook made.
    for (_, h) in MASTERS {
        for unit in ["kube-controller-manager", "kube-scheduler"] {
            let mut log = String::new();
            for _ in 0..20 {
                let out = lab_exec(
                    h,
                    &format!("journalctl -u {unit} --no-pager -o cat || true"),
                );
                log = String::from_utf8_lossy(&out.stdout).to_string();
                if log.contains("healthy; leader election on") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            assert!(
                log.contains("healthy; leader election on"),
                "{unit} on {h}:\n{log}"
            );
        }
    }
    prove_binary_flags_and_their_files();
    prove_binary_audit_log(lab.port);
    prove_a_changed_audit_policy_restarts_the_apiservers(&lab);
    prove_a_run_without_the_controllers_pki_changes_nothing(
        &lab,
        "ha-binary.rhai",
        &[
            ("kubernetes-ca", "s1", "/etc/kubernetes/pki/ca.crt"),
            ("service-account", "s1", "/etc/kubernetes/pki/sa.crt"),
            (
                "front-proxy-ca",
                "s1",
                "/etc/kubernetes/pki/front-proxy-ca.crt",
            ),
            ("etcd-ca", "s5", "/etc/etcd/pki/ca.crt"),
        ],
    );
    prove_vip_failover(
        "systemctl stop kube-apiserver",
        "systemctl start kube-apiserver",
    );
    renew::prove_certificates_are_renewed(&lab, false);
    assert_no_secrets(&outputs, false, lab.port);
}

/// The arguments of the running process of a systemd unit on a lab host, one per line.
fn unit_args(host: &str, unit: &str) -> String {
    let out = lab_exec(
        host,
        &format!("tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value {unit})/cmdline"),
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A lab command's stdout and stderr, whether it succeeds or not.
fn lab_try(host: &str, script: &str) -> String {
    let out = lab_sh(&["exec", host, "sh", "-c", &format!("{script} 2>&1 || true")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// ha-binary's kube-apiservers run with the flags kubeadm gives them (kubelet client certificate,
/// front proxy, bootstrap tokens, audit log), the controller-managers with the client and
/// front-proxy CAs, and the files those flags name are there, signed by the right CA.
fn prove_binary_flags_and_their_files() {
    let pki = "/etc/kubernetes/pki";
    let apiserver_flags = [
        "--enable-bootstrap-token-auth=true".to_string(),
        format!("--kubelet-client-certificate={pki}/apiserver-kubelet-client.crt"),
        format!("--kubelet-client-key={pki}/apiserver-kubelet-client.key"),
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname".to_string(),
        format!("--proxy-client-cert-file={pki}/front-proxy-client.crt"),
        format!("--proxy-client-key-file={pki}/front-proxy-client.key"),
        format!("--requestheader-client-ca-file={pki}/front-proxy-ca.crt"),
        "--requestheader-allowed-names=front-proxy-client".to_string(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_string(),
        "--requestheader-group-headers=X-Remote-Group".to_string(),
        "--requestheader-username-headers=X-Remote-User".to_string(),
        "--audit-policy-file=/etc/kubernetes/audit-policy.yaml".to_string(),
        "--audit-log-path=/var/log/kubernetes/audit/audit.log".to_string(),
        "--audit-log-maxage=30".to_string(),
        "--audit-log-maxbackup=10".to_string(),
        "--audit-log-maxsize=100".to_string(),
    ];
    let controller_manager_flags = [
        format!("--client-ca-file={pki}/ca.crt"),
        format!("--requestheader-client-ca-file={pki}/front-proxy-ca.crt"),
    ];
    let mut front_proxy_cas = BTreeSet::new();
    for (_, h) in MASTERS {
        for (unit, flags) in [
            ("kube-apiserver", &apiserver_flags[..]),
            ("kube-controller-manager", &controller_manager_flags[..]),
        ] {
            let args = unit_args(h, unit);
            for f in flags {
                assert!(
                    args.lines().any(|l| l == f),
                    "{unit} on {h} runs with {f}:\n{args}"
                );
            }
        }
        for (ca, cert, subject) in [
            (
                "front-proxy-ca.crt",
                "front-proxy-client.crt",
                &["CN=front-proxy-client"][..],
            ),
            (
                "ca.crt",
                "apiserver-kubelet-client.crt",
                &["CN=kube-apiserver-kubelet-client", "O=system:masters"][..],
            ),
        ] {
            let verified = lab_try(
                h,
                &format!("openssl verify -CAfile {pki}/{ca} {pki}/{cert}"),
            );
            assert_eq!(verified, format!("{pki}/{cert}: OK"), "{h}");
            let info = lab_try(
                h,
                &format!(
                    "openssl x509 -in {pki}/{cert} -noout -subject -nameopt sep_comma_plus,utf8 \
                     -ext extendedKeyUsage"
                ),
            );
            let mut rdns: Vec<&str> = info
                .lines()
                .find_map(|l| l.strip_prefix("subject="))
                .unwrap_or_default()
                .split(',')
                .collect();
            rdns.sort();
            assert!(
                rdns == subject
                    && info.contains("TLS Web Client Authentication")
                    && !info.contains("Server"),
                "{h}: {cert}: {info}"
            );
        }
        // A CA of its own: the cluster CA does not vouch for the front proxy's client.
        let refused = lab_try(
            h,
            &format!("openssl verify -CAfile {pki}/ca.crt {pki}/front-proxy-client.crt"),
        );
        assert!(!refused.ends_with(": OK"), "{h}: {refused}");
        front_proxy_cas.insert(lab_try(
            h,
            &format!("openssl x509 -in {pki}/front-proxy-ca.crt -noout -fingerprint -sha256"),
        ));
        let modes = lab_try(
            h,
            "stat -c '%a %n' /etc/kubernetes/audit-policy.yaml /var/log/kubernetes/audit \
             /var/log/kubernetes/audit/audit.log",
        );
        assert_eq!(
            modes,
            "600 /etc/kubernetes/audit-policy.yaml\n700 /var/log/kubernetes/audit\n\
             600 /var/log/kubernetes/audit/audit.log",
            "{h}"
        );
    }
    assert_eq!(
        front_proxy_cas.len(),
        1,
        "one front-proxy CA: {front_proxy_cas:?}"
    );
}

/// Every audit event the masters' kube-apiservers logged, as JSON.
fn audit_events() -> Vec<serde_json::Value> {
    let mut v = Vec::new();
    for (_, h) in MASTERS {
        let out = lab_exec(h, "cat /var/log/kubernetes/audit/audit.log");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            v.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{h}: an audit line that is not JSON: {e}: {line}")),
            );
        }
    }
    v
}

/// An anonymous request through the VIP, as `agent`: its answer's code.
fn anonymous_request(port: u16, agent: &str) -> String {
    sh(&format!(
        "curl -sk --max-time 5 -A {agent} -o /dev/null -w '%{{http_code}}' \
         https://{VIP}:{port}/api/v1/namespaces/kube-system/secrets"
    ))
    .1
}

/// The audit events of the requests made as `agent`, waiting up to `wait` for the first.
fn audit_events_of(agent: &str, wait: Duration) -> Vec<serde_json::Value> {
    let t0 = Instant::now();
    loop {
        let found: Vec<_> = audit_events()
            .into_iter()
            .filter(|e| e["userAgent"] == agent)
            .collect();
        if !found.is_empty() || t0.elapsed() >= wait {
            return found;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The audit log works through the VIP: a request is logged once, at Metadata level, by the
/// apiserver haproxy sent it to; health probes (haproxy's and keepalived's, every second) are not.
fn prove_binary_audit_log(port: u16) {
    let agent = format!("playbook-audit-test-{}", std::process::id());
    assert_eq!(anonymous_request(port, &agent), "403");
    let events = audit_events_of(&agent, Duration::from_secs(5));
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (
            &e["level"],
            &e["stage"],
            &e["verb"],
            &e["user"]["username"],
            &e["objectRef"]["resource"],
            &e["objectRef"]["namespace"],
            &e["responseStatus"]["code"],
        ),
        (
            &"Metadata".into(),
            &"ResponseComplete".into(),
            &"list".into(),
            &"system:anonymous".into(),
            &"secrets".into(),
            &"kube-system".into(),
            &403.into(),
        ),
        "{e}"
    );
    let probes: Vec<_> = audit_events()
        .into_iter()
        .filter(|e| {
            let uri = e["requestURI"].as_str().unwrap_or("");
            ["/healthz", "/livez", "/readyz", "/version"]
                .iter()
                .any(|p| uri.starts_with(p))
        })
        .collect();
    assert!(probes.is_empty(), "health probes logged: {probes:?}");
}

/// A changed audit policy restarts the kube-apiservers, which then follow it: here a rule that
/// logs no anonymous request, so the request logged above is not logged again.
fn prove_a_changed_audit_policy_restarts_the_apiservers(lab: &Lab) {
    let pids: Vec<String> = MASTERS
        .iter()
        .map(|(_, h)| lab_try(h, "systemctl show -p MainPID --value kube-apiserver"))
        .collect();
    let policy = lab.project.path().join("templates/ha/audit-policy.yaml.j2");
    let text = std::fs::read_to_string(&policy).unwrap();
    let catch_all = "  - level: Metadata\n";
    assert_eq!(
        text.matches(catch_all).count(),
        1,
        "the policy changed: update this test"
    );
    let anonymous = "  - level: None\n    userGroups: [\"system:unauthenticated\"]\n";
    std::fs::write(
        &policy,
        text.replace(catch_all, &format!("{anonymous}{catch_all}")),
    )
    .unwrap();
    let out = lab.play("ha-binary.rhai", &[]);
    out.assert_code(0);
    let changed = |handler: bool| -> Pairs {
        with_status(&out, |e| {
            e["status"] == "changed" && e["handler"].as_bool() == Some(handler)
        })
    };
    let expected: Pairs = MASTERS
        .iter()
        .map(|(m, _)| (m.to_string(), "audit policy".to_string()))
        .collect();
    assert_eq!(changed(false), expected, "{}", out.stdout);
    assert_eq!(changed(true).len(), MASTERS.len(), "{}", out.stdout);
    for ((_, h), before) in MASTERS.iter().zip(&pids) {
        let now = lab_try(h, "systemctl show -p MainPID --value kube-apiserver");
        assert!(
            now != *before && now != "0",
            "{h}: kube-apiserver {before} -> {now}"
        );
    }
    let t0 = Instant::now();
    while vip_healthz(lab.port).1.trim() != "ok" {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no apiserver after the restart"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let agent = format!("playbook-audit-test-anonymous-{}", std::process::id());
    assert_eq!(anonymous_request(lab.port, &agent), "403");
    let events = audit_events_of(&agent, Duration::from_secs(2));
    assert!(
        events.is_empty(),
        "logged against the new policy: {events:?}"
    );
}

/// A run from a fresh clone or another workstation (no `pki_dir` on the controller) on the
/// converged cluster: the CAs are taken from the hosts that hold them (check mode predicts it),
/// nothing on any host changes, and the controller ends with the hosts' CAs (`cas`: the CA
/// directory under pki/, a host and the CA certificate's path there).
fn prove_a_run_without_the_controllers_pki_changes_nothing(
    lab: &Lab,
    file: &str,
    cas: &[(&str, &str, &str)],
) {
    let pki = lab.project.path().join("pki");
    std::fs::remove_dir_all(&pki).unwrap();
    let before = hosts_state();
    for extra in [&["--check"][..], &[]] {
        let out = lab.play(file, extra);
        out.assert_code(0);
        assert_eq!(
            out.total("changed"),
            0,
            "a run without pki/ {extra:?} changed hosts:\n{}",
            out.stdout
        );
        if extra == ["--check"] {
            let after = hosts_state();
            for ((name, a), (_, b)) in before.iter().zip(after.iter()) {
                assert_eq!(a, b, "check mode without pki/ changed files on {name}");
            }
            assert!(!pki.exists(), "check mode wrote pki/ on the controller");
        }
    }
    for (dir, host, path) in cas {
        let on_host = lab_exec(host, &format!("cat {path}")).stdout;
        let taken = std::fs::read(pki.join(dir).join("ca.crt")).unwrap();
        assert_eq!(taken, on_host, "pki/{dir}/ca.crt is {host}'s {path}");
    }
    let (ok, body) = vip_healthz(lab.port);
    assert!(ok, "the control plane answers through the VIP: {body}");
}

/// ha-stacked with `lb_mode = "kube-vip"`: the kube-vip STAND-IN (tests/standins/kube-vip) runs as
/// a static pod on every master and holds the VIP by leader election; the endpoint is VIP:6443.
/// With Kubernetes 1.30 (kubeadm.k8s.io/v1beta3), beside the stand-in repository of 1.31: the
/// nodes get 1.30 packages (a 1.31 kubelet would be refused by kubeadm's preflight), held.
#[test]
fn ha_stacked_with_kube_vip_converges_and_fails_over() {
    let Some(lab) = Lab::new(
        "ha_stacked_with_kube_vip_converges_and_fails_over",
        "lb_mode = \"kube-vip\"\nkubernetes_version = \"1.30.6\"",
    ) else {
        return;
    };
    give_the_nodes_a_second_network();
    let outputs = converge_and_prove(&lab, "ha-stacked.rhai", &["containerd", "kubelet"]);
    assert_kubeadm_cluster_formed(lab.port, "10.244.0.0/16");
    assert_the_cluster_network_is_used("kube-vip");
    for (name, h) in MASTERS.iter().chain([&WORKER]) {
        let out = lab_exec(
            h,
            "dpkg-query -W -f='${Package}=${Version} ' kubelet kubeadm kubectl; apt-mark showhold | sort | tr '\\n' ' '",
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "kubeadm=1.30.6-1.1 kubectl=1.30.6-1.1 kubelet=1.30.6-1.1 kubeadm kubectl kubelet",
            "packages on {name}"
        );
    }
    let config = lab_exec(
        "s1",
        "grep -m 1 '^apiVersion: kubeadm' /etc/kubernetes/kubeadm-init.yaml",
    )
    .stdout;
    assert_eq!(
        String::from_utf8_lossy(&config).trim(),
        "apiVersion: kubeadm.k8s.io/v1beta3"
    );
    for (_, h) in MASTERS {
        let out = lab_exec(h, "systemctl is-active keepalived haproxy || true");
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            !s.lines().any(|l| l == "active"),
            "{h}: no keepalived/haproxy with kube-vip: {s}"
        );
    }
    // The first master's kube-vip mounted super-admin.conf until init (1.29+: admin.conf has no
    // rights before init has bound it), and admin.conf again after it, like the others.
    let first_run = &outputs[1];
    assert_eq!(
        first_run.tasks_where(
            |e| e["status"] == "changed" && e["task"] == "kube-vip: back on admin.conf"
        ),
        [("m1".to_string(), "kube-vip: back on admin.conf".to_string())],
        "{}",
        first_run.stdout
    );
    for (_, h) in MASTERS {
        let out = lab_exec(h, "cat /etc/kubernetes/manifests/kube-vip.yaml");
        let m = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            m.contains("path: /etc/kubernetes/admin.conf") && !m.contains("super-admin"),
            "{h}:\n{m}"
        );
    }
    let (ok, body) = vip_healthz(lab.port);
    assert!(
        ok && body.trim() == "ok",
        "https /healthz through the VIP: {body}"
    );
    let (took, new) = vip_moves(STOP_STATIC_APISERVER, START_STATIC_APISERVER, lab.port);
    eprintln!("kube-apiserver stopped: kube-vip moved the VIP to {new} in {took:?}");
    // kube-vip's lease of 5 s (renew deadline 3 s) decides, not a health check.
    assert!(
        took <= Duration::from_secs(8),
        "VIP moved after {took:?} (kube-apiserver stopped)"
    );
    assert_no_secrets(&outputs, true, lab.port);
}

/// The stand-ins refuse what the real tools refuse here: with Kubernetes 1.29+, a kube-vip on the
/// first master that mounts admin.conf cannot take its Lease before `kubeadm init` has bound
/// admin.conf's rights, so the VIP never comes up and init fails reaching the endpoint.
#[test]
fn kube_vip_with_admin_conf_on_the_first_master_fails_init() {
    let Some(lab) = Lab::new(
        "kube_vip_with_admin_conf_on_the_first_master_fails_init",
        "lb_mode = \"kube-vip\"",
    ) else {
        return;
    };
    let template = lab.project.path().join("templates/ha/kube-vip.yaml.j2");
    let text = std::fs::read_to_string(&template).unwrap();
    let mount = "{{ 'super-admin.conf' if bootstrapping else 'admin.conf' }}";
    assert!(
        text.contains(mount),
        "the template changed: update this test"
    );
    std::fs::write(&template, text.replace(mount, "admin.conf")).unwrap();
    let run = lab.play("ha-stacked.rhai", &[]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    let init = run.tasks_where(|e| e["status"] == "failed" && e["task"] == "kubeadm init");
    assert_eq!(
        init,
        [("m1".to_string(), "kubeadm init".to_string())],
        "{}",
        run.stdout
    );
    let log = lab_exec(
        "s1",
        "journalctl -u kubelet --no-pager | grep 'kube-vip STAND-IN'",
    );
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(log.contains("\"plndr-cp-lock\" is forbidden"), "{log}");
    assert!(vip_holder().is_empty(), "no master holds the VIP");
}
