//! The certificate and key files on the target: read in one round trip, written by a step.

use engine::remote::FileKind;
use engine::secret::Redactor;
use engine::{ModuleContext, ModuleError, Probe};

use crate::shared::content::{self, Action};
use crate::shared::inspect::{Current, Inspect};
use crate::shared::perms::Wanted;

use super::keys::{failed, register_key};
use super::{Args, Step, READ_LIMIT};

/// The two files' state, and the content of each when it is a small regular file.
pub(super) struct Pair {
    pub(super) cert: Option<Current>,
    pub(super) key: Option<Current>,
    pub(super) cert_content: Option<Vec<u8>>,
    pub(super) key_content: Option<Vec<u8>>,
}

impl Pair {
    /// The key's text as read from the target: a secret from the moment it is read.
    pub(super) fn key_text(&self, secrets: &Redactor) -> Option<String> {
        let text = self
            .key_content
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())?;
        register_key(secrets, &text);
        Some(text)
    }
}

/// One round trip: both paths' state, and their content when `read` (regular files up to 64 KiB).
pub(super) async fn inspect_pair(
    cx: &ModuleContext<'_>,
    cert: Option<&str>,
    key: Option<&str>,
    read: bool,
) -> Result<Pair, ModuleError> {
    let inspects: Vec<Inspect> = [cert, key]
        .into_iter()
        .flatten()
        .map(|path| Inspect {
            path,
            follow: false,
            into_dir: None,
            read: None,
        })
        .collect();
    let mut script = String::new();
    for i in &inspects {
        script += &i.script().map_err(ModuleError::Args)?;
        if read {
            script += &format!(
                "if [ -f \"$p\" ] && ! [ -L \"$p\" ] && [ \"$(stat -c %s -- \"$p\")\" -le {READ_LIMIT} ]; \
                 then stat -c %s -- \"$p\"; cat -- \"$p\"; else echo -1; fi\n"
            );
        }
    }
    let out = cx.host.run(&script).await?;
    if !out.success() {
        return Err(failed(format!(
            "cannot inspect {}: {}",
            [cert, key]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", "),
            out.stderr_text().trim()
        )));
    }
    let mut rest = out.stdout;
    let mut found = Vec::new();
    for i in &inspects {
        let mut cur = i.parse(&rest).map_err(failed)?;
        rest = std::mem::take(&mut cur.rest);
        let mut content = None;
        if read {
            let nl = rest
                .iter()
                .position(|b| *b == b'\n')
                .ok_or_else(|| failed(format!("inspecting {}: output ends early", i.path)))?;
            let len: i64 = String::from_utf8_lossy(&rest[..nl])
                .trim()
                .parse()
                .unwrap_or(-1);
            rest.drain(..=nl);
            if len >= 0 {
                let len = len as usize;
                if rest.len() < len {
                    return Err(failed(format!("{} changed while being read", i.path)));
                }
                content = Some(rest.drain(..len).collect());
            }
        }
        if matches!(cur.kind(), FileKind::Directory | FileKind::Other) {
            return Err(failed(format!(
                "{} exists and is not a regular file",
                cur.path
            )));
        }
        found.push((cur, content));
    }
    let mut it = found.into_iter();
    let mut take = |given: Option<&str>| {
        if given.is_some() {
            it.next().map(|(c, b)| (Some(c), b)).unwrap_or((None, None))
        } else {
            (None, None)
        }
    };
    let (cert, cert_content) = take(cert);
    let (key, key_content) = take(key);
    Ok(Pair {
        cert,
        key,
        cert_content,
        key_content,
    })
}

/// A change of attributes only, or nothing.
pub(super) fn keep_step(
    cur: &Current,
    wanted: &Wanted,
    summary: &mut Vec<String>,
) -> Result<Step, ModuleError> {
    Ok(match content::keep(cur, wanted)? {
        Probe::Change(c) => {
            summary.push(format!("{}: {}", cur.path, c.summary));
            Step::Content(c.plan)
        }
        _ => Step::None,
    })
}

pub(super) async fn apply_step(
    cx: &ModuleContext<'_>,
    args: &Args,
    step: Step,
    path: Option<&String>,
    mode: &str,
    fresh: impl FnOnce() -> Option<Vec<u8>>,
) -> Result<(), ModuleError> {
    let plan = match (step, path) {
        (Step::None, _) | (_, None) => return Ok(()),
        (Step::Content(p), _) => p,
        (Step::Fresh, Some(path)) => match fresh() {
            Some(bytes) => content::Plan {
                path: path.clone(),
                action: Action::Write(bytes),
            },
            None => return Ok(()),
        },
    };
    content::apply(cx.host, &plan, &args.write_options(mode)).await?;
    Ok(())
}
