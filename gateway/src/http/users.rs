//! REST handlers: each turns one HTTP request into one or more user-service calls
//! and the answer into DRF's JSON. Paths, methods, bodies and media types are
//! checked here in the order DRF checks them (route, method, object, body).

use std::net::SocketAddr;

use bytes::Bytes;
use prost_types::FieldMask;
use serde_json::json;
use users_proto::{metadata, v1 as pb};
use warp::{
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    reply::Response,
};

use crate::{
    error::{Error, json_response},
    http::{
        access::{Need, permit, permit_fields},
        body::PendingBody,
        fields::{BodyError, FieldValue, NameFields, parse_name_fields},
        pagination,
    },
    observe,
    security::auth::Caller,
    state::{AppState, Session},
    user_json::UserJson,
};

/// The header on write answers naming the seq of the event the write recorded.
pub const SEQ_HEADER: &str = "x-users-seq";
/// `Allow` of `/api/users/`.
pub const ALLOW_COLLECTION: &str = "GET, POST, OPTIONS";
/// `Allow` of `/api/users/{id}/`.
pub const ALLOW_ITEM: &str = "GET, PUT, PATCH, DELETE, OPTIONS";
/// The two editable fields, in the order DRF reports them.
const NAME_FIELDS: [&str; 2] = ["first_name", "last_name"];

/// One request to the API, as the routes collected it.
pub struct ApiRequest {
    pub method: Method,
    /// The path below `/api/users`, without slashes: empty for the collection.
    pub id: Option<String>,
    pub query: String,
    pub headers: HeaderMap,
    /// The body, unread: read only once the route, the method and the caller's
    /// permissions allow one.
    pub body: PendingBody,
    /// The client's address (rate limits of anonymous callers).
    pub client: Option<SocketAddr>,
}

