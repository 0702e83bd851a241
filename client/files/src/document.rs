//! Reading the TOML/YAML files users hand to `percyctl` (plans, definitions).
//!
//! TOML cannot have a list at the top level, so files are `[[tasks]]` tables there; YAML
//! files may be either a mapping (`tasks: [...]`) or just the list. Both end up as the same
//! Rust type.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A file format we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Yaml,
}

impl Format {
    /// By extension: `.toml`, `.yaml`, `.yml`.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Toml => "TOML",
            Format::Yaml => "YAML",
        })
    }
}

/// Why a document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot tell the format of {}: name it *.toml, *.yaml or *.yml", path.display())]
    UnknownFormat { path: PathBuf },
    #[error("invalid {format} in {origin}: {message}")]
    Syntax {
        origin: String,
        format: Format,
        message: String,
    },
}

/// Reads and parses a file, choosing the format by extension.
pub(crate) fn read_document<T: DeserializeOwned>(
    path: &Path,
    list_key: &str,
) -> Result<T, DocumentError> {
    let format = Format::from_path(path).ok_or_else(|| DocumentError::UnknownFormat {
        path: path.to_owned(),
    })?;
    let text = std::fs::read_to_string(path).map_err(|error| DocumentError::Read {
        path: path.to_owned(),
        error,
    })?;
    parse_document(&text, format, &path.display().to_string(), list_key)
}

/// Parses `text`. In YAML, a top-level list is taken as the value of `list_key`.
pub(crate) fn parse_document<T: DeserializeOwned>(
    text: &str,
    format: Format,
    origin: &str,
    list_key: &str,
) -> Result<T, DocumentError> {
    let syntax = |message: String| DocumentError::Syntax {
        origin: origin.to_owned(),
        format,
        message,
    };
    match format {
        Format::Toml => toml::from_str(text).map_err(|e| syntax(e.to_string().trim().to_owned())),
        Format::Yaml => {
            let value: yaml_serde::Value =
                yaml_serde::from_str(text).map_err(|e| syntax(e.to_string()))?;
            let value = match value {
                yaml_serde::Value::Sequence(items) => {
                    let mut map = yaml_serde::Mapping::new();
                    map.insert(list_key.into(), yaml_serde::Value::Sequence(items));
                    yaml_serde::Value::Mapping(map)
                }
                other => other,
            };
            yaml_serde::from_value(value).map_err(|e| syntax(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Doc {
        items: Vec<u32>,
    }

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(Format::from_path(Path::new("a.TOML")), Some(Format::Toml));
        assert_eq!(Format::from_path(Path::new("a.yml")), Some(Format::Yaml));
        assert_eq!(Format::from_path(Path::new("a.json")), None);
        assert_eq!(Format::from_path(Path::new("plan")), None);
    }

    #[test]
    fn yaml_lists_and_mappings_are_equivalent() {
        let list: Doc = parse_document("- 1\n- 2\n", Format::Yaml, "t", "items").unwrap();
        let map: Doc = parse_document("items: [1, 2]\n", Format::Yaml, "t", "items").unwrap();
        assert_eq!(list, map);
    }

    #[test]
    fn syntax_errors_name_the_origin() {
        let err = parse_document::<Doc>("items = [", Format::Toml, "plan.toml", "items")
            .unwrap_err()
            .to_string();
        assert!(err.contains("plan.toml"), "{err}");
    }

    #[test]
    fn unknown_extensions_are_refused_before_reading() {
        let err = read_document::<Doc>(Path::new("/nonexistent/plan.json"), "items").unwrap_err();
        assert!(matches!(err, DocumentError::UnknownFormat { .. }), "{err}");
        let err = read_document::<Doc>(Path::new("/nonexistent/plan.toml"), "items").unwrap_err();
        assert!(matches!(err, DocumentError::Read { .. }), "{err}");
    }
}
