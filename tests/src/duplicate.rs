//! Duplicated requests: one logical mutating call sent twice with the same session header
//! (client id, sequence number), to two different nodes, one after the other — what the
//! client library's retry does when an attempt was applied but its answer was lost. A server
//! whose exactly-once session table works applies the call once and gives both attempts the
//! same answer; [`crate::checker::exactly_once`] checks that they agree.
//!
//! The client library cannot be made to do this on purpose (its sessions are private, and it
//! retries only after a failure), so this sends raw `percy.v1` requests through the generated
//! stubs, with a header of its own.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use percy_client::{ClientError, Consistency};
use percy_proto::v1::RequestHeader;
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint};

use crate::history::{Pending, Status};
use crate::run::{Env, Outcome};

/// Time budget of one attempt: a partitioned or paused node never answers.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time budget of connecting to a node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What one attempt got.
#[derive(Debug)]
pub enum Answer<T> {
    Ok(T),
    /// The server refused the call: certainly not applied by this attempt.
    Refused(ClientError),
    /// No definite answer (timeout, no leader, broken connection).
    Unknown(String),
}

/// Sends calls twice, under one client id of its own and a sequence number per call.
pub struct Duplicator {
    client_id: u64,
    next_seq: u64,
    channels: Vec<Channel>,
}

impl Duplicator {
    /// A duplicator for every node of `env`, with a random client id.
    pub fn new(env: &Env) -> Result<Duplicator> {
        let channels = env
            .nodes
            .iter()
            .map(|(_, addr)| {
                Ok(Endpoint::from_shared(format!("http://{addr}"))
                    .with_context(|| format!("endpoint {addr}"))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .connect_lazy())
            })
            .collect::<Result<_>>()?;
        Ok(Duplicator {
            // Zero means "no session" on the wire.
            client_id: rand::random::<u64>().max(1),
            next_seq: 1,
            channels,
        })
    }

    /// Sends `call` to node `first` (an index into the nodes, taken modulo their number) and,
    /// once that attempt has ended, the same request with the same header to the next node.
    pub async fn send_twice<T, F, Fut>(&mut self, first: usize, mut call: F) -> [Answer<T>; 2]
    where
        F: FnMut(Channel, RequestHeader) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let seq = self.next_seq;
        self.next_seq += 1;
        let header = RequestHeader {
            client_id: self.client_id,
            seq,
            // Every earlier call has been answered (or given up on): the server may forget
            // those answers, but not this one.
            acked_below: seq,
            consistency: Consistency::Linearizable as i32,
        };
        let nodes = self.channels.len();
        let mut attempt = |node: usize| {
            let sent = call(self.channels[node % nodes].clone(), header);
            async move {
                match tokio::time::timeout(ATTEMPT_TIMEOUT, sent).await {
                    Ok(Ok(response)) => Answer::Ok(response.into_inner()),
                    Ok(Err(status)) => {
                        let error = ClientError::from(status);
                        if error.is_refusal() {
                            Answer::Refused(error)
                        } else {
                            Answer::Unknown(error.to_string())
                        }
                    }
                    Err(_) => Answer::Unknown(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
                }
            }
        };
        let first_answer = attempt(first).await;
        let second_answer = attempt(first + 1).await;
        [first_answer, second_answer]
    }
}

/// Records a call sent twice, started as `pending`, as one operation: `ok` if either attempt
/// succeeded (its output is the first success's), else `fail` if either was refused, else
/// `info`; its output also carries both attempts under `"answers"`, each as
/// `{"status", "output"}`.
pub fn record<T>(
    env: &Env,
    pending: Pending,
    answers: [Answer<T>; 2],
    output: impl Fn(&T) -> Value,
) -> Outcome<T> {
    let recorded: Vec<Value> = answers
        .iter()
        .map(|answer| match answer {
            Answer::Ok(value) => json!({"status": Status::Ok, "output": output(value)}),
            Answer::Refused(error) => json!({"status": Status::Fail, "output": refusal(error)}),
            Answer::Unknown(error) => json!({"status": Status::Info, "output": {"error": error}}),
        })
        .collect();
    let [first, second] = answers;
    let outcome = match (first, second) {
        (Answer::Ok(value), _) | (_, Answer::Ok(value)) => Outcome::Ok(value),
        (Answer::Refused(error), _) | (_, Answer::Refused(error)) => Outcome::Fail(error),
        _ => Outcome::Info,
    };
    let (status, mut value) = match &outcome {
        Outcome::Ok(value) => (Status::Ok, output(value)),
        Outcome::Fail(error) => (Status::Fail, refusal(error)),
        Outcome::Info => (Status::Info, json!({"error": "no definite answer"})),
    };
    assert!(value.is_object(), "operation outputs are JSON objects");
    value["answers"] = Value::Array(recorded);
    env.recorder.complete(pending, status, value);
    outcome
}

/// A refusal as the history shows it: the message names the state the server saw, so two
/// refusals compare equal only if they are the same answer.
fn refusal(error: &ClientError) -> Value {
    json!({"error": error.to_string(), "code": format!("{:?}", error.code())})
}
