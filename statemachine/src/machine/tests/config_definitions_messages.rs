use super::*;
use crate::definition::{DefinitionSpec, DesiredState};
use crate::event::EntityKind;
use crate::limits::{
    MAILBOX_CAPACITY, MAX_CONFIG_VALUE_LEN, MAX_DEFINITION_REVISIONS, MAX_MESSAGE_LEN,
};
use crate::message::Recipient;

fn put(key: &str, value: &str, expected_revision: Option<u64>) -> Op {
    Op::PutConfig {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        expected_revision,
    }
}

#[test]
fn config_put_counts_versions_and_cas_compares_revisions() {
    let mut h = Harness::new();
    let rev1 = h.next_revision();
    let Outcome::ConfigPut(entry) = h.ok(put("cluster/x", "1", Some(0))) else {
        panic!()
    };
    assert_eq!(
        (entry.version, entry.revision, entry.create_revision),
        (1, rev1, rev1)
    );
    h.err_kind(
        put("cluster/x", "2", Some(0)),
        ErrorKind::FailedPrecondition,
        "already exists",
    );
    h.err_kind(
        put("cluster/x", "2", Some(rev1 + 7)),
        ErrorKind::FailedPrecondition,
        &format!("at revision {rev1}"),
    );
    let rev2 = h.next_revision();
    let Outcome::ConfigPut(entry) = h.ok(put("cluster/x", "2", Some(rev1))) else {
        panic!()
    };
    assert_eq!(
        (entry.version, entry.revision, entry.create_revision),
        (2, rev2, rev1)
    );
    h.ok(put("cluster/x", "3", None));
    assert_eq!(h.machine.config("cluster/x").unwrap().version, 3);
    h.err_kind(
        put("absent", "v", Some(5)),
        ErrorKind::FailedPrecondition,
        "does not exist",
    );
    h.err_kind(
        Op::PutConfig {
            key: "big".into(),
            value: vec![0; MAX_CONFIG_VALUE_LEN + 1],
            expected_revision: None,
        },
        ErrorKind::InvalidArgument,
        "config value",
    );
}

#[test]
fn config_delete_and_range() {
    let mut h = Harness::new();
    h.ok(put("a/1", "x", None));
    h.ok(put("a/2", "x", None));
    h.ok(put("b/1", "x", None));
    let keys: Vec<&str> = h
        .machine
        .config_range("a/")
        .iter()
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(keys, ["a/1", "a/2"]);
    assert_eq!(h.machine.config_range("").len(), 3);
    h.err_kind(
        Op::DeleteConfig {
            key: "nope".into(),
            expected_revision: None,
        },
        ErrorKind::NotFound,
        "nope",
    );
    h.err_kind(
        Op::DeleteConfig {
            key: "a/1".into(),
            expected_revision: Some(99),
        },
        ErrorKind::FailedPrecondition,
        "is at revision 1, not the expected 99",
    );
    let current = h.machine.config("a/1").unwrap().revision;
    let applied = h.apply(Op::DeleteConfig {
        key: "a/1".into(),
        expected_revision: Some(current),
    });
    assert!(matches!(applied.response, Ok(Outcome::ConfigDeleted { ref key, .. }) if key == "a/1"));
    assert_eq!(applied.events.len(), 1);
    assert_eq!(applied.events[0].kind, EntityKind::Config);
    assert_eq!(applied.events[0].value, None);
    assert!(h.machine.config("a/1").is_none());
}

fn definition(name: &str, spec_json: &str, desired: Option<DesiredState>) -> DefinitionSpec {
    DefinitionSpec {
        name: name.into(),
        spec_json: spec_json.into(),
        desired,
    }
}

