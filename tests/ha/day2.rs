//! Day-2 playbooks on the clusters the HA tests stand up: real etcd, real systemd.

use super::*;

/// etcdctl on a master with the apiserver's etcd client certificate, against every member:
/// whether it succeeded, and what it printed.
fn etcdctl(cmd: &str) -> (bool, String) {
    let endpoints: Vec<String> = ETCD
        .iter()
        .map(|(_, h)| format!("https://{}:2379", address(h)))
        .collect();
    let script = format!(
        "ETCDCTL_API=3 etcdctl --endpoints={} --cacert=/etc/kubernetes/pki/etcd/ca.crt \
             --cert=/etc/kubernetes/pki/apiserver-etcd-client.crt \
             --key=/etc/kubernetes/pki/apiserver-etcd-client.key --command-timeout=5s {cmd} 2>&1",
        endpoints.join(",")
    );
    let out = lab_sh(&["exec", MASTERS[0].1, "sh", "-c", &script]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

fn put(key: &str, value: &str) {
    let (ok, out) = etcdctl(&format!("put {key} {value}"));
    assert!(ok && out == "OK", "put {key}: {out}");
}

fn get(key: &str) -> String {
    let (ok, out) = etcdctl(&format!("get {key} --print-value-only"));
    assert!(ok, "get {key}: {out}");
    out
}

/// The snapshots on the first member, newest first.
fn snapshots_on_the_member() -> Vec<String> {
    let out = lab_exec(
        ETCD[0].1,
        "ls -1 /var/backups/etcd 2>/dev/null | grep '[.]db$' | sort -r || true",
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The snapshots fetched to the controller.
fn fetched_snapshots(lab: &Lab) -> Vec<String> {
    let dir = lab.project.path().join("backups/etcd");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".db"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// etcd-backup.rhai takes a snapshot of the running cluster, keeps the newest N on the member
/// and fetches each to the controller with a sha256 that `sha256sum -c` accepts; etcd-restore.rhai
/// brings the three members back to that snapshot (a key written before it is there, one written
/// after is gone, the members are the same three), the apiservers answer through the VIP again, a
/// second restore changes nothing, and check mode predicted what the run did without touching
/// anything.
pub(super) fn prove_etcd_backup_and_restore(lab: &Lab) {
    let before = format!("before-the-backup-{}", std::process::id());
    put("/playbook-backup", &before);

    let check = lab.play("etcd-backup.rhai", &["--check"]);
    check.assert_code(0);
    assert!(
        snapshots_on_the_member().is_empty(),
        "check mode took a snapshot"
    );
    assert!(
        fetched_snapshots(lab).is_empty(),
        "check mode fetched a snapshot"
    );
    let keep = ["-e", "etcd_backup_keep=2"];
    let mut fetched = Vec::new();
    for _ in 0..3 {
        let run = lab.play("etcd-backup.rhai", &keep);
        run.assert_code(0);
        assert_eq!(
            run.changed(),
            [
                ("e1".to_string(), "etcd snapshot".to_string()),
                ("e1".to_string(), "fetch its sha256".to_string()),
                ("e1".to_string(), "fetch the snapshot".to_string()),
            ],
            "{}",
            run.stdout
        );
        let new: Vec<String> = fetched_snapshots(lab)
            .into_iter()
            .filter(|n| !fetched.contains(n))
            .collect();
        assert_eq!(new.len(), 1, "one new snapshot on the controller: {new:?}");
        fetched.extend(new);
        // Names carry the second they were taken in.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let mut newest_two: Vec<String> = fetched[1..].to_vec();
    newest_two.reverse();
    assert_eq!(
        snapshots_on_the_member(),
        newest_two,
        "etcd_backup_keep=2 on the member"
    );
    let dir = lab.project.path().join("backups/etcd");
    for name in &fetched {
        let (ok, out) = sh(&format!(
            "cd {} && sha256sum -c {name}.sha256 && stat -c %a {name}",
            dir.display()
        ));
        assert!(ok, "the fetched {name}: {out}");
        assert!(
            out.trim_end().ends_with("\n600"),
            "{name} is private: {out}"
        );
    }
    let snapshot = format!("backups/etcd/{}", fetched[2]);

    // Written after the backup: a restore must lose these.
    put("/playbook-backup", "changed-after-the-backup");
    put("/playbook-after-backup", "new");

    let restore_args = ["-e", &format!("snapshot={snapshot}")];
    let check = lab.play(
        "etcd-restore.rhai",
        &["--check", restore_args[0], restore_args[1]],
    );
    check.assert_code(0);
    assert_eq!(
        get("/playbook-backup"),
        "changed-after-the-backup",
        "check mode restored"
    );
    let predicted = check.changed();
    let run = lab.play("etcd-restore.rhai", &restore_args);
    report_slow_tasks("etcd restore", &run);
    run.assert_code(0);
    assert_eq!(run.changed(), predicted, "check mode predicted the restore");
    assert_eq!(
        get("/playbook-backup"),
        before,
        "the key as it was at the backup"
    );
    assert_eq!(
        get("/playbook-after-backup"),
        "",
        "a key written after the backup"
    );
    for (name, h) in ETCD {
        let out = lab_exec(
            h,
            "ls -d /var/lib/etcd/cluster.before-restore-* | wc -l; stat -c '%U %a' /var/lib/etcd/cluster",
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "1\netcd 700",
            "{name}: the old data kept beside the restored one"
        );
    }
    prove_etcd_over_tls(
        "/etc/kubernetes/pki/etcd/ca.crt",
        "/etc/kubernetes/pki/apiserver-etcd-client.crt",
        "/etc/kubernetes/pki/apiserver-etcd-client.key",
    );
    let t0 = Instant::now();
    while vip_healthz(lab.port) != (true, "ok".to_string()) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the apiservers did not come back through the VIP after the restore: {:?}",
            vip_healthz(lab.port)
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let again = lab.play("etcd-restore.rhai", &restore_args);
    again.assert_code(0);
    assert_eq!(
        again.total("changed"),
        0,
        "second restore:\n{}",
        again.stdout
    );
    let check = lab.play(
        "etcd-restore.rhai",
        &["--check", restore_args[0], restore_args[1]],
    );
    check.assert_code(0);
    assert_eq!(check.total("changed"), 0, "{}", check.stdout);

    let refused = lab.play("etcd-restore.rhai", &[]);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("-e snapshot=PATH"),
        "{}",
        refused.stderr
    );
}

/// A whole run of remove-node.rhai for `node`: check mode first (it changes nothing on the hosts
/// and predicts the run), the run, and a second run and check that change nothing.
fn remove(lab: &Lab, node: &str) {
    let args = ["-e", &format!("node={node}")];
    let before = hosts_state();
    let check = lab.play("remove-node.rhai", &["--check", args[0], args[1]]);
    check.assert_code(0);
    assert_eq!(
        hosts_state(),
        before,
        "check mode of removing {node} changed files"
    );
    let run = lab.play("remove-node.rhai", &args);
    report_slow_tasks(&format!("remove {node}"), &run);
    run.assert_code(0);
    assert_eq!(
        run.changed(),
        check.changed(),
        "check mode predicted removing {node}"
    );
    let again = lab.play("remove-node.rhai", &args);
    again.assert_code(0);
    assert_eq!(
        again.total("changed"),
        0,
        "removing {node} again:\n{}",
        again.stdout
    );
    let check = lab.play("remove-node.rhai", &["--check", args[0], args[1]]);
    check.assert_code(0);
    assert_eq!(check.total("changed"), 0, "{}", check.stdout);
}

fn etcd_members_seen_by(host: &str) -> Vec<String> {
    let out = lab_exec(
        host,
        "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/etcd/pki/ca.crt \
         --cert=/etc/etcd/pki/member.crt --key=/etc/etcd/pki/member.key member list",
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(", ").nth(2).map(str::to_string))
        .collect();
    names.sort();
    names
}

fn active_and_enabled(host: &str, unit: &str) -> String {
    let out = lab_exec(
        host,
        &format!("echo $(systemctl is-active {unit}; systemctl is-enabled {unit}) || true"),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// remove-node.rhai on the external etcd layout: an etcd member whose removal would leave too
/// few healthy members is refused before anything changes; then an etcd member, the worker and
/// a master leave (real `etcdctl member list`, the stand-in cluster's nodes, the services on the
/// removed hosts), the VIP keeps answering, and the stand-in kubectl refuses a drain without
/// --ignore-daemonsets as kubectl does once DaemonSet pods run (flannel's).
pub(super) fn prove_nodes_are_removed(lab: &Lab) {
    let (e1, e2, e3) = (ETCD[0].1, ETCD[1].1, ETCD[2].1);
    lab_exec(e2, "kill -STOP $(systemctl show -p MainPID --value etcd)");
    let refused = lab.play("remove-node.rhai", &["-e", "node=e3"]);
    lab_exec(e2, "kill -CONT $(systemctl show -p MainPID --value etcd)");
    refused.assert_code(2);
    let failed = refused.tasks_where(|e| {
        e["status"] == "failed"
            && e["msg"].as_str().is_some_and(|m| {
                m.contains("refusing to remove e3: of the 2 members left, only 1 are healthy")
            })
    });
    assert_eq!(
        failed,
        [("e1".to_string(), "quorum without e3".to_string())]
    );
    assert!(refused.changed().is_empty(), "{}", refused.stdout);
    assert_eq!(etcd_members_seen_by(e1), ["e1", "e2", "e3"]);

    let t0 = Instant::now();
    while etcdctl("endpoint health").1.matches("is healthy").count() < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "e2 did not come back"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    remove(lab, "e3");
    assert_eq!(etcd_members_seen_by(e1), ["e1", "e2"]);
    assert_eq!(etcd_members_seen_by(e2), ["e1", "e2"]);
    assert_eq!(active_and_enabled(e3, "etcd"), "inactive disabled");
    lab_exec(
        e3,
        "test ! -e /var/lib/etcd/cluster && ls -d /var/lib/etcd/cluster.removed-*",
    );
    // Removing a member may have removed the leader: the two left elect one (about a second,
    // etcd's election timeout), and a write during the election fails with "leader changed".
    let t0 = Instant::now();
    let (ok, out) = loop {
        let (ok, out) = etcdctl("put /playbook-after-removal two-members");
        if ok || t0.elapsed() > Duration::from_secs(10) {
            break (ok, out);
        }
        eprintln!("put after removing e3 (retried): {out}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(ok, "the two members left keep serving: {out}");

    let (m1, w1) = (MASTERS[0].1, WORKER.1);
    let out = lab_exec(
        m1,
        "kubectl --kubeconfig=/etc/kubernetes/admin.conf drain m2 2>&1 || true",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore)"),
        "{text}"
    );
    lab_exec(
        m1,
        "kubectl --kubeconfig=/etc/kubernetes/admin.conf uncordon m2",
    );

    remove(lab, "w1");
    lab_exec(w1, "test ! -e /etc/kubernetes/kubelet.conf");
    assert_eq!(active_and_enabled(w1, "kubelet"), "inactive disabled");
    let m3 = MASTERS[2].1;
    remove(lab, "m3");
    assert_eq!(
        joined_nodes(lab.port),
        ["m1", "m2"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
    for unit in ["keepalived", "haproxy", "kubelet"] {
        assert_eq!(
            active_and_enabled(m3, unit),
            "inactive disabled",
            "{unit} on m3"
        );
    }
    settled_vip_holder();
    assert_eq!(
        vip_healthz(lab.port),
        (true, "ok".to_string()),
        "the VIP after removing m3"
    );

    let refused = lab.play("remove-node.rhai", &["-e", "node=nope"]);
    refused.assert_code(1);
    assert!(
        refused
            .stderr
            .contains("no host of the groups masters, workers or etcd"),
        "{}",
        refused.stderr
    );
}
