//! Definition manifests (`percyctl apply -f agents.yaml`): declarative agent definitions.
//!
//! ```yaml
//! - name: reviewer
//!   desired: running        # or stopped; absent keeps the current state
//!   spec:                   # any mapping; the server hashes its canonical JSON
//!     exec: claude -p "$PERCY_TASK_TITLE"
//!     capabilities: [review]
//! ```
//!
//! TOML uses `[[definitions]]` tables with the same keys.

use std::collections::HashSet;
use std::path::Path;

use percy_proto::v1::{DefinitionSpec, DesiredState};
use serde::Deserialize;

use crate::document::{read_document, DocumentError};

const DEFINITIONS_KEY: &str = "definitions";

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub definitions: Vec<ManifestEntry>,
}

/// One definition of a manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    pub name: String,
    pub spec: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub desired: Option<Desired>,
}

/// The desired state as written in a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Running,
    Stopped,
}

impl From<Desired> for DesiredState {
    fn from(desired: Desired) -> Self {
        match desired {
            Desired::Running => DesiredState::Running,
            Desired::Stopped => DesiredState::Stopped,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error("the manifest has no definitions")]
    Empty,
    #[error("definition {0:?} appears more than once")]
    DuplicateName(String),
    #[error("a definition has an empty name")]
    EmptyName,
}

impl Manifest {
    pub fn from_path(path: &Path) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = read_document(path, DEFINITIONS_KEY)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Parses manifest text in the given format and checks it: what `from_path` does after
    /// reading the file (the tests and the fuzz target `manifest` call it directly).
    pub fn parse(text: &str, format: crate::document::Format) -> Result<Manifest, ManifestError> {
        let manifest: Manifest =
            crate::document::parse_document(text, format, "manifest", DEFINITIONS_KEY)?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        if self.definitions.is_empty() {
            return Err(ManifestError::Empty);
        }
        let mut seen = HashSet::new();
        for entry in &self.definitions {
            if entry.name.trim().is_empty() {
                return Err(ManifestError::EmptyName);
            }
            if !seen.insert(entry.name.as_str()) {
                return Err(ManifestError::DuplicateName(entry.name.clone()));
            }
        }
        Ok(())
    }

    /// The definitions as the API takes them (spec as JSON text).
    pub fn definition_specs(&self) -> Vec<DefinitionSpec> {
        self.definitions
            .iter()
            .map(|entry| DefinitionSpec {
                name: entry.name.clone(),
                spec_json: serde_json::Value::Object(entry.spec.clone()).to_string(),
                desired: entry
                    .desired
                    .map_or(DesiredState::Unspecified, DesiredState::from)
                    as i32,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Format;

    #[test]
    fn yaml_and_toml_manifests_agree() {
        let yaml = "- name: reviewer\n  desired: stopped\n  spec: {exec: review.sh, slots: 2}\n";
        let toml = "[[definitions]]\nname = \"reviewer\"\ndesired = \"stopped\"\n\
                    [definitions.spec]\nexec = \"review.sh\"\nslots = 2\n";
        let a = Manifest::parse(yaml, Format::Yaml).unwrap();
        let b = Manifest::parse(toml, Format::Toml).unwrap();
        assert_eq!(a, b);
        let specs = a.definition_specs();
        assert_eq!(specs[0].desired, DesiredState::Stopped as i32);
        let spec: serde_json::Value = serde_json::from_str(&specs[0].spec_json).unwrap();
        assert_eq!(spec["slots"], 2);
    }

    #[test]
    fn absent_desired_state_is_unspecified() {
        let m = Manifest::parse("- {name: a, spec: {}}\n", Format::Yaml).unwrap();
        assert_eq!(
            m.definition_specs()[0].desired,
            DesiredState::Unspecified as i32
        );
    }

    #[test]
    fn bad_manifests_are_rejected() {
        let cases = [
            ("definitions: []\n", "no definitions"),
            (
                "- {name: a, spec: {}}\n- {name: a, spec: {}}\n",
                "more than once",
            ),
            ("- {name: ' ', spec: {}}\n", "empty name"),
            ("- {name: a, spec: [1]}\n", "map"),
            ("- {name: a, spec: {}, desired: paused}\n", "paused"),
        ];
        for (text, expected) in cases {
            let err = Manifest::parse(text, Format::Yaml).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
