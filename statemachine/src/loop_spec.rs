//! The documented keys of a definition's spec, for definitions that *run*: `command`,
//! `prompt`, `capabilities`, `selector`, `max_iterations`, `interval`, `timeout`. Any other key
//! is kept as data and ignored here. Parsed at apply time, so a spec that a worker could not
//! run is refused with a message naming the key, instead of failing later in some loop.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::error::CommandError;
use crate::limits::{
    MAX_CAPABILITIES, MAX_LABELS, MAX_LABEL_LEN, MAX_LOOP_ITERATION_TIMEOUT_MS, MAX_LOOP_PROMPT_LEN,
};

/// A definition's loop settings, read from its spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopSpec {
    /// Run through `sh -c` once per iteration; `None`: the definition does not run.
    pub command: Option<String>,
    /// Sent on the command's stdin, followed by the steering messages of the iteration.
    pub prompt: String,
    /// A worker runs the definition only if it has all of these.
    pub capabilities: BTreeSet<String>,
    /// ... and carries every one of these labels with that value.
    pub selector: BTreeMap<String, String>,
    /// 0: until stopped.
    pub max_iterations: u64,
    /// Pause between iterations.
    pub interval_ms: u64,
    /// Per iteration; 0: no timeout.
    pub timeout_ms: u64,
}

impl LoopSpec {
    /// Reads the documented keys of `spec_json` (the definition `name` is for messages).
    pub fn parse(name: &str, spec_json: &str) -> Result<LoopSpec, CommandError> {
        let value: Value = serde_json::from_str(spec_json).map_err(|e| {
            CommandError::invalid(format!("definition {name:?}: spec is not valid JSON: {e}"))
        })?;
        // A spec that is not a mapping has no documented keys: data only, it does not run.
        let Value::Object(map) = value else {
            return Ok(LoopSpec::default());
        };
        let bad = |key: &str, what: &str| {
            CommandError::invalid(format!("definition {name:?}: `{key}` {what}"))
        };
        let mut spec = LoopSpec::default();
        if let Some(command) = map.get("command") {
            let command = command
                .as_str()
                .ok_or_else(|| bad("command", "must be a string"))?;
            if command.trim().is_empty() {
                return Err(bad("command", "must not be empty"));
            }
            spec.command = Some(command.to_owned());
        }
        if let Some(prompt) = map.get("prompt") {
            let prompt = prompt
                .as_str()
                .ok_or_else(|| bad("prompt", "must be a string"))?;
            if prompt.len() > MAX_LOOP_PROMPT_LEN {
                return Err(bad(
                    "prompt",
                    &format!(
                        "is {} bytes long (at most {MAX_LOOP_PROMPT_LEN})",
                        prompt.len()
                    ),
                ));
            }
            spec.prompt = prompt.to_owned();
        }
        if let Some(capabilities) = map.get("capabilities") {
            let items = capabilities
                .as_array()
                .ok_or_else(|| bad("capabilities", "must be a list of strings"))?;
            if items.len() > MAX_CAPABILITIES {
                return Err(bad(
                    "capabilities",
                    &format!("has {} entries (at most {MAX_CAPABILITIES})", items.len()),
                ));
            }
            for item in items {
                let capability = item
                    .as_str()
                    .filter(|c| !c.is_empty() && c.len() <= MAX_LABEL_LEN)
                    .ok_or_else(|| {
                        bad(
                            "capabilities",
                            &format!("entries must be strings of 1..={MAX_LABEL_LEN} bytes"),
                        )
                    })?;
                spec.capabilities.insert(capability.to_owned());
            }
        }
        if let Some(selector) = map.get("selector") {
            let entries = selector
                .as_object()
                .ok_or_else(|| bad("selector", "must be a mapping of label to value"))?;
            if entries.len() > MAX_LABELS {
                return Err(bad(
                    "selector",
                    &format!("has {} entries (at most {MAX_LABELS})", entries.len()),
                ));
            }
            for (key, value) in entries {
                let value = value.as_str().ok_or_else(|| {
                    bad("selector", &format!("value of {key:?} must be a string"))
                })?;
                if key.is_empty() || key.len() > MAX_LABEL_LEN || value.len() > MAX_LABEL_LEN {
                    return Err(bad(
                        "selector",
                        &format!("labels and values are 1..={MAX_LABEL_LEN} bytes"),
                    ));
                }
                spec.selector.insert(key.clone(), value.to_owned());
            }
        }
        if let Some(max) = map.get("max_iterations") {
            spec.max_iterations = max
                .as_u64()
                .ok_or_else(|| bad("max_iterations", "must be a whole number >= 0"))?;
        }
        if let Some(interval) = map.get("interval") {
            spec.interval_ms = parse_duration_ms(interval).map_err(|e| bad("interval", &e))?;
        }
        if let Some(timeout) = map.get("timeout") {
            spec.timeout_ms = parse_duration_ms(timeout).map_err(|e| bad("timeout", &e))?;
            if spec.timeout_ms > MAX_LOOP_ITERATION_TIMEOUT_MS {
                return Err(bad(
                    "timeout",
                    &format!(
                        "is longer than {} h",
                        MAX_LOOP_ITERATION_TIMEOUT_MS / 3_600_000
                    ),
                ));
            }
        }
        let runs_only_key = ["prompt", "max_iterations", "interval", "timeout"]
            .into_iter()
            .find(|key| map.contains_key(*key));
        if let (None, Some(key)) = (&spec.command, runs_only_key) {
            return Err(bad(key, "needs a `command` to run"));
        }
        Ok(spec)
    }
}

