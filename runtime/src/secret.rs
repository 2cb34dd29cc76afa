//! What makes a shared secret acceptable at start-up: long enough to resist
//! guessing, and not a placeholder someone forgot to replace. A weak one is
//! refused with a clear error rather than silently protecting nothing. A
//! secret may come from a file (a mounted Kubernetes or Docker secret) instead of
//! the environment, which child processes inherit and `/proc/PID/environ` shows.

use std::fmt;
use std::path::Path;

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

/// A secret read from a file while the flags were parsed (a `--…-file` option).
/// Its `Debug` shows no byte of it, so a logged configuration leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct FileSecret(String);

impl FileSecret {
    /// Wraps a secret read by [`read_file`], for a parser that checks more of it.
    pub fn new(secret: String) -> FileSecret {
        FileSecret(secret)
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for FileSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileSecret(<redacted>)")
    }
}

/// The secret given directly, else the one from its `--…-file` option (clap
/// lets only one of the two be set).
pub fn given<'a>(direct: Option<&'a str>, from_file: Option<&'a FileSecret>) -> Option<&'a str> {
    direct.or(from_file.map(FileSecret::expose))
}

/// The secret in the file at `path`: its first line without surrounding
/// whitespace (`echo`, editors and `kubectl create secret --from-file` may all
/// leave a newline). `what` names it in the error: an unreadable or empty file
/// is refused rather than read as "no secret".
pub fn read_file(path: &Path, what: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the {what} file {}: {e}", path.display()))?;
    let secret = text.lines().next().unwrap_or_default().trim();
    if secret.is_empty() {
        return Err(format!("the {what} file {} is empty", path.display()));
    }
    Ok(secret.to_owned())
}

/// clap value parser of a `--…-file` option whose secret is checked later,
/// where its use is known (an HS256 key's length depends on `--jwt-algorithm`).
pub fn file(path: &str) -> Result<FileSecret, String> {
    read_file(Path::new(path), "secret").map(FileSecret)
}

/// clap value parser of a `--…-file` option: the file's secret, held to
/// [`strong`] as the same secret given directly would be.
pub fn strong_file(path: &str) -> Result<FileSecret, String> {
    strong(&read_file(Path::new(path), "secret")?).map(FileSecret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_secret_is_its_first_line_and_an_empty_or_missing_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let good = "k3J9xQ2mVb7RtL0pZs8WcY4nHf6DgA1e";
        std::fs::write(&path, format!("{good}\r\n")).unwrap();
        let read = strong_file(path.to_str().unwrap()).unwrap();
        assert_eq!(read.expose(), good);
        assert!(!format!("{read:?}").contains(good));
        std::fs::write(&path, "CHANGE-ME-not-a-real-service-token-at-all\n").unwrap();
        assert!(
            strong_file(path.to_str().unwrap())
                .unwrap_err()
                .contains("placeholder")
        );
        assert_eq!(file(path.to_str().unwrap()).unwrap().expose().len(), 41);
        std::fs::write(&path, "\n").unwrap();
        assert!(
            file(path.to_str().unwrap())
                .unwrap_err()
                .contains("is empty")
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            file(path.to_str().unwrap())
                .unwrap_err()
                .contains("reading")
        );
    }

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
