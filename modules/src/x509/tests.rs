//! The x509 module's whole tasks on a local target.

use super::*;
use crate::testutil::{mode_of, snapshot, Env};
use engine::module::Status;
use serde_json::{json, Value};

fn cert_args(env: &Env, ips: &[&str]) -> Value {
    json!({
        "kind": "cert", "ca_dir": "pki/ca",
        "cert": env.path("server.crt"), "key": env.path("server.key"),
        "common_name": "server", "organization": "lab",
        "dns_names": ["server.lab"], "ip_addresses": ips,
        "extended_key_usage": ["serverAuth", "clientAuth"],
    })
}

#[tokio::test]
async fn issues_keeps_and_reissues_for_a_new_san_keeping_the_key() {
    let env = Env::new();
    let args = cert_args(&env, &["10.0.0.5"]);
    let before = snapshot(env.dir.path());
    let check = env.run(&X509, args.clone(), true).await.unwrap();
    assert_eq!(check.status, Status::Changed);
    let summary = check.summary.unwrap();
    assert!(
        summary.contains("create CA pki/ca") && summary.contains("missing"),
        "{summary}"
    );
    assert_eq!(
        snapshot(env.dir.path()),
        before,
        "check mode wrote nothing anywhere"
    );

    let out = env.apply(&X509, args.clone()).await;
    assert_eq!(out.status, Status::Changed);
    assert_eq!(mode_of(&env.path("server.key")), 0o600);
    assert_eq!(mode_of(&env.path("server.crt")), 0o644);
    assert_eq!(mode_of(&env.path("pki/ca/ca.key")), 0o600);
    let crt = std::fs::read(env.path("server.crt")).unwrap();
    let ca = std::fs::read(env.path("pki/ca/ca.crt")).unwrap();
    let (_, ca_pem) = x509_parser::pem::parse_x509_pem(&ca).unwrap();
    let got = parse_existing(&crt, Some(&ca_pem.contents)).unwrap();
    assert!(got.signed_by_ca);
    assert_eq!(got.spec.ips.len(), 1);
    assert_eq!(out.result["not_after"].as_str().unwrap().len(), 20);

    assert_eq!(env.apply(&X509, args.clone()).await.status, Status::Ok);
    assert_eq!(env.check(&X509, args).await, Status::Ok);

    let key_before = std::fs::read(env.path("server.key")).unwrap();
    let args = cert_args(&env, &["10.0.0.5", "10.0.0.6"]);
    let check = env.run(&X509, args.clone(), true).await.unwrap();
    let summary = check.summary.unwrap();
    assert!(
        summary.contains("SAN 10.0.0.6 missing") && summary.contains("key kept"),
        "{summary}"
    );
    let out = env.apply(&X509, args.clone()).await;
    assert_eq!(out.status, Status::Changed);
    assert_eq!(std::fs::read(env.path("server.key")).unwrap(), key_before);
    assert_ne!(std::fs::read(env.path("server.crt")).unwrap(), crt);
    assert_eq!(env.apply(&X509, args).await.status, Status::Ok);
}