/// Answers any request under `/api/users`: every response carries `Allow`, as
/// DRF's do.
pub async fn users(state: AppState, request: ApiRequest) -> Response {
    let (allow, id) = match request.id.as_deref() {
        None => (ALLOW_COLLECTION, None),
        Some(id) => (ALLOW_ITEM, Some(id.parse::<i64>().ok())),
    };
    let result = match (allowed_host(&state, &request.headers), id) {
        (Err(error), _) => Err(error),
        (Ok(()), None) => collection(state, request).await,
        (Ok(()), Some(id)) => item(state, id, request).await,
    };
    let mut response = result.unwrap_or_else(Error::into_response);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

/// 400 when `Host` names a host the API does not answer to (it would be written
/// into pagination links); none at all (HTTP/2 without one) is fine.
fn allowed_host(state: &AppState, headers: &HeaderMap) -> Result<(), Error> {
    match headers.get(header::HOST) {
        Some(host) if !state.hosts.allows(host.to_str().unwrap_or_default()) => {
            Err(Error::BadRequest(format!(
                "Invalid Host header: {:?}. Add it to --allowed-hosts (ALLOWED_HOSTS).",
                String::from_utf8_lossy(host.as_bytes())
            )))
        }
        _ => Ok(()),
    }
}

async fn collection(state: AppState, mut request: ApiRequest) -> Result<Response, Error> {
    let Session { caller, mut users } = state.authenticate(&request.headers, request.client)?;
    let permit = |need| permit(&state.limits, &caller, request.client, need);
    match request.method {
        Method::GET | Method::HEAD => {
            permit(Need::Read)?;
            pagination::list(&mut users, &request.query, &request.headers).await
        }
        Method::POST => {
            permit(Need::FullWrite)?;
            // No object to look up first: an unreadable body is refused at once.
            let fields = read_fields(&state, &mut request).await?;
            let (user, typing) = to_proto(0, &fields);
            let bad = (!typing.is_empty()).then_some(BadBody::Typing(typing));
            let create = pb::CreateUserRequest {
                user: Some(user),
                validate_only: bad.is_some(),
            };
            let created = observe::grpc("CreateUser", users.create_user(create)).await;
            answer_write(&state, &caller, created, bad, StatusCode::CREATED).await
        }
        Method::OPTIONS => {
            permit(Need::Read)?;
            Ok(options_response("User List"))
        }
        method => Err(not_allowed(method, ALLOW_COLLECTION)),
    }
}

async fn item(
    state: AppState,
    id: Option<i64>,
    mut request: ApiRequest,
) -> Result<Response, Error> {
    // A path that is not an integer id is a missing page, whatever the method.
    let id = id.ok_or(Error::NotFound)?;
    let Session { caller, mut users } = state.authenticate(&request.headers, request.client)?;
    let permit = |need| permit(&state.limits, &caller, request.client, need);
    match request.method {
        Method::GET | Method::HEAD => {
            permit(Need::Read)?;
            let user = observe::grpc("GetUser", users.get_user(pb::GetUserRequest { id }))
                .await?
                .into_inner();
            Ok(user_response(StatusCode::OK, &user))
        }
        Method::PATCH | Method::PUT => {
            permit(Need::SomeWrite)?;
            let partial = request.method == Method::PATCH;
            let expected_version = if_match(&request.headers)?;
            let (user, paths, bad) = match read_fields(&state, &mut request).await {
                Ok(fields) => {
                    permit_fields(&caller, &fields, partial)?;
                    let (user, typing) = to_proto(id, &fields);
                    let bad = (!typing.is_empty()).then_some(BadBody::Typing(typing));
                    (user, update_paths(&fields, partial), bad)
                }
                Err(error) => {
                    let user = pb::User {
                        id,
                        ..Default::default()
                    };
                    (user, Vec::new(), Some(BadBody::Unreadable(error)))
                }
            };
            let update = pb::UpdateUserRequest {
                user: Some(user),
                update_mask: Some(FieldMask { paths }),
                expected_version,
                validate_only: bad.is_some(),
            };
            let updated = observe::grpc("UpdateUser", users.update_user(update)).await;
            answer_write(&state, &caller, updated, bad, StatusCode::OK).await
        }
        Method::DELETE => {
            permit(Need::FullWrite)?;
            let expected_version = if_match(&request.headers)?;
            let deleted = observe::grpc(
                "DeleteUser",
                users.delete_user(pb::DeleteUserRequest {
                    id,
                    expected_version,
                }),
            )
            .await;
            let seq = on_feed(&state, &deleted).await;
            deleted?;
            let mut response = Response::new(Default::default());
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok(with_seq(response, seq))
        }
        Method::OPTIONS => {
            permit(Need::Read)?;
            Ok(options_response("User Instance"))
        }
        method => Err(not_allowed(method, ALLOW_ITEM)),
    }
}

fn not_allowed(method: Method, allow: &'static str) -> Error {
    Error::MethodNotAllowed {
        method: method.to_string(),
        allow,
    }
}

/// DRF's `SimpleMetadata` answer to OPTIONS.
fn options_response(name: &str) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "name": name,
            "description": "",
            "renders": ["application/json"],
            "parses": ["application/json"],
        }),
    )
}

/// The answer to a create or an update once the user-service has answered: for
/// a bad body (the write was only checked) DRF's refusal, else the user as
/// written with `status`, once its event is on the feed.
async fn answer_write(
    state: &AppState,
    caller: &Caller,
    answer: Result<tonic::Response<pb::User>, tonic::Status>,
    bad: Option<BadBody>,
    status: StatusCode,
) -> Result<Response, Error> {
    if let Some(bad) = bad {
        return Err(refusal(answer, bad));
    }
    let seq = on_feed(state, &answer).await;
    let user = answer?.into_inner();
    Ok(with_seq(written_response(caller, status, &user), seq))
}

