//! The SSH transport against the lab's real sshd hosts (`tests/lab/lab.sh up 3`). Without the
//! lab every test says why it skipped (counted apart by `tests/run`), or fails under
//! `PLAYBOOK_TEST_REQUIRE_LAB=1`.
//!
//! The tests run one at a time (they share the lab and count ssh processes) and each one ends by
//! checking that no ssh master of this process is left running.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use playbook_engine::host::quote;
use playbook_engine::transport::{SshOptions, SshTransport, Transport, TransportError};
use sha2::{Digest, Sha256};

#[path = "../../tests/support/skip.rs"]
mod skip;
use skip::{lab_skip, lab_status, LabStatus, LAB_DIR};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Takes the in-process lab lock, or skips the test (saying why) when the lab is not up for this
/// run with the three light hosts these tests use.
macro_rules! lab_or_skip {
    () => {{
        let guard = SERIAL.lock().await;
        if !matches!(lab_status(), LabStatus::Up { light, .. } if light >= 3) {
            fn here() {}
            let name = std::any::type_name_of_val(&here);
            let test = name.trim_end_matches("::here").trim_end_matches("::{{closure}}");
            lab_skip(test, "needs the lab with 3 light hosts (tests/lab/lab.sh up 3)");
            return;
        }
        guard
    }};
}

fn addr(n: u8) -> String {
    format!("10.77.0.{}", 10 + n)
}

fn opts(n: u8) -> SshOptions {
    SshOptions {
        user: Some("root".into()),
        identity_file: Some(PathBuf::from(LAB_DIR).join("keys/id_lab")),
        known_hosts: Some(PathBuf::from(LAB_DIR).join("known_hosts")),
        connect_timeout: Duration::from_secs(5),
        ..SshOptions::new(addr(n))
    }
}

fn lab_sh(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lab/lab.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .expect("run lab.sh");
    assert!(
        out.status.success(),
        "lab.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Running (non-zombie) `ssh` processes: what `pgrep -x ssh` lists, minus zombies that the
/// machine's PID 1 has not reaped yet. With `ours`, only masters of this test process (their
/// control socket lies in `playbook-ssh-<our pid>-*`).
fn ssh_processes(ours: bool) -> Vec<u32> {
    let marker = format!("playbook-ssh-{}-", std::process::id());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let state = stat[close + 1..].trim_start().chars().next();
        if comm != "ssh" || state == Some('Z') {
            continue;
        }
        if ours {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&cmdline).contains(&marker) {
                continue;
            }
        }
        pids.push(pid);
    }
    pids
}

