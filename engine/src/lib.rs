//! The engine of playbook: inventory, planning from Rhai, the task graph, the runner, transports
//! and the module contract. It knows no module by name.

pub mod ansible_inventory;
pub mod batch;
pub mod bridge;
pub mod connection;
pub mod diff;
pub mod error;
pub mod events;
pub mod facts;
pub mod fields;
pub mod host;
pub mod inventory;
pub mod journal;
pub mod module;
pub mod pattern;
pub mod pending;
pub mod plan;
pub mod quote;
pub mod remote;
pub mod report;
pub mod runner;
pub mod script;
pub mod secret;
pub mod template;
pub mod template_check;
pub mod transport;
pub mod vault;

pub use module::{Applied, Change, Module, ModuleContext, ModuleError, Probe, Registry};

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Every `crate::` import between this crate's top-level modules (a file under a directory
    /// counts as its directory's module), test code left out.
    fn arrows() -> BTreeMap<String, BTreeSet<String>> {
        fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    files(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        let module = |p: &Path| {
            let rel = p.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            first.trim_end_matches(".rs").to_string()
        };
        let modules: BTreeSet<String> = all.iter().map(|p| module(p)).collect();
        let mut arrows: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in &all {
            let from = module(p);
            if from == "lib" || p.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(p).unwrap();
            let code = text.split("\n#[cfg(test)]").next().unwrap();
            for (i, _) in code.match_indices("crate::") {
                let to: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if to != from && modules.contains(&to) {
                    arrows.entry(from.clone()).or_default().insert(to);
                }
            }
        }
        arrows
    }

    /// Imports point one way: no module reaches itself through the modules it imports.
    #[test]
    fn imports_point_one_way() {
        let arrows = arrows();
        fn visit(
            m: &str,
            arrows: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) {
            if let Some(at) = path.iter().position(|p| p == m) {
                panic!("import loop: {} -> {m}", path[at..].join(" -> "));
            }
            if !done.insert(m.to_string()) {
                return;
            }
            path.push(m.to_string());
            for to in arrows.get(m).into_iter().flatten() {
                visit(to, arrows, path, done);
            }
            path.pop();
        }
        let mut done = BTreeSet::new();
        for m in arrows.keys() {
            visit(m, &arrows, &mut Vec::new(), &mut done);
        }
    }
}
