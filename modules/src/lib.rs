//! The modules of playbook, one file per module. Each has an `Args` struct whose doc comments are
//! the user documentation, a `DOC` text, and its tests at the bottom.
//!
//! Shared pieces: `exec` (running commands and their guards), `inspect` (one round trip that reads
//! a path's state) and `perms` (modes, owners and groups).

mod content;
mod exec;
mod inspect;
mod perms;
mod pkg;
#[cfg(test)]
mod testutil;

pub mod apt;
pub mod assert;
pub mod command;
pub mod copy;
pub mod debug;
pub mod fail;
pub mod fetch;
pub mod file;
pub mod file_template;
pub mod get_url;
pub mod k8s;
pub mod kubeadm;
pub mod lineinfile;
pub mod modprobe;
pub mod package;
pub mod set_fact;
pub mod shell;
pub mod swap;
pub mod sysctl;
pub mod systemd_unit;
pub mod wait_for;
pub mod x509;
pub mod yum;
pub mod yum_repository;

/// The plan of a module that only reads (debug, assert, fail, set_fact, wait_for): no value of it
/// exists, so such a module cannot report a change, and the trait's default `apply` is never
/// reached.
pub enum NoChange {}

/// Registers every module of this crate.
pub fn register_all(registry: &mut engine::Registry) {
    registry.register(apt::Apt);
    registry.register(assert::Assert);
    registry.register(command::Command);
    registry.register(copy::Copy);
    registry.register(debug::Debug);
    registry.register(fail::Fail);
    registry.register(fetch::Fetch);
    registry.register(file::File);
    registry.register(file_template::FileTemplate);
    registry.register(get_url::GetUrl);
    registry.register(k8s::K8s);
    registry.register(kubeadm::Kubeadm::default());
    registry.register(lineinfile::LineInFile);
    registry.register(modprobe::Modprobe);
    registry.register(package::Package);
    registry.register(set_fact::SetFact);
    registry.register(shell::Shell);
    registry.register(swap::Swap);
    registry.register(sysctl::Sysctl);
    registry.register(systemd_unit::SystemdUnit);
    registry.register(wait_for::WaitFor);
    registry.register(x509::X509);
    registry.register(yum::Yum);
    registry.register(yum_repository::YumRepository);
}

#[cfg(test)]
mod tests {
    use crate::testutil::Env;
    use engine::module::DynModule;
    use serde_json::json;

