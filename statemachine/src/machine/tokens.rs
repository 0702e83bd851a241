//! The token table and the `CreateToken` / `RevokeToken` handlers.
//!
//! A revoked token is deleted: from the next apply on, no node finds its hash, so every node
//! refuses it as soon as it has applied the revocation. Ids are never reused
//! (`last_id` survives snapshots), which also tells a bootstrap whether any token was ever made.

use std::collections::BTreeMap;

use crate::error::CommandError;
use crate::limits::MAX_TOKENS;
use crate::response::{Outcome, Response};
use crate::token::{Role, Token, TokenId, TokenSpec};

use super::ctx::Ctx;
use super::StateMachine;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TokenTable {
    by_id: BTreeMap<TokenId, Token>,
    by_hash: BTreeMap<[u8; 32], TokenId>,
    last_id: TokenId,
}

impl TokenTable {
    pub fn from_parts(tokens: Vec<Token>, last_id: TokenId) -> Result<Self, String> {
        let mut table = TokenTable {
            last_id,
            ..TokenTable::default()
        };
        for token in tokens {
            if token.id == 0 || token.id > last_id {
                return Err(format!("token {} is beyond the last token id", token.id));
            }
            if table
                .by_hash
                .insert(token.secret_sha256, token.id)
                .is_some()
            {
                return Err("two tokens share a secret hash".to_string());
            }
            if table.by_id.insert(token.id, token).is_some() {
                return Err("a token appears twice".to_string());
            }
        }
        Ok(table)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Token> {
        self.by_id.values()
    }

    pub fn last_id(&self) -> TokenId {
        self.last_id
    }

    pub fn by_hash(&self, hash: &[u8; 32]) -> Option<&Token> {
        self.by_hash.get(hash).and_then(|id| self.by_id.get(id))
    }

    pub fn get(&self, id: TokenId) -> Option<&Token> {
        self.by_id.get(&id)
    }

    /// Both indexes name the same tokens.
    pub fn check(&self) -> Result<(), String> {
        if self.by_id.len() != self.by_hash.len() {
            return Err("token indexes differ in size".to_string());
        }
        for (hash, id) in &self.by_hash {
            match self.by_id.get(id) {
                Some(token) if &token.secret_sha256 == hash && token.id <= self.last_id => {}
                _ => return Err(format!("token {id} is indexed wrongly")),
            }
        }
        Ok(())
    }
}

impl StateMachine {
    /// `bootstrap`: only if no token was ever created (the first admin token of a cluster,
    /// proposed by the bootstrapping node; a second proposal is refused, not applied twice).
    pub(super) fn create_token(
        &mut self,
        ctx: &mut Ctx,
        spec: TokenSpec,
        bootstrap: bool,
    ) -> Response {
        if bootstrap && self.tokens.last_id > 0 {
            return Err(CommandError::precondition(
                "this cluster already has tokens: the bootstrap admin token is made only once",
            ));
        }
        if self.tokens.by_id.len() >= MAX_TOKENS {
            return Err(CommandError::exhausted(format!(
                "there are {MAX_TOKENS} tokens already: revoke some first"
            )));
        }
        if self.tokens.by_hash.contains_key(&spec.secret_sha256) {
            return Err(CommandError::already_exists(
                "a token with this secret exists already",
            ));
        }
        let id = self.tokens.last_id + 1;
        let name = if !spec.name.is_empty() {
            spec.name
        } else if let (Role::Agent, Some(agent)) = (spec.role, &spec.agent) {
            agent.clone()
        } else {
            format!("{}-{id}", spec.role)
        };
        let token = Token {
            id,
            role: spec.role,
            agent: spec.agent,
            name,
            secret_sha256: spec.secret_sha256,
            created_revision: ctx.revision,
            created_ms: ctx.now_ms,
        };
        self.tokens.last_id = id;
        self.tokens.by_hash.insert(token.secret_sha256, id);
        self.tokens.by_id.insert(id, token.clone());
        Ok(Outcome::TokenCreated(token))
    }

    pub(super) fn revoke_token(&mut self, token_id: TokenId) -> Response {
        let Some(token) = self.tokens.by_id.remove(&token_id) else {
            return Err(CommandError::not_found(format!(
                "no token with id {token_id}"
            )));
        };
        self.tokens.by_hash.remove(&token.secret_sha256);
        Ok(Outcome::TokenRevoked(token))
    }
}
