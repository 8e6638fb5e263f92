//! renew-certs.rhai on the clusters the HA tests stand up: the control plane's certificates
//! renewed on every master, one master at a time, while the VIP keeps answering.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;

/// The certificates renewed on a master: (what, how to print its PEM on the host, its CA there).
fn certificates(kubeadm: bool) -> Vec<(&'static str, String, &'static str)> {
    let pki = |f: &str| format!("cat /etc/kubernetes/pki/{f}.crt");
    let embedded = |conf: &str| {
        format!("sed -n 's/^ *client-certificate-data: //p' /etc/kubernetes/{conf} | base64 -d")
    };
    let ca = "/etc/kubernetes/pki/ca.crt";
    let fp = "/etc/kubernetes/pki/front-proxy-ca.crt";
    let mut v = vec![
        ("apiserver", pki("apiserver"), ca),
        (
            "apiserver-kubelet-client",
            pki("apiserver-kubelet-client"),
            ca,
        ),
        ("front-proxy-client", pki("front-proxy-client"), fp),
    ];
    if kubeadm {
        v.push(("admin.conf", embedded("admin.conf"), ca));
        v.push((
            "controller-manager.conf",
            embedded("controller-manager.conf"),
            ca,
        ));
        v.push(("scheduler.conf", embedded("scheduler.conf"), ca));
    } else {
        for c in ["admin", "controller-manager", "scheduler"] {
            v.push((c, pki(c), ca));
        }
    }
    v
}

/// Per master and certificate: its serial, subject and SANs; and whether it verifies against
/// the CA it names (the CA's sha256 beside it).
fn read_certificates(kubeadm: bool) -> BTreeMap<(String, String), (String, String, String)> {
    let mut m = BTreeMap::new();
    for (_, h) in MASTERS {
        for (what, pem, ca) in certificates(kubeadm) {
            let out = lab_exec(
                h,
                &format!(
                    "t=$(mktemp); {pem} > $t; openssl x509 -in $t -noout -serial; \
                     openssl x509 -in $t -noout -subject -ext subjectAltName; \
                     openssl verify -CAfile {ca} $t >/dev/null && echo verified; \
                     sha256sum < {ca}; rm -f $t"
                ),
            );
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let mut lines = text.lines();
            let serial = lines.next().unwrap_or_default().to_string();
            let rest: Vec<&str> = lines.collect();
            assert!(rest.contains(&"verified"), "{what} on {h}: {text}");
            let names = rest[..rest.len() - 2].join("\n");
            let ca_sum = rest[rest.len() - 1].to_string();
            m.insert((h.to_string(), what.to_string()), (serial, names, ca_sum));
        }
    }
    m
}

/// The serial of the certificate each master's kube-apiserver serves.
fn served_serials() -> Vec<String> {
    MASTERS
        .iter()
        .map(|(_, h)| {
            let (_, out) = sh(&format!(
                "echo | openssl s_client -connect {}:{APISERVER_PORT} 2>/dev/null | openssl x509 -noout -serial",
                address(h)
            ));
            out.trim().to_string()
        })
        .collect()
}

/// Samples https /healthz through the VIP every 200 ms until stopped; returns the number of
/// samples, the failures and the longest time without an answer.
struct VipSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, usize, Duration)>,
}

