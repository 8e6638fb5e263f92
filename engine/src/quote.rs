//! Quoting of remote arguments. Every argument in a remote script goes through [`quote`]; it
//! depends on nothing in the engine so hosts, transports, templates and modules can all use it.

/// An argument that cannot be passed to a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("argument contains a NUL byte: {0:?}")]
pub struct QuoteError(String);

impl From<QuoteError> for String {
    fn from(e: QuoteError) -> Self {
        e.to_string()
    }
}

/// Quotes one argument for POSIX sh. NUL cannot be passed to a program and is rejected.
pub fn quote(arg: &str) -> Result<String, QuoteError> {
    shlex::try_quote(arg)
        .map(|q| q.into_owned())
        .map_err(|_| QuoteError(arg.replace('\0', "\\0")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_rejects_nul_and_round_trips_through_sh() {
        assert!(quote("a\0b").is_err());
        let nasty = "it's $(rm -rf /) `x` \"q\" \n new line ünï";
        let q = quote(nasty).unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf %s {q}"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), nasty);
    }
}
