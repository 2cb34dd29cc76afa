//! Which engine a database URL names, and how a URL is shown in logs and errors.

/// The database engine a URL names, told from its scheme so that a typo or an
/// unsupported engine's URL is refused at start instead of being taken for a
/// file path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://PATH`, `sqlite:PATH`, `sqlite::memory:` or a bare path: one
    /// process owns the file.
    Sqlite,
    /// `postgres://…` or `postgresql://…`: several processes may share it.
    Postgres,
}

/// The accepted forms, named in every refusal.
const ACCEPTED: &str = "the accepted forms are sqlite://PATH (e.g. sqlite://data/users.db) \
     and postgres://USER:PASSWORD@HOST:PORT/DATABASE (also postgresql://)";

/// The backend `url` names, or why it names none (with the accepted forms).
pub fn backend(url: &str) -> Result<Backend, String> {
    match scheme(url).map(str::to_ascii_lowercase).as_deref() {
        None | Some("sqlite") => Ok(Backend::Sqlite),
        Some("postgres" | "postgresql") => Ok(Backend::Postgres),
        Some(other) => Err(format!(
            "unsupported database URL scheme {other:?}; {ACCEPTED}"
        )),
    }
}

/// The URL's scheme, if it has one (RFC 3986: a letter, then letters, digits,
/// `+`, `-`, `.`). A bare path (`data/users.db`) has none.
fn scheme(url: &str) -> Option<&str> {
    url.split_once(':')
        .map(|(scheme, _)| scheme)
        .filter(|scheme| {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
}

/// `url` with any password replaced by `***` (in the user info and in a
/// `password=` query parameter), so it can be logged and shown in errors.
pub fn redact(url: &str) -> String {
    let mut shown = url.to_owned();
    if let Some(start) = url.find("://").map(|i| i + 3) {
        let authority_end = url[start..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| start + i);
        if let Some(at) = url[start..authority_end].rfind('@').map(|i| start + i)
            && let Some(colon) = url[start..at].find(':').map(|i| start + i)
        {
            shown = format!("{}:***{}", &url[..colon], &url[at..]);
        }
    }
    if let Some(query) = shown.find('?') {
        let (head, params) = shown.split_at(query + 1);
        let params: Vec<String> = params
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => param.to_owned(),
            })
            .collect();
        shown = format!("{head}{}", params.join("&"));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_name_their_backend() {
        for url in [
            "sqlite://a/b.db",
            "sqlite:b.db",
            "sqlite::memory:",
            "data/users.db",
            "SQLite://x",
        ] {
            assert_eq!(backend(url), Ok(Backend::Sqlite), "{url}");
        }
        for url in [
            "postgres://h/app",
            "postgresql://u:p@h:5432/app",
            "POSTGRES://h/db",
        ] {
            assert_eq!(backend(url), Ok(Backend::Postgres), "{url}");
        }
        for url in [
            "mysql://root@h/app",
            "sqlit://x.db",
            "file:x.db",
            "postgress://h/db",
        ] {
            let error = backend(url).unwrap_err();
            assert!(
                error.contains("sqlite://PATH") && error.contains("postgres://"),
                "{url}: {error}"
            );
        }
    }

    #[test]
    fn passwords_never_show() {
        let cases = [
            (
                "postgres://app:s3cret@db:5432/users",
                "postgres://app:***@db:5432/users",
            ),
            (
                "postgres://app:p@ss@db/users",
                "postgres://app:***@db/users",
            ),
            ("postgres://app@db/users", "postgres://app@db/users"),
            (
                "postgres://db/users?user=app&password=s3cret&sslmode=require",
                "postgres://db/users?user=app&password=***&sslmode=require",
            ),
            ("sqlite://data/users.db", "sqlite://data/users.db"),
            ("data/a:b@c.db", "data/a:b@c.db"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
        }
    }
}
