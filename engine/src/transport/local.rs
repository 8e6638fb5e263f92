use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{ExecOutput, Transport, TransportError};

/// Runs commands on the controller itself.
#[derive(Debug, Default, Clone)]
pub struct LocalTransport;

#[async_trait]
impl Transport for LocalTransport {
    async fn exec(&self, script: &str, stdin: &[u8]) -> Result<ExecOutput, TransportError> {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TransportError::Exec(format!("cannot start /bin/sh: {e}")))?;
        let mut input = child.stdin.take().expect("stdin is piped");
        let data = stdin.to_vec();
        // Feed stdin concurrently with reading output, or a script that writes a lot before
        // reading its input would deadlock.
        let feeder = tokio::spawn(async move {
            // A script that does not read its input closes the pipe early: not an error.
            let _ = input.write_all(&data).await;
            let _ = input.shutdown().await;
        });
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| TransportError::Exec(format!("waiting for /bin/sh: {e}")))?;
        let _ = feeder.await;
        Ok(ExecOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_script_with_stdin_and_reports_status() {
        let out = LocalTransport
            .exec("cat; echo err >&2; exit 3", b"hello")
            .await
            .unwrap();
        assert_eq!(out.status, 3);
        assert_eq!(out.stdout, b"hello");
        assert_eq!(out.stderr, b"err\n");
    }
}