#[tokio::test]
async fn ca_is_installed_and_a_foreign_certificate_is_replaced() {
    let env = Env::new();
    let ca = json!({ "kind": "ca", "ca_dir": "pki/ca", "cert": env.path("ca.crt"), "key": env.path("ca.key") });
    let out = env.apply(&X509, ca.clone()).await;
    assert_eq!(out.status, Status::Changed);
    assert_eq!(
        std::fs::read(env.path("ca.key")).unwrap(),
        std::fs::read(env.path("pki/ca/ca.key")).unwrap()
    );
    assert_eq!(mode_of(&env.path("ca.key")), 0o600);
    assert_eq!(env.apply(&X509, ca.clone()).await.status, Status::Ok);
    std::fs::set_permissions(
        env.path("ca.crt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = env.apply(&X509, ca).await;
    assert!(out.summary.unwrap().contains("mode 600 -> 644"));

    // A certificate from another CA, with its key: issuer differs, the key is kept.
    let args = cert_args(&env, &[]);
    let mut other = args.clone();
    other["ca_dir"] = "pki/other".into();
    env.apply(&X509, other).await;
    let key = std::fs::read(env.path("server.key")).unwrap();
    let out = env.apply(&X509, args.clone()).await;
    let summary = out.summary.unwrap();
    assert!(summary.contains("issuer differs"), "{summary}");
    assert_eq!(std::fs::read(env.path("server.key")).unwrap(), key);
    // A key that does not belong to the certificate.
    std::fs::write(
        env.path("server.key"),
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let out = env.apply(&X509, args.clone()).await;
    assert!(out.summary.unwrap().contains("key does not match"));
    assert_eq!(env.apply(&X509, args).await.status, Status::Ok);
}

#[tokio::test]
async fn the_ca_on_the_targets_is_never_replaced_and_is_taken_when_the_controller_lost_it() {
    let env = Env::new();
    let ca = json!({ "kind": "ca", "ca_dir": "pki/ca",
                     "cert": env.path("ca.crt"), "key": env.path("ca.key") });
    assert_eq!(env.apply(&X509, ca.clone()).await.status, Status::Changed);
    let cert = cert_args(&env, &[]);
    assert_eq!(env.apply(&X509, cert.clone()).await.status, Status::Changed);
    let issued = std::fs::read(env.path("server.crt")).unwrap();
    let original = (
        std::fs::read(env.path("pki/ca/ca.crt")).unwrap(),
        std::fs::read(env.path("pki/ca/ca.key")).unwrap(),
    );

    // A run from a fresh clone: the controller has no CA. Check mode takes the target's in
    // memory (nothing is written anywhere) and then finds the certificate signed by it.
    std::fs::remove_dir_all(env.path("pki/ca")).unwrap();
    let before = snapshot(env.dir.path());
    let outcomes = env
        .run_all(&[(&X509, ca.clone()), (&X509, cert.clone())], true, false)
        .await;
    let statuses: Vec<_> = outcomes
        .iter()
        .map(|o| o.as_ref().unwrap().status.clone())
        .collect();
    assert_eq!(statuses, [Status::Ok, Status::Ok]);
    assert_eq!(snapshot(env.dir.path()), before, "check mode wrote nothing");
    // The real run takes it onto the controller: the same CA, nothing re-issued.
    assert_eq!(env.apply(&X509, ca.clone()).await.status, Status::Ok);
    assert_eq!(env.apply(&X509, cert.clone()).await.status, Status::Ok);
    assert_eq!(
        std::fs::read(env.path("pki/ca/ca.crt")).unwrap(),
        original.0
    );
    assert_eq!(
        std::fs::read(env.path("pki/ca/ca.key")).unwrap(),
        original.1
    );
    assert_eq!(std::fs::read(env.path("server.crt")).unwrap(), issued);

    // The controller holds another CA: refused, naming the host and the file; the target
    // keeps its CA. `replace: true` installs the controller's on purpose.
    let mut other = ca.clone();
    other["ca_dir"] = "pki/other".into();
    other["cert"] = env.path("other.crt").into();
    other["key"] = env.path("other.key").into();
    env.apply(&X509, other).await;
    std::fs::remove_dir_all(env.path("pki/ca")).unwrap();
    std::fs::rename(env.path("pki/other"), env.path("pki/ca")).unwrap();
    for check in [true, false] {
        let e = env
            .run(&X509, ca.clone(), check)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("has another CA than the controller's pki/ca")
                && e.contains(&env.path("ca.crt")),
            "{e}"
        );
    }
    assert_eq!(std::fs::read(env.path("ca.crt")).unwrap(), original.0);
    let mut replace = ca.clone();
    replace["replace"] = true.into();
    assert_eq!(env.apply(&X509, replace).await.status, Status::Changed);
    assert_ne!(std::fs::read(env.path("ca.crt")).unwrap(), original.0);

    // A target with a CA certificate but not its key, and no CA on the controller: nothing
    // to take, so refused rather than made anew; a certificate task likewise.
    std::fs::remove_dir_all(env.path("pki/ca")).unwrap();
    let cert_only = json!({ "kind": "ca", "ca_dir": "pki/ca", "cert": env.path("ca.crt") });
    // (A real run: this process's check runs above took the old CA in memory.)
    let e = env
        .run(&X509, cert_only, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("the controller has no CA in pki/ca"), "{e}");
    let e = env.run(&X509, cert, false).await.unwrap_err().to_string();
    assert!(e.contains("holds a certificate at"), "{e}");
    assert!(!env.dir.path().join("pki/ca").exists(), "no CA was made");
}

#[tokio::test]
async fn the_private_key_never_appears_in_output() {
    let env = Env::new();
    let args = cert_args(&env, &["10.0.0.5"]);
    let mut shown = Vec::new();
    let mut record = |o: &engine::module::Outcome| {
        shown.push(format!(
            "{:?} {:?} {:?} {}",
            o.status, o.summary, o.diff, o.result
        ));
    };
    record(&env.run(&X509, args.clone(), true).await.unwrap());
    record(&env.apply(&X509, args.clone()).await);
    record(&env.apply(&X509, cert_args(&env, &["10.0.0.7"])).await);
    std::fs::write(
        env.path("server.key"),
        "-----BEGIN PRIVATE KEY-----\nnot really a key\n",
    )
    .unwrap();
    record(&env.apply(&X509, args.clone()).await);
    let ca = json!({ "kind": "ca", "ca_dir": "pki/ca", "key": env.path("ca.key") });
    record(&env.run(&X509, ca.clone(), true).await.unwrap());
    record(&env.apply(&X509, ca).await);
    let keys = [
        std::fs::read_to_string(env.path("server.key")).unwrap(),
        std::fs::read_to_string(env.path("pki/ca/ca.key")).unwrap(),
    ];
    let all = shown.join("\n");
    for k in keys {
        for line in k.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!all.contains(line), "key text in output: {all}");
        }
    }
    assert!(!all.contains("not really a key"));
    assert!(!all.contains("PRIVATE KEY"), "{all}");
}

