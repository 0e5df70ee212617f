//! Process outcome: exit codes (0 ok, 1 error, 2 usage or validation, 3 auth) and errors
//! that carry a hint.

use std::fmt;
use std::process::ExitCode;

/// Documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Error = 1,
    Invalid = 2,
    /// Not authenticated, forbidden, or MFA required.
    Auth = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// An error for the user: what went wrong, how to fix it, and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

/// A unix time in seconds as RFC 3339 UTC (`2026-12-06T13:53:29Z`).
pub fn rfc3339(secs: i64) -> String {
    kt_api::rfc3339(secs, None)
}

/// Ends the process quietly when standard output is closed under it (`kt … | head -1`):
/// the reader has what it wanted. Any other panic keeps the default report.
pub fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") || msg.contains("os error 32") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints `value` as JSON with `--json`, else as `text` renders it.
pub fn show<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce(&T)) -> anyhow::Result<()> {
    if json {
        print_json(value)
    } else {
        text(value);
        Ok(())
    }
}

/// The documented text rendering of a lint run.
pub fn print_lint_text(name: &str, outcome: &kt_policy::config::LoadOutcome) {
    match &outcome.config {
        Some(c) => {
            println!("OK {name} is valid");
            println!("Pack: {} (v{})", c.pack.name, c.pack.version);
            println!(
                "Chain: {}",
                if c.policies.chain.is_empty() {
                    "(empty)".to_owned()
                } else {
                    c.policies.chain.join(" -> ")
                }
            );
            println!("Policies validated: {}", c.policies.chain.len());
            for w in outcome.warnings() {
                print!("{w}");
            }
        }
        None => {
            let n = outcome.errors().count();
            println!("X {name} has {n} error{}", if n == 1 { "" } else { "s" });
            for d in outcome.errors().chain(outcome.warnings()) {
                print!("{d}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_print_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_565_209), "2026-12-06T13:53:29Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(4_102_444_800), "2100-01-01T00:00:00Z");
    }
}