    /// Every module whose probe is one script decides the same from a batch as from its own
    /// round trip: the same status, summary, diff, result or error, on paths in many states.
    #[tokio::test]
    async fn batched_probes_decide_as_probes_alone() {
        use std::os::unix::fs::PermissionsExt;
        let env = Env::new();
        let p = |n: &str| env.path(n);
        std::fs::create_dir(p("dir")).unwrap();
        std::fs::set_permissions(p("dir"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(p("dir/f"), "x").unwrap();
        // No trailing newline: the batch must hand the content back exactly.
        std::fs::write(p("text"), "a=1\nb=2").unwrap();
        std::fs::write(p("same"), "same\n").unwrap();
        std::os::unix::fs::symlink("text", p("link")).unwrap();
        std::fs::create_dir(p("templates")).unwrap();
        std::fs::write(p("templates/t.j2"), "rendered {{ 1 + 1 }}").unwrap();
        std::fs::create_dir(p("files")).unwrap();
        std::fs::write(p("files/src.txt"), "from src").unwrap();
        let tasks: Vec<(&dyn DynModule, serde_json::Value)> = vec![
            (
                &crate::file::File,
                json!({ "path": p("new/d"), "state": "directory", "mode": "0750" }),
            ),
            (
                &crate::file::File,
                json!({ "path": p("dir"), "state": "directory", "mode": "0755" }),
            ),
            (
                &crate::file::File,
                json!({ "path": p("dir"), "state": "directory", "mode": "0600", "recurse": true }),
            ),
            (
                &crate::file::File,
                json!({ "path": p("link"), "state": "link", "src": "text" }),
            ),
            (
                &crate::file::File,
                json!({ "path": p("l2"), "state": "link", "src": "nope" }),
            ),
            (
                &crate::file::File,
                json!({ "path": p("absent-file"), "state": "file" }),
            ),
            (
                &crate::file::File,
                json!({ "path": p("text"), "state": "absent" }),
            ),
            (
                &crate::copy::Copy,
                json!({ "dest": p("same"), "content": "same\n", "mode": "0600" }),
            ),
            (
                &crate::copy::Copy,
                json!({ "dest": p("text"), "content": "a=1\nb=3" }),
            ),
            (
                &crate::copy::Copy,
                json!({ "dest": format!("{}/", p("dir")), "src": "src.txt" }),
            ),
            (
                &crate::file_template::FileTemplate,
                json!({ "src": "templates/t.j2", "dest": p("text") }),
            ),
            (
                &crate::file_template::FileTemplate,
                json!({ "src": "templates/t.j2", "dest": p("dir") }),
            ),
            (
                &crate::lineinfile::LineInFile,
                json!({ "path": p("link"), "regexp": "^b=", "line": "b=9" }),
            ),
            (
                &crate::lineinfile::LineInFile,
                json!({ "path": p("text"), "line": "a=1" }),
            ),
            (
                &crate::lineinfile::LineInFile,
                json!({ "path": p("nofile"), "line": "x", "create": true }),
            ),
            (
                &crate::get_url::GetUrl,
                json!({ "url": format!("file://{}", p("files/src.txt")), "dest": p("dir") }),
            ),
            (
                &crate::get_url::GetUrl,
                json!({ "url": "file:///nowhere/x", "dest": p("text"), "mode": "0600",
                        "checksum": format!("sha256:{}", crate::inspect::sha256(b"a=1\nb=2")) }),
            ),
            (
                &crate::shell::Shell,
                json!({ "cmd": "true", "creates": p("dir/*") }),
            ),
            (
                &crate::shell::Shell,
                json!({ "cmd": "true", "unless": "exit 1", "chdir": p("dir") }),
            ),
            (
                &crate::shell::Shell,
                json!({ "cmd": "true", "chdir": p("nowhere"), "creates": "f" }),
            ),
            (
                &crate::command::Command,
                json!({ "argv": ["true"], "removes": p("gone") }),
            ),
            (
                &crate::command::Command,
                json!({ "argv": ["true"], "changed_when": false }),
            ),
        ];
        let alone = env.run_all(&tasks, true, false).await;
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = engine::transport::Counted {
            inner: std::sync::Arc::new(engine::transport::LocalTransport),
            count: count.clone(),
        };
        let env = Env {
            host: engine::host::Host::new("local", std::sync::Arc::new(counted)),
            ..env
        };
        let batched = env.run_all(&tasks, true, true).await;
        assert_eq!(
            count.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "every probe came from the batch"
        );
        let shown = |r: &Result<engine::module::Outcome, engine::ModuleError>| match r {
            Ok(o) => format!("{:?} {:?} {:?} {}", o.status, o.summary, o.diff, o.result),
            Err(e) => format!("error: {e}"),
        };
        for ((task, a), b) in tasks.iter().zip(&alone).zip(&batched) {
            assert_eq!(shown(a), shown(b), "{} {}", task.0.name(), task.1);
        }
        let errors = alone.iter().filter(|r| r.is_err()).count();
        assert_eq!(
            errors,
            3,
            "the cases include failures: {:?}",
            alone.iter().map(shown).collect::<Vec<_>>()
        );
    }

    #[test]
    fn every_module_is_registered_and_documents_its_fields() {
        let mut r = engine::Registry::new();
        super::register_all(&mut r);
        let names: Vec<_> = r.names().collect();
        assert_eq!(
            names,
            [
                "apt",
                "assert",
                "command",
                "copy",
                "debug",
                "fail",
                "fetch",
                "file",
                "file_template",
                "get_url",
                "k8s",
                "kubeadm",
                "lineinfile",
                "modprobe",
                "package",
                "set_fact",
                "shell",
                "swap",
                "sysctl",
                "systemd_unit",
                "wait_for",
                "x509",
                "yum",
                "yum_repository"
            ]
        );
        for m in r.iter() {
            assert!(m.doc().contains("```rhai"), "{} has an example", m.name());
            for f in m.fields() {
                assert!(
                    m.doc().contains(&format!("`{f}`")),
                    "{} documents `{f}`",
                    m.name()
                );
            }
        }
    }
}
