//! Names a playbook gives: environment variables, facts.

use std::sync::LazyLock;

use regex::Regex;

/// Whether `name` can be a shell variable's (and so a fact's) name.
pub fn is_var_name(name: &str) -> bool {
    static NAME: LazyLock<Regex> =
        LazyLock::new(|| Regex::new("^[A-Za-z_][A-Za-z0-9_]*$").expect("valid regex"));
    NAME.is_match(name)
}
