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
