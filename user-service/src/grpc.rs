//! The `users.v1.UserService` implementation: turns requests into domain values,
//! asks the store, and turns answers back into messages. Rules live in `domain`,
//! SQL in `store`, status codes in `error`.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use users_proto::{
    metadata,
    v1::{self as pb, user_service_server::UserService},
};

use crate::{
    domain::{Changes, Field, FieldViolation, MSG_REQUIRED, require_name},
    error::Error,
    events::user_to_proto,
    store::{Saved, Store},
    watch::{self, EventStream},
};

/// Page size when the caller asks for none (AIP-158).
pub const DEFAULT_PAGE_SIZE: i32 = 100;
/// Larger page sizes are lowered to this (AIP-158 coerces rather than rejects).
pub const MAX_PAGE_SIZE: i32 = 1000;

/// Paths an update mask may name that are set by the server; AIP-134 says to
/// ignore them rather than fail.
const OUTPUT_ONLY_PATHS: [&str; 4] = ["id", "create_time", "update_time", "version"];
const PAGE_TOKEN_PREFIX: &str = "after:";

/// The gRPC face of the store: it turns messages into domain values and back,
/// so the rules stay in `domain` and the SQL in `store`.
pub struct UsersApi {
    store: Arc<Store>,
    shutdown: CancellationToken,
}

impl UsersApi {
    /// `shutdown` ends every open WatchUsers stream, so a graceful shutdown is not
    /// held open by watchers that would never finish on their own.
    pub fn new(store: Arc<Store>, shutdown: CancellationToken) -> Self {
        Self { store, shutdown }
    }
}

