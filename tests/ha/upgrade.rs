//! upgrade.rhai on the stacked cluster the HA test stood up at 1.30: refusals first, then
//! 1.30 -> 1.31 with the VIP sampled throughout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;

const FROM: &str = "1.30.6";
const TO: &str = "1.31.2";

/// The longest time the VIP may go without answering /healthz during the rollout. Each master's
/// kube-apiserver restarts twice (its new manifest, and the kubelet stand-in's restart, which
/// takes its static pods with it where a real kubelet would leave the containers running):
/// haproxy needs up to 2 s (`inter 1s fall 2`) to stop sending requests to an apiserver that
/// went down, and when it is the VIP holder's, keepalived moves the VIP, within the 5 s that
/// `prove_vip_failover` allows.
const VIP_GAP_TOLERANCE: Duration = Duration::from_secs(5);

/// Samples https /healthz through the VIP every 200 ms until stopped: (when, answered ok).
fn sample_vip(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<(Instant, bool)>> {
    std::thread::spawn(move || {
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let (ok, body) = sh(&format!(
                "curl -sk --max-time 1 https://{VIP}:{port}/healthz"
            ));
            samples.push((Instant::now(), ok && body.trim() == "ok"));
            std::thread::sleep(Duration::from_millis(200));
        }
        samples
    })
}

/// The longest stretch between two answers (or from the start or to the end), and how many
/// samples failed.
fn longest_gap(samples: &[(Instant, bool)]) -> (Duration, usize) {
    let mut gap = Duration::ZERO;
    let mut last_ok = samples.first().map(|s| s.0);
    for (t, ok) in samples {
        if *ok {
            if let Some(prev) = last_ok {
                gap = gap.max(t.duration_since(prev));
            }
            last_ok = Some(*t);
        }
    }
    if let (Some(prev), Some((end, _))) = (last_ok, samples.last()) {
        gap = gap.max(end.duration_since(prev));
    }
    (gap, samples.iter().filter(|s| !s.1).count())
}

fn version_arg(version: &str) -> [String; 2] {
    ["-e".to_string(), format!("kubernetes_version={version}")]
}

fn play_upgrade(lab: &Lab, version: &str, check: bool) -> Output {
    let [e, v] = version_arg(version);
    let mut args = vec![e.as_str(), v.as_str()];
    if check {
        args.push("--check");
    }
    lab.play("upgrade.rhai", &args)
}

/// A version kubeadm cannot go to from here is refused on the first master before any host is
/// touched: no task changes anything and no file on any host differs.
fn prove_refused(lab: &Lab, version: &str, why: &str) {
    let before = hosts_state();
    let out = play_upgrade(lab, version, false);
    out.assert_code(2);
    let refused = out.tasks_where(|e| {
        e["status"] == "failed" && e["msg"].as_str().is_some_and(|m| m.contains(why))
    });
    assert_eq!(
        refused,
        [(
            "m1".to_string(),
            format!("the cluster may go to v{version}")
        )],
        "{}",
        out.stdout
    );
    assert!(out.changed().is_empty(), "{}", out.stdout);
    assert_eq!(hosts_state(), before, "refusing v{version} changed files");
}

/// Every node's kubelet, the version the stand-in cluster's nodes report, and each master's
/// kube-apiserver (from its manifest's image).
fn assert_every_node_runs(version: &str) {
    let v = format!("v{version}");
    for (name, h) in MASTERS.iter().chain([&WORKER]) {
        let out = lab_exec(
            h,
            "kubelet --version; apt-mark showhold | sort | tr '\\n' ' '",
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("Kubernetes {v}\nkubeadm kubectl kubelet"),
            "{name}: the kubelet and the held packages"
        );
    }
    let out = lab_exec(
        MASTERS[0].1,
        "kubectl --kubeconfig=/etc/kubernetes/admin.conf get nodes",
    );
    let nodes = String::from_utf8_lossy(&out.stdout).to_string();
    for line in nodes.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            (cols[1], cols[4]),
            ("Ready", v.as_str()),
            "every node Ready, uncordoned, at {v}:\n{nodes}"
        );
    }
    assert_eq!(nodes.lines().count(), 5, "{nodes}");
    for (name, h) in MASTERS {
        let out = lab_exec(
            h,
            &format!(
                "grep -h 'image: registry.k8s.io/kube-' /etc/kubernetes/manifests/*.yaml; \
                 curl -sk --max-time 5 https://{}:{APISERVER_PORT}/version",
                address(h)
            ),
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(
            text.matches(&format!(":{v}\n")).count(),
            3,
            "{name}'s control plane images: {text}"
        );
        assert!(
            text.contains(&format!("\"gitVersion\": \"{v}\"")),
            "{name}'s kube-apiserver /version: {text}"
        );
    }
}