/// Waits up to 3 s for every ssh master of this process to be gone.
async fn assert_no_masters_left() {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = ssh_processes(true);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ssh masters still running: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect(n: u8) -> SshTransport {
    SshTransport::connect(&opts(n))
        .await
        .unwrap_or_else(|e| panic!("connect h{n}: {e}"))
}

/// Restarts a host's sshd even when the test fails.
struct StartSshdOnDrop(&'static str);

impl Drop for StartSshdOnDrop {
    fn drop(&mut self) {
        lab_sh(&["start-sshd", self.0]);
    }
}

#[tokio::test]
async fn hostname_on_every_host() {
    let _lab = lab_or_skip!();
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for n in 1..=3u8 {
        set.spawn(async move { (n, connect(n).await) });
    }
    let mut hosts = Vec::new();
    while let Some(r) = set.join_next().await {
        hosts.push(r.unwrap());
    }
    eprintln!("3 connects in {:?}", started.elapsed());
    for (n, t) in &hosts {
        let out = t.exec("hostname", b"").await.unwrap();
        assert_eq!(out.status, 0, "{}", out.stderr_text());
        assert_eq!(out.stdout_text(), format!("h{n}\n"));
        // a second command reuses the same master
        let pid = t.master_pid();
        assert!(pid.is_some());
        assert_eq!(t.exec("true", b"").await.unwrap().status, 0);
        assert_eq!(t.master_pid(), pid);
    }
    for (_, t) in &hosts {
        t.close().await;
        t.close().await; // twice is fine
        assert!(matches!(
            t.exec("true", b"").await,
            Err(TransportError::Exec(m)) if m.contains("closed")
        ));
    }
    assert_no_masters_left().await;
}

#[tokio::test]
async fn stdin_round_trip_of_1mib_binary() {
    let _lab = lab_or_skip!();
    let t = connect(1).await;
    // every byte value, in a pseudo-random order
    let mut x: u32 = 0x1234_5678;
    let data: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect();
    let want = hex::encode(Sha256::digest(&data));

    let started = Instant::now();
    let out = t.exec("sha256sum", &data).await.unwrap();
    eprintln!("1 MiB through sha256sum in {:?}", started.elapsed());
    assert_eq!(out.status, 0, "{}", out.stderr_text());
    assert_eq!(out.stdout_text(), format!("{want}  -\n"));

    // and back out again unchanged
    let out = t.exec("cat", &data).await.unwrap();
    assert_eq!(out.status, 0);
    assert_eq!(out.stdout.len(), data.len());
    assert_eq!(hex::encode(Sha256::digest(&out.stdout)), want);

    // a script that ignores its input still finishes
    let out = t.exec("echo ignored", &data).await.unwrap();
    assert_eq!(out.stdout, b"ignored\n");
    t.close().await;
    assert_no_masters_left().await;
}

#[tokio::test]
async fn nasty_argument_arrives_byte_for_byte() {
    let _lab = lab_or_skip!();
    let t = connect(1).await;
    let nasty = "it's \"double\" $(echo INJECTED) `echo TICKS` ${HOME} \\ back\nnew line\ttab  two spaces; | & > < * ? ~ # ünïcødé € 日本 trailing ";
    let script = format!("printf %s {}", quote(nasty).unwrap());
    let out = t.exec(&script, b"").await.unwrap();
    assert_eq!(out.status, 0, "{}", out.stderr_text());
    assert_eq!(out.stdout, nasty.as_bytes());

    // the script itself is one argument: multi-line scripts with quotes run as written
    let out = t
        .exec("a='x y'\nprintf '%s|' \"$a\" \"$0\"\necho", b"")
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "x y|/bin/sh|\n");
    t.close().await;
    assert_no_masters_left().await;
}

#[tokio::test]
async fn exit_status_stderr_signal_and_timeout() {
    let _lab = lab_or_skip!();
    let t = connect(2).await;
    let out = t.exec("echo out; echo err >&2; exit 3", b"").await.unwrap();
    assert_eq!(
        (out.status, out.stdout_text(), out.stderr_text()),
        (3, "out\n".into(), "err\n".into())
    );

    let out = t.exec("no-such-command-here", b"").await.unwrap();
    assert_eq!(out.status, 127);
    assert!(out.stderr_text().contains("not found"), "{out:?}");

    let out = t.exec("echo before; kill -9 $$", b"").await.unwrap();
    assert_eq!(out.status, -1, "{out:?}");
    assert_eq!(out.stdout_text(), "before\n");
    assert!(out.stderr_text().contains("signal"), "{out:?}");

    // the session still works afterwards
    assert_eq!(t.exec("exit 0", b"").await.unwrap().status, 0);
    t.close().await;

    let quick = SshTransport::connect(&SshOptions {
        command_timeout: Some(Duration::from_millis(700)),
        ..opts(2)
    })
    .await
    .unwrap();
    let started = Instant::now();
    let err = quick.exec("sleep 5", b"").await.unwrap_err();
    assert_eq!(err, TransportError::Exec("timed out after 700ms".into()));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(quick.exec("echo ok", b"").await.unwrap().stdout, b"ok\n");
    quick.close().await;
    assert_no_masters_left().await;
}

#[tokio::test]
async fn fifty_concurrent_execs_on_one_session() {
    let _lab = lab_or_skip!();
    let t = Arc::new(connect(3).await);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let t = t.clone();
        set.spawn(async move {
            let out = t
                .exec(
                    &format!("sleep 0.2; echo {i}; cat"),
                    format!("in{i}").as_bytes(),
                )
                .await;
            (i, out)
        });
    }
    while let Some(r) = set.join_next().await {
        let (i, out) = r.unwrap();
        let out = out.unwrap_or_else(|e| panic!("exec {i}: {e}"));
        assert_eq!(out.status, 0, "exec {i}: {}", out.stderr_text());
        assert_eq!(out.stdout_text(), format!("{i}\nin{i}"));
    }
    eprintln!(
        "50 concurrent execs on one master in {:?}",
        started.elapsed()
    );
    assert_eq!(ssh_processes(true).len(), 1, "one master for all of them");
    t.close().await;
    assert_no_masters_left().await;
}

