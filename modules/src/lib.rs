//! The modules of playbook, one file per module. Each has an `Args` struct whose doc comments are
//! the user documentation, a `DOC` text, and its tests at the bottom.
//!
//! Shared pieces: `exec` (running commands and their guards), `inspect` (one round trip that reads
//! a path's state) and `perms` (modes, owners and groups).

mod content;
mod exec;
mod inspect;
mod perms;
#[cfg(test)]
mod testutil;

pub mod assert;
pub mod command;
pub mod copy;
pub mod debug;
pub mod fail;
pub mod file;
pub mod file_template;
pub mod kubeadm;
pub mod lineinfile;
pub mod set_fact;
pub mod shell;

/// Registers every module of this crate.
pub fn register_all(registry: &mut engine::Registry) {
    registry.register(assert::Assert);
    registry.register(command::Command);
    registry.register(copy::Copy);
    registry.register(debug::Debug);
    registry.register(fail::Fail);
    registry.register(file::File);
    registry.register(file_template::FileTemplate);
    registry.register(kubeadm::Kubeadm::default());
    registry.register(lineinfile::LineInFile);
    registry.register(set_fact::SetFact);
    registry.register(shell::Shell);
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
                "assert",
                "command",
                "copy",
                "debug_msg",
                "fail",
                "file",
                "file_template",
                "kubeadm",
                "lineinfile",
                "set_fact",
                "shell"
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
