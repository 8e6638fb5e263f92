//! x509, fetch and wait_for over real SSH on the lab's hosts h5 (`e`, 10.77.0.15) and h6 (`f`,
//! 10.77.0.16). Skipped, saying so, when the lab is not up.

use std::os::unix::fs::PermissionsExt;

use crate::support::{lab_exec, snapshot_tree, Output, Project};

fn lab(test: &str) -> Option<Project> {
    let p = Project::lab(test)?;
    p.hosts(&["e", "f"], &[]);
    Some(p)
}

fn pki_playbook(ips: &[&str]) -> String {
    let ips: Vec<String> = ips.iter().map(|i| format!("\"{i}\"")).collect();
    format!(
        r#"
on("e", [
    file(#{{ path: "{{{{ root }}}}/pki", state: "directory", mode: "0755" }}),
    x509(#{{ kind: "ca", ca_dir: "pki/lab-ca", common_name: "lab-ca", cert: "{{{{ root }}}}/pki/ca.crt" }}),
    x509(#{{ kind: "cert", ca_dir: "pki/lab-ca", cert: "{{{{ root }}}}/pki/server.crt",
            key: "{{{{ root }}}}/pki/server.key", common_name: "h5", organization: "lab",
            dns_names: ["h5.lab"], ip_addresses: [{}],
            extended_key_usage: ["serverAuth", "clientAuth"] }}),
]);
"#,
        ips.join(", ")
    )
}

