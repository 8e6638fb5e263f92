//! Several read-only scripts in one round trip: each runs in its own subshell, and its output,
//! errors and exit status come back separately, as if it had run alone.
//!
//! The outputs are told apart by a marker line made of random bytes chosen per batch, which no
//! script can print by accident (and none can guess). Every marker is preceded by a newline that
//! the batch adds, so an output that does not end with one (a file's content) is returned exactly.

use std::io::Read as _;

use crate::host::{quote, Host};
use crate::transport::{ExecOutput, TransportError};

/// Above this many bytes of script, a batch is split (one remote argument is at most 128 KiB on
/// Linux, and the script is quoted again for ssh and sudo).
pub const MAX_SCRIPT_BYTES: usize = 48 * 1024;

fn marker() -> Result<String, TransportError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| TransportError::Exec(format!("cannot read /dev/urandom: {e}")))?;
    Ok(format!("playbook-batch-{}", hex::encode(bytes)))
}

/// The batch of `scripts` as one script, with `marker` between the outputs.
fn script(scripts: &[&str], marker: &str) -> String {
    let marker = quote(marker).expect("a marker has no NUL");
    let mut s = String::new();
    for script in scripts {
        // A subshell keeps each script's variables, `cd` and `exit` to itself (`:` makes an
        // empty script valid); `$?` is read by the first printf, before anything else runs.
        s += &format!(
            "(:\n{script}\n)\nprintf '\\n%s %s\\n' {marker} \"$?\"\nprintf '\\n%s\\n' {marker} >&2\n"
        );
    }
    s
}

/// Splits the outputs of `script`: None when they are not all there (the batch was cut short).
fn split(out: &ExecOutput, count: usize, marker: &str) -> Option<Vec<ExecOutput>> {
    let stdout_mark = format!("\n{marker} ");
    let stderr_mark = format!("\n{marker}\n");
    let mut outs = Vec::with_capacity(count);
    let (mut o, mut e) = (&out.stdout[..], &out.stderr[..]);
    for _ in 0..count {
        let at = find(o, stdout_mark.as_bytes())?;
        let stdout = o[..at].to_vec();
        o = &o[at + stdout_mark.len()..];
        let end = o.iter().position(|b| *b == b'\n')?;
        let status = std::str::from_utf8(&o[..end]).ok()?.parse().ok()?;
        o = &o[end + 1..];
        let at = find(e, stderr_mark.as_bytes())?;
        let stderr = e[..at].to_vec();
        e = &e[at + stderr_mark.len()..];
        outs.push(ExecOutput {
            status,
            stdout,
            stderr,
        });
    }
    Some(outs)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Runs `scripts` in one round trip and returns each one's output, in order.
pub async fn run(host: &Host, scripts: &[&str]) -> Result<Vec<ExecOutput>, TransportError> {
    let marker = marker()?;
    let out = host.run(&script(scripts, &marker)).await?;
    split(&out, scripts.len(), &marker).ok_or_else(|| {
        TransportError::Exec(format!(
            "a batch of {} probes ended early (status {}): {}",
            scripts.len(),
            out.status,
            out.stderr_text().trim()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::LocalTransport;
    use std::sync::Arc;

    #[tokio::test]
    async fn each_script_gets_its_own_output_as_if_run_alone() {
        let host = Host::new("local", Arc::new(LocalTransport));
        let scripts = [
            "echo one; echo err >&2; exit 3",
            // No trailing newline; a variable and a cd that must not leak into the next one.
            "x=leak; cd /; printf 'no newline'",
            "echo \"[$x]\"; pwd | grep -qx / && echo leaked-cd; exit 0",
            "",
            "printf '\\n\\n'; printf 'e\\n' >&2",
        ];
        let outs = run(&host, &scripts).await.unwrap();
        assert_eq!(outs.len(), scripts.len());
        for (script, batched) in scripts.iter().zip(&outs) {
            let alone = host.run(script).await.unwrap();
            if script.contains("leaked-cd") {
                // Alone it runs in the test's directory; in the batch it must not see the cd.
                assert_eq!(batched.stdout, b"[]\n");
                continue;
            }
            assert_eq!(batched, &alone, "{script}");
        }
        assert_eq!(outs[0].status, 3);
        assert_eq!(outs[1].stdout, b"no newline");
    }

    #[test]
    fn a_cut_short_batch_is_refused() {
        let out = ExecOutput {
            status: 255,
            stdout: b"one\nm 0\npartial".to_vec(),
            stderr: b"\nm\n".to_vec(),
        };
        assert!(split(&out, 2, "m").is_none());
        let out = ExecOutput {
            status: 0,
            stdout: b"one\n\nm 0\n".to_vec(),
            stderr: b"\nm\n".to_vec(),
        };
        assert_eq!(split(&out, 1, "m").unwrap()[0].stdout, b"one\n");
    }
}
