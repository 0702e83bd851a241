//! What `percyctl exec` asks an executor to run: the payload of an exec task (JSON, so a
//! person reading `percyctl task get` can read it too).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One exec's request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The command and its arguments. A single element is a shell command line
    /// (`'cargo test && echo ok'`); several are quoted for the shell one by one.
    pub command: Vec<String>,
    /// Working directory on the executor; `None` = the worker's.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The endpoint the caller attached to for the live output; `None` = nobody watches
    /// live (`--detach`), the output tail is in the record only.
    #[serde(default)]
    pub relay: Option<String>,
}

/// Why a payload is not an exec request.
#[derive(Debug, thiserror::Error)]
pub enum ExecRequestError {
    #[error("the exec request does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("the exec request has an empty command")]
    EmptyCommand,
}

impl ExecRequest {
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(payload: &[u8]) -> Result<ExecRequest, ExecRequestError> {
        let request: ExecRequest = serde_json::from_slice(payload)?;
        if request.command.iter().all(|word| word.trim().is_empty()) {
            return Err(ExecRequestError::EmptyCommand);
        }
        Ok(request)
    }

    /// The line handed to `sh -c`.
    pub fn shell_line(&self) -> String {
        match self.command.as_slice() {
            [line] => line.clone(),
            words => words
                .iter()
                .map(|word| shell_quote(word))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// `word` as one shell word: single-quoted, with each `'` written as `'\''`.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_words_are_quoted_one_by_one_and_one_is_a_shell_line() {
        let words = ExecRequest {
            command: vec!["printf".into(), "%s\n".into(), "it's a b".into()],
            ..Default::default()
        };
        assert_eq!(
            words.shell_line(),
            r"printf '%s
' 'it'\''s a b'"
        );
        let line = ExecRequest {
            command: vec!["echo a && echo b".into()],
            ..Default::default()
        };
        assert_eq!(line.shell_line(), "echo a && echo b");
    }

    #[test]
    fn an_empty_command_or_garbage_is_refused() {
        assert!(ExecRequest::decode(b"not json").is_err());
        let empty = ExecRequest {
            command: vec![" ".into()],
            ..Default::default()
        };
        assert!(matches!(
            ExecRequest::decode(&empty.encode()),
            Err(ExecRequestError::EmptyCommand)
        ));
        let good = ExecRequest {
            command: vec!["true".into()],
            relay: Some("127.0.0.1:1".into()),
            ..Default::default()
        };
        assert_eq!(ExecRequest::decode(&good.encode()).unwrap(), good);
    }
}
