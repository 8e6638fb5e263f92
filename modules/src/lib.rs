//! The modules of playbook, one file per module. Each has an `Args` struct whose doc comments are
//! the user documentation, a `DOC` text, and its tests at the bottom.
//!
//! What modules share is under `shared/` (commands, a path's state, permissions, file content,
//! packages, names), and nowhere else: a module file does not reach into another's.

mod shared;
#[cfg(test)]
mod testutil;

/// Declares each module's file and registers it: one list, so a module cannot be in one and
/// missing from the other. Each file is named as playbooks call the module (a test checks).
macro_rules! modules {
    ($($file:ident => $module:expr),* $(,)?) => {
        $(pub mod $file;)*

        /// Registers every module of this crate.
        pub fn register_all(registry: &mut engine::Registry) {
            $(registry.register($module);)*
        }

        #[cfg(test)]
        const FILES: &[&str] = &[$(stringify!($file)),*];
    };
}

modules! {
    apt => apt::Apt,
    assert => assert::Assert,
    command => command::Command,
    copy => copy::Copy,
    debug => debug::Debug,
    fail => fail::Fail,
    fetch => fetch::Fetch,
    file => file::File,
    file_template => file_template::FileTemplate,
    get_url => get_url::GetUrl,
    k8s => k8s::K8s,
    kubeadm => kubeadm::Kubeadm::default(),
    lineinfile => lineinfile::LineInFile,
    modprobe => modprobe::Modprobe,
    package => package::Package,
    set_fact => set_fact::SetFact,
    shell => shell::Shell,
    swap => swap::Swap,
    sysctl => sysctl::Sysctl,
    systemd_unit => systemd_unit::SystemdUnit,
    wait_for => wait_for::WaitFor,
    x509 => x509::X509,
    yum => yum::Yum,
    yum_repository => yum_repository::YumRepository,
}

/// The plan of a module that only reads (debug, assert, fail, set_fact, wait_for): no value of it
/// exists, so such a module cannot report a change, and the trait's default `apply` is never
/// reached.
pub enum NoChange {}

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
                        "checksum": format!("sha256:{}", crate::shared::inspect::sha256(b"a=1\nb=2")) }),
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
            (
                &crate::sysctl::Sysctl,
                json!({ "name": "net.ipv4.ip_forward", "value": "1", "sysctl_file": p("sysctl.conf") }),
            ),
            (
                &crate::sysctl::Sysctl,
                json!({ "name": "net.no.such.key", "value": "1", "sysctl_file": p("sysctl.conf") }),
            ),
            (
                &crate::sysctl::Sysctl,
                json!({ "name": "net.ipv4.ip_forward", "state": "absent", "sysctl_file": p("text") }),
            ),
            (
                &crate::modprobe::Modprobe,
                json!({ "name": "loop", "persist": "present" }),
            ),
            (
                &crate::swap::Swap,
                json!({ "state": "off", "fstab": p("text") }),
            ),
            (
                &crate::yum_repository::YumRepository,
                json!({ "name": "pb", "baseurl": "http://x/", "reposdir": p("dir") }),
            ),
            (
                &crate::yum_repository::YumRepository,
                json!({ "name": "pb", "baseurl": "http://x/", "reposdir": p("nodir") }),
            ),
            (
                &crate::systemd_unit::SystemdUnit,
                json!({ "name": "pb-batched-probe-test", "content": "[Service]\nExecStart=/bin/true\n",
                        "dropins": { "limits": "[Service]\nLimitNOFILE=4096\n" },
                        "enabled": true, "state": "started" }),
            ),
            (
                &crate::systemd_unit::SystemdUnit,
                json!({ "name": "ssh", "state": "started" }),
            ),
            (
                &crate::apt::Apt,
                json!({ "name": ["bash", "pb-no-such-package"] }),
            ),
            (
                &crate::apt::Apt,
                json!({ "name": "bash", "state": "absent" }),
            ),
            (&crate::yum::Yum, json!({ "name": "bash" })),
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
        // Whether the system modules' cases fail depends on the machine (booted with systemd,
        // which package managers it has): not counted.
        let errors = tasks
            .iter()
            .zip(&alone)
            .filter(|(t, r)| !["systemd_unit", "apt", "yum"].contains(&t.0.name()) && r.is_err())
            .count();
        assert_eq!(
            errors,
            5,
            "the cases include failures: {:?}",
            alone.iter().map(shown).collect::<Vec<_>>()
        );
    }

    /// The names in the first column of a DOC's argument table (the table whose header starts
    /// with "name" or "argument"; a row may name several: "`owner`, `group`").
    fn argument_table(doc: &str) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        let mut in_table = false;
        for line in doc.lines() {
            let first = line.split('|').nth(1).map(str::trim);
            match first {
                None => in_table = false,
                Some("name" | "argument") => in_table = true,
                Some(cell) if in_table => {
                    names.extend(cell.split('`').skip(1).step_by(2).map(String::from));
                }
                Some(_) => {}
            }
        }
        names
    }

    /// Every module is registered under its file's name, has an example, and its DOC's argument
    /// table lists exactly the fields its Args accepts: a field added, renamed or removed without
    /// its row fails here.
    #[test]
    fn every_module_is_registered_and_documents_its_fields() {
        let mut r = engine::Registry::new();
        super::register_all(&mut r);
        let names: Vec<_> = r.names().collect();
        let mut files = super::FILES.to_vec();
        files.sort();
        assert_eq!(names, files, "each module is named as its file");
        for m in r.iter() {
            assert!(m.doc().contains("```rhai"), "{} has an example", m.name());
            let fields: std::collections::BTreeSet<String> =
                m.fields().iter().map(|f| f.to_string()).collect();
            assert_eq!(
                argument_table(m.doc()),
                fields,
                "{}: the DOC's argument table against the Args fields",
                m.name()
            );
        }
    }
}
