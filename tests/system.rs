//! System modules (sysctl, modprobe, swap, systemd_unit) over real SSH against the lab.
//!
//! Light hosts h9 and h10 (test hosts `i` and `j`): per-host network namespace (so
//! `net.ipv4.ip_forward` is safe to set), read-only `vm.*`/`kernel.*`, no systemd as PID 1
//! (offline `systemctl enable` and `systemd-analyze verify` work, starting does not). Kernel
//! modules are never loaded or unloaded here: the hosts share this machine's kernel.
//!
//! The systemd tests need hosts booting real systemd (`support::lab_systemd_hosts`); they skip,
//! saying so, when there are none.

use crate::support::{self, lab_exec, Conn, Output, Project, LAB_DIR};

/// A project on h9 and h10, or None (skipped) when the lab is not up with 10 light hosts.
fn lab(test: &str) -> Option<Project> {
    // Tags this process, so ssh processes the runs leave behind are found.
    support::live_ssh_processes();
    match support::lab_hosts() {
        Some(n) if n >= 10 => {
            let p = Project::new(Conn::Lab);
            p.hosts(&["i", "j"], &[]);
            Some(p)
        }
        _ => {
            support::lab_skip(
                test,
                "needs the lab with 10 light hosts (tests/lab/lab.sh up 10)",
            );
            None
        }
    }
}

const HOSTS: [&str; 2] = ["h9", "h10"];

/// Runs `script` inside a light host and returns its trimmed stdout.
fn sh(host: &str, script: &str) -> String {
    String::from_utf8_lossy(&lab_exec(host, script).stdout)
        .trim()
        .to_string()
}

/// Everything a host has written under /etc (its overlay's upper directory), to show a check
/// run wrote nothing.
fn etc_upper(host: &str) -> std::collections::BTreeMap<String, String> {
    support::snapshot_tree(std::path::Path::new(&format!(
        "{LAB_DIR}/hosts/{host}/ov/etc/upper"
    )))
}

