//! The spans of a write batch, the same for both engines: a batch holds many
//! callers' writes, so it is a child of the first one's `rpc` span and linked
//! to the others' (OpenTelemetry span links), and its commit is a child of it.
//! One PATCH then reads as one trace: request, gRPC call, batch, commit.

/// The span of a batch of `callers.len()` writes, made on their behalf.
pub(super) fn batch<'a>(callers: impl IntoIterator<Item = &'a tracing::Span>) -> tracing::Span {
    let mut callers = callers.into_iter();
    let first = callers.next();
    let span = tracing::info_span!(
        parent: first.and_then(tracing::Span::id),
        "write batch",
        writes = tracing::field::Empty,
    );
    let mut writes = usize::from(first.is_some());
    for caller in callers {
        span.follows_from(caller);
        writes += 1;
    }
    span.record("writes", writes);
    span
}

/// The span of a batch's `COMMIT` (and its fsync), inside [`batch`]'s.
pub(super) fn commit() -> tracing::Span {
    tracing::info_span!("commit")
}
