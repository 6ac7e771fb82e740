//! The one error type of configuration loading: which file, which key, why.

use std::fmt;

/// A configuration problem. Every variant names the file; `Invalid` also
/// names the key (as a dotted path such as `neurons[1].endpoint`) and the
/// offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML, or does not match the expected shape
    /// (unknown key, wrong type, bad duration or size).
    #[error("{file}{}: {message}", location(*.line, *.column))]
    Parse {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// The file parsed, but a value is not acceptable.
    #[error("{file}: {key} = {value}: {reason}")]
    Invalid {
        file: String,
        key: String,
        value: String,
        reason: String,
    },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

impl ConfigError {
    pub fn invalid(
        file: &str,
        key: impl Into<String>,
        value: impl fmt::Debug,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            file: file.to_string(),
            key: key.into(),
            value: format!("{value:?}"),
            reason: reason.into(),
        }
    }

    /// The key named by the error, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Parse { .. } => None,
        }
    }
}

/// Parse a TOML document into `T`, mapping errors to [`ConfigError::Parse`]
/// with line and column.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigError::Parse {
            file: file.to_string(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })
}
