//! Request ids: one per request, so the gateway's log line for a request and the
//! user-service's lines for the calls it made can be found together. A caller (an
//! ingress, a client) may bring its own in `x-request-id`; a value that is not a
//! short plain token is replaced rather than logged, so nobody can inject log
//! lines or bloat them through the header.

/// The HTTP header, and the gRPC metadata key, that carries the id: one name,
/// so the id crosses from HTTP to gRPC unchanged.
pub const HEADER: &str = "x-request-id";
/// Longest id taken from a caller: room for any tracing id, too little to
/// bloat every log line it lands in.
pub const MAX_LEN: usize = 128;

/// Whether `id` may be used as given: 1 to [`MAX_LEN`] characters of
/// `[A-Za-z0-9._-]`.
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A fresh id: 128 random bits as 32 lowercase hex digits, so ids do not
/// collide and are safe to log as they are.
pub fn generate() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The caller's id when it is valid, else a fresh one.
pub fn from_header(value: Option<&[u8]>) -> String {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|v| is_valid(v))
        .map_or_else(generate, str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tokens_are_kept_and_anything_else_replaced() {
        assert_eq!(from_header(Some(b"abc-123")), "abc-123");
        assert_eq!(from_header(Some(b"A.b_C-9")), "A.b_C-9");
        let long = "x".repeat(MAX_LEN);
        assert_eq!(from_header(Some(long.as_bytes())), long);
        for bad in [
            &b""[..],
            b"abc 123",
            b"abc\n123",
            b"a/b",
            b"token=x",
            "é".as_bytes(),
            &[0xff, 0xfe],
        ] {
            let id = from_header(Some(bad));
            assert_ne!(id.as_bytes(), bad);
            assert!(is_valid(&id));
        }
        assert_ne!(
            from_header(Some("x".repeat(MAX_LEN + 1).as_bytes())).len(),
            MAX_LEN + 1
        );
    }

    #[test]
    fn generated_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(from_header(None).len(), 32);
    }
}