#[tonic::async_trait]
impl UserService for UsersApi {
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let request = request.into_inner();
        let page_size = match request.page_size {
            n if n < 0 => return Err(Error::invalid("page_size", "Must not be negative.").into()),
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        if request.skip < 0 {
            return Err(Error::invalid("skip", "Must not be negative.").into());
        }
        let after_id = decode_page_token(&request.page_token)?;
        let page = self
            .store
            .list_users(after_id, request.skip.into(), page_size.into())
            .await?;
        let next_page_token = match (page.more, page.users.last()) {
            (true, Some(last)) => encode_page_token(last.id),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListUsersResponse {
            users: page.users.iter().map(user_to_proto).collect(),
            next_page_token,
            total_size: page.total,
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let user = self.store.get_user(request.into_inner().id).await?;
        Ok(Response::new(user_to_proto(&user)))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let request = request.into_inner();
        let user = request.user.unwrap_or_default();
        let mut violations = Vec::new();
        let first = require_name(
            Field::FirstName,
            user.first_name.as_deref(),
            &mut violations,
        );
        let last = require_name(Field::LastName, user.last_name.as_deref(), &mut violations);
        let (Some(first), Some(last)) = (first, last) else {
            return Err(Error::Invalid(violations).into());
        };
        if request.validate_only {
            let preview = pb::User {
                first_name: Some(first.into_string()),
                last_name: Some(last.into_string()),
                ..Default::default()
            };
            return Ok(Response::new(preview));
        }
        let saved = self
            .store
            .create_user(first.into_string(), last.into_string())
            .await?;
        Ok(written(user_to_proto(&saved.user), &saved))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let request = request.into_inner();
        let Some(user) = request.user else {
            return Err(Error::invalid("user", MSG_REQUIRED).into());
        };
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        let fields = fields_to_update(&paths, &user)?;
        // Value errors wait until the store knows the user exists (404 first, as DRF).
        let changes = changes_for(&fields, &user);
        if request.validate_only {
            let preview = self
                .store
                .preview_update(user.id, changes, request.expected_version)
                .await?;
            return Ok(Response::new(user_to_proto(&preview)));
        }
        let saved = self
            .store
            .update_user(user.id, changes, request.expected_version)
            .await?;
        Ok(written(user_to_proto(&saved.user), &saved))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        let saved = self
            .store
            .delete_user(request.id, request.expected_version)
            .await?;
        Ok(written((), &saved))
    }

    type WatchUsersStream = EventStream;

    async fn watch_users(
        &self,
        request: Request<pb::WatchUsersRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = request.into_inner();
        let from = match (request.since_seq, request.replay_tail) {
            (0, Some(count)) => watch::Start::Tail(count),
            (since, _) => watch::Start::Seq(since),
        };
        let opened = watch::open(
            self.store.clone(),
            from,
            &request.epoch,
            self.shutdown.clone(),
        )
        .await?;
        let mut response = Response::new(opened.events);
        let map = response.metadata_mut();
        metadata::set_epoch(map, self.store.epoch());
        metadata::set_seq(map, metadata::HEAD_SEQ, opened.head);
        Ok(response)
    }
}

/// A write's answer, with the seq of the event it recorded in the metadata: the
/// gateway holds its own answer until that event is on its feed.
fn written<T>(message: T, saved: &Saved) -> Response<T> {
    let mut response = Response::new(message);
    if let Some(seq) = saved.seq {
        metadata::set_seq(response.metadata_mut(), metadata::SEQ, seq);
    }
    response
}

/// The fields an update mask names (AIP-134): an empty mask means every name field
/// set in `user`; `*` means both; output-only paths are ignored; others are errors.
fn fields_to_update(paths: &[String], user: &pb::User) -> Result<Vec<Field>, Error> {
    if paths.is_empty() {
        let set = [
            (Field::FirstName, user.first_name.is_some()),
            (Field::LastName, user.last_name.is_some()),
        ];
        return Ok(set
            .into_iter()
            .filter(|(_, is_set)| *is_set)
            .map(|(f, _)| f)
            .collect());
    }
    let mut fields = Vec::new();
    let mut violations = Vec::new();
    for path in paths {
        if path == "*" {
            fields.extend(Field::ALL);
        } else if let Some(field) = Field::from_name(path) {
            fields.push(field);
        } else if !OUTPUT_ONLY_PATHS.contains(&path.as_str()) {
            violations.push(FieldViolation::new(
                "update_mask",
                format!(
                    "Unknown field path {path:?}; updatable paths are first_name, last_name and *."
                ),
            ));
        }
    }
    if !violations.is_empty() {
        return Err(Error::Invalid(violations));
    }
    fields.sort();
    fields.dedup();
    Ok(fields)
}

/// Validates the new value of each field to update.
fn changes_for(fields: &[Field], user: &pb::User) -> Result<Changes, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let mut changes = Changes::default();
    for &field in fields {
        match field {
            Field::FirstName => {
                changes.first_name =
                    require_name(field, user.first_name.as_deref(), &mut violations)
            }
            Field::LastName => {
                changes.last_name = require_name(field, user.last_name.as_deref(), &mut violations)
            }
        }
    }
    if violations.is_empty() {
        Ok(changes)
    } else {
        Err(violations)
    }
}

fn encode_page_token(last_id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{PAGE_TOKEN_PREFIX}{last_id}"))
}

/// The id a page token continues after; an empty token starts at the beginning.
fn decode_page_token(token: &str) -> Result<i64, Error> {
    if token.is_empty() {
        return Ok(0);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(PAGE_TOKEN_PREFIX)?.parse::<i64>().ok())
        .filter(|id| *id >= 0)
        .ok_or_else(|| Error::invalid("page_token", "Invalid page token."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(first: Option<&str>, last: Option<&str>) -> pb::User {
        pb::User {
            first_name: first.map(str::to_owned),
            last_name: last.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn an_empty_mask_updates_the_fields_that_are_set() {
        let fields = fields_to_update(&[], &user(None, Some("x"))).unwrap();
        assert_eq!(fields, [Field::LastName]);
    }

    #[test]
    fn a_star_mask_updates_both_and_requires_both() {
        let fields = fields_to_update(&["*".into()], &user(Some("a"), None)).unwrap();
        assert_eq!(fields, Field::ALL);
        let Err(violations) = changes_for(&fields, &user(Some("a"), None)) else {
            panic!("a missing last_name must be required");
        };
        assert_eq!(violations, [FieldViolation::new("last_name", MSG_REQUIRED)]);
    }

    #[test]
    fn output_only_paths_are_ignored_and_unknown_ones_refused() {
        let ignored =
            fields_to_update(&["version".into(), "id".into()], &user(None, None)).unwrap();
        assert!(ignored.is_empty());
        let refused = fields_to_update(&["email".into()], &user(None, None));
        assert!(matches!(refused, Err(Error::Invalid(v)) if v[0].field == "update_mask"));
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        assert_eq!(decode_page_token(&encode_page_token(42)).unwrap(), 42);
        assert_eq!(decode_page_token("").unwrap(), 0);
        assert!(decode_page_token("not-a-token!").is_err());
        assert!(decode_page_token(&URL_SAFE_NO_PAD.encode("after:-3")).is_err());
    }
}
