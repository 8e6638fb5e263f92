//! How much of a command's output the controller keeps: a target may print gigabytes, and every
//! byte kept is held in memory and copied into results, templates and events. A bounded stream
//! keeps its first and last bytes (half the limit each) and counts what it dropped between them;
//! both transports read through [`read`], so memory is bounded however the bytes arrive.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The default of `--keep-output`: per stream, per command.
pub const DEFAULT_KEEP_OUTPUT: usize = 1024 * 1024;

/// What to keep of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Keep {
    /// Everything: internal scripts whose output is a file's content or a probe's answer.
    #[default]
    All,
    /// At most `limit` bytes of what comes before `until` (everything when `until` is `None`);
    /// `until` and what follows it are kept whole. A batch ends a command's output with its
    /// marker, so only the command is bounded and the probes read after it stay whole.
    Bounded {
        limit: usize,
        until: Option<Vec<u8>>,
    },
}

/// A stream as kept, and how many bytes were dropped from its middle.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Kept {
    pub bytes: Vec<u8>,
    pub cut: u64,
}

/// The line that replaces the bytes dropped from a stream.
pub fn cut_note(cut: u64) -> String {
    format!("\n[playbook: {cut} bytes of output cut here (--keep-output)]\n")
}

/// Accumulates a stream chunk by chunk within its [`Keep`].
struct Keeper<'a> {
    limit: usize,
    until: Option<&'a [u8]>,
    head: Vec<u8>,
    /// The last bytes before `until`: at most `limit - limit / 2`.
    tail: std::collections::VecDeque<u8>,
    cut: u64,
    /// Bytes that may be the start of `until`, not yet kept or dropped.
    pending: Vec<u8>,
    /// Set once `until` was seen: it and everything after, kept whole.
    rest: Option<Vec<u8>>,
}

impl<'a> Keeper<'a> {
    fn new(limit: usize, until: Option<&'a [u8]>) -> Self {
        Keeper {
            limit,
            until: until.filter(|u| !u.is_empty()),
            head: Vec::new(),
            tail: Default::default(),
            cut: 0,
            pending: Vec::new(),
            rest: None,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        if let Some(rest) = &mut self.rest {
            rest.extend_from_slice(chunk);
            return;
        }
        let Some(until) = self.until else {
            return self.bound(chunk);
        };
        // The marker may span chunks: the last bytes that could start it wait for the next one.
        let mut window = std::mem::take(&mut self.pending);
        window.extend_from_slice(chunk);
        if let Some(at) = window.windows(until.len()).position(|w| w == until) {
            self.bound(&window[..at]);
            self.rest = Some(window[at..].to_vec());
            return;
        }
        let keep_back = (until.len() - 1).min(window.len());
        let (now, later) = window.split_at(window.len() - keep_back);
        self.bound(now);
        self.pending = later.to_vec();
    }

    /// Keeps `bytes` within the limit: the head fills first, then the tail rolls.
    fn bound(&mut self, mut bytes: &[u8]) {
        let head_room = (self.limit / 2).saturating_sub(self.head.len());
        let n = head_room.min(bytes.len());
        self.head.extend_from_slice(&bytes[..n]);
        bytes = &bytes[n..];
        let tail_max = self.limit - self.limit / 2;
        if bytes.len() >= tail_max {
            self.cut += (self.tail.len() + bytes.len() - tail_max) as u64;
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - tail_max..]);
            return;
        }
        let over = (self.tail.len() + bytes.len()).saturating_sub(tail_max);
        self.tail.drain(..over);
        self.cut += over as u64;
        self.tail.extend(bytes);
    }

    fn finish(mut self) -> Kept {
        let pending = std::mem::take(&mut self.pending);
        self.bound(&pending);
        let mut bytes = self.head;
        if self.cut > 0 {
            bytes.extend_from_slice(cut_note(self.cut).as_bytes());
        }
        bytes.extend(self.tail);
        bytes.extend(self.rest.unwrap_or_default());
        Kept {
            bytes,
            cut: self.cut,
        }
    }
}

/// Reads `stream` to its end, keeping what `keep` says. A missing stream is empty.
pub async fn read<R: AsyncRead + Unpin>(stream: Option<R>, keep: &Keep) -> std::io::Result<Kept> {
    let Some(mut stream) = stream else {
        return Ok(Kept::default());
    };
    let (limit, until) = match keep {
        Keep::All => {
            let mut bytes = Vec::new();
            stream.read_to_end(&mut bytes).await?;
            return Ok(Kept { bytes, cut: 0 });
        }
        Keep::Bounded { limit, until } => (*limit, until.as_deref()),
    };
    let mut keeper = Keeper::new(limit, until);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(keeper.finish());
        }
        keeper.push(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(limit: usize, until: Option<&str>, chunks: &[&[u8]]) -> Kept {
        let mut k = Keeper::new(limit, until.map(str::as_bytes));
        for c in chunks {
            k.push(c);
        }
        k.finish()
    }

    #[test]
    fn within_the_limit_nothing_changes() {
        let k = keep(10, None, &[b"0123", b"456789"]);
        assert_eq!(
            k,
            Kept {
                bytes: b"0123456789".to_vec(),
                cut: 0
            }
        );
    }

    #[test]
    fn over_the_limit_head_and_tail_stay_with_a_note() {
        // Chunk sizes must not matter: one byte at a time, and all at once.
        let data: Vec<u8> = (0..100u8).collect();
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        let one_by_one = keep(10, None, &bytes);
        let whole = keep(10, None, &[&data]);
        assert_eq!(one_by_one, whole);
        let mut want = (0..5u8).collect::<Vec<_>>();
        want.extend_from_slice(cut_note(90).as_bytes());
        want.extend(95..100u8);
        assert_eq!(
            whole,
            Kept {
                bytes: want,
                cut: 90
            }
        );
    }

    #[test]
    fn only_what_comes_before_the_marker_is_bounded() {
        let mut out = vec![b'x'; 1000];
        out.extend_from_slice(b"\nMARK 0\nprobe output longer than the limit");
        for size in [1, 3, 7, 64, 2000] {
            let chunks: Vec<&[u8]> = out.chunks(size).collect();
            let k = keep(10, Some("\nMARK"), &chunks);
            let mut want = b"xxxxx".to_vec();
            want.extend_from_slice(cut_note(990).as_bytes());
            want.extend_from_slice(b"xxxxx\nMARK 0\nprobe output longer than the limit");
            assert_eq!(
                k,
                Kept {
                    bytes: want,
                    cut: 990
                },
                "chunks of {size}"
            );
        }
        // Short output before the marker: untouched.
        let k = keep(10, Some("\nMARK"), &[b"ab\nMA", b"RK rest of it all"]);
        assert_eq!(k.bytes, b"ab\nMARK rest of it all");
        assert_eq!(k.cut, 0);
    }
}