/// Holds a successful write until the event it recorded is on this gateway's
/// feed (at most `write_feed_wait`), so the answer follows the event as the POC's
/// did; returns that event's seq. A write that recorded no event (it changed
/// nothing) and a failed one are not held.
async fn on_feed<T>(
    state: &AppState,
    answer: &Result<tonic::Response<T>, tonic::Status>,
) -> Option<u64> {
    let seq = metadata::seq(answer.as_ref().ok()?.metadata(), metadata::SEQ)?;
    state.hub.wait_for_seq(seq, state.write_feed_wait).await;
    Some(seq)
}

/// Adds `X-Users-Seq: <seq>` to a write's answer: the client can match its own
/// write with the feed's event.
fn with_seq(mut response: Response, seq: Option<u64>) -> Response {
    if let Some(seq) = seq {
        response
            .headers_mut()
            .insert(SEQ_HEADER, HeaderValue::from(seq));
    }
    response
}

/// A write's answer: the user as written for a caller who may read users; for a
/// write-only caller (`users:write` without `users:read`) the same status and
/// headers with no body, so writing never reveals what only reading may.
fn written_response(caller: &Caller, status: StatusCode, user: &pb::User) -> Response {
    let mut response = user_response(status, user);
    if !caller.read {
        *response.body_mut() = Default::default();
        response.headers_mut().remove(header::CONTENT_TYPE);
    }
    response
}

/// A user with its `ETag: "<version>"`.
fn user_response(status: StatusCode, user: &pb::User) -> Response {
    let mut response = json_response(status, &UserJson::from(user));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", user.version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// The version `If-Match: "<version>"` asks for; `*` or no header asks for none.
/// A tag that is no version of ours can never match: 412, as RFC 9110 says.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, Error> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text);
    tag.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| {
            Error::PreconditionFailed(format!(
                "Precondition failed: If-Match {text:?} is not a version of this user."
            ))
        })
}

/// Reads the body (once the caller may send it) and its name fields, checked as
/// DRF's parser checks them: an empty body is `{}`; any other needs
/// `Content-Type: application/json`.
async fn read_fields(state: &AppState, request: &mut ApiRequest) -> Result<NameFields, Error> {
    let pending = std::mem::replace(&mut request.body, PendingBody::from_bytes(Bytes::new()));
    let body = pending.read(state.body_read_timeout).await?;
    if body.is_empty() {
        return Ok(NameFields::default());
    }
    let content_type = request
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media_type != "application/json" {
        return Err(Error::UnsupportedMediaType(content_type));
    }
    parse_name_fields(&body).map_err(|error| match error {
        BodyError::Parse(message) => Error::Parse(message),
        BodyError::NotAnObject(message) => Error::NonField(message),
    })
}

/// The update mask of a PATCH (`partial`: the fields sent) or a PUT (both).
pub fn update_paths(fields: &NameFields, partial: bool) -> Vec<String> {
    if partial {
        NAME_FIELDS
            .iter()
            .zip([&fields.first_name, &fields.last_name])
            .filter(|(_, value)| value.is_some())
            .map(|(name, _)| (*name).to_owned())
            .collect()
    } else {
        NAME_FIELDS.map(str::to_owned).to_vec()
    }
}

/// The proto user for a body, and the JSON typing errors found on the way: a
/// field with the wrong JSON type is not sent (DRF's message for it is kept).
pub fn to_proto(id: i64, fields: &NameFields) -> (pb::User, Vec<(String, String)>) {
    let mut typing = Vec::new();
    let mut value = |name: &str, field: &Option<FieldValue>| match field {
        None => None,
        Some(FieldValue::Text(text)) => Some(text.clone()),
        Some(FieldValue::Invalid(message)) => {
            typing.push((name.to_owned(), (*message).to_owned()));
            None
        }
    };
    let user = pb::User {
        id,
        first_name: value("first_name", &fields.first_name),
        last_name: value("last_name", &fields.last_name),
        ..Default::default()
    };
    (user, typing)
}

