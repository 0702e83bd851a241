//! Canonical JSON for definition specs, and the content address derived from it.
//!
//! The key order is sorted here explicitly instead of relying on `serde_json::Map` being a
//! `BTreeMap`: another crate in the workspace may enable serde_json's `preserve_order`
//! feature, which would silently make the "canonical" form depend on the input's key order
//! (and so change definition ids).

use sha2::{Digest, Sha256};

use crate::error::CommandError;
use crate::limits::MAX_DEFINITION_SPEC_LEN;

/// Largest raw spec accepted before parsing: whitespace may make the raw text larger than its
/// canonical form, but not unboundedly so.
pub const MAX_RAW_DEFINITION_SPEC_LEN: usize = 4 * MAX_DEFINITION_SPEC_LEN;

/// A spec in canonical form with its content address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalSpec {
    /// Sorted object keys, no insignificant whitespace.
    pub json: String,
    /// Hex SHA-256 of `json`.
    pub id: String,
}

/// Parses `spec_json` and returns its canonical form and id. Invalid JSON, or a spec whose
/// canonical form exceeds [`MAX_DEFINITION_SPEC_LEN`], is an `InvalidArgument`.
pub fn canonical_definition_spec(
    name: &str,
    spec_json: &str,
) -> Result<CanonicalSpec, CommandError> {
    if spec_json.len() > MAX_RAW_DEFINITION_SPEC_LEN {
        return Err(CommandError::invalid(format!(
            "definition {name:?}: spec is {} bytes long (at most {MAX_RAW_DEFINITION_SPEC_LEN})",
            spec_json.len()
        )));
    }
    let value: serde_json::Value = serde_json::from_str(spec_json).map_err(|e| {
        CommandError::invalid(format!("definition {name:?}: spec is not valid JSON: {e}"))
    })?;
    let mut json = String::with_capacity(spec_json.len());
    write_canonical(&value, &mut json);
    if json.len() > MAX_DEFINITION_SPEC_LEN {
        return Err(CommandError::invalid(format!(
            "definition {name:?}: canonical spec is {} bytes long (at most {MAX_DEFINITION_SPEC_LEN})",
            json.len()
        )));
    }
    let id = hex::encode(Sha256::digest(json.as_bytes()));
    Ok(CanonicalSpec { json, id })
}

/// Recursion is bounded by serde_json's own nesting limit (128) applied while parsing.
fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &serde_json::Value, out: &mut String) {
    // Displaying a JSON scalar cannot fail and has no whitespace to normalise.
    out.push_str(&value.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_keys_and_strips_whitespace() {
        let a =
            canonical_definition_spec("d", r#"{ "b": 1, "a": {"z": [1, 2], "y": "x"} }"#).unwrap();
        let b = canonical_definition_spec("d", r#"{"a":{"y":"x","z":[1,2]},"b":1}"#).unwrap();
        assert_eq!(a.json, r#"{"a":{"y":"x","z":[1,2]},"b":1}"#);
        assert_eq!(a, b);
        assert_eq!(a.id.len(), 64);
        let c = canonical_definition_spec("d", r#"{"a":{"y":"x","z":[2,1]},"b":1}"#).unwrap();
        assert_ne!(a.id, c.id);
    }

    #[test]
    fn invalid_json_is_refused() {
        let err = canonical_definition_spec("d", "{not json").unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::InvalidArgument);
        assert!(err.message.contains("not valid JSON"));
    }

    #[test]
    fn escapes_survive() {
        let a = canonical_definition_spec("d", r#"{"k\"ey": "line\nbreak"}"#).unwrap();
        assert_eq!(a.json, r#"{"k\"ey":"line\nbreak"}"#);
    }
}
