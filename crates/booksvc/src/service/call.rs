//! One storagesvc attempt as the retry loop sees it: [`CallError`] (the breaker refused, or
//! storagesvc failed), its retry verdict, and what the read reports when the attempts end.

use crate::breaker::NotPermitted;
use crate::client::ClientError;
use crate::metrics::CallOutcome;
use crate::retry::{RetryError, Retryable, Verdict};

use super::FetchFailure;

/// How an attempt ended, for the storagesvc latency histogram.
pub(super) fn call_outcome<T>(result: &Result<T, ClientError>) -> CallOutcome {
    match result {
        Ok(_) => CallOutcome::Ok,
        Err(ClientError::NotFound) => CallOutcome::NotFound,
        Err(ClientError::Transient { .. } | ClientError::Permanent { .. }) => CallOutcome::Error,
    }
}

/// Why one guarded attempt failed.
#[derive(Debug)]
pub(super) enum CallError {
    /// The breaker refused: storagesvc is known to be down. Never retried.
    NotPermitted(NotPermitted),
    /// storagesvc failed; the client's mapping decides whether a retry can help.
    Storage(ClientError),
}

impl Retryable for CallError {
    fn verdict(&self) -> Verdict {
        match self {
            CallError::NotPermitted(_) => Verdict::GiveUp,
            CallError::Storage(error) => error.verdict(),
        }
    }
}

impl From<RetryError<CallError>> for FetchFailure {
    fn from(error: RetryError<CallError>) -> FetchFailure {
        match error {
            RetryError::Failed {
                error: CallError::NotPermitted(refused),
                attempts: 1,
            } => FetchFailure::CircuitOpen {
                retry_after: refused.retry_after(),
            },
            RetryError::Failed {
                error: CallError::NotPermitted(refused),
                attempts,
            } => FetchFailure::Upstream {
                reason: format!("{refused} (after {} failed attempts)", attempts - 1),
            },
            RetryError::Failed {
                error: CallError::Storage(error),
                attempts,
            } => FetchFailure::Upstream {
                reason: format!("{error} (after {attempts} attempts)"),
            },
            RetryError::DeadlineExceeded { attempts } => FetchFailure::Upstream {
                reason: format!("no answer within the request budget ({attempts} attempts)"),
            },
        }
    }
}