#[tokio::test]
async fn argument_errors() {
    let env = Env::new();
    let err = env
        .error(
            &X509,
            json!({ "kind": "cert", "ca_dir": "x", "cert": "/a", "key": "/b" }),
        )
        .await;
    assert!(err.contains("common_name"), "{err}");
    let err = env
        .error(&X509, json!({ "kind": "cert", "ca_dir": "x", "cert": "/a", "key": "/b", "common_name": "c", "ip_addresses": ["nope"] }))
        .await;
    assert!(err.contains("not an IP address"), "{err}");
    let err = env
        .error(&X509, json!({ "kind": "cert", "ca_dir": "x", "cert": "/a", "key": "/b", "common_name": "c", "key_usage": ["sign"] }))
        .await;
    assert!(err.contains("keyCertSign"), "{err}");
    let err = env
        .error(
            &X509,
            json!({ "kind": "ca", "ca_dir": "x", "dns_names": ["a"] }),
        )
        .await;
    assert!(err.contains("not used"), "{err}");
    let err = env
        .error(&X509, json!({ "kind": "leaf", "ca_dir": "x" }))
        .await;
    assert!(err.contains("kind"), "{err}");
    let err = env
        .error(&X509, json!({ "kind": "cert", "ca_dir": "x", "cert": "/a", "key": "/b", "common_name": "c", "validity_days": 10 }))
        .await;
    assert!(err.contains("renew_before_days"), "{err}");
}

#[tokio::test]
async fn force_reissues_a_certificate_that_would_be_kept() {
    let env = Env::new();
    let args = cert_args(&env, &["10.0.0.5"]);
    let first = env.apply(&X509, args.clone()).await;
    let mut forced = args.clone();
    forced["force"] = json!(true);
    let check = env.run(&X509, forced.clone(), true).await.unwrap();
    assert_eq!(check.status, Status::Changed);
    let summary = check.summary.unwrap();
    assert!(
        summary.contains("(force)") && summary.contains("key kept"),
        "{summary}"
    );
    let out = env.apply(&X509, forced).await;
    assert_eq!(out.status, Status::Changed);
    assert_ne!(out.result["serial"], first.result["serial"]);
    // The same names, from the same CA: the task without force keeps it.
    assert_eq!(env.apply(&X509, args).await.status, Status::Ok);
    let err = env
        .error(
            &X509,
            json!({ "kind": "ca", "ca_dir": "x", "force": true }),
        )
        .await;
    assert!(err.contains("force: not used"), "{err}");
}