/// A duration: a whole number of seconds, or a string such as `500ms`, `30s`, `5m`, `2h`.
pub fn parse_duration_ms(value: &Value) -> Result<u64, String> {
    const EXPECTED: &str = "must be seconds or a duration such as 500ms, 30s, 5m, 2h";
    if let Some(seconds) = value.as_u64() {
        return seconds
            .checked_mul(1_000)
            .ok_or_else(|| EXPECTED.to_owned());
    }
    let text = value.as_str().ok_or_else(|| EXPECTED.to_owned())?.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let amount: u64 = digits
        .parse()
        .map_err(|_| format!("{EXPECTED} (got {text:?})"))?;
    let factor = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{EXPECTED} (got {text:?})")),
    };
    amount
        .checked_mul(factor)
        .ok_or_else(|| format!("{EXPECTED} (got {text:?})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_keys_are_read_and_unknown_keys_ignored() {
        let spec = LoopSpec::parse(
            "a",
            r#"{"command":"claude -p","prompt":"go","capabilities":["llm"],
               "selector":{"node":"n1"},"max_iterations":3,"interval":"2s","timeout":"5m",
               "team":"blue"}"#,
        )
        .unwrap();
        assert_eq!(spec.command.as_deref(), Some("claude -p"));
        assert_eq!(spec.prompt, "go");
        assert!(spec.capabilities.contains("llm"));
        assert_eq!(spec.selector["node"], "n1");
        assert_eq!(spec.max_iterations, 3);
        assert_eq!(spec.interval_ms, 2_000);
        assert_eq!(spec.timeout_ms, 300_000);
        assert_eq!(
            LoopSpec::parse("a", r#"{"exec":"x"}"#).unwrap(),
            LoopSpec::default()
        );
    }

    #[test]
    fn bad_documented_keys_are_refused_naming_the_key() {
        let cases = [
            (r#"{"command":7}"#, "`command` must be a string"),
            (r#"{"command":" "}"#, "`command` must not be empty"),
            (
                r#"{"command":"x","interval":"soon"}"#,
                "`interval` must be seconds",
            ),
            (r#"{"command":"x","timeout":"3d"}"#, "`timeout`"),
            (r#"{"command":"x","max_iterations":-1}"#, "`max_iterations`"),
            (r#"{"command":"x","capabilities":"llm"}"#, "`capabilities`"),
            (r#"{"command":"x","selector":{"a":1}}"#, "`selector`"),
            (r#"{"prompt":"hi"}"#, "`prompt` needs a `command`"),
        ];
        for (json, expected) in cases {
            let err = LoopSpec::parse("a", json).unwrap_err();
            assert!(err.message.contains(expected), "{json}: {}", err.message);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms(&Value::from(3)), Ok(3_000));
        assert_eq!(parse_duration_ms(&Value::from("250ms")), Ok(250));
        assert_eq!(parse_duration_ms(&Value::from("2h")), Ok(7_200_000));
        assert!(parse_duration_ms(&Value::from("1.5s")).is_err());
        assert!(parse_duration_ms(&Value::from(true)).is_err());
    }
}
