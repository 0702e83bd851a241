//! Checkers: each reads a [`History`](crate::history::History) and returns a [`Verdict`].
//!
//! Conventions shared by all of them (Jepsen's): `fail` operations are dropped, `info`
//! operations may have taken effect at any time after their call (their return is +infinity),
//! and a checker that cannot decide (a search budget ran out) says [`Validity::Unknown`], which
//! is a failure to verify, never a pass.

pub mod claim;
pub mod exactly_once;
pub mod expiry;
pub mod fenced;
pub mod lease;
pub mod linearizability;
pub mod lock;
pub mod queue;
pub mod register;
pub mod watch;

use std::fmt;

use serde::Serialize;

/// Most anomalies printed per verdict (the rest are counted).
const MAX_ANOMALIES_SHOWN: usize = 20;

/// Whether a history passed a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Validity {
    Valid,
    Invalid,
    /// The checker ran out of budget: counts as a failure.
    Unknown,
}

/// The outcome of one checker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub checker: String,
    pub validity: Validity,
    /// What was wrong (empty when valid).
    pub anomalies: Vec<String>,
    /// How much the checker looked at (e.g. operations, keys).
    pub checked: usize,
}

impl Verdict {
    /// Builds a verdict from a list of anomalies: valid when there are none.
    pub fn from_anomalies(checker: &str, checked: usize, anomalies: Vec<String>) -> Self {
        Verdict {
            checker: checker.to_owned(),
            validity: if anomalies.is_empty() {
                Validity::Valid
            } else {
                Validity::Invalid
            },
            anomalies,
            checked,
        }
    }

    /// True only for [`Validity::Valid`].
    pub fn is_valid(&self) -> bool {
        self.validity == Validity::Valid
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {:?} ({} checked)",
            self.checker, self.validity, self.checked
        )?;
        for anomaly in self.anomalies.iter().take(MAX_ANOMALIES_SHOWN) {
            write!(f, "\n  - {anomaly}")?;
        }
        if self.anomalies.len() > MAX_ANOMALIES_SHOWN {
            write!(
                f,
                "\n  ... and {} more",
                self.anomalies.len() - MAX_ANOMALIES_SHOWN
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Hand-made histories for the checkers' unit tests.

    use serde_json::Value;

    use crate::history::{Op, Status};

    /// One operation with explicit times.
    #[allow(clippy::too_many_arguments)]
    pub fn op(
        process: u64,
        key: &str,
        name: &str,
        input: Value,
        output: Value,
        status: Status,
        call_ns: u64,
        return_ns: u64,
    ) -> Op {
        Op {
            process,
            key: key.to_owned(),
            op: name.to_owned(),
            input,
            output,
            status,
            call_ns,
            return_ns,
        }
    }
}
