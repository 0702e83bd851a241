//! Tokens: create, find by hash, revoke, bootstrap only once, snapshot round trip.

use super::Harness;
use crate::command::Op;
use crate::error::ErrorKind;
use crate::response::Outcome;
use crate::token::{Role, Token, TokenSpec};
use crate::StateMachine;

fn spec(role: Role, agent: Option<&str>, secret: u8) -> TokenSpec {
    TokenSpec {
        role,
        agent: agent.map(str::to_owned),
        name: String::new(),
        secret_sha256: [secret; 32],
    }
}

fn create(h: &mut Harness, spec: TokenSpec, bootstrap: bool) -> Token {
    match h.ok(Op::CreateToken { spec, bootstrap }) {
        Outcome::TokenCreated(token) => token,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_token_is_found_by_its_hash_until_it_is_revoked() {
    let mut h = Harness::new();
    let admin = create(&mut h, spec(Role::Admin, None, 1), true);
    assert_eq!((admin.id, admin.name.as_str()), (1, "admin-1"));
    let agent = create(&mut h, spec(Role::Agent, Some("builder"), 2), false);
    assert_eq!((agent.id, agent.name.as_str()), (2, "builder"));
    assert_eq!(h.machine.token_by_hash(&[2; 32]), Some(&agent));
    assert_eq!(h.machine.tokens().len(), 2);
    h.ok(Op::RevokeToken { token_id: agent.id });
    assert_eq!(h.machine.token_by_hash(&[2; 32]), None);
    h.err_kind(
        Op::RevokeToken { token_id: agent.id },
        ErrorKind::NotFound,
        "no token",
    );
    // Ids are never reused, even after a revocation.
    let next = create(&mut h, spec(Role::Reader, None, 3), false);
    assert_eq!(next.id, 3);
}

#[test]
fn the_bootstrap_token_is_made_only_in_a_cluster_that_never_had_one() {
    let mut h = Harness::new();
    assert!(!h.machine.has_ever_had_tokens());
    let first = create(&mut h, spec(Role::Admin, None, 1), true);
    h.err_kind(
        Op::CreateToken {
            spec: spec(Role::Admin, None, 9),
            bootstrap: true,
        },
        ErrorKind::FailedPrecondition,
        "only once",
    );
    // Still refused after every token is gone: a retried bootstrap must not mint a new admin.
    h.ok(Op::RevokeToken { token_id: first.id });
    h.err_kind(
        Op::CreateToken {
            spec: spec(Role::Admin, None, 9),
            bootstrap: true,
        },
        ErrorKind::FailedPrecondition,
        "only once",
    );
}

#[test]
fn bad_token_specs_are_refused() {
    let mut h = Harness::new();
    h.err_kind(
        Op::CreateToken {
            spec: spec(Role::Agent, None, 1),
            bootstrap: false,
        },
        ErrorKind::InvalidArgument,
        "agent name",
    );
    h.err_kind(
        Op::CreateToken {
            spec: spec(Role::Reader, Some("builder"), 1),
            bootstrap: false,
        },
        ErrorKind::InvalidArgument,
        "only agent tokens",
    );
    create(&mut h, spec(Role::Reader, None, 1), false);
    h.err_kind(
        Op::CreateToken {
            spec: spec(Role::Operator, None, 1),
            bootstrap: false,
        },
        ErrorKind::AlreadyExists,
        "secret",
    );
}

#[test]
fn tokens_survive_a_snapshot_and_old_snapshots_restore_without_tokens() {
    let mut h = Harness::new();
    create(&mut h, spec(Role::Admin, None, 1), true);
    let revoked = create(&mut h, spec(Role::Reader, None, 2), false);
    h.ok(Op::RevokeToken {
        token_id: revoked.id,
    });
    let restored = StateMachine::restore(&h.machine.snapshot()).unwrap();
    assert_eq!(restored, h.machine);
    assert!(restored.has_ever_had_tokens());
    // A snapshot written before tokens existed: the image alone.
    let old = crate::codec::encode(&super::super::image::StateImage::of(&h.machine));
    let restored = StateMachine::restore(&old).unwrap();
    assert!(restored.tokens().is_empty());
    assert!(!restored.has_ever_had_tokens());
}