#[tokio::test]
async fn forty_parallel_connects_to_one_host() {
    let _lab = lab_or_skip!();
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..40 {
        set.spawn(async { SshTransport::connect(&opts(1)).await });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.push(r.unwrap().unwrap_or_else(|e| panic!("connect: {e}")));
    }
    let elapsed = started.elapsed();
    let attempts: u32 = all.iter().map(|t| t.connect_attempts()).sum();
    let retried = all.iter().filter(|t| t.connect_attempts() > 1).count();
    eprintln!(
        "40 parallel connects to h1 in {elapsed:?}: {attempts} attempts, {retried} connections needed a retry"
    );
    assert_eq!(ssh_processes(true).len(), 40);
    for t in &all {
        assert_eq!(t.exec("hostname", b"").await.unwrap().stdout, b"h1\n");
    }
    for t in &all {
        t.close().await;
    }
    assert_no_masters_left().await;
}

#[tokio::test]
async fn unknown_host_key_is_unreachable() {
    let _lab = lab_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, "").unwrap();
    let err = SshTransport::connect(&SshOptions {
        known_hosts: Some(known.clone()),
        ..opts(1)
    })
    .await
    .unwrap_err();
    match &err {
        TransportError::Unreachable(m) => {
            assert!(m.contains("Host key verification failed"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    eprintln!("unknown host key: {err}");
    assert_eq!(std::fs::read_to_string(&known).unwrap(), "");

    // a wrong key for the address: h2's key recorded under h1's address
    let lab_known = std::fs::read_to_string(Path::new(LAB_DIR).join("known_hosts")).unwrap();
    let h2_key = lab_known
        .lines()
        .find(|l| l.starts_with("h2,"))
        .and_then(|l| l.split_once(' '))
        .map(|(_, key)| key)
        .unwrap();
    std::fs::write(&known, format!("{} {h2_key}\n", addr(1))).unwrap();
    for accept_new_host_keys in [false, true] {
        let err = SshTransport::connect(&SshOptions {
            known_hosts: Some(known.clone()),
            accept_new_host_keys,
            ..opts(1)
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&err, TransportError::Unreachable(m) if m.contains("Host key verification failed")),
            "changed key, accept-new {accept_new_host_keys}: {err:?}"
        );
    }
    assert_no_masters_left().await;
}

#[tokio::test]
async fn authentication_failure_is_unreachable_and_not_retried() {
    let _lab = lab_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_other");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let err = SshTransport::connect(&SshOptions {
        identity_file: Some(key),
        ..opts(1)
    })
    .await
    .unwrap_err();
    eprintln!("wrong key: {err} after {:?}", started.elapsed());
    assert!(
        matches!(&err, TransportError::Unreachable(m) if m.contains("Permission denied")),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "not retried");
    assert_no_masters_left().await;
}

#[tokio::test]
async fn accept_new_records_the_host_key() {
    let _lab = lab_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, "").unwrap();
    let o = SshOptions {
        known_hosts: Some(known.clone()),
        accept_new_host_keys: true,
        ..opts(1)
    };
    let t = SshTransport::connect(&o).await.unwrap();
    assert_eq!(t.exec("hostname", b"").await.unwrap().stdout, b"h1\n");
    t.close().await;

    let lab_known = std::fs::read_to_string(Path::new(LAB_DIR).join("known_hosts")).unwrap();
    let h1_key = lab_known
        .lines()
        .find(|l| l.starts_with("h1,"))
        .and_then(|l| l.split_once(' '))
        .map(|(_, key)| key.trim().to_string())
        .unwrap();
    let recorded = std::fs::read_to_string(&known).unwrap();
    assert!(
        recorded.lines().any(|l| l.trim_end().ends_with(&h1_key)),
        "h1's key {h1_key} not in {recorded}"
    );

    // now known: strict checking passes with that file
    let t = SshTransport::connect(&SshOptions {
        accept_new_host_keys: false,
        ..o
    })
    .await
    .unwrap();
    assert_eq!(t.exec("hostname", b"").await.unwrap().stdout, b"h1\n");
    t.close().await;
    assert_no_masters_left().await;
}

