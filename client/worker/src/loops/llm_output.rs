//! What an LLM CLI's JSON output says about an iteration: the final result text, whether it is
//! an error, token usage and cost. Understood formats:
//!
//! - Claude Code `--output-format stream-json` (one JSON object per line; the last one of
//!   `"type": "result"` carries `result`, `is_error`, `usage`, `total_cost_usd`) and
//!   `--output-format json` (that one result object alone);
//! - `codex exec --json` (JSON lines: `item.completed` with an `agent_message` item holds the
//!   answer, `turn.completed` the usage, `turn.failed` / `error` an error).
//!
//! Anything else is plain output: no result, no usage.

use serde_json::Value;

/// The parts of a result the iteration record keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LlmResult {
    pub result_text: Option<String>,
    pub is_error: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Millionths of a US dollar.
    pub cost_micros: u64,
}

/// Reads `stdout` (the whole output or its tail) line by line; `None` when no line is a JSON
/// result of a known format.
pub fn parse_llm_output(stdout: &str) -> Option<LlmResult> {
    let mut found: Option<LlmResult> = None;
    for line in stdout.lines() {
        let line = line.trim();
        if !line.starts_with('{') {
            continue;
        }
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        match value.get("type").and_then(Value::as_str) {
            Some("result") => {
                let usage = value.get("usage");
                found = Some(LlmResult {
                    result_text: value
                        .get("result")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .or_else(|| found.as_ref().and_then(|f| f.result_text.clone())),
                    is_error: value
                        .get("is_error")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                        || value
                            .get("subtype")
                            .and_then(Value::as_str)
                            .is_some_and(|s| s.starts_with("error")),
                    input_tokens: number(usage, "input_tokens"),
                    output_tokens: number(usage, "output_tokens"),
                    cost_micros: value
                        .get("total_cost_usd")
                        .or_else(|| value.get("cost_usd"))
                        .and_then(Value::as_f64)
                        .map_or(0, dollars_to_micros),
                });
            }
            Some("item.completed") => {
                let item = value.get("item");
                let is_message = item
                    .and_then(|i| i.get("type"))
                    .and_then(Value::as_str)
                    .is_some_and(|t| t == "agent_message" || t == "assistant_message");
                if let (true, Some(text)) = (
                    is_message,
                    item.and_then(|i| i.get("text")).and_then(Value::as_str),
                ) {
                    found.get_or_insert_with(LlmResult::default).result_text =
                        Some(text.to_owned());
                }
            }
            Some("turn.completed") => {
                let usage = value.get("usage");
                let result = found.get_or_insert_with(LlmResult::default);
                result.input_tokens += number(usage, "input_tokens");
                result.output_tokens += number(usage, "output_tokens");
            }
            Some("turn.failed") | Some("error") => {
                let result = found.get_or_insert_with(LlmResult::default);
                result.is_error = true;
                let message = value
                    .get("message")
                    .or_else(|| value.get("error").and_then(|e| e.get("message")))
                    .and_then(Value::as_str);
                if let (None, Some(message)) = (&result.result_text, message) {
                    result.result_text = Some(message.to_owned());
                }
            }
            _ => {}
        }
    }
    found
}

fn number(usage: Option<&Value>, key: &str) -> u64 {
    usage
        .and_then(|u| u.get(key))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn dollars_to_micros(dollars: f64) -> u64 {
    if dollars.is_finite() && dollars > 0.0 {
        (dollars * 1_000_000.0).round() as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_stream_json_result_line() {
        let out = concat!(
            r#"{"type":"system","subtype":"init","session_id":"s"}"#,
            "\n",
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"hi"}]}}"#,
            "\n",
            r#"{"type":"result","subtype":"success","is_error":false,"result":"done: 3 files","total_cost_usd":0.0123,"usage":{"input_tokens":120,"output_tokens":45}}"#,
            "\n"
        );
        let result = parse_llm_output(out).unwrap();
        assert_eq!(result.result_text.as_deref(), Some("done: 3 files"));
        assert!(!result.is_error);
        assert_eq!((result.input_tokens, result.output_tokens), (120, 45));
        assert_eq!(result.cost_micros, 12_300);
    }

    #[test]
    fn claude_json_error_result() {
        let out = r#"{"type":"result","subtype":"error_max_turns","is_error":true,"result":"too long","usage":{}}"#;
        let result = parse_llm_output(out).unwrap();
        assert!(result.is_error);
        assert_eq!(result.result_text.as_deref(), Some("too long"));
    }

    #[test]
    fn codex_exec_json_lines() {
        let out = concat!(
            r#"{"type":"thread.started","thread_id":"t"}"#,
            "\n",
            r#"{"type":"item.completed","item":{"id":"i","type":"agent_message","text":"fixed it"}}"#,
            "\n",
            r#"{"type":"turn.completed","usage":{"input_tokens":10,"cached_input_tokens":0,"output_tokens":7}}"#,
            "\n"
        );
        let result = parse_llm_output(out).unwrap();
        assert_eq!(result.result_text.as_deref(), Some("fixed it"));
        assert_eq!((result.input_tokens, result.output_tokens), (10, 7));
        assert!(!result.is_error);
    }

    #[test]
    fn plain_output_has_no_result() {
        assert_eq!(parse_llm_output("hello\n{not json\n"), None);
    }
}