/// Why a write's body cannot be applied as sent.
enum BadBody {
    /// Unreadable: not JSON, not an object, the wrong media type, too big or too
    /// slow.
    Unreadable(Error),
    /// JSON, but these fields have the wrong type: DRF's message for each.
    Typing(Vec<(String, String)>),
}

/// The answer to a write whose body is bad, given the user-service's check of
/// the same write (`validate_only`: nothing is written). The order is DRF's, and
/// the user-service keeps it: a missing user (404), then a stale version (412),
/// then the body (400), where each field has the gateway's typing message or
/// else the user-service's violations of the value that was sent.
fn refusal(checked: Result<tonic::Response<pb::User>, tonic::Status>, bad: BadBody) -> Error {
    let service_violations = match checked.map_err(Error::from) {
        Ok(_) => Vec::new(),
        Err(Error::Invalid(violations)) => violations,
        Err(other) => return other,
    };
    let typing = match bad {
        BadBody::Unreadable(error) => return error,
        BadBody::Typing(typing) => typing,
    };
    let mut merged = Vec::new();
    for field in NAME_FIELDS {
        match typing.iter().find(|(name, _)| name == field) {
            Some(typed) => merged.push(typed.clone()),
            None => merged.extend(
                service_violations
                    .iter()
                    .filter(|(name, _)| name == field)
                    .cloned(),
            ),
        }
    }
    merged.extend(
        service_violations
            .into_iter()
            .filter(|(name, _)| !NAME_FIELDS.contains(&name.as_str())),
    );
    Error::Invalid(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(if_match: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_MATCH, HeaderValue::from_str(if_match).unwrap());
        headers
    }

    #[test]
    fn if_match_reads_strong_weak_and_star() {
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), None);
        assert_eq!(if_match(&headers("\"3\"")).unwrap(), Some(3));
        assert_eq!(if_match(&headers("W/\"4\"")).unwrap(), Some(4));
        assert_eq!(if_match(&headers("*")).unwrap(), None);
        assert!(matches!(
            if_match(&headers("\"abc\"")),
            Err(Error::PreconditionFailed(_))
        ));
    }

    fn typing(field: &str) -> BadBody {
        BadBody::Typing(vec![(field.to_owned(), "Not a valid string.".to_owned())])
    }

    #[test]
    fn typing_errors_stand_for_their_fields_beside_the_services_violations() {
        let mut details = tonic_types::ErrorDetails::new();
        details.add_bad_request_violation("first_name", "This field is required.");
        details.add_bad_request_violation(
            "last_name",
            "Ensure this field has no more than 100 characters.",
        );
        let status = <tonic::Status as tonic_types::StatusExt>::with_error_details(
            tonic::Code::InvalidArgument,
            "x",
            details,
        );
        let error = refusal(Err(status), typing("first_name"));
        assert_eq!(
            error.body(),
            json!({
                "first_name": ["Not a valid string."],
                "last_name": ["Ensure this field has no more than 100 characters."],
            })
        );
        let alone = refusal(
            Ok(tonic::Response::new(pb::User::default())),
            typing("last_name"),
        );
        assert_eq!(
            alone.body(),
            json!({ "last_name": ["Not a valid string."] })
        );
    }

    #[test]
    fn a_missing_user_and_a_stale_version_come_before_the_body() {
        let missing = refusal(Err(tonic::Status::not_found("x")), typing("first_name"));
        assert!(matches!(missing, Error::NotFound));
        let unreadable = BadBody::Unreadable(Error::Parse("x".into()));
        let stale = refusal(Err(tonic::Status::failed_precondition("x")), unreadable);
        assert!(matches!(stale, Error::PreconditionFailed(_)), "{stale:?}");
        let unreadable = BadBody::Unreadable(Error::Parse("x".into()));
        let body = refusal(Ok(tonic::Response::new(pb::User::default())), unreadable);
        assert!(matches!(body, Error::Parse(_)), "{body:?}");
    }
}
