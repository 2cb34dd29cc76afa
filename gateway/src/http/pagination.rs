//! GET of the collection as DRF's `LimitOffsetPagination` answers it: every user
//! as a plain array without `?limit`, else one page in DRF's envelope with its
//! absolute `next` and `previous` links.

use serde::Serialize;
use users_proto::v1 as pb;
use warp::{
    http::{HeaderMap, StatusCode, header},
    reply::Response,
};

use crate::{
    error::{Error, json_response},
    observe, query,
    security::limits,
    upstream::UsersClient,
    user_json::UserJson,
};

/// The most users one ListUsers call returns (the user-service's cap).
const MAX_PAGE_SIZE: i32 = 1000;

/// DRF's LimitOffsetPagination envelope.
#[derive(Serialize)]
struct Page {
    count: i64,
    next: Option<String>,
    previous: Option<String>,
    results: Vec<UserJson>,
}

/// GET the collection: every user as a plain array, or with a valid `?limit` one
/// page in DRF's envelope.
pub async fn list(
    client: &mut UsersClient,
    query: &str,
    headers: &HeaderMap,
) -> Result<Response, Error> {
    let params = query::parse(query);
    // DRF's `max_limit`: a bigger page is lowered, not refused.
    let limit = query::last(&params, "limit")
        .and_then(|v| positive_int(v, true))
        .map(|limit| limit.min(limits::MAX_LIMIT));
    let Some(limit) = limit else {
        let (users, _) = fetch(client, 0, None).await?;
        let users: Vec<UserJson> = users.iter().map(UserJson::from).collect();
        return Ok(json_response(StatusCode::OK, &users));
    };
    let offset = query::last(&params, "offset")
        .and_then(|v| positive_int(v, false))
        .unwrap_or(0);
    let (users, count) = fetch(client, offset, Some(limit)).await?;
    let url = absolute_url(headers, &params);
    let next = (offset.saturating_add(limit) < count as u64).then(|| {
        url.with("limit", limit)
            .with("offset", offset + limit)
            .to_string()
    });
    let previous = (offset > 0).then(|| {
        let url = url.with("limit", limit);
        if offset <= limit {
            url.without("offset").to_string()
        } else {
            url.with("offset", offset - limit).to_string()
        }
    });
    let page = Page {
        count,
        next,
        previous,
        results: users.iter().map(UserJson::from).collect(),
    };
    Ok(json_response(StatusCode::OK, &page))
}

/// Users from `offset` on, at most `limit` (all when `None`), and how many exist.
async fn fetch(
    client: &mut UsersClient,
    offset: u64,
    limit: Option<u64>,
) -> Result<(Vec<pb::User>, i64), Error> {
    let mut users = Vec::new();
    let mut page_token = String::new();
    let mut skip = i32::try_from(offset).unwrap_or(i32::MAX);
    loop {
        let wanted = limit.map_or(u64::MAX, |l| l - users.len() as u64);
        let page_size = i32::try_from(wanted).unwrap_or(i32::MAX).min(MAX_PAGE_SIZE);
        let page = observe::grpc(
            "ListUsers",
            client.list_users(pb::ListUsersRequest {
                page_size,
                page_token: std::mem::take(&mut page_token),
                skip,
            }),
        )
        .await?
        .into_inner();
        skip = 0;
        users.extend(page.users);
        let full = limit.is_some_and(|l| users.len() as u64 >= l);
        if full || page.next_page_token.is_empty() {
            return Ok((users, page.total_size));
        }
        page_token = page.next_page_token;
    }
}

/// DRF's `_positive_int`: Python's `int()` of the text, positive when `strict`.
fn positive_int(text: &str, strict: bool) -> Option<u64> {
    let text = text.trim();
    let digits = text.strip_prefix('+').unwrap_or(text);
    let value: u64 = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else if digits
        .strip_prefix('-')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b == b'0'))
    {
        0
    } else {
        return None;
    };
    if strict && value == 0 {
        return None;
    }
    Some(value)
}

/// The request's absolute URL, as Django's `build_absolute_uri` gives it.
fn absolute_url(headers: &HeaderMap, params: &[(String, String)]) -> query::Url {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    query::Url::new(format!("{scheme}://{host}/api/users/"), params.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_int_follows_drf() {
        assert_eq!(positive_int("2", true), Some(2));
        assert_eq!(positive_int(" +7 ", true), Some(7));
        assert_eq!(positive_int("0", true), None);
        assert_eq!(positive_int("0", false), Some(0));
        assert_eq!(positive_int("-0", false), Some(0));
        assert_eq!(positive_int("-1", false), None);
        assert_eq!(positive_int("x", false), None);
        assert_eq!(positive_int("", false), None);
    }
}
