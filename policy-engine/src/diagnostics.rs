//! Lint diagnostics: codes, severities, locations, and the two renderings (`kt policy lint`
//! text and `--json`). Every validation step in kt-policy reports through these types, so the
//! CLI, the gateway and the control plane print the same words for the same mistake.

use std::fmt;

use serde::Serialize;

/// A position in the source file, 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// Stable diagnostic codes. The documented ones are E001–E003; the rest extend the catalogue
/// in the same style (see docs/configuration.md#lint-codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    UnknownPolicyKind,
    UnknownKey,
    MissingPolicyBlock,
    InvalidEnumValue,
    MissingField,
    WrongType,
    DuplicateTargetId,
    UnknownTargetRef,
    InvalidSemver,
    YamlSyntax,
    KindNotEnforced,
    InvalidRegex,
    OutOfRange,
    InvalidDocument,
    InvalidValue,
    UnreferencedPolicyBlock,
    PackDisabled,
    ClientChosenGroup,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::UnknownPolicyKind => "E001",
            Code::UnknownKey => "E002",
            Code::MissingPolicyBlock => "E003",
            Code::InvalidEnumValue => "E004",
            Code::MissingField => "E005",
            Code::WrongType => "E006",
            Code::DuplicateTargetId => "E007",
            Code::UnknownTargetRef => "E008",
            Code::InvalidSemver => "E009",
            Code::YamlSyntax => "E010",
            Code::KindNotEnforced => "E011",
            Code::InvalidRegex => "E012",
            Code::OutOfRange => "E013",
            Code::InvalidDocument => "E014",
            Code::InvalidValue => "E015",
            Code::UnreferencedPolicyBlock => "W001",
            Code::PackDisabled => "W002",
            Code::ClientChosenGroup => "W003",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Code::UnreferencedPolicyBlock | Code::PackDisabled | Code::ClientChosenGroup => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding: what is wrong, where, and how to fix it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    /// YAML path such as `policies.chain[0]`; empty for the whole file.
    pub path: String,
    pub message: String,
    /// "Did you mean" or another concrete fix.
    #[serde(rename = "suggestion")]
    pub help: Option<String>,
    /// Extra context printed in parentheses, e.g. the list of valid keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub location: Option<Location>,
    /// Which file the finding belongs to, when several are layered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl Diagnostic {
    pub fn error(code: Code, path: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: code.severity(),
            path: path.to_owned(),
            message: message.into(),
            help: None,
            note: None,
            location: None,
            file: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    pub fn at(mut self, location: Location) -> Self {
        self.location = Some(location);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(f, "{label}[{}]: {}", self.code.as_str(), self.message)?;
        if let Some(note) = &self.note {
            writeln!(f, "  ({note})")?;
        }
        let file = self.file.as_deref().unwrap_or("");
        let position = match (self.location, file.is_empty()) {
            (Some(l), false) => format!("{file}:{}:{}", l.line, l.column),
            (Some(l), true) => format!("line {}, column {}", l.line, l.column),
            (None, false) => file.to_owned(),
            (None, true) => String::new(),
        };
        match (self.path.is_empty(), position.is_empty()) {
            (false, false) => writeln!(f, "  --> {} ({position})", self.path)?,
            (false, true) => writeln!(f, "  --> {}", self.path)?,
            (true, false) => writeln!(f, "  --> {position}")?,
            (true, true) => {}
        }
        if let Some(help) = &self.help {
            writeln!(f, "  help: {help}")?;
        }
        Ok(())
    }
}

/// Suggests the closest candidate for a misspelt name, if one is close enough.
pub fn did_you_mean<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = input.to_ascii_lowercase().replace('_', "-");
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&lower, &c.to_ascii_lowercase().replace('_', "-")),
                c,
            )
        })
        .filter(|(score, _)| *score > 0.82)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_the_documented_lint_output() {
        let d = Diagnostic::error(
            Code::UnknownPolicyKind,
            "policies.chain[0]",
            "Unknown policy kind 'prompt-injections'",
        )
        .with_help("Did you mean 'prompt-injection'?");
        assert_eq!(
            d.to_string(),
            "error[E001]: Unknown policy kind 'prompt-injections'\n  --> policies.chain[0]\n  help: Did you mean 'prompt-injection'?\n"
        );
        let mut d = d.at(Location { line: 7, column: 5 });
        assert!(d.to_string().contains("--> policies.chain[0] (line 7, column 5)"));
        d.file = Some("bad.yaml".into());
        assert!(d.to_string().contains("--> policies.chain[0] (bad.yaml:7:5)"));
    }

    #[test]
    fn suggests_close_names_only() {
        let kinds = ["prompt-injection", "pii-detector", "dlp-filter"];
        assert_eq!(did_you_mean("prompt-injections", kinds), Some("prompt-injection"));
        assert_eq!(did_you_mean("pii_detector", kinds), Some("pii-detector"));
        assert_eq!(did_you_mean("zzz", kinds), None);
    }
}
