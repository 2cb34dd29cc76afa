//! The Redis URL a service connects with: as given (`redis://user:pass@host`),
//! or with the password read from a file (a mounted Kubernetes Secret), so the
//! password need not sit in the environment or on the command line.

use std::path::Path;

/// `url` with the password from `password_file` (its first line) put in, for
/// the URL's user or, without one, Redis's `default` user. A URL that already
/// has a password and a file too is refused: one of them would be ignored.
pub fn with_password_file(url: &str, password_file: Option<&Path>) -> Result<String, String> {
    let Some(path) = password_file else {
        return Ok(url.to_owned());
    };
    let password = crate::secret::read_file(path, "Redis password")?;
    with_password(url, &password)
}

fn with_password(url: &str, password: &str) -> Result<String, String> {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return Err("the Redis URL has no scheme (redis:// or rediss://)".into());
    };
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let encoded = encode(password);
    Ok(match url[start..authority_end].rfind('@') {
        Some(at) if url[start..start + at].contains(':') => {
            return Err(
                "the Redis URL already has a password; give it there or in the file, not both"
                    .into(),
            );
        }
        Some(at) => format!("{}:{encoded}{}", &url[..start + at], &url[start + at..]),
        None => format!("{}:{encoded}@{}", &url[..start], &url[start..]),
    })
}

/// Percent-encodes what a URL's user info may not hold as is.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_goes_to_the_urls_user_or_the_default_one() {
        assert_eq!(
            with_password("redis://gateway@redis:6379/0", "p@ss:w/rd").unwrap(),
            "redis://gateway:p%40ss%3Aw%2Frd@redis:6379/0"
        );
        assert_eq!(
            with_password("redis://redis:6379", "s3cret").unwrap(),
            "redis://:s3cret@redis:6379"
        );
        assert!(with_password("redis://u:already@redis", "x").is_err());
        assert!(with_password("redis", "x").is_err());
    }

    #[test]
    fn a_file_gives_its_first_line_and_no_file_leaves_the_url() {
        let file = std::env::temp_dir().join(format!("redis-password-{}", std::process::id()));
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(
            with_password_file("redis://relay@r:1", Some(&file)).unwrap(),
            "redis://relay:s3cret@r:1"
        );
        assert_eq!(
            with_password_file("redis://r:1", None).unwrap(),
            "redis://r:1"
        );
        std::fs::write(&file, "\n").unwrap();
        assert!(with_password_file("redis://r:1", Some(&file)).is_err());
        std::fs::remove_file(&file).unwrap();
    }
}
