//! A connected host as modules see it: its name and a way to run scripts on it, with privilege
//! escalation applied.

use std::sync::Arc;

pub use crate::connection::Become;
// Modules quote through `engine::host::quote`; the function lives apart so transports can use it.
pub use crate::quote::quote;
use crate::transport::{ExecOutput, Transport, TransportError};

/// A script and what it reads on stdin (content to write, a command's input): one remote command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    pub text: String,
    pub stdin: Vec<u8>,
}

/// Marks where sudo's password prompt ends, so the prompt never mixes with real output.
const SUDO_PROMPT: &str = "[playbook-sudo-prompt]";

#[derive(Clone)]
pub struct Host {
    pub name: String,
    transport: Arc<dyn Transport>,
    become_: Option<Become>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("name", &self.name).finish()
    }
}

impl Host {
    pub fn new(name: impl Into<String>, transport: Arc<dyn Transport>) -> Self {
        Host {
            name: name.into(),
            transport,
            become_: None,
        }
    }

    pub fn with_become(mut self, become_: Option<Become>) -> Self {
        self.become_ = become_;
        self
    }

    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// Runs a POSIX sh script on the host.
    pub async fn run(&self, script: &str) -> Result<ExecOutput, TransportError> {
        self.run_with_input(script, b"").await
    }

    pub async fn run_script(&self, script: &Script) -> Result<ExecOutput, TransportError> {
        self.run_with_input(&script.text, &script.stdin).await
    }

    /// Runs a POSIX sh script on the host, feeding it `stdin`.
    pub async fn run_with_input(
        &self,
        script: &str,
        stdin: &[u8],
    ) -> Result<ExecOutput, TransportError> {
        match &self.become_ {
            None => self.transport.exec(script, stdin).await,
            Some(b) => {
                let user = quote(&b.user).map_err(TransportError::Exec)?;
                let inner = quote(script).map_err(TransportError::Exec)?;
                match &b.password {
                    None => {
                        let wrapped = format!("sudo -n -H -u {user} -- /bin/sh -c {inner}");
                        self.transport.exec(&wrapped, stdin).await
                    }
                    Some(pw) => {
                        // The password goes first on stdin, never on a command line.
                        let prompt = quote(SUDO_PROMPT).expect("constant quotes");
                        let wrapped =
                            format!("sudo -S -p {prompt} -H -u {user} -- /bin/sh -c {inner}");
                        let mut input = pw.expose().as_bytes().to_vec();
                        input.push(b'\n');
                        input.extend_from_slice(stdin);
                        let mut out = self.transport.exec(&wrapped, &input).await?;
                        strip_prompt(&mut out.stderr);
                        Ok(out)
                    }
                }
            }
        }
    }
}

fn strip_prompt(stderr: &mut Vec<u8>) {
    let marker = SUDO_PROMPT.as_bytes();
    if let Some(pos) = stderr.windows(marker.len()).position(|w| w == marker) {
        stderr.drain(pos..pos + marker.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::LocalTransport;

    #[tokio::test]
    async fn become_prompt_is_stripped() {
        let mut err = b"[playbook-sudo-prompt]real error".to_vec();
        strip_prompt(&mut err);
        assert_eq!(err, b"real error");
        let host = Host::new("h", Arc::new(LocalTransport));
        assert_eq!(host.run("echo hi").await.unwrap().stdout, b"hi\n");
    }
}
