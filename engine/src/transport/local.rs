use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{kept, ExecOutput, Keep, Transport, TransportError};

/// Runs commands on the controller itself.
#[derive(Debug, Default, Clone)]
pub struct LocalTransport;

#[async_trait]
impl Transport for LocalTransport {
    async fn exec_kept(
        &self,
        script: &str,
        stdin: &[u8],
        keep: &Keep,
    ) -> Result<ExecOutput, TransportError> {
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
        let (stdout, stderr) = tokio::join!(
            kept::read(child.stdout.take(), keep),
            kept::read(child.stderr.take(), keep)
        );
        let stdout = stdout.map_err(|e| TransportError::Exec(format!("reading stdout: {e}")))?;
        let stderr = stderr.map_err(|e| TransportError::Exec(format!("reading stderr: {e}")))?;
        let status = child
            .wait()
            .await
            .map_err(|e| TransportError::Exec(format!("waiting for /bin/sh: {e}")))?;
        let _ = feeder.await;
        Ok(ExecOutput {
            status: status.code().unwrap_or(-1),
            stdout: stdout.bytes,
            stderr: stderr.bytes,
            stdout_cut: stdout.cut,
            stderr_cut: stderr.cut,
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

    #[tokio::test]
    async fn bounded_output_keeps_head_and_tail_of_each_stream() {
        let keep = Keep::Bounded {
            limit: 8,
            until: None,
        };
        let out = LocalTransport
            .exec_kept("printf 0123456789abcdef; printf xyz >&2", b"", &keep)
            .await
            .unwrap();
        let mut want = b"0123".to_vec();
        want.extend_from_slice(kept::cut_note(8).as_bytes());
        want.extend_from_slice(b"cdef");
        assert_eq!((out.stdout, out.stdout_cut), (want, 8));
        assert_eq!((out.stderr, out.stderr_cut), (b"xyz".to_vec(), 0));
    }
}
