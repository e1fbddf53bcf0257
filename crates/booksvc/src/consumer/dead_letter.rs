//! [`DeadLetterReason`]: why a message went to the DLQ.

/// Why a message went to the DLQ (the `reason` label and the start of `x-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Not an event: not JSON, wrong schema, unknown type.
    Poison,
    /// The cache refused it for good (e.g. invalid data).
    Unprocessable,
    /// Transient failures on every allowed attempt.
    Exhausted,
    /// A transient failure whose retry queue refused the message.
    RetryRefused,
}

impl DeadLetterReason {
    /// Every reason, for registering the series at start-up.
    pub const ALL: [DeadLetterReason; 4] = [
        DeadLetterReason::Poison,
        DeadLetterReason::Unprocessable,
        DeadLetterReason::Exhausted,
        DeadLetterReason::RetryRefused,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Poison => "poison",
            DeadLetterReason::Unprocessable => "unprocessable",
            DeadLetterReason::Exhausted => "exhausted",
            DeadLetterReason::RetryRefused => "retry_refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_labels_are_the_reasons() {
        let names = DeadLetterReason::ALL.map(DeadLetterReason::as_str);
        assert_eq!(names, crate::metrics::consumer::DEAD_LETTER_REASONS);
    }
}