fn failures(out: &Output) -> Vec<String> {
    out.task_ends()
        .iter()
        .filter(|e| e["status"] == "failed")
        .map(|e| e["msg"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn summaries(out: &Output) -> Vec<String> {
    out.task_ends()
        .iter()
        .filter_map(|e| e["summary"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn sysctl_sets_the_running_value_and_the_file_then_is_idempotent() {
    let Some(p) = lab("sysctl_sets_the_running_value_and_the_file_then_is_idempotent") else {
        return;
    };
    let file = "/etc/sysctl.d/99-playbook.conf";
    let reset = format!("sysctl -qw net.ipv4.ip_forward=0 && rm -f {file}");
    for h in HOSTS {
        sh(h, &reset);
    }
    p.file(
        "sysctl.rhai",
        r#"on("all", sysctl(#{ name: "net.ipv4.ip_forward", value: 1 }));"#,
    );
    let before = etc_upper("h9");
    let check = p.play("sysctl.rhai", &["--check"]);
    check.assert_code(0);
    assert_eq!(check.total("changed"), 2, "{}", check.stdout);
    assert_eq!(etc_upper("h9"), before, "check mode wrote under /etc");
    for s in summaries(&check) {
        assert_eq!(
            s,
            format!(
                "net.ipv4.ip_forward = 1 in {file}, sysctl -w net.ipv4.ip_forward=1 (running: 0)"
            )
        );
    }
    for h in HOSTS {
        assert_eq!(
            sh(h, "sysctl -n net.ipv4.ip_forward"),
            "0",
            "check mode applied"
        );
        assert_eq!(
            sh(h, &format!("test -e {file} && echo yes || echo no")),
            "no"
        );
    }

    let real = p.play("sysctl.rhai", &[]);
    real.assert_code(0);
    assert_eq!(real.total("changed"), 2, "{}", real.stdout);
    for h in HOSTS {
        assert_eq!(sh(h, "sysctl -n net.ipv4.ip_forward"), "1");
        assert_eq!(sh(h, &format!("cat {file}")), "net.ipv4.ip_forward = 1");
    }
    // The root namespace is not touched (each host has its own network namespace).
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "0"
    );

    let again = p.play("sysctl.rhai", &[]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "{}", again.stdout);
    let check = p.play("sysctl.rhai", &["--check"]);
    check.assert_code(0);
    assert_eq!(check.total("changed"), 0, "{}", check.stdout);

    // Only the running value drifted: only sysctl -w runs.
    sh("h9", "sysctl -qw net.ipv4.ip_forward=0");
    let drift = p.play("sysctl.rhai", &[]);
    assert_eq!(drift.total("changed"), 1, "{}", drift.stdout);
    assert_eq!(drift.changed()[0].0, "i");
    assert_eq!(
        summaries(&drift),
        ["sysctl -w net.ipv4.ip_forward=1 (running: 0)"]
    );
    assert_eq!(sh("h9", "sysctl -n net.ipv4.ip_forward"), "1");

    for h in HOSTS {
        sh(h, &reset);
    }
}

#[test]
fn sysctl_refused_by_the_kernel_fails_with_its_message() {
    let Some(p) = lab("sysctl_refused_by_the_kernel_fails_with_its_message") else {
        return;
    };
    p.mkroot("i");
    // A value different from the running one, so sysctl -w must run.
    let now: u32 = sh("h9", "sysctl -n vm.swappiness").parse().unwrap();
    let want = (now + 1) % 100;
    p.hosts(&["i"], &[]);
    p.file(
        "swappiness.rhai",
        &format!(
            r#"on("all", sysctl(#{{ name: "vm.swappiness", value: {want},
                                   sysctl_file: "{{{{ root }}}}/sysctl.conf" }}));"#
        ),
    );
    let out = p.play("swappiness.rhai", &[]);
    out.assert_code(2);
    let failed = failures(&out);
    assert_eq!(failed.len(), 1, "{}", out.stdout);
    assert!(
        failed[0].contains("permission denied on key \"vm.swappiness\""),
        "{}",
        failed[0]
    );
    assert!(failed[0].contains("was written"), "{}", failed[0]);
    // As documented (and as Ansible does): the file holds the value for the next boot...
    assert_eq!(
        std::fs::read_to_string(p.root("i").join("sysctl.conf")).unwrap(),
        format!("vm.swappiness = {want}\n")
    );
    assert_eq!(sh("h9", "sysctl -n vm.swappiness"), now.to_string());
    // ...and a re-run fails again: never a false ok.
    p.play("swappiness.rhai", &[]).assert_code(2);
}

/// A module built into this kernel (in /sys/module without `initstate`), so "loaded" without
/// loading anything.
fn builtin_module() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/sys/module")
        .unwrap()
        .flatten()
        .filter(|e| !e.path().join("initstate").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    names.sort();
    names.into_iter().next().expect("a built-in module")
}

#[test]
fn modprobe_persistence_files_and_probe_of_a_present_module() {
    let Some(p) = lab("modprobe_persistence_files_and_probe_of_a_present_module") else {
        return;
    };
    let m = builtin_module();
    let load = format!("/etc/modules-load.d/{m}.conf");
    let opts = format!("/etc/modprobe.d/{m}.conf");
    for h in HOSTS {
        sh(h, &format!("rm -f {load} {opts}"));
    }
    // Already present: ok, nothing loaded, nothing written.
    p.file(
        "probe.rhai",
        &format!(r#"on("all", modprobe(#{{ name: "{m}" }}));"#),
    );
    let out = p.play("probe.rhai", &[]);
    out.assert_code(0);
    assert_eq!(out.total("changed"), 0, "{}", out.stdout);
    assert_eq!(out.total("ok"), 2, "{}", out.stdout);

    p.file(
        "persist.rhai",
        &format!(
            r#"on("all", modprobe(#{{ name: "{m}", params: "pb_test=1", persist: "present" }}));"#
        ),
    );
    let check = p.play("persist.rhai", &["--check"]);
    check.assert_code(0);
    assert_eq!(check.total("changed"), 2);
    assert_eq!(
        sh("h9", &format!("test -e {load} && echo yes || echo no")),
        "no"
    );
    let out = p.play("persist.rhai", &[]);
    out.assert_code(0);
    assert_eq!(out.total("changed"), 2, "{}", out.stdout);
    assert_eq!(
        summaries(&out)[0],
        format!("write {load}, write {opts}"),
        "no load step for a present module"
    );
    for h in HOSTS {
        assert_eq!(sh(h, &format!("cat {load}")), m);
        assert_eq!(
            sh(h, &format!("cat {opts}")),
            format!("options {m} pb_test=1")
        );
    }
    let again = p.play("persist.rhai", &[]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "{}", again.stdout);

    p.file(
        "unpersist.rhai",
        &format!(r#"on("all", modprobe(#{{ name: "{m}", persist: "absent" }}));"#),
    );
    let out = p.play("unpersist.rhai", &[]);
    out.assert_code(0);
    assert_eq!(out.total("changed"), 2);
    for h in HOSTS {
        assert_eq!(sh(h, &format!("ls {load} {opts} 2>/dev/null | wc -l")), "0");
    }
    assert_eq!(p.play("unpersist.rhai", &[]).total("changed"), 0);

    // A built-in module cannot be unloaded: a clear failure, without touching the kernel.
    p.file(
        "unload.rhai",
        &format!(r#"on("all", modprobe(#{{ name: "{m}", state: "absent" }}));"#),
    );
    let out = p.play("unload.rhai", &["--check"]);
    out.assert_code(2);
    assert!(
        failures(&out)[0].contains("built into the kernel"),
        "{}",
        out.stdout
    );
}

#[test]
fn modprobe_of_a_missing_module_fails_clearly_in_check_mode_too() {
    let Some(p) = lab("modprobe_of_a_missing_module_fails_clearly_in_check_mode_too") else {
        return;
    };
    p.file(
        "missing.rhai",
        r#"on("all", modprobe(#{ name: "pb_no_such_module", persist: "present" }));"#,
    );
    for extra in [&["--check"][..], &[]] {
        let out = p.play("missing.rhai", extra);
        out.assert_code(2);
        let failed = failures(&out);
        assert_eq!(failed.len(), 2, "{}", out.stdout);
        for f in failed {
            // The dry run's own message (module not found, or no modprobe on the host).
            assert!(f.starts_with("modprobe -n pb_no_such_module: "), "{f}");
            assert!(f.contains("not found"), "{f}");
        }
    }
    assert_eq!(
        sh(
            "h9",
            "test -e /etc/modules-load.d/pb_no_such_module.conf && echo yes || echo no"
        ),
        "no",
        "nothing persisted for a module that did not load"
    );
}

#[test]
fn swap_off_comments_fstab_swap_lines_once() {
    let Some(p) = lab("swap_off_comments_fstab_swap_lines_once") else {
        return;
    };
    for h in ["i", "j"] {
        p.mkroot(h);
        p.write(
            h,
            "fstab",
            "UUID=abc / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n",
        );
    }
    p.file(
        "swap.rhai",
        r#"on("all", swap(#{ state: "off", fstab: "{{ root }}/fstab" }));"#,
    );
    let check = p.play("swap.rhai", &["--check"]);
    check.assert_code(0);
    assert_eq!(check.total("changed"), 2);
    let root = p.remote_root("i");
    assert_eq!(
        summaries(&check)[0],
        format!("comment out 1 swap line(s) in {root}/fstab"),
        "no swapoff: the lab hosts have no swap"
    );
    let out = p.play("swap.rhai", &[]);
    out.assert_code(0);
    for h in ["i", "j"] {
        assert_eq!(
            std::fs::read_to_string(p.root(h).join("fstab")).unwrap(),
            "UUID=abc / ext4 defaults 0 1\n# /swapfile none swap sw 0 0\n"
        );
    }
    let again = p.play("swap.rhai", &[]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "{}", again.stdout);

    // The hosts' real fstab has no swap and /proc/swaps is empty: ok.
    p.file("swap-etc.rhai", r#"on("all", swap(#{}));"#);
    let out = p.play("swap-etc.rhai", &[]);
    out.assert_code(0);
    assert_eq!(out.total("changed"), 0, "{}", out.stdout);
}

const GOOD_UNIT: &str = "[Unit]\nDescription=playbook test\n\n[Service]\nExecStart=/bin/sleep 1000\n\n[Install]\nWantedBy=multi-user.target\n";

#[test]
fn systemd_unit_without_systemd_writes_validates_and_enables_offline() {
    let Some(p) = lab("systemd_unit_without_systemd_writes_validates_and_enables_offline") else {
        return;
    };
    let unit = "/etc/systemd/system/pbtest-sys.service";
    let bad = "/etc/systemd/system/pbtest-bad.service";
    let clean = format!(
        "systemctl disable pbtest-sys.service >/dev/null 2>&1; rm -rf {unit} {unit}.d {bad}"
    );
    for h in HOSTS {
        sh(h, &clean);
    }
    p.file("units/sys.service.j2", GOOD_UNIT).file(
        "unit.rhai",
        r#"on("all", systemd_unit(#{ name: "pbtest-sys", template: "units/sys.service.j2",
                validate: true, enabled: true,
                dropins: #{ limits: "[Service]\nLimitNOFILE=4096\n" } }));"#,
    );
    let before = etc_upper("h9");
    let check = p.play("unit.rhai", &["--check"]);
    check.assert_code(0);
    assert_eq!(etc_upper("h9"), before, "check mode wrote under /etc");
    assert_eq!(
        summaries(&check)[0],
        format!("write {unit}, write {unit}.d/limits.conf, enable"),
        "no daemon-reload without a running systemd"
    );
    assert_eq!(
        sh("h9", &format!("test -e {unit} && echo yes || echo no")),
        "no"
    );

    let out = p.play("unit.rhai", &[]);
    out.assert_code(0);
    assert_eq!(out.total("changed"), 2, "{}", out.stdout);
    for h in HOSTS {
        assert_eq!(sh(h, &format!("cat {unit}")), GOOD_UNIT.trim());
        assert_eq!(
            sh(h, &format!("cat {unit}.d/limits.conf")),
            "[Service]\nLimitNOFILE=4096"
        );
        assert_eq!(sh(h, "systemctl is-enabled pbtest-sys.service"), "enabled");
        assert_eq!(
            sh(
                h,
                "ls -A /etc/systemd/system | grep -c '^.playbook' || true"
            ),
            "0"
        );
    }
    let again = p.play("unit.rhai", &[]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "{}", again.stdout);

    // validate: systemd-analyze verify rejects the unit, and no file is left.
    p.file(
        "bad.rhai",
        r#"on("all", systemd_unit(#{ name: "pbtest-bad", validate: true,
               content: "[Service]\nExecStart=relative/path\n" }));"#,
    );
    let out = p.play("bad.rhai", &[]);
    out.assert_code(2);
    let failed = failures(&out);
    assert_eq!(failed.len(), 2, "{}", out.stdout);
    for f in &failed {
        assert!(f.contains("validation failed"), "{f}");
        assert!(
            f.contains("Neither a valid executable name nor an absolute path: relative/path"),
            "{f}"
        );
    }
    for h in HOSTS {
        assert_eq!(
            sh(h, &format!("test -e {bad} && echo yes || echo no")),
            "no"
        );
        assert_eq!(
            sh(
                h,
                "ls -A /etc/systemd/system | grep -c '^.playbook' || true"
            ),
            "0"
        );
    }

    // Disable works offline too.
    p.file(
        "disable.rhai",
        r#"on("all", systemd_unit(#{ name: "pbtest-sys", enabled: false }));"#,
    );
    assert_eq!(p.play("disable.rhai", &[]).total("changed"), 2);
    assert_eq!(
        sh("h9", "systemctl is-enabled pbtest-sys.service || true"),
        "disabled"
    );

    // Starting (or stopping) needs systemd: the task fails with systemctl's message, in check
    // mode too, and never reports a false ok.
    for state in ["started", "stopped"] {
        p.file(
            "start.rhai",
            &format!(r#"on("all", systemd_unit(#{{ name: "pbtest-sys", state: "{state}" }}));"#),
        );
        for extra in [&["--check"][..], &[]] {
            let out = p.play("start.rhai", extra);
            out.assert_code(2);
            let failed = failures(&out);
            assert_eq!(failed.len(), 2, "{}", out.stdout);
            for f in failed {
                assert!(
                    f.contains("System has not been booted with systemd as init system"),
                    "{f}"
                );
            }
        }
    }
    for h in HOSTS {
        sh(h, &clean);
    }
}

// ---- Hosts that boot real systemd -------------------------------------------------------

/// A project whose inventory holds the lab's systemd hosts, or None (skipped).
fn systemd_lab(test: &str) -> Option<(Project, Vec<(String, String)>)> {
    support::live_ssh_processes();
    // The lab lock first: another test may be making the systemd hosts again.
    let p = Project::new(Conn::Lab);
    let hosts = support::lab_systemd_hosts();
    if hosts.is_empty() {
        support::lab_skip(test, "needs the lab's systemd hosts");
        return None;
    }
    let hosts = vec![hosts[0].clone()];
    let mut inv = format!(
        "[defaults]\nconnection = \"ssh\"\nuser = \"root\"\n\
         identity_file = \"{LAB_DIR}/keys/id_lab\"\nknown_hosts = \"{LAB_DIR}/known_hosts\"\n\n"
    );
    for (name, addr) in &hosts {
        inv += &format!("[hosts.{name}]\naddress = \"{addr}\"\n\n");
    }
    p.file("inventory.toml", &inv);
    Some((p, hosts))
}

/// Runs a command on a systemd host over ssh (strict host keys) and returns its trimmed stdout.
fn ssh(addr: &str, script: &str) -> String {
    let out = std::process::Command::new("ssh")
        .args([
            "-i",
            &format!("{LAB_DIR}/keys/id_lab"),
            "-o",
            &format!("UserKnownHostsFile={LAB_DIR}/known_hosts"),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            &format!("root@{addr}"),
            script,
        ])
        .output()
        .expect("ssh runs");
    assert!(
        out.status.success(),
        "ssh {addr} {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A unit that counts its starts in /var/lib/pbtest/NAME.starts.
fn counting_unit(name: &str, version: u32) -> String {
    format!(
        "[Unit]\nDescription=playbook test {version}\n\n[Service]\n\
         ExecStartPre=/bin/sh -c 'mkdir -p /var/lib/pbtest && echo start >> /var/lib/pbtest/{name}.starts'\n\
         ExecStart=/bin/sleep infinity\nEnvironment=VERSION={version}\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    )
}

fn clean_unit(addr: &str, name: &str, path: &str) {
    ssh(
        addr,
        &format!(
            "systemctl stop {name} 2>/dev/null; systemctl unmask {name} 2>/dev/null; \
             systemctl disable {name} 2>/dev/null; rm -rf {path} /etc/systemd/system/{name}.d \
             /var/lib/pbtest/{name}.starts; systemctl daemon-reload; true"
        ),
    );
}

fn starts(addr: &str, name: &str) -> usize {
    ssh(
        addr,
        &format!("cat /var/lib/pbtest/{name}.starts 2>/dev/null || true"),
    )
    .lines()
    .count()
}

fn invocation(addr: &str, name: &str) -> String {
    ssh(
        addr,
        &format!("systemctl show -p InvocationID --value {name}"),
    )
}

#[test]
fn systemd_unit_changed_unit_is_reloaded_and_restarted_once_unchanged_left_alone() {
    let test = "systemd_unit_changed_unit_is_reloaded_and_restarted_once_unchanged_left_alone";
    let Some((p, hosts)) = systemd_lab(test) else {
        return;
    };
    let (_, addr) = &hosts[0];
    let name = "pbtest-count.service";
    let path = format!("/etc/systemd/system/{name}");
    clean_unit(addr, name, &path);
    let play = |version: u32, state: &str| {
        p.file(
            "count.rhai",
            &format!(
                "on(\"all\", systemd_unit(#{{ name: \"pbtest-count\", content: {:?}, \
                 validate: true, enabled: true, state: \"{state}\" }}));",
                counting_unit("pbtest-count.service", version)
            ),
        );
        p.play("count.rhai", &[])
    };

    let first = play(1, "started");
    first.assert_code(0);
    assert_eq!(
        summaries(&first),
        [format!("write {path}, daemon-reload, enable, start")]
    );
    assert_eq!(ssh(addr, &format!("systemctl is-active {name}")), "active");
    assert_eq!(
        ssh(addr, &format!("systemctl is-enabled {name}")),
        "enabled"
    );
    assert_eq!(starts(addr, name), 1);
    let id = invocation(addr, name);

    // Unchanged: nothing runs, the same process keeps running.
    let same = play(1, "started");
    same.assert_code(0);
    assert_eq!(same.total("changed"), 0, "{}", same.stdout);
    assert_eq!(invocation(addr, name), id);
    assert_eq!(starts(addr, name), 1);

    // Changed unit file with state started: daemon-reload, then one restart.
    p.file(
        "check-count.rhai",
        &format!(
            "on(\"all\", systemd_unit(#{{ name: \"pbtest-count\", content: {:?}, state: \"started\" }}));",
            counting_unit("pbtest-count.service", 2)
        ),
    );
    let check = p.play("check-count.rhai", &["--check"]);
    assert_eq!(
        summaries(&check),
        [format!("write {path}, daemon-reload, restart")]
    );
    assert_eq!(invocation(addr, name), id, "check mode restarted nothing");
    let changed = play(2, "started");
    changed.assert_code(0);
    assert_eq!(
        summaries(&changed),
        [format!("write {path}, daemon-reload, restart")]
    );
    assert_eq!(starts(addr, name), 2, "restarted exactly once");
    let id2 = invocation(addr, name);
    assert_ne!(id2, id);
    assert_eq!(
        ssh(
            addr,
            &format!("systemctl show -p Environment --value {name}")
        ),
        "VERSION=2",
        "the new definition runs (daemon-reload happened)"
    );
    assert_eq!(
        ssh(
            addr,
            &format!("systemctl show -p NeedDaemonReload --value {name}")
        ),
        "no"
    );

    // restarted always acts, once, also when the unit changes in the same task.
    let restarted = play(2, "restarted");
    restarted.assert_code(0);
    assert_eq!(summaries(&restarted), ["restart"]);
    assert_eq!(starts(addr, name), 3);
    let both = play(3, "restarted");
    assert_eq!(
        summaries(&both),
        [format!("write {path}, daemon-reload, restart")]
    );
    assert_eq!(
        starts(addr, name),
        4,
        "one restart for a change and restarted"
    );

    // stopped, then ok.
    p.file(
        "stop.rhai",
        r#"on("all", systemd_unit(#{ name: "pbtest-count", state: "stopped" }));"#,
    );
    let stop = p.play("stop.rhai", &[]);
    stop.assert_code(0);
    assert_eq!(summaries(&stop), ["stop"]);
    assert_eq!(
        ssh(addr, &format!("systemctl is-active {name} || true")),
        "inactive"
    );
    assert_eq!(p.play("stop.rhai", &[]).total("changed"), 0);
    clean_unit(addr, name, &path);
}

#[test]
fn systemd_unit_masked_and_unmasked() {
    let Some((p, hosts)) = systemd_lab("systemd_unit_masked_and_unmasked") else {
        return;
    };
    let (_, addr) = &hosts[0];
    let name = "pbtest-mask.service";
    // Outside /etc/systemd/system, where `systemctl mask` puts its /dev/null link.
    let path = format!("/usr/local/lib/systemd/system/{name}");
    clean_unit(addr, name, &path);
    p.file(
        "install.rhai",
        &format!(
            "on(\"all\", systemd_unit(#{{ name: \"pbtest-mask\", path: \"{path}\", content: {:?}, \
             state: \"started\" }}));",
            counting_unit(name, 1)
        ),
    );
    p.play("install.rhai", &[]).assert_code(0);
    assert_eq!(ssh(addr, &format!("systemctl is-active {name}")), "active");

    p.file(
        "mask.rhai",
        r#"on("all", systemd_unit(#{ name: "pbtest-mask", masked: true, state: "stopped" }));"#,
    );
    let out = p.play("mask.rhai", &[]);
    out.assert_code(0);
    assert_eq!(summaries(&out), ["mask, stop"]);
    assert_eq!(
        ssh(addr, &format!("systemctl is-enabled {name} || true")),
        "masked"
    );
    assert_eq!(
        ssh(addr, &format!("systemctl is-active {name} || true")),
        "inactive"
    );
    assert_eq!(p.play("mask.rhai", &[]).total("changed"), 0);

    p.file(
        "unmask.rhai",
        r#"on("all", systemd_unit(#{ name: "pbtest-mask", masked: false, state: "started" }));"#,
    );
    let out = p.play("unmask.rhai", &[]);
    out.assert_code(0);
    assert_eq!(summaries(&out), ["unmask, start"]);
    assert_eq!(ssh(addr, &format!("systemctl is-active {name}")), "active");
    assert_eq!(p.play("unmask.rhai", &[]).total("changed"), 0);
    clean_unit(addr, name, &path);
}
