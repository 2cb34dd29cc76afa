//! What makes a shared secret acceptable at start-up: long enough to resist
//! guessing, and not a placeholder someone forgot to replace. A weak one is
//! refused with a clear error rather than silently protecting nothing.

/// Shortest shared secret accepted (as RFC 7518 asks of an HS256 key).
pub const MIN_LEN: usize = 32;

/// Words that mark a value copied from an example instead of generated.
const PLACEHOLDERS: [&str; 5] = [
    "change-me",
    "changeme",
    "change_me",
    "placeholder",
    "example",
];

/// `value`, if it is a usable secret: at least [`MIN_LEN`] bytes of printable
/// ASCII without spaces (it travels in an HTTP header) and not a placeholder.
pub fn strong(value: &str) -> Result<String, String> {
    if value.len() < MIN_LEN {
        return Err(format!(
            "must be at least {MIN_LEN} bytes (this one has {}); generate one, e.g. \
             head -c 32 /dev/urandom | base64",
            value.len()
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".into());
    }
    let lower = value.to_ascii_lowercase();
    if let Some(word) = PLACEHOLDERS.iter().find(|word| lower.contains(*word)) {
        return Err(format!(
            "looks like a placeholder (it contains {word:?}); generate a real one"
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_long_printable_non_placeholder_secrets_pass() {
        let good = "k3J9xQ2mVb7RtL0pZs8WcY4nHf6DgA1e";
        assert_eq!(strong(good).as_deref(), Ok(good));
        assert!(strong("short").unwrap_err().contains("at least 32"));
        assert!(
            strong("CHANGE-ME-not-a-real-service-token")
                .unwrap_err()
                .contains("placeholder")
        );
        assert!(
            strong(&format!("{good} x"))
                .unwrap_err()
                .contains("printable")
        );
        assert!(strong(&format!("{good}é")).is_err());
    }
}
