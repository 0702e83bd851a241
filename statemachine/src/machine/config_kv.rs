//! The `cluster` config bucket: put and delete with compare-and-set on the key's revision.
//!
//! `expected_revision`: `None` = unconditional, `Some(0)` = only if the key is absent,
//! `Some(r)` = only if the key exists at revision `r`.

use crate::config::ConfigEntry;
use crate::error::CommandError;
use crate::response::{Outcome, Response};

use super::ctx::Ctx;
use super::StateMachine;

impl StateMachine {
    pub(super) fn put_config(
        &mut self,
        ctx: &mut Ctx,
        key: String,
        value: Vec<u8>,
        expected_revision: Option<u64>,
    ) -> Response {
        let current = self.config.get(&key);
        check_expected(&key, current, expected_revision)?;
        let entry = match current {
            Some(old) => ConfigEntry {
                key: key.clone(),
                value,
                create_revision: old.create_revision,
                revision: ctx.revision,
                version: old.version + 1,
            },
            None => ConfigEntry {
                key: key.clone(),
                value,
                create_revision: ctx.revision,
                revision: ctx.revision,
                version: 1,
            },
        };
        ctx.config_changed(&key, Some(&entry));
        self.config.insert(key, entry.clone());
        Ok(Outcome::ConfigPut(entry))
    }

    pub(super) fn delete_config(
        &mut self,
        ctx: &mut Ctx,
        key: String,
        expected_revision: Option<u64>,
    ) -> Response {
        let current = self.config.get(&key);
        if current.is_none() {
            return Err(CommandError::not_found(format!(
                "config key {key} not found"
            )));
        }
        check_expected(&key, current, expected_revision)?;
        self.config.remove(&key);
        ctx.config_changed(&key, None);
        Ok(Outcome::ConfigDeleted {
            key,
            revision: ctx.revision,
        })
    }
}

fn check_expected(
    key: &str,
    current: Option<&ConfigEntry>,
    expected_revision: Option<u64>,
) -> Result<(), CommandError> {
    let Some(expected) = expected_revision else {
        return Ok(());
    };
    let actual = current.map_or(0, |entry| entry.revision);
    if actual == expected {
        return Ok(());
    }
    Err(CommandError::precondition(match (current, expected) {
        (Some(entry), 0) => format!(
            "config key {key} already exists (at revision {})",
            entry.revision
        ),
        (Some(entry), _) => format!(
            "config key {key} is at revision {}, not the expected {expected}",
            entry.revision
        ),
        (None, _) => format!("config key {key} does not exist (expected revision {expected})"),
    }))
}
