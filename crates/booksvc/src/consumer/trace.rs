//! W3C Trace Context from AMQP headers: a valid `traceparent` on a delivery puts its trace
//! id on the consumer's span.
//!
//! Without an OpenTelemetry pipeline in booksvc, continuing a trace means recording the
//! parent's trace and span ids on the consumer's span (`trace_id`, `parent_span_id`). Only
//! a message that already carries a `traceparent` gets them: storagesvc does not send the
//! header yet (its HTTP write, the outbox row and the relay carry no trace context), so
//! nothing links a write, its relay and this consumer today.

/// The parts of a valid `traceparent` header that identify the parent span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceParent {
    /// 32 lowercase hex digits.
    pub(crate) trace_id: String,
    /// 16 lowercase hex digits.
    pub(crate) span_id: String,
}

impl TraceParent {
    /// Parses `00-<trace id>-<span id>-<flags>`; `None` for anything malformed or an
    /// all-zero id (invalid per the spec). Later versions may append fields after the flags.
    pub(crate) fn parse(header: &str) -> Option<TraceParent> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let span_id = parts.next()?;
        let flags = parts.next()?;
        let valid = is_hex(version, 2)
            && version != "ff"
            && (version != "00" || parts.next().is_none())
            && is_hex(trace_id, 32)
            && is_hex(span_id, 16)
            && is_hex(flags, 2)
            && !all_zero(trace_id)
            && !all_zero(span_id);
        valid.then(|| TraceParent {
            trace_id: trace_id.to_owned(),
            span_id: span_id.to_owned(),
        })
    }
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn all_zero(text: &str) -> bool {
    text.bytes().all(|b| b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_valid_traceparent_and_refuses_malformed_ones() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(valid).expect("valid");
        assert_eq!(parent.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.span_id, "00f067aa0ba902b7");
        let invalid = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ];
        for header in invalid {
            assert_eq!(TraceParent::parse(header), None, "{header:?}");
        }
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(
            TraceParent::parse(future).is_some(),
            "later versions may add fields"
        );
    }
}
