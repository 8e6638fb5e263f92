//! Several read-only scripts in one round trip: each runs in its own subshell, and its output,
//! errors and exit status come back separately, as if it had run alone. An apply may go first
//! (`run_after`): the scripts then read the host as the apply left it, in the apply's round trip.
//!
//! The outputs are told apart by a marker line made of random bytes chosen per batch, which no
//! script can print by accident (and none can guess). Every marker is preceded by a newline that
//! the batch adds, so an output that does not end with one (a file's content) is returned exactly.

use std::io::Read as _;

use crate::host::{Host, Script};
use crate::quote::quote;
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

/// The batch of `scripts` as one script, with `marker` between the outputs. Only the first, when
/// `stdin_to_first`, reads the batch's stdin; the others read nothing, as when run alone.
fn script(scripts: &[&str], marker: &str, stdin_to_first: bool) -> String {
    let marker = quote(marker).expect("a marker has no NUL");
    let mut s = String::new();
    for (i, script) in scripts.iter().enumerate() {
        let stdin = if i == 0 && stdin_to_first {
            ""
        } else {
            " </dev/null"
        };
        // A subshell keeps each script's variables, `cd`, traps and `exit` to itself (`:` makes
        // an empty script valid); `$?` is read by the first printf, before anything else runs.
        s += &format!(
            "(:\n{script}\n){stdin}\nprintf '\\n%s %s\\n' {marker} \"$?\"\nprintf '\\n%s\\n' {marker} >&2\n"
        );
    }
    s
}

/// Splits the outputs of `script`, as many as came back whole (fewer when the batch was cut
/// short).
fn split(out: &ExecOutput, count: usize, marker: &str) -> Vec<ExecOutput> {
    let stdout_mark = format!("\n{marker} ");
    let stderr_mark = format!("\n{marker}\n");
    let mut outs = Vec::with_capacity(count);
    let (mut o, mut e) = (&out.stdout[..], &out.stderr[..]);
    // Only the first output may have been bounded (see `run_after`).
    let (mut stdout_cut, mut stderr_cut) = (out.stdout_cut, out.stderr_cut);
    while outs.len() < count {
        let mut next = || -> Option<ExecOutput> {
            let at = find(o, stdout_mark.as_bytes())?;
            let stdout = o[..at].to_vec();
            let rest = &o[at + stdout_mark.len()..];
            let end = rest.iter().position(|b| *b == b'\n')?;
            let status = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
            let err_at = find(e, stderr_mark.as_bytes())?;
            let stderr = e[..err_at].to_vec();
            o = &rest[end + 1..];
            e = &e[err_at + stderr_mark.len()..];
            Some(ExecOutput {
                status,
                stdout,
                stderr,
                stdout_cut: std::mem::take(&mut stdout_cut),
                stderr_cut: std::mem::take(&mut stderr_cut),
            })
        };
        match next() {
            Some(one) => outs.push(one),
            None => break,
        }
    }
    outs
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn cut_short(what: &str, out: &ExecOutput) -> TransportError {
    TransportError::Exec(format!(
        "{what} ended early (status {}): {}",
        out.status,
        out.stderr_text().trim()
    ))
}

/// Runs `scripts` in one round trip and returns each one's output, in order.
pub async fn run(host: &Host, scripts: &[&str]) -> Result<Vec<ExecOutput>, TransportError> {
    let marker = marker()?;
    let out = host.run(&script(scripts, &marker, false)).await?;
    let outs = split(&out, scripts.len(), &marker);
    if outs.len() < scripts.len() {
        let what = format!("a batch of {} probes", scripts.len());
        return Err(cut_short(&what, &out));
    }
    Ok(outs)
}

/// Runs `act` (which may change the host, and alone reads the stdin) and then `reads`, in one
/// round trip. Returns the output of `act`, and those of `reads` that came back whole.
pub async fn run_after(
    host: &Host,
    act: &Script,
    reads: &[&str],
) -> Result<(ExecOutput, Vec<ExecOutput>), TransportError> {
    if reads.is_empty() {
        return Ok((host.run_script(act).await?, Vec::new()));
    }
    let marker = marker()?;
    let scripts: Vec<&str> = std::iter::once(act.text.as_str())
        .chain(reads.iter().copied())
        .collect();
    let text = script(&scripts, &marker, true);
    // A bounded change is bounded as if it ran alone: the reads after it stay whole.
    let keep = match act.bounded {
        true => host.keep(Some(&format!("\n{marker}"))),
        false => crate::transport::Keep::All,
    };
    let out = host.run_kept(&text, &act.stdin, &keep).await?;
    let mut outs = split(&out, scripts.len(), &marker).into_iter();
    let first = outs.next().ok_or_else(|| cut_short("the change", &out))?;
    Ok((first, outs.collect()))
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

    #[tokio::test]
    async fn reads_after_a_change_see_it_and_only_the_change_reads_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let f = quote(dir.path().join("f").to_str().unwrap()).unwrap();
        let host = Host::new("local", Arc::new(LocalTransport));
        let act = Script {
            text: format!("trap 'echo trap' EXIT\ncat > {f}\necho wrote; exit 2"),
            stdin: b"new".to_vec(),
            ..Default::default()
        };
        let reads = [format!("cat {f}"), "cat; echo rest".to_string()];
        let reads: Vec<&str> = reads.iter().map(String::as_str).collect();
        let (out, after) = run_after(&host, &act, &reads).await.unwrap();
        assert_eq!(
            out,
            host.run("echo wrote; echo trap; exit 2").await.unwrap()
        );
        assert_eq!(after.len(), 2);
        assert_eq!(after[0].stdout, b"new");
        assert_eq!(after[1].stdout, b"rest\n");

        // A change that ends the whole script: its output is not known.
        let act = Script {
            text: "echo bye; kill $$".into(),
            ..Default::default()
        };
        let err = run_after(&host, &act, &reads).await.unwrap_err();
        assert!(err.to_string().contains("the change ended early"), "{err}");
    }

    #[test]
    fn a_cut_short_batch_gives_only_whole_outputs() {
        let out = ExecOutput {
            status: 255,
            stdout: b"one\nm 0\npartial".to_vec(),
            stderr: b"\nm\n".to_vec(),
            ..Default::default()
        };
        let outs = split(&out, 2, "m");
        assert_eq!(outs.len(), 1, "only the whole output");
        assert_eq!(outs[0].stdout, b"one");
        let out = ExecOutput {
            status: 255,
            stdout: b"partial".to_vec(),
            ..Default::default()
        };
        assert!(split(&out, 1, "m").is_empty());
    }
}
