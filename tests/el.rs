//! The HA playbooks' Red Hat family path (EL8/EL9) on a lab systemd host that looks like Rocky
//! Linux 9 by its facts (its /etc/os-release says so; the rest is the machine's Debian, with dnf
//! and rpm): node preparation and the keepalived + haproxy load balancer, with packages from
//! stand-in rpm repositories the test builds (tests/standins/build-rpms.sh: pkgs.k8s.io's layout
//! for kubelet, kubeadm and kubectl; Docker's for containerd.io; the host's own repositories for
//! iproute-tc, haproxy, keepalived and curl). The programs are the machine's real containerd,
//! haproxy and keepalived, under real systemd.
//!
//! Not proven here: a real EL userland, SELinux (the kernel has none: only the config file's
//! part is exercised) and firewalld (not installed: only "not running, nothing done").
//! Skipped (saying so) unless the lab is up with systemd hosts and rpmbuild, createrepo_c and
//! dnf are installed.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::support::{
    lab_exec, lab_sh, lab_skip, lab_systemd_hosts, playbook, sh, snapshot_tree, Conn, Output,
    Project, LAB_DIR,
};

/// The hosts that play Rocky 9 masters (two: keepalived wants a peer): name, lab host, address.
const MASTERS: [(&str, &str, &str); 2] = [("m1", "s1", "10.77.0.201"), ("m2", "s2", "10.77.0.202")];
const REPO: &str = "/srv/lab/shared/el-repo";

const ROCKY_OS_RELEASE: &str = r#"NAME="Rocky Linux"
VERSION="9.4 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.4"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"
"#;

/// The systemd hosts, made fresh from the machine's root at the start and again at the end (also
/// when the test fails): the next test finds no Rocky, packages or services left behind.
struct FreshSystemdHosts(usize);

impl FreshSystemdHosts {
    fn make(count: usize) -> Self {
        let hosts = FreshSystemdHosts(count);
        hosts.remake();
        hosts
    }