#[test]
fn definitions_are_created_updated_or_unchanged() {
    let mut h = Harness::new();
    let applied = h.apply(Op::ApplyDefinitions {
        definitions: vec![definition("builder", r#"{"b": 2, "a": 1}"#, None)],
    });
    let Ok(Outcome::DefinitionsApplied(summary)) = applied.response else {
        panic!()
    };
    assert_eq!(summary.created, ["builder"]);
    assert_eq!(applied.events.len(), 1);
    let created = h.machine.definition("builder").unwrap().clone();
    assert_eq!(created.desired, DesiredState::Running);
    assert_eq!(created.history[0].spec_json, r#"{"a":1,"b":2}"#);
    assert_eq!(created.history[0].id.len(), 64);

    // Same spec spelled differently: unchanged, no event, no revision bump.
    let applied = h.apply(Op::ApplyDefinitions {
        definitions: vec![definition("builder", "{\"a\":1,\n \"b\":2}", None)],
    });
    let Ok(Outcome::DefinitionsApplied(summary)) = applied.response else {
        panic!()
    };
    assert_eq!(summary.unchanged, ["builder"]);
    assert!(applied.events.is_empty());
    assert_eq!(h.machine.definition("builder").unwrap(), &created);

    let Outcome::DefinitionsApplied(summary) = h.ok(Op::ApplyDefinitions {
        definitions: vec![
            definition("builder", r#"{"a":1,"b":3}"#, Some(DesiredState::Stopped)),
            definition("reviewer", "[1]", None),
        ],
    }) else {
        panic!()
    };
    assert_eq!(summary.updated, ["builder"]);
    assert_eq!(summary.created, ["reviewer"]);
    let updated = h.machine.definition("builder").unwrap();
    assert_eq!(updated.history.len(), 2);
    assert_eq!(updated.desired, DesiredState::Stopped);
    assert_eq!(updated.revision, h.revision);
    assert_ne!(updated.history[0].id, updated.history[1].id);

    // Invalid JSON anywhere refuses the whole apply.
    h.err_kind(
        Op::ApplyDefinitions {
            definitions: vec![
                definition("new", "{}", None),
                definition("bad", "{oops", None),
            ],
        },
        ErrorKind::InvalidArgument,
        "not valid JSON",
    );
    assert!(h.machine.definition("new").is_none());
}

#[test]
fn definition_history_is_capped() {
    let mut h = Harness::new();
    for i in 0..MAX_DEFINITION_REVISIONS + 3 {
        h.ok(Op::ApplyDefinitions {
            definitions: vec![definition("d", &format!("{{\"v\":{i}}}"), None)],
        });
    }
    let d = h.machine.definition("d").unwrap();
    assert_eq!(d.history.len(), MAX_DEFINITION_REVISIONS);
    assert_eq!(
        d.history.last().unwrap().spec_json,
        format!("{{\"v\":{}}}", MAX_DEFINITION_REVISIONS + 2)
    );
    assert_eq!(d.history[0].spec_json, "{\"v\":3}");
}

#[test]
fn set_definition_state() {
    let mut h = Harness::new();
    h.err_kind(
        Op::SetDefinitionState {
            name: "d".into(),
            desired: DesiredState::Stopped,
        },
        ErrorKind::NotFound,
        "definition d",
    );
    h.ok(Op::ApplyDefinitions {
        definitions: vec![definition("d", "{}", None)],
    });
    let applied = h.apply(Op::SetDefinitionState {
        name: "d".into(),
        desired: DesiredState::Stopped,
    });
    assert!(
        matches!(applied.response, Ok(Outcome::DefinitionUpdated(ref d)) if d.desired == DesiredState::Stopped)
    );
    assert_eq!(applied.events.len(), 1);
    let again = h.apply(Op::SetDefinitionState {
        name: "d".into(),
        desired: DesiredState::Stopped,
    });
    assert!(again.events.is_empty());
}

fn send(to: Recipient, body: &str) -> Op {
    Op::SendMessage {
        from: "operator".into(),
        to,
        body: body.into(),
    }
}

#[test]
fn messages_go_to_existing_agents_or_broadcast() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    h.err_kind(
        send(Recipient::Agent(999), "hi"),
        ErrorKind::NotFound,
        "agent 999",
    );
    h.err_kind(
        send(Recipient::Broadcast, &"x".repeat(MAX_MESSAGE_LEN + 1)),
        ErrorKind::InvalidArgument,
        "message body",
    );
    let rev = h.next_revision();
    let applied = h.apply(send(Recipient::Agent(a), "hello"));
    let Ok(Outcome::MessageSent { message, dropped }) = applied.response else {
        panic!()
    };
    assert_eq!((message.id, dropped), (rev, 0));
    assert_eq!(applied.events[0].key, format!("{a}/{rev}"));
    let b_rev = h.next_revision();
    let applied = h.apply(send(Recipient::Broadcast, "all"));
    assert_eq!(applied.events[0].key, format!("*/{b_rev}"));
    let (messages, dropped) = h.machine.messages(&Recipient::Agent(a), 0);
    assert_eq!(messages.len(), 1);
    assert_eq!(dropped, 0);
    assert!(h.machine.messages(&Recipient::Agent(a), rev).0.is_empty());
}

#[test]
fn a_full_mailbox_drops_the_oldest_and_counts() {
    let mut h = Harness::new();
    let mut first_ids = Vec::new();
    for i in 0..MAILBOX_CAPACITY {
        first_ids.push(h.next_revision());
        h.ok(send(Recipient::Broadcast, &format!("m{i}")));
    }
    let applied = h.apply(send(Recipient::Broadcast, "one more"));
    let Ok(Outcome::MessageSent { dropped, .. }) = applied.response else {
        panic!()
    };
    assert_eq!(dropped, 1);
    assert_eq!(applied.events[0].key, format!("*/{}", first_ids[0]));
    assert_eq!(applied.events[0].value, None);
    let (messages, total_dropped) = h.machine.messages(&Recipient::Broadcast, 0);
    assert_eq!(messages.len(), MAILBOX_CAPACITY);
    assert_eq!(total_dropped, 1);
    assert_eq!(messages[0].body, "m1");
    assert_eq!(messages.last().unwrap().body, "one more");
    let after: Vec<&str> = h
        .machine
        .messages(&Recipient::Broadcast, first_ids[MAILBOX_CAPACITY - 2])
        .0
        .iter()
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(
        after,
        [format!("m{}", MAILBOX_CAPACITY - 1).as_str(), "one more"]
    );
}

/// A listing page continues after the previous page's last key, within the prefix; a token
/// before the prefix starts at the prefix, one past it ends the listing.
#[test]
fn config_pages_continue_after_a_key_within_the_prefix() {
    let mut h = Harness::new();
    for key in ["a/1", "a/2", "a/3", "b/1", "ab"] {
        h.ok(put(key, "x", None));
    }
    let keys = |prefix: &str, after: Option<&str>| -> Vec<String> {
        h.machine
            .config_after(prefix, after)
            .map(|e| e.key.clone())
            .collect()
    };
    assert_eq!(keys("a/", None), ["a/1", "a/2", "a/3"]);
    assert_eq!(keys("a/", Some("a/1")), ["a/2", "a/3"]);
    assert_eq!(keys("a/", Some("a/3")), Vec::<String>::new());
    assert_eq!(
        keys("a/", Some("0")),
        ["a/1", "a/2", "a/3"],
        "before the prefix"
    );
    assert_eq!(
        keys("a/", Some("b")),
        Vec::<String>::new(),
        "past the prefix"
    );
    assert_eq!(keys("", Some("a/3")), ["ab", "b/1"]);
}
