//! Errors: the user's files carrying the position they point at (so the CLI can show the
//! line), and a module's failure on a host.

use miette::{LabeledSpan, NamedSource, SourceCode};

use crate::template::TemplateError;
use crate::transport::TransportError;

/// Where something was written in a playbook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourcePos {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for SourcePos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A playbook that cannot be planned. Display reads `FILE:LINE:COL: message`.
#[derive(Debug, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct PlanError {
    pub pos: SourcePos,
    pub message: String,
    source_text: Option<Box<NamedSource<String>>>,
}

impl PlanError {
    pub fn at(pos: SourcePos, message: impl Into<String>) -> Self {
        let source_text = std::fs::read_to_string(&pos.file)
            .ok()
            .map(|text| Box::new(NamedSource::new(pos.file.clone(), text)));
        PlanError {
            pos,
            message: message.into(),
            source_text,
        }
    }

    /// An error that is about the playbook as a whole rather than a place in it.
    pub fn whole(file: &str, message: impl Into<String>) -> Self {
        PlanError {
            pos: SourcePos {
                file: file.to_string(),
                line: 0,
                column: 0,
            },
            message: message.into(),
            source_text: None,
        }
    }
}

impl miette::Diagnostic for PlanError {
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source_text.as_deref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let text = self.source_text.as_ref()?.inner();
        let offset = offset_of(text, self.pos.line, self.pos.column)?;
        Some(Box::new(std::iter::once(LabeledSpan::at_offset(
            offset, "here",
        ))))
    }
}

/// Why a module failed on a host. Each caller says which kind it means: there is no conversion
/// from a bare string.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The arguments are wrong; found before any host is touched wherever possible.
    #[error("{0}")]
    Args(String),
    /// The task ran and failed.
    #[error("{0}")]
    Failed(String),
    /// A template (a file the module renders, an expression it evaluates) failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// A remote argument that cannot be quoted is a wrong argument.
impl From<crate::quote::QuoteError> for ModuleError {
    fn from(e: crate::quote::QuoteError) -> Self {
        ModuleError::Args(e.to_string())
    }
}

impl ModuleError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ModuleError::Args(_) => ErrorKind::Args,
            ModuleError::Failed(_) => ErrorKind::Failed,
            ModuleError::Template(_) => ErrorKind::Template,
            ModuleError::Transport(TransportError::Unreachable(_)) => ErrorKind::Unreachable,
            ModuleError::Transport(TransportError::Exec(_)) => ErrorKind::Transport,
        }
    }
}

/// What kind of thing went wrong while a task ran on a host (`kind` of a `task_end` event's
/// `error`, docs/EVENTS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The module's arguments are wrong.
    Args,
    /// The task ran and failed (a command's status, a check that did not hold).
    Failed,
    /// A template failed to render: an argument, a condition, `environment`, a template file.
    Template,
    /// A command could not be sent or its output not read.
    Transport,
    /// The host could not be reached.
    Unreachable,
    /// A playbook closure (a condition, a computed argument, a custom task) raised an error or
    /// returned what a task cannot use.
    Closure,
    /// What the task reads from an earlier task is not there: that task failed or did not run,
    /// or its result has no such field.
    Upstream,
}

/// Where in a template something went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplatePos {
    /// The template file, or for a templated argument or condition the task it belongs to.
    pub name: String,
    /// 1-based; 0 when unknown.
    pub line: usize,
    pub column: Option<usize>,
}

impl From<&TemplateError> for TemplatePos {
    fn from(e: &TemplateError) -> Self {
        TemplatePos {
            name: e.file.clone(),
            line: e.line,
            column: e.column,
        }
    }
}

/// What went wrong while a task ran on a host, before it is told where (`RuntimeError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
    pub template: Option<TemplatePos>,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            template: None,
        }
    }

    /// The same failure, told as `message` (a retry's "gave up after …: why").
    pub fn reworded(self, message: String) -> Self {
        Failure { message, ..self }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<TemplateError> for Failure {
    fn from(e: TemplateError) -> Self {
        Failure {
            kind: ErrorKind::Template,
            template: Some(TemplatePos::from(&e)),
            message: e.to_string(),
        }
    }
}

impl From<ModuleError> for Failure {
    fn from(e: ModuleError) -> Self {
        match e {
            ModuleError::Template(t) => Failure::from(t),
            other => Failure::new(other.kind(), other.to_string()),
        }
    }
}

/// Where a task's failure on a host belongs, and its kind: the `error` of a `task_end` event.
/// Its message is the event's `msg` (hidden there for a secret task, and redacted with it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuntimeError {
    pub kind: ErrorKind,
    pub host: String,
    pub task: String,
    /// Where the task is written in the playbook.
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The template that failed (kind `template`): its file, or the task whose argument or
    /// condition it is, and the line and column in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_column: Option<usize>,
}

impl RuntimeError {
    pub fn new(
        kind: ErrorKind,
        host: &str,
        task: &str,
        pos: &SourcePos,
        template: Option<&TemplatePos>,
    ) -> Self {
        RuntimeError {
            kind,
            host: host.to_string(),
            task: task.to_string(),
            file: pos.file.clone(),
            line: pos.line,
            column: pos.column,
            template: template.map(|t| t.name.clone()),
            template_line: template.map(|t| t.line).filter(|l| *l > 0),
            template_column: template.and_then(|t| t.column),
        }
    }
}

/// Byte offset of a 1-based line and column.
pub fn offset_of(text: &str, line: usize, column: usize) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return Some(offset + column.saturating_sub(1).min(l.len()));
        }
        offset += l.len();
    }
    None
}

/// The candidate closest to `name`, when it is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_finds_typos_only() {
        let names = ["shell", "command", "copy", "file_template"];
        assert_eq!(closest("shel", names.iter().copied()), Some("shell"));
        assert_eq!(
            closest("file_tempalte", names.iter().copied()),
            Some("file_template")
        );
        assert_eq!(closest("kubernetes", names.iter().copied()), None);
    }

    #[test]
    fn offsets_are_one_based() {
        let text = "ab\ncde\n";
        assert_eq!(offset_of(text, 2, 2), Some(4));
        assert_eq!(offset_of(text, 1, 1), Some(0));
        assert_eq!(offset_of(text, 9, 1), None);
    }
}