/// Runs a shell command on the lab host behind `host` and returns its stdout.
fn on(host: &str, script: &str) -> String {
    let out = lab_exec(&Project::lab_host(host), script);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn changed_summaries(out: &Output) -> Vec<String> {
    out.task_ends()
        .iter()
        .filter(|e| e["status"] == "changed")
        .map(|e| e["summary"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn x509_issues_verifiable_certificates_idempotently_and_never_shows_keys() {
    let Some(p) = lab("x509_issues_verifiable_certificates") else {
        return;
    };
    p.file("pki.rhai", &pki_playbook(&["10.77.0.15"]));
    p.mkroot("e");
    let mut outputs = Vec::new();

    let first = p.play("pki.rhai", &[]);
    first.assert_code(0);
    assert_eq!(first.total("changed"), 3, "{}", first.stdout);
    let dir = format!("{}/pki", p.remote_root("e"));
    let verify = on(
        "e",
        &format!("cd {dir} && openssl verify -CAfile ca.crt server.crt"),
    );
    assert_eq!(verify.trim(), "server.crt: OK");
    let text = on(
        "e",
        &format!("openssl x509 -noout -text -in {dir}/server.crt"),
    );
    assert!(text.contains("DNS:h5.lab, IP Address:10.77.0.15"), "{text}");
    assert!(
        text.contains("TLS Web Client Authentication, TLS Web Server Authentication"),
        "{text}"
    );
    assert!(text.contains("Subject: O = lab, CN = h5"), "{text}");
    let pubkeys = on(
        "e",
        &format!(
            "openssl x509 -noout -pubkey -in {dir}/server.crt; openssl pkey -pubout -in {dir}/server.key"
        ),
    );
    let (a, b) = pubkeys.split_at(pubkeys.len() / 2);
    assert_eq!(a, b, "the key on the target is the certificate's key");
    let root = p.root("e");
    let mode = |f: &str| {
        std::fs::metadata(root.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("pki/server.key"), 0o600);
    assert_eq!(mode("pki/server.crt"), 0o644);
    let ca_key = p.path().join("pki/lab-ca/ca.key");
    assert_eq!(
        std::fs::metadata(&ca_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    outputs.push(first);

    // The certificate serves TLS: wait_for checks it from the target with curl and the CA.
    let port = 19000 + std::process::id() % 1000;
    let _tls = Listener::start(
        "h5",
        &format!(
            "openssl s_server -accept {port} -cert {dir}/server.crt -key {dir}/server.key -www"
        ),
    );
    p.file(
        "tls.rhai",
        &format!(
            "on(\"e\", wait_for(#{{ url: \"https://10.77.0.15:{port}/\", ca_cert: \"{dir}/ca.crt\", timeout: 20 }}));\n"
        ),
    );
    p.play("tls.rhai", &[]).assert_code(0);
    p.file(
        "untrusted.rhai",
        &format!("on(\"e\", wait_for(#{{ url: \"https://10.77.0.15:{port}/\", timeout: 1 }}));\n"),
    );
    let untrusted = p.play("untrusted.rhai", &[]);
    untrusted.assert_code(2);
    let msg = untrusted.task_ends()[0]["msg"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.starts_with(&format!(
            "https://10.77.0.15:{port}/ did not answer 200 after 1s (last: curl: (60)"
        )),
        "{msg}"
    );

    let second = p.play("pki.rhai", &[]);
    second.assert_code(0);
    assert_eq!(second.total("changed"), 0, "{}", second.stdout);
    outputs.push(second);

    let before = snapshot_tree(&root);
    let check = p.play("pki.rhai", &["--check", "--diff"]);
    check.assert_code(0);
    assert_eq!(check.total("changed"), 0, "{}", check.stdout);
    assert_eq!(snapshot_tree(&root), before, "check mode changed nothing");
    outputs.push(check);

    // One more SAN: check mode says why, the real run re-issues and keeps the key.
    let key_before = std::fs::read(root.join("pki/server.key")).unwrap();
    let crt_before = std::fs::read(root.join("pki/server.crt")).unwrap();
    p.file("pki.rhai", &pki_playbook(&["10.77.0.15", "10.77.0.99"]));
    let check = p.play("pki.rhai", &["--check"]);
    check.assert_code(0);
    assert_eq!(check.total("changed"), 1, "{}", check.stdout);
    let why = changed_summaries(&check);
    assert!(
        why[0].contains("SAN 10.77.0.99 missing") && why[0].contains("key kept"),
        "{why:?}"
    );
    assert_eq!(snapshot_tree(&root), before, "check mode changed nothing");
    outputs.push(check);
    let real = p.play("pki.rhai", &["--diff"]);
    real.assert_code(0);
    assert_eq!(
        changed_summaries(&real),
        why,
        "the real run did what check said"
    );
    assert_eq!(
        std::fs::read(root.join("pki/server.key")).unwrap(),
        key_before
    );
    assert_ne!(
        std::fs::read(root.join("pki/server.crt")).unwrap(),
        crt_before
    );
    let text = on(
        "e",
        &format!(
            "cd {dir} && openssl verify -CAfile ca.crt server.crt && openssl x509 -noout -text -in server.crt"
        ),
    );
    assert!(
        text.contains("IP Address:10.77.0.15, IP Address:10.77.0.99"),
        "{text}"
    );
    outputs.push(real);
    let again = p.play("pki.rhai", &[]);
    assert_eq!(again.total("changed"), 0, "{}", again.stdout);
    outputs.push(again);

    // Text output too, with every detail the reporter can show.
    let text_run = p.run(&["run", "pki.rhai", "-i", "inventory.toml", "--diff", "-v"]);
    text_run.assert_code(0);
    outputs.push(text_run);

    let keys = [
        String::from_utf8(key_before).unwrap(),
        std::fs::read_to_string(&ca_key).unwrap(),
    ];
    let mut body_lines = 0;
    for out in &outputs {
        for key in &keys {
            for line in key.lines().filter(|l| !l.starts_with("-----")) {
                body_lines += 1;
                assert!(
                    !out.stdout.contains(line) && !out.stderr.contains(line),
                    "private key text in output:\n{}\n{}",
                    out.stdout,
                    out.stderr
                );
            }
        }
        assert!(!out.stdout.contains("PRIVATE KEY") && !out.stderr.contains("PRIVATE KEY"));
    }
    assert!(body_lines > 0);
}

#[test]
fn fetch_carries_a_file_from_one_host_to_another() {
    let Some(p) = lab("fetch_carries_a_file_from_one_host_to_another") else {
        return;
    };
    p.file(
        "share.rhai",
        r#"
phase("pki", || {
    on("e", [
        file(#{ path: "{{ root }}/pki", state: "directory" }),
        x509(#{ kind: "ca", ca_dir: "pki/share-ca", cert: "{{ root }}/pki/ca.crt" }),
    ]);
});
phase("share", || {
    let ca = on("e", fetch(#{ src: "{{ root }}/pki/ca.crt", dest: "fetched/{{ inventory_hostname }}-ca.crt" }));
    on("f", copy(#{ content: ca.content, dest: "{{ root }}/ca.crt", mode: "0644" }));
});
"#,
    );
    p.mkroot("e");
    p.mkroot("f");
    let first = p.play("share.rhai", &[]);
    first.assert_code(0);
    assert_eq!(first.total("changed"), 4, "{}", first.stdout);
    let original = std::fs::read(p.root("e").join("pki/ca.crt")).unwrap();
    assert!(original.starts_with(b"-----BEGIN CERTIFICATE-----"));
    assert_eq!(std::fs::read(p.root("f").join("ca.crt")).unwrap(), original);
    assert_eq!(
        std::fs::read(p.path().join("fetched/e-ca.crt")).unwrap(),
        original
    );
    assert_eq!(
        std::fs::read(p.path().join("pki/share-ca/ca.crt")).unwrap(),
        original
    );
    let second = p.play("share.rhai", &[]);
    second.assert_code(0);
    assert_eq!(second.total("changed"), 0, "{}", second.stdout);
    let check = p.play("share.rhai", &["--check"]);
    check.assert_code(0);
    assert_eq!(check.total("changed"), 0, "{}", check.stdout);
}

/// A background HTTP server on h6, stopped when the test ends.
struct Listener {
    host: &'static str,
    pid: String,
}

impl Listener {
    fn start(host: &'static str, cmd: &str) -> Self {
        let out = lab_exec(
            host,
            &format!("setsid {cmd} </dev/null >/dev/null 2>&1 & echo $!"),
        );
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(pid.chars().all(|c| c.is_ascii_digit()), "{pid}");
        Listener { host, pid }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        lab_exec(self.host, &format!("kill {} 2>/dev/null || true", self.pid));
    }
}

#[test]
fn wait_for_ports_paths_and_urls_from_the_target() {
    let Some(p) = lab("wait_for_ports_paths_and_urls_from_the_target") else {
        return;
    };
    let port = 18000 + std::process::id() % 1000;
    let _server = Listener::start(
        "h6",
        &format!("python3 -m http.server {port} --bind 10.77.0.16"),
    );
    p.mkroot("f");
    p.write("f", "ready", "yes");
    p.file(
        "wait.rhai",
        &format!(
            r#"
on("f", [
    wait_for(#{{ port: {port}, host: "10.77.0.16", timeout: 30 }}),
    wait_for(#{{ path: "{{{{ root }}}}/ready" }}),
    wait_for(#{{ path: "{{{{ root }}}}/not-there", state: "absent", timeout: 2 }}),
    wait_for(#{{ url: "http://10.77.0.16:{port}/", timeout: 10 }}),
    wait_for(#{{ port: {closed}, host: "10.77.0.16", state: "stopped", timeout: 2 }}),
]);
"#,
            closed = port + 1
        ),
    );
    let ok = p.play("wait.rhai", &[]);
    ok.assert_code(0);
    assert_eq!(ok.total("ok"), 5, "{}", ok.stdout);
    assert_eq!(ok.total("changed"), 0);
    let check = p.play("wait.rhai", &["--check"]);
    check.assert_code(0);
    assert_eq!(
        check.total("ok"),
        5,
        "wait_for runs in check mode: {}",
        check.stdout
    );

    p.file(
        "closed.rhai",
        &format!(
            "on(\"f\", wait_for(#{{ port: {}, host: \"10.77.0.16\", timeout: 2 }}));\n",
            port + 1
        ),
    );
    let started = std::time::Instant::now();
    let failed = p.play("closed.rhai", &[]);
    failed.assert_code(2);
    assert!(started.elapsed().as_secs() < 20);
    let msg = failed.task_ends()[0]["msg"].as_str().unwrap().to_string();
    assert_eq!(
        msg,
        format!("port {} on 10.77.0.16 not open after 2s", port + 1)
    );
}
