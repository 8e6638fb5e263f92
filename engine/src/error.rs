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

/// Why a module failed on a host.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The arguments are wrong; found before any host is touched wherever possible.
    #[error("{0}")]
    Args(String),
    /// The task ran and failed.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl From<String> for ModuleError {
    fn from(s: String) -> Self {
        ModuleError::Failed(s)
    }
}

impl From<TemplateError> for ModuleError {
    fn from(e: TemplateError) -> Self {
        ModuleError::Failed(e.to_string())
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