/// The worker's kubelet back at 1.30 (its package downgraded with dpkg, restarted: its Node says
/// so) and its kubelet unit masked, so that restarting it fails: the run fails on that worker,
/// which is left cordoned, with the rescue's message; with the unit unmasked, the next run
/// finishes the worker and uncordons it.
fn prove_a_failing_worker_stays_cordoned(lab: &Lab) {
    let (w, h) = WORKER;
    lab_exec(
        h,
        &format!(
            "set -e; dpkg -i --force-hold {REPO}/v1.30/deb/kubelet_{FROM}-1.1_all.deb >/dev/null 2>&1; \
             systemctl restart kubelet; systemctl mask kubelet"
        ),
    );
    let node = || {
        let out = lab_exec(
            MASTERS[0].1,
            &format!("kubectl --kubeconfig=/etc/kubernetes/admin.conf get node {w} | tail -n 1"),
        );
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        let cols: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        (cols[1].clone(), cols[4].clone())
    };
    let t0 = Instant::now();
    while node().1 != format!("v{FROM}") {
        assert!(t0.elapsed() < Duration::from_secs(30), "{w}: {:?}", node());
        std::thread::sleep(Duration::from_millis(500));
    }

    let failed = play_upgrade(lab, TO, false);
    failed.assert_code(2);
    let rescued = failed.tasks_where(|e| {
        e["status"] == "failed"
            && e["msg"].as_str().is_some_and(|m| {
                m.contains(&format!("{w} was not upgraded to v{TO}"))
                    && m.contains("It is left cordoned, and the rollout stops here")
            })
    });
    assert_eq!(
        rescued,
        [(w.to_string(), "fail".to_string())],
        "{}",
        failed.stdout
    );
    let changed = failed.changed();
    for task in ["drain", "keep it cordoned"] {
        assert!(
            changed.contains(&(w.to_string(), task.to_string())),
            "{task}: {changed:?}"
        );
    }
    assert_eq!(
        node(),
        ("Ready,SchedulingDisabled".to_string(), format!("v{FROM}")),
        "{w} after the failed upgrade"
    );

    lab_exec(h, "systemctl unmask kubelet");
    let run = play_upgrade(lab, TO, false);
    run.assert_code(0);
    assert_eq!(node(), ("Ready".to_string(), format!("v{TO}")));
    assert_every_node_runs(TO);
}

/// upgrade.rhai from 1.30 to 1.31 on the stacked layout: a skip of two minor versions and a
/// downgrade are refused with nothing changed; check mode changes nothing and predicts the run
/// exactly; the VIP answers /healthz throughout the rollout (sampled every 200 ms, the longest
/// gap reported and held to VIP_GAP_TOLERANCE); every node then runs 1.31 with its packages held,
/// kubeadm's configuration (on the first master's disk and in the stand-in cluster) is
/// kubeadm.k8s.io/v1beta4; a worker that fails is left cordoned and the run stops, and the next
/// run finishes it; a second run and check mode change nothing. The inventory then
/// says 1.31, as the playbook tells its users.
pub(super) fn prove_the_cluster_upgrades(lab: &Lab) {
    prove_refused(
        lab,
        "1.32.0",
        &format!("refusing to upgrade to v1.32.0: the cluster runs v{FROM}, and kubeadm upgrades one minor version at a time"),
    );
    prove_refused(
        lab,
        "1.30.2",
        &format!("refusing to downgrade the cluster from v{FROM} to v1.30.2"),
    );

    let before = hosts_state();
    let check = play_upgrade(lab, TO, true);
    check.assert_code(0);
    assert_eq!(
        hosts_state(),
        before,
        "check mode of the upgrade changed files"
    );
    let undecided = with_status(&check, depends_on_change);
    assert!(
        undecided.is_empty(),
        "undecided in check mode: {undecided:?}"
    );
    let predicted = with_status(&check, |e| e["status"] == "changed");

    settled_vip_holder();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_vip(lab.port, stop.clone());
    let t0 = Instant::now();
    let run = play_upgrade(lab, TO, false);
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    report_slow_tasks("upgrade", &run);
    let (gap, failed) = longest_gap(&samples);
    eprintln!(
        "upgrade {FROM} -> {TO} took {took:?}: the VIP sampled {} times, {failed} without an answer, longest gap {gap:?}",
        samples.len()
    );
    run.assert_code(0);
    let changed = with_status(&run, |e| e["status"] == "changed");
    assert_eq!(changed, predicted, "check mode predicted the upgrade");
    assert!(
        changed.contains(&("w1".to_string(), "drain".to_string()))
            && changed.contains(&("m1".to_string(), format!("kubeadm upgrade apply v{TO}"))),
        "{changed:?}"
    );
    assert!(
        gap <= VIP_GAP_TOLERANCE,
        "the VIP did not answer for {gap:?} during the upgrade"
    );

    assert_every_node_runs(TO);
    let out = lab_exec(
        MASTERS[0].1,
        "grep -E '^(apiVersion|kubernetesVersion):' /etc/kubernetes/kubeadm-init.yaml | sort -u",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("apiVersion: kubeadm.k8s.io/v1beta4\nkubernetesVersion: v{TO}"),
        "the kubeadm configuration on m1's disk"
    );
    let cluster: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cluster_dir(lab.port).join("cluster.json")).unwrap())
            .unwrap();
    assert_eq!(
        (
            &cluster["clusterConfiguration"]["apiVersion"],
            &cluster["kubernetesVersion"]
        ),
        (
            &serde_json::json!("kubeadm.k8s.io/v1beta4"),
            &serde_json::json!(format!("v{TO}"))
        ),
        "the kubeadm-config of the stand-in cluster"
    );

    prove_a_failing_worker_stays_cordoned(lab);

    let again = play_upgrade(lab, TO, false);
    again.assert_code(0);
    assert_eq!(
        again.total("changed"),
        0,
        "second upgrade:\n{}",
        again.stdout
    );
    let check = play_upgrade(lab, TO, true);
    check.assert_code(0);
    assert_eq!(check.total("changed"), 0, "{}", check.stdout);

    let inventory = lab.project.path().join("inventory.toml");
    let text = std::fs::read_to_string(&inventory).unwrap();
    let from = format!("kubernetes_version = \"{FROM}\"");
    assert!(text.contains(&from), "{text}");
    std::fs::write(
        &inventory,
        text.replace(&from, &format!("kubernetes_version = \"{TO}\"")),
    )
    .unwrap();
}