impl VipSampler {
    fn start(port: u16) -> VipSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut samples, mut failed, mut longest) = (0, 0, Duration::ZERO);
            let mut last_ok = Instant::now();
            while !flag.load(Ordering::SeqCst) {
                let t = Instant::now();
                let (_, body) = sh(&format!(
                    "curl -sk --max-time 1 https://{VIP}:{port}/healthz"
                ));
                samples += 1;
                if body.trim() == "ok" {
                    longest = longest.max(t - last_ok);
                    last_ok = Instant::now();
                } else {
                    failed += 1;
                }
                std::thread::sleep(Duration::from_millis(200).saturating_sub(t.elapsed()));
            }
            (samples, failed, longest.max(last_ok.elapsed()))
        });
        VipSampler { stop, thread }
    }

    fn finish(self) -> (usize, usize, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// With the default threshold a fresh cluster's certificates are left alone; with a threshold
/// above their lifetime every master's are renewed (new serials, the same names, from the same
/// CA, served by the restarted apiservers), one master at a time while the VIP answers /healthz
/// (sampled every 200 ms; the longest gap reported and bounded), as check mode predicted without
/// changing anything; a second run changes nothing; no private key in any output.
pub(super) fn prove_certificates_are_renewed(lab: &Lab, kubeadm: bool) {
    let restart = if kubeadm {
        "restart the control-plane static pods"
    } else {
        "restart control plane"
    };
    let fresh = lab.play("renew-certs.rhai", &[]);
    fresh.assert_code(0);
    assert_eq!(
        fresh.total("changed"),
        0,
        "fresh certificates:\n{}",
        fresh.stdout
    );

    let before = read_certificates(kubeadm);
    let served_before = served_serials();
    let soon = ["-e", "cert_renew_before_days=400"];
    let state = hosts_state();
    let check = lab.play("renew-certs.rhai", &["--check", soon[0], soon[1]]);
    check.assert_code(0);
    assert_eq!(hosts_state(), state, "check mode changed files");
    assert_eq!(read_certificates(kubeadm), before, "check mode renewed");
    let predicted = with_status(&check, |e| e["status"] == "changed");
    assert!(
        with_status(&check, depends_on_change).is_empty(),
        "{}",
        check.stdout
    );

    settled_vip_holder();
    let sampler = VipSampler::start(lab.port);
    let t0 = Instant::now();
    let run = lab.play("renew-certs.rhai", &soon);
    let took = t0.elapsed();
    let (samples, failed, longest) = sampler.finish();
    report_slow_tasks("renew", &run);
    run.assert_code(0);
    eprintln!(
        "renew-certs ({}): {took:?}; the VIP answered {} of {samples} samples, longest gap {longest:?}",
        if kubeadm { "kubeadm" } else { "binary" },
        samples - failed
    );
    let changed = with_status(&run, |e| e["status"] == "changed");
    assert_eq!(
        changed, predicted,
        "check mode predicted exactly the run's changes"
    );
    for (m, _) in MASTERS {
        assert!(
            changed.contains(&(m.to_string(), restart.to_string())),
            "{m} restarted: {changed:?}"
        );
    }
    let order: Vec<(String, String)> = run
        .events()
        .iter()
        .filter(|e| e["task"] == restart)
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["host"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let one_at_a_time: Vec<(String, String)> = MASTERS
        .iter()
        .flat_map(|(m, _)| {
            [
                ("task_start".to_string(), m.to_string()),
                ("task_end".to_string(), m.to_string()),
            ]
        })
        .collect();
    assert_eq!(order, one_at_a_time, "one master at a time");
    assert!(samples >= 10, "the VIP was sampled throughout ({samples})");
    assert!(
        longest <= Duration::from_secs(3),
        "the VIP went {longest:?} without answering /healthz"
    );

    let after = read_certificates(kubeadm);
    for (key, (serial, names, ca)) in &before {
        let (new_serial, new_names, new_ca) = &after[key];
        assert_ne!(serial, new_serial, "{key:?}: a new serial");
        assert_eq!(names, new_names, "{key:?}: the same subject and names");
        assert_eq!(ca, new_ca, "{key:?}: the same CA");
    }
    let served = served_serials();
    for (((_, h), old), new) in MASTERS.iter().zip(&served_before).zip(&served) {
        assert_ne!(old, new, "{h}'s apiserver serves its new certificate");
        assert_eq!(
            Some(new),
            after
                .get(&(h.to_string(), "apiserver".to_string()))
                .map(|v| &v.0),
            "{h}"
        );
    }

    let again = lab.play("renew-certs.rhai", &[]);
    again.assert_code(0);
    assert_eq!(again.total("changed"), 0, "second run:\n{}", again.stdout);
    let check2 = lab.play("renew-certs.rhai", &["--check"]);
    check2.assert_code(0);
    assert_eq!(check2.total("changed"), 0, "{}", check2.stdout);
    assert_no_secrets(&[fresh, check, run, again, check2], kubeadm, lab.port);
}
