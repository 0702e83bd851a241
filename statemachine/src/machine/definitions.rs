//! Declarative definitions: content-addressed specs with a bounded history and a desired state.

use crate::canonical::{canonical_definition_spec, CanonicalSpec};
use crate::definition::{
    ApplySummary, Definition, DefinitionRevision, DefinitionSpec, DesiredState,
};
use crate::error::CommandError;
use crate::limits::MAX_DEFINITION_REVISIONS;
use crate::response::{Outcome, Response};

use super::ctx::Ctx;
use super::StateMachine;

impl StateMachine {
    /// Each definition is created, updated (a new spec revision and/or a new desired state) or
    /// unchanged; unchanged ones keep their revision and emit no event. Every spec is parsed
    /// before anything changes, so one bad spec refuses the whole apply.
    pub(super) fn apply_definitions(
        &mut self,
        ctx: &mut Ctx,
        specs: Vec<DefinitionSpec>,
    ) -> Response {
        let canonical: Vec<CanonicalSpec> = specs
            .iter()
            .map(|spec| canonical_definition_spec(&spec.name, &spec.spec_json))
            .collect::<Result<_, CommandError>>()?;
        let mut summary = ApplySummary::default();
        let mut restarted_names = Vec::new();
        for (spec, canonical) in specs.into_iter().zip(canonical) {
            let new_revision = DefinitionRevision {
                id: canonical.id,
                spec_json: canonical.json,
                revision: ctx.revision,
                applied_at_ms: ctx.now_ms,
            };
            match self.definitions.get_mut(&spec.name) {
                None => {
                    let definition = Definition {
                        name: spec.name.clone(),
                        history: vec![new_revision],
                        desired: spec.desired.unwrap_or(DesiredState::Running),
                        create_revision: ctx.revision,
                        revision: ctx.revision,
                    };
                    ctx.definition_changed(&definition);
                    self.definitions.insert(spec.name.clone(), definition);
                    summary.created.push(spec.name);
                }
                Some(definition) => {
                    let spec_changed = definition
                        .history
                        .last()
                        .is_none_or(|current| current.id != new_revision.id);
                    let desired_changed = spec
                        .desired
                        .is_some_and(|desired| desired != definition.desired);
                    if !spec_changed && !desired_changed {
                        summary.unchanged.push(spec.name);
                        continue;
                    }
                    if spec_changed {
                        definition.history.push(new_revision);
                        let excess = definition
                            .history
                            .len()
                            .saturating_sub(MAX_DEFINITION_REVISIONS);
                        definition.history.drain(..excess);
                    }
                    let restarted = spec.desired == Some(DesiredState::Running)
                        && definition.desired == DesiredState::Stopped;
                    if let Some(desired) = spec.desired {
                        definition.desired = desired;
                    }
                    if restarted {
                        restarted_names.push(spec.name.clone());
                    }
                    definition.revision = ctx.revision;
                    ctx.definition_changed(definition);
                    summary.updated.push(spec.name);
                }
            }
        }
        for name in restarted_names {
            self.run_restarted(ctx, &name);
        }
        Ok(Outcome::DefinitionsApplied(summary))
    }

    /// Setting the state a definition already has changes nothing (no event).
    pub(super) fn set_definition_state(
        &mut self,
        ctx: &mut Ctx,
        name: &str,
        desired: DesiredState,
    ) -> Response {
        let definition = self
            .definitions
            .get_mut(name)
            .ok_or_else(|| CommandError::not_found(format!("definition {name} not found")))?;
        if definition.desired != desired {
            definition.desired = desired;
            definition.revision = ctx.revision;
            ctx.definition_changed(definition);
            let definition = definition.clone();
            if desired == DesiredState::Running {
                self.run_restarted(ctx, name);
            }
            return Ok(Outcome::DefinitionUpdated(definition));
        }
        Ok(Outcome::DefinitionUpdated(definition.clone()))
    }
}