    fn remake(&self) {
        for args in [
            &["remove-systemd"][..],
            &["add-systemd", &self.0.to_string()],
        ] {
            let out = lab_sh(args);
            assert!(
                out.status.success(),
                "lab.sh {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for FreshSystemdHosts {
    fn drop(&mut self) {
        for args in [
            &["remove-systemd"][..],
            &["add-systemd", &self.0.to_string()],
        ] {
            let _ = lab_sh(args);
        }
        let _ = std::fs::remove_dir_all(REPO);
    }
}

/// A command's output on a host (it must succeed).
fn on(host: &str, script: &str) -> String {
    String::from_utf8_lossy(&lab_exec(host, script).stdout).into_owned()
}

/// /etc, /usr and /opt of the hosts (their overlay upper directories): what check mode leaves
/// alone.
fn hosts_state() -> Vec<std::collections::BTreeMap<String, String>> {
    let mut v = Vec::new();
    for (_, h, _) in MASTERS {
        for d in ["etc", "usr", "opt"] {
            v.push(snapshot_tree(&PathBuf::from(format!(
                "{LAB_DIR}/hosts/{h}/ov/{d}/upper"
            ))));
        }
    }
    v
}

fn tasks(o: &Output, status: &str) -> BTreeSet<(String, String)> {
    o.tasks_where(|e| e["status"] == status)
        .into_iter()
        .collect()
}

/// The end of task `name` on `host`.
fn task<'a>(events: &'a [serde_json::Value], host: &str, name: &str) -> &'a serde_json::Value {
    events
        .iter()
        .find(|e| e["event"] == "task_end" && e["task"] == name && e["host"] == host)
        .unwrap_or_else(|| panic!("no task {name:?} ran on {host}"))
}

/// The project: the shipped playbooks, an inventory of one Rocky-looking master `m1`, and a
/// playbook of node preparation, the Red Hat phase and the load balancer.
fn project(test: &str) -> Option<(Project, FreshSystemdHosts)> {
    let project = Project::new(Conn::Lab);
    let count = lab_systemd_hosts().len();
    if count < MASTERS.len() {
        lab_skip(
            test,
            "needs the lab with systemd hosts (tests/lab/lab.sh up 10 --systemd 7)",
        );
        return None;
    }
    for tool in ["rpmbuild", "createrepo_c", "dnf", "rpm"] {
        if !sh(&format!("command -v {tool}")).0 {
            lab_skip(test, &format!("{tool} missing (tests/lab/lab.sh deps)"));
            return None;
        }
    }
    let hosts = FreshSystemdHosts::make(count);
    let (ok, out) = sh(&format!(
        "rm -rf {REPO} && sh {}/tests/standins/build-rpms.sh {REPO} 1.31.2-150500.1.1",
        env!("CARGO_MANIFEST_DIR")
    ));
    assert!(ok, "building the stand-in rpm repositories: {out}");
    // What a Rocky 9 host has before the playbook: its os-release, dnf's release version, its own
    // repositories (stand-ins of BaseOS/AppStream), SELinux enforcing in the config, and no
    // containerd configuration (that comes with containerd.io).
    let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    for (_, h, _) in MASTERS {
        lab_exec(
        h,
        &format!(
            "set -e; rm -f /etc/os-release; printf %s {os} > /etc/os-release; \
             mkdir -p /etc/yum.repos.d /etc/dnf/vars /etc/selinux; echo 9 > /etc/dnf/vars/releasever; \
             printf '[el]\\nname=EL stand-ins\\nbaseurl=file://{REPO}/el\\nenabled=1\\ngpgcheck=0\\n' \
               > /etc/yum.repos.d/el.repo; \
             printf 'SELINUX=enforcing\\nSELINUXTYPE=targeted\\n' > /etc/selinux/config; \
             rm -f /etc/containerd/config.toml",
            os = q(ROCKY_OS_RELEASE)
        ),
    );
    }
    let (ok, out) = sh(&format!(
        "cp -r {}/playbooks/. {} && rm -rf {}/pki",
        env!("CARGO_MANIFEST_DIR"),
        project.path().display(),
        project.path().display()
    ));
    assert!(ok, "{out}");
    project.file(
        "inventory.toml",
        &format!(
            "[defaults]\nconnection = \"ssh\"\nuser = \"root\"\n\
             identity_file = \"{LAB_DIR}/keys/id_lab\"\nknown_hosts = \"{LAB_DIR}/known_hosts\"\n\n\
             [vars]\ncluster_name = \"lab\"\nkubernetes_version = \"1.31.2\"\n\
             vip = \"10.77.0.100\"\nlb_port = 9443\n\
             # the stand-in repositories (tests/standins/build-rpms.sh): unsigned, local\n\
             k8s_yum_url = \"file://{REPO}/k8s\"\nk8s_yum_gpgcheck = false\n\
             docker_yum_url = \"file://{REPO}/docker\"\ndocker_yum_gpgcheck = false\n\
             # lab hosts share the machine's kernel\nmanage_kernel = false\n\n\
             [hosts.m1]\naddress = \"{}\"\n[hosts.m2]\naddress = \"{}\"\n\n\
             [groups.masters]\nhosts = [\"m1\", \"m2\"]\n[groups.k8s]\nchildren = [\"masters\"]\n",
            MASTERS[0].2, MASTERS[1].2
        ),
    );
    project.file(
        "el.rhai",
        "import \"lib/defaults\" as d;\nimport \"lib/el\" as el;\nimport \"lib/node\" as node;\n\
         import \"lib/lb\" as lb;\n\n\
         d::ha_defaults();\nel::prepare_red_hat(\"stacked\");\nnode::prepare_nodes();\nlb::load_balancer();\n",
    );
    Some((project, hosts))
}

fn play(p: &Project, file: &str, extra: &[&str]) -> Output {
    let mut args = vec!["run", file, "-i", "inventory.toml", "--output", "json"];
    args.extend_from_slice(extra);
    playbook(p.path(), &args)
}

#[test]
fn el_nodes_and_load_balancer_converge_with_dnf_on_a_rocky_host() {
    let test = "el_nodes_and_load_balancer_converge_with_dnf_on_a_rocky_host";
    let Some((p, _hosts)) = project(test) else {
        return;
    };
    for (_, h, _) in MASTERS {
        let id = on(h, ". /etc/os-release && echo $ID $VERSION_ID");
        assert_eq!(id.trim(), "rocky 9.4");
    }

    // Check mode on the fresh hosts: changes nothing, decides every task.
    let before = hosts_state();
    let check = play(&p, "el.rhai", &["--check"]);
    check.assert_code(0);
    assert_eq!(before, hosts_state(), "check mode changed files");
    let undecided = check.tasks_where(|e| {
        e["status"] == "skipped"
            && e["msg"]
                .as_str()
                .unwrap_or("")
                .contains("depends on a change above")
    });
    assert!(undecided.is_empty(), "undecided: {undecided:?}");
    let predicted = tasks(&check, "changed");

    // The run does exactly what check mode said.
    let apply = play(&p, "el.rhai", &[]);
    apply.assert_code(0);
    let changed = tasks(&apply, "changed");
    assert_eq!(predicted, changed, "check mode's prediction vs the run");
    let events = apply.events();
    for (m, h, _) in MASTERS {
        // The dnf path: containerd.io from Docker's repository, not EL's (absent) containerd,
        // and kubelet, kubeadm and kubectl at exactly kubernetes_version.
        let install = task(
            &events,
            m,
            "container runtime and kubernetes packages (yum)",
        );
        assert_eq!(install["status"], "changed", "{install}");
        assert_eq!(install["module"], "yum", "{install}");
        let installed = on(
            h,
            "rpm -q --qf '%{NAME}-%{VERSION}\\n' containerd.io iproute-tc kubelet kubeadm kubectl",
        );
        assert_eq!(
            installed.lines().collect::<Vec<_>>(),
            [
                "containerd.io-1.7.22",
                "iproute-tc-1.0",
                "kubelet-1.31.2",
                "kubeadm-1.31.2",
                "kubectl-1.31.2"
            ],
            "{h}"
        );
        assert!(
            on(h, "rpm -q containerd || true").contains("not installed"),
            "{h}: no package named containerd"
        );
        let docker_repo = on(h, "cat /etc/yum.repos.d/docker-ce-stable.repo");
        assert!(
            docker_repo.contains(&format!("baseurl=file://{REPO}/docker\n")),
            "{docker_repo}"
        );
        let k8s_repo = on(h, "cat /etc/yum.repos.d/kubernetes.repo");
        assert!(
            k8s_repo.contains(&format!("baseurl=file://{REPO}/k8s/v1.31/rpm/\n"))
                && k8s_repo.contains("exclude=kubelet kubeadm kubectl cri-tools kubernetes-cni\n"),
            "{k8s_repo}"
        );
        // containerd.io's own config.toml turns the CRI plugin off; ours replaced it.
        let config = on(h, "cat /etc/containerd/config.toml");
        assert!(
            config.contains("SystemdCgroup = true") && !config.contains("disabled_plugins"),
            "{config}"
        );
        // SELinux permissive at boot; this kernel has no SELinux, so nothing to setenforce.
        assert_eq!(
            on(h, "cat /etc/selinux/config"),
            "SELINUX=permissive\nSELINUXTYPE=targeted\n"
        );
        assert!(changed.contains(&(m.to_string(), "SELinux permissive".to_string())));
        // No SELinux in this kernel, no firewalld: those tasks found nothing to do.
        for t in [
            "SELinux: haproxy may connect to any port (haproxy_connect_any)",
            "firewalld: open what masters serve",
            "firewalld: open what the pod network's nodes serve",
        ] {
            let e = task(&events, m, t);
            assert_eq!(e["status"], "ok", "{e}");
        }
        // haproxy's config for EL: a log line haproxy 1.8 (EL8) accepts too, checked by the
        // machine's real haproxy (2.6), and running under systemd.
        let cfg = on(h, "grep -v '^ *#' /etc/haproxy/haproxy.cfg");
        assert!(cfg.contains("\n    log /dev/log local0\n"), "{cfg}");
        for newer in [
            "log stdout",
            "log stderr",
            "format raw",
            "http-check send",
            "http-check connect",
        ] {
            assert!(
                !cfg.contains(newer),
                "haproxy 2.0+ syntax {newer:?}:\n{cfg}"
            );
        }
        on(h, "haproxy -c -q -f /etc/haproxy/haproxy.cfg");
        assert_eq!(
            on(
                h,
                "systemctl is-active containerd haproxy keepalived || true"
            ),
            "active\nactive\nactive\n",
            "{h}"
        );
    }

    // Converged: a second run and check mode change nothing.
    let again = play(&p, "el.rhai", &[]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "second run:\n{}", again.stdout);
    let check2 = play(&p, "el.rhai", &["--check"]);
    check2.assert_code(0);
    assert_eq!(check2.total("changed"), 0, "{}", check2.stdout);

    // An external etcd from distribution packages: Debian's names, refused here by name.
    p.file(
        "etcd-package.rhai",
        "import \"lib/defaults\" as d;\nimport \"lib/etcd\" as etcd;\n\
         d::ha_defaults();\netcd::etcd_cluster();\n",
    );
    let inv = std::fs::read_to_string(p.path().join("inventory.toml")).unwrap();
    p.file(
        "inventory.toml",
        &inv.replace("[vars]\n", "[vars]\netcd_install = \"package\"\n")
            .replace(
                "[groups.k8s]",
                "[groups.etcd]\nhosts = [\"m1\"]\n[groups.k8s]",
            ),
    );
    let refused = play(&p, "etcd-package.rhai", &["--check"]);
    refused.assert_code(2);
    let refused_events = refused.events();
    let e = task(&refused_events, "m1", "etcd packages on this distribution?");
    assert_eq!(e["status"], "failed", "{e}");
    let msg = e["msg"].as_str().unwrap_or("");
    assert!(
        msg.contains("m1 is Rocky Linux 9.4 (Blue Onyx)")
            && msg.contains("use etcd_install = \"release\""),
        "{msg}"
    );
    assert!(on("s1", "rpm -q etcd || true").contains("not installed"));
}

/// Light hosts that look like Rocky 9 and run the firewall-cmd STAND-IN
/// (tests/standins/firewall-cmd: firewalld's permanent and runtime configurations, its outputs
/// and exit codes; it filters nothing): name, lab host, address. Put back as they were on drop.
const FIREWALLED: [(&str, &str, &str); 2] =
    [("m1", "h9", "10.77.0.19"), ("w1", "h10", "10.77.0.20")];

struct RockyLightHosts;

impl Drop for RockyLightHosts {
    fn drop(&mut self) {
        for (_, h, _) in FIREWALLED {
            let _ = lab_sh(&[
                "exec",
                h,
                "sh",
                "-c",
                "rm -f /etc/os-release /usr/local/bin/firewall-cmd && \
                 ln -s ../usr/lib/os-release /etc/os-release && rm -rf /var/lib/firewalld-standin",
            ]);
        }
    }
}

/// The items (`port 6443/tcp`, `rich-rule ...`) of a host's firewalld configuration (`permanent`
/// or `runtime`) in `zone`, sorted.
fn firewall_items(host: &str, which: &str, zone: &str) -> Vec<String> {
    let text = on(
        host,
        &format!("cat /var/lib/firewalld-standin/{which}/{zone} 2>/dev/null || true"),
    );
    let mut v: Vec<String> = text.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn el_firewalld_opens_each_roles_ports_where_it_runs() {
    let test = "el_firewalld_opens_each_roles_ports_where_it_runs";
    let Some(p) = Project::lab(test) else {
        return;
    };
    if crate::support::lab_hosts().unwrap_or(0) < 10 {
        lab_skip(test, "needs the lab with 10 light hosts");
        return;
    }
    let _restore = RockyLightHosts;
    let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    // Through the lab's shared directory: the checkout may lie where the hosts see something
    // else (/tmp, /home… are their own).
    let shared = format!("{LAB_DIR}/shared/firewall-cmd");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/standins/firewall-cmd"),
        &shared,
    )
    .unwrap();
    for (_, h, _) in FIREWALLED {
        lab_exec(
            h,
            &format!(
                "set -e; rm -rf /var/lib/firewalld-standin; rm -f /etc/os-release; \
                 printf %s {os} > /etc/os-release; \
                 install -m 0755 {shared} /usr/local/bin/firewall-cmd; \
                 firewall-cmd --standin-start",
                os = q(ROCKY_OS_RELEASE),
            ),
        );
    }
    // firewalld was running when this host's ssh port was made permanent: the stand-in needs
    // it running for --permanent too, as firewall-cmd does.
    for (_, h, _) in FIREWALLED {
        on(h, "firewall-cmd --permanent --add-port=22/tcp >/dev/null && firewall-cmd --reload >/dev/null");
    }
    // The worker's kubelet port is open until the next reload only: the run must make it
    // permanent, and leave the runtime alone.
    on("h10", "firewall-cmd --add-port=10250/tcp >/dev/null");
    p.file(
        "inventory.toml",
        &format!(
            "[defaults]\nconnection = \"ssh\"\nuser = \"root\"\n\
             identity_file = \"{LAB_DIR}/keys/id_lab\"\nknown_hosts = \"{LAB_DIR}/known_hosts\"\n\n\
             [vars]\nvip = \"10.77.0.100\"\nlb_port = 9443\n\n\
             [hosts.m1]\naddress = \"{}\"\n[hosts.w1]\naddress = \"{}\"\n\n\
             [groups.masters]\nhosts = [\"m1\"]\n[groups.workers]\nhosts = [\"w1\"]\n\
             [groups.k8s]\nchildren = [\"masters\", \"workers\"]\n",
            FIREWALLED[0].2, FIREWALLED[1].2
        ),
    );
    let (ok, out) = sh(&format!(
        "cp -r {}/playbooks/lib {}/",
        env!("CARGO_MANIFEST_DIR"),
        p.path().display()
    ));
    assert!(ok, "{out}");
    p.file(
        "fw.rhai",
        "import \"lib/defaults\" as d;\nimport \"lib/el\" as el;\n\
         d::ha_defaults();\nel::prepare_red_hat(\"stacked\");\n",
    );
    let state = || {
        FIREWALLED
            .iter()
            .flat_map(|(_, h, _)| {
                ["permanent", "runtime"].map(|w| (h.to_string(), w, firewall_items(h, w, "public")))
            })
            .collect::<Vec<_>>()
    };

    let before = state();
    let check = play(&p, "fw.rhai", &["--check"]);
    check.assert_code(0);
    assert_eq!(
        before,
        state(),
        "check mode changed firewalld's configuration"
    );
    let predicted = tasks(&check, "changed");
    let apply = play(&p, "fw.rhai", &[]);
    apply.assert_code(0);
    let changed = tasks(&apply, "changed");
    assert_eq!(predicted, changed);
    let pairs = |v: &[(&str, &str)]| -> BTreeSet<(String, String)> {
        v.iter()
            .map(|(h, t)| (h.to_string(), t.to_string()))
            .collect()
    };
    assert_eq!(
        changed,
        pairs(&[
            ("m1", "firewalld: open what masters serve"),
            ("m1", "firewalld: open what the pod network's nodes serve"),
            ("w1", "firewalld: open what the pod network's nodes serve"),
            ("w1", "firewalld: open what workers serve"),
        ])
    );
    // kubeadm's ports per role, haproxy's, VRRP for keepalived, flannel's VXLAN: permanent and
    // running, beside what was there.
    let master: Vec<String> = [
        "port 10250/tcp",
        "port 10257/tcp",
        "port 10259/tcp",
        "port 22/tcp",
        "port 2379-2380/tcp",
        "port 6443/tcp",
        "port 8472/udp",
        "port 9443/tcp",
        "rich-rule rule protocol value=\"vrrp\" accept",
    ]
    .map(String::from)
    .to_vec();
    let worker: Vec<String> = [
        "port 10250/tcp",
        "port 10256/tcp",
        "port 22/tcp",
        "port 30000-32767/tcp",
        "port 8472/udp",
    ]
    .map(String::from)
    .to_vec();
    for which in ["permanent", "runtime"] {
        assert_eq!(firewall_items("h9", which, "public"), master, "m1 {which}");
        assert_eq!(firewall_items("h10", which, "public"), worker, "w1 {which}");
    }
    // What is permanent survives a reload.
    on("h9", "firewall-cmd --reload >/dev/null");
    assert_eq!(firewall_items("h9", "runtime", "public"), master);

    // Converged.
    let again = play(&p, "fw.rhai", &[]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "{}", again.stdout);
    let check2 = play(&p, "fw.rhai", &["--check"]);
    check2.assert_code(0);
    assert_eq!(check2.total("changed"), 0, "{}", check2.stdout);

    // Another zone (firewalld_zone): the same ports there.
    let zoned = play(
        &p,
        "fw.rhai",
        &["-e", "firewalld_zone=internal", "--limit", "m1"],
    );
    zoned.assert_code(0);
    let mut internal = master.clone();
    internal.retain(|i| i != "port 22/tcp");
    assert_eq!(firewall_items("h9", "permanent", "internal"), internal);
    assert_eq!(firewall_items("h9", "runtime", "internal"), internal);

    // firewalld stopped: nothing to do, nothing written.
    on(
        "h10",
        "firewall-cmd --standin-stop && rm -rf /var/lib/firewalld-standin/permanent",
    );
    let stopped = play(&p, "fw.rhai", &["--limit", "w1"]);
    stopped.assert_code(0);
    assert_eq!(stopped.total("changed"), 0, "{}", stopped.stdout);
    assert_eq!(
        firewall_items("h10", "permanent", "public"),
        Vec::<String>::new()
    );

    // Not the Red Hat family: skipped, whatever runs there.
    on(
        "h9",
        "rm -f /etc/os-release && ln -s ../usr/lib/os-release /etc/os-release && \
         rm -rf /var/lib/firewalld-standin && firewall-cmd --standin-start",
    );
    let debian = play(&p, "fw.rhai", &["--limit", "m1"]);
    debian.assert_code(0);
    assert_eq!(debian.total("changed"), 0, "{}", debian.stdout);
    assert_eq!(
        debian.total("skipped") as usize,
        debian.task_ends().len(),
        "{}",
        debian.stdout
    );
    assert_eq!(
        firewall_items("h9", "permanent", "public"),
        Vec::<String>::new()
    );
}