#[tokio::test]
async fn stopped_sshd_is_unreachable_connection_refused() {
    let _lab = lab_or_skip!();
    // a master opened before the stop keeps working (sshd's sessions stay)
    let before = connect(2).await;
    lab_sh(&["stop-sshd", "h2"]);
    let restart = StartSshdOnDrop("h2");
    let started = Instant::now();
    let err = SshTransport::connect(&opts(2)).await.unwrap_err();
    eprintln!("stopped sshd: {err} after {:?}", started.elapsed());
    match &err {
        TransportError::Unreachable(m) => assert!(m.contains("Connection refused"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused is not retried"
    );
    assert_eq!(before.exec("hostname", b"").await.unwrap().stdout, b"h2\n");
    before.close().await;
    drop(restart);
    let t = connect(2).await;
    assert_eq!(t.exec("hostname", b"").await.unwrap().stdout, b"h2\n");
    t.close().await;
    assert_no_masters_left().await;
}

#[tokio::test]
async fn killed_sshd_makes_the_next_exec_unreachable() {
    let _lab = lab_or_skip!();
    let t = connect(3).await;
    assert_eq!(t.exec("hostname", b"").await.unwrap().stdout, b"h3\n");
    // every sshd of h3, the listener and our session's
    lab_sh(&["exec", "h3", "pkill", "-KILL", "-x", "sshd"]);
    let restart = StartSshdOnDrop("h3");
    let err = t.exec("hostname", b"").await.unwrap_err();
    eprintln!("after sshd was killed: {err}");
    assert!(matches!(err, TransportError::Unreachable(_)), "{err:?}");
    t.close().await;
    drop(restart);
    assert_no_masters_left().await;
}

#[tokio::test]
async fn no_ssh_process_left_after_close_or_drop() {
    let _lab = lab_or_skip!();
    let before = ssh_processes(false);
    let closed = connect(1).await;
    let dropped = connect(2).await;
    let busy = Arc::new(connect(3).await);
    // all ssh processes of the machine (like `pgrep -x ssh`), ours are the three new ones
    let during = ssh_processes(false);
    assert_eq!(ssh_processes(true).len(), 3);
    assert!(during.len() >= 3, "{during:?}");
    let pids: Vec<u32> = [&closed, &dropped, &busy]
        .iter()
        .map(|t| t.master_pid().unwrap())
        .collect();
    assert_eq!(closed.exec("true", b"").await.unwrap().status, 0);
    assert_eq!(dropped.exec("true", b"").await.unwrap().status, 0);

    let started = Instant::now();
    closed.close().await;
    eprintln!(
        "close() returned after {:?} (master {} gone: {})",
        started.elapsed(),
        pids[0],
        !ssh_processes(true).contains(&pids[0])
    );
    drop(dropped); // without close
                   // closed while a command still runs on it
    let running = {
        let busy = busy.clone();
        tokio::spawn(async move { busy.exec("sleep 30", b"").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    busy.close().await;
    let result = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the running command ends with its master")
        .unwrap();
    assert!(result.is_err(), "{result:?}");
    drop(busy);

    // no ssh process that was not there before remains (others may have ended meanwhile)
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let new: Vec<u32> = ssh_processes(false)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        if new.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ssh processes before {before:?}, new and still running {new:?} (masters were {pids:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z"), "{pid}: {stat}");
    }
    assert_no_masters_left().await;
    // the private control directory went with the last master
    let marker = format!("playbook-ssh-{}-", std::process::id());
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&marker))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A second sshd on h3:2222 with sshd's stock limits (`MaxSessions 10`) and a harsh
/// `MaxStartups` instead of the lab's generous ones; stopped again on drop.
struct StrictSshd {
    known_hosts: tempfile::TempDir,
}

impl StrictSshd {
    const PORT: u16 = 2222;

    fn start(max_startups: &str) -> StrictSshd {
        Self::stop();
        // A config file of its own: the lab's sshd_config.d would win over `-o` options.
        let config = format!(
            "HostKey /etc/ssh/ssh_host_ed25519_key\nListenAddress {}:{}\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\nMaxStartups {max_startups}\nMaxSessions 10\nPidFile /run/sshd-strict.pid\n",
            addr(3),
            Self::PORT
        );
        lab_sh(&[
            "exec",
            "h3",
            "sh",
            "-c",
            "printf %s \"$1\" >/run/sshd-strict.conf && /usr/sbin/sshd -f /run/sshd-strict.conf -E /var/log/sshd-strict.log",
            "sh",
            &config,
        ]);
        let lab_known = std::fs::read_to_string(Path::new(LAB_DIR).join("known_hosts")).unwrap();
        let key = lab_known
            .lines()
            .find(|l| l.starts_with("h3,"))
            .and_then(|l| l.split_once(' '))
            .map(|(_, key)| key.to_string())
            .unwrap();
        let known_hosts = tempfile::tempdir().unwrap();
        std::fs::write(
            known_hosts.path().join("known_hosts"),
            format!("[{}]:{} {key}\n", addr(3), Self::PORT),
        )
        .unwrap();
        StrictSshd { known_hosts }
    }

    fn opts(&self) -> SshOptions {
        SshOptions {
            port: Some(Self::PORT),
            known_hosts: Some(self.known_hosts.path().join("known_hosts")),
            ..opts(3)
        }
    }

    fn stop() {
        lab_sh(&[
            "exec",
            "h3",
            "sh",
            "-c",
            "[ ! -s /run/sshd-strict.pid ] || kill \"$(cat /run/sshd-strict.pid)\"; rm -f /run/sshd-strict.pid",
        ]);
    }
}

impl Drop for StrictSshd {
    fn drop(&mut self) {
        Self::stop();
    }
}

#[tokio::test]
async fn bursts_against_stock_sshd_limits_are_retried_and_queued() {
    let _lab = lab_or_skip!();
    let sshd = StrictSshd::start("3:50:8");
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let o = sshd.opts();
        set.spawn(async move { SshTransport::connect(&o).await });
    }
    let mut all = Vec::new();
    let mut failed = Vec::new();
    while let Some(r) = set.join_next().await {
        match r.unwrap() {
            Ok(t) => all.push(t),
            Err(e) => failed.push(e),
        }
    }
    let attempts: u32 = all.iter().map(|t| t.connect_attempts()).sum();
    let retried = all.iter().filter(|t| t.connect_attempts() > 1).count();
    eprintln!(
        "40 parallel connects, MaxStartups 3:50:8, in {:?}: {} ok, {attempts} attempts, {retried} retried, failed: {failed:?}",
        started.elapsed(),
        all.len()
    );
    for t in &all {
        t.close().await;
    }
    assert!(failed.is_empty());
    assert!(retried > 0, "sshd dropped nothing?");

    // MaxSessions 10: 50 commands at once on one master
    let t = Arc::new(SshTransport::connect(&sshd.opts()).await.unwrap());
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let t = t.clone();
        set.spawn(async move { (i, t.exec(&format!("sleep 0.2; echo {i}"), b"").await) });
    }
    while let Some(r) = set.join_next().await {
        let (i, out) = r.unwrap();
        let out = out.unwrap_or_else(|e| panic!("exec {i}: {e}"));
        assert_eq!(out.stdout_text(), format!("{i}\n"), "{}", out.stderr_text());
    }
    eprintln!(
        "50 concurrent execs, MaxSessions 10, in {:?}",
        started.elapsed()
    );
    t.close().await;
    drop(sshd);
    assert_no_masters_left().await;
}
