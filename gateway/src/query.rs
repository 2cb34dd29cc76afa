//! Query strings as Django reads and DRF rewrites them: `application/x-www-form-
//! urlencoded` pairs, and the pagination links DRF builds with `urlencode(sorted(…))`.

use std::fmt;

/// The `(key, value)` pairs of a query string, decoded, in order.
pub fn parse(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// The last value given for `key`, as Django's `QueryDict[key]` returns it.
pub fn last<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Python's `quote_plus`: letters, digits and `_.-~` stay; space is `+`.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// An absolute URL whose query DRF's `replace_query_param` rewrites.
#[derive(Clone, Debug)]
pub struct Url {
    base: String,
    params: Vec<(String, String)>,
}

impl Url {
    /// `base` is `scheme://host/path`, without a query.
    pub fn new(base: String, params: Vec<(String, String)>) -> Url {
        Url { base, params }
    }

    /// `key` set to one value, replacing every other.
    pub fn with(&self, key: &str, value: impl ToString) -> Url {
        let mut url = self.without(key);
        url.params.push((key.to_owned(), value.to_string()));
        url
    }

    /// `key` removed.
    pub fn without(&self, key: &str) -> Url {
        Url {
            base: self.base.clone(),
            params: self
                .params
                .iter()
                .filter(|(k, _)| k != key)
                .cloned()
                .collect(),
        }
    }
}

impl fmt::Display for Url {
    /// Keys sorted, values of one key in their order, as `urlencode(sorted(…))`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)?;
        let mut params: Vec<_> = self.params.iter().collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        for (i, (key, value)) in params.iter().enumerate() {
            let separator = if i == 0 { '?' } else { '&' };
            write!(f, "{separator}{}={}", encode(key), encode(value))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_decoded_and_the_last_value_wins() {
        let params = parse("limit=1&a+b=c%20d&limit=2&flag&bad=%zz");
        assert_eq!(last(&params, "limit"), Some("2"));
        assert_eq!(last(&params, "a b"), Some("c d"));
        assert_eq!(last(&params, "flag"), Some(""));
        assert_eq!(last(&params, "bad"), Some("%zz"));
        assert_eq!(last(&params, "none"), None);
    }

    #[test]
    fn links_sort_their_keys_like_drf() {
        let url = Url::new(
            "http://h/api/users/".into(),
            parse("offset=4&limit=2&x=a b"),
        );
        assert_eq!(
            url.with("offset", 6).to_string(),
            "http://h/api/users/?limit=2&offset=6&x=a+b"
        );
        assert_eq!(
            url.without("offset").to_string(),
            "http://h/api/users/?limit=2&x=a+b"
        );
    }
}
