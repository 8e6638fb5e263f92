//! How commands reach a host. The runner only sees this trait, so the local and SSH connections are
//! interchangeable.

pub mod kept;
mod local;
pub mod ssh;

pub use kept::{Keep, DEFAULT_KEEP_OUTPUT};
pub use local::LocalTransport;
pub use ssh::{SshOptions, SshTransport};

use async_trait::async_trait;

/// What a remote script left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Bytes dropped from the middle of stdout to keep it within its bound ([`Keep`]).
    pub stdout_cut: u64,
    pub stderr_cut: u64,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    /// The host cannot be reached at all (refused, timed out, authentication, host key). The text is
    /// the connection tool's own reason.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The connection worked but running the command failed (not a non-zero exit: that is an
    /// ExecOutput).
    #[error("{0}")]
    Exec(String),
}

/// A command that cannot be built cannot be run.
impl From<crate::quote::QuoteError> for TransportError {
    fn from(e: crate::quote::QuoteError) -> Self {
        TransportError::Exec(e.to_string())
    }
}

#[async_trait]
pub trait Transport: Send + Sync {
    /// Runs `script` with `sh -c` on the target and feeds it `stdin`. Reads all output, keeping
    /// what `keep` says of each stream (through [`kept::read`]), before it waits for the exit
    /// status.
    async fn exec_kept(
        &self,
        script: &str,
        stdin: &[u8],
        keep: &Keep,
    ) -> Result<ExecOutput, TransportError>;

    /// Runs `script` and keeps all its output.
    async fn exec(&self, script: &str, stdin: &[u8]) -> Result<ExecOutput, TransportError> {
        self.exec_kept(script, stdin, &Keep::All).await
    }

    /// Releases the connection. Must be safe to call more than once.
    async fn close(&self) {}
}

/// A transport that counts the commands it runs (the run's "round trips" per host).
pub struct Counted {
    pub inner: std::sync::Arc<dyn Transport>,
    pub count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait]
impl Transport for Counted {
    async fn exec_kept(
        &self,
        script: &str,
        stdin: &[u8],
        keep: &Keep,
    ) -> Result<ExecOutput, TransportError> {
        self.count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.exec_kept(script, stdin, keep).await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

/// Opens connections to hosts. The runner asks once per host, on the host's first task.
#[async_trait]
pub trait Connector: Send + Sync {
    async fn connect(
        &self,
        host: &crate::inventory::HostEntry,
    ) -> Result<std::sync::Arc<dyn Transport>, TransportError>;
}

/// Connects each host the way its inventory entry says.
#[derive(Debug, Default, Clone)]
pub struct DefaultConnector {
    /// Record unknown host keys instead of refusing them (changed keys are still refused).
    pub accept_new_host_keys: bool,
    /// Limit for one remote command.
    pub command_timeout: Option<std::time::Duration>,
}

#[async_trait]
impl Connector for DefaultConnector {
    async fn connect(
        &self,
        host: &crate::inventory::HostEntry,
    ) -> Result<std::sync::Arc<dyn Transport>, TransportError> {
        use crate::inventory::Connection;
        match host.connection {
            Connection::Local => Ok(std::sync::Arc::new(LocalTransport)),
            Connection::Ssh => {
                let mut opts = SshOptions::new(host.address.clone());
                // 22 is the inventory's default; leaving it out lets ~/.ssh/config choose.
                opts.port = (host.port != 22).then_some(host.port);
                opts.user = host.user.clone();
                opts.identity_file = host.identity_file.clone();
                opts.known_hosts = host.known_hosts.clone();
                opts.accept_new_host_keys = self.accept_new_host_keys;
                opts.command_timeout = self.command_timeout;
                Ok(std::sync::Arc::new(SshTransport::connect(&opts).await?))
            }
        }
    }
}
