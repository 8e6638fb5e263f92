//! How a host is reached and with which privileges: settings the inventory reads and the host and
//! transports act on. Apart from both so neither has to import the other.

use std::fmt;

use crate::secret::Secret;

/// How the engine reaches a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    Ssh,
    Local,
}

impl Connection {
    pub const NAMES: &'static [&'static str] = &["ssh", "local"];

    pub fn as_str(self) -> &'static str {
        match self {
            Connection::Ssh => "ssh",
            Connection::Local => "local",
        }
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Privilege escalation through sudo.
#[derive(Debug, Clone)]
pub struct Become {
    pub user: String,
    /// Without a password sudo runs with `-n` and fails instead of prompting.
    pub password: Option<Secret>,
}
