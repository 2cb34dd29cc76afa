//! What a user write asks for, and the rules that decide what it does to the
//! user as it stands, shared by both engines so they refuse and change alike:
//! a missing user first (404), then a stale version (412), then invalid values
//! (400), each decided before anything is written.

use crate::{
    domain::{Changes, Field, FieldViolation, User},
    error::Error,
};

/// One change to the users, queued as a value so that an engine can commit
/// many of them in one transaction.
pub enum UserWrite {
    /// A new user at version 1, from two names already valid.
    Create {
        first_name: String,
        last_name: String,
    },
    /// `changes` carries the caller's validation result, reported only once the
    /// user is known to exist and its version matches (404, then 412, then 400).
    Update {
        id: i64,
        changes: Result<Changes, Vec<FieldViolation>>,
        expected_version: Option<i64>,
    },
    /// Removes user `id`, if still at `expected_version` when one is given.
    Delete {
        id: i64,
        expected_version: Option<i64>,
    },
}

impl UserWrite {
    /// The existing user this write may change (a create makes a new one).
    pub(super) fn user_id(&self) -> Option<i64> {
        match self {
            UserWrite::Update { id, .. } | UserWrite::Delete { id, .. } => Some(*id),
            UserWrite::Create { .. } => None,
        }
    }
}

/// What an update or a delete does, decided from the user as it stands.
pub(super) enum Step {
    /// The user as the update leaves it (new version and time), and the
    /// fields whose value changed.
    Update(User, Vec<Field>),
    /// The update sets every value to what it already is: no new version, no
    /// event; the answer is the user as it is.
    Unchanged(User),
    /// The user as it was, now to be removed.
    Delete(User),
}

/// Decides what `write` (an update or a delete) does to `current`, the user it
/// names as committed so far (`None`: there is none); `now` stamps a change.
pub(super) fn decide(write: &UserWrite, current: Option<User>, now: i64) -> Result<Step, Error> {
    let (expected_version, changes) = match write {
        UserWrite::Update {
            changes,
            expected_version,
            ..
        } => (*expected_version, Some(changes)),
        UserWrite::Delete {
            expected_version, ..
        } => (*expected_version, None),
        UserWrite::Create { .. } => {
            return Err(Error::Internal("a create has no user to decide on".into()));
        }
    };
    let mut user = current.ok_or(Error::NotFound)?;
    check_version(&user, expected_version)?;
    let Some(changes) = changes else {
        return Ok(Step::Delete(user));
    };
    let changes = changes
        .as_ref()
        .map_err(|violations| Error::Invalid(violations.clone()))?;
    let changed = changes.apply_to(&mut user);
    if changed.is_empty() {
        return Ok(Step::Unchanged(user));
    }
    user.update_time = now;
    user.version += 1;
    Ok(Step::Update(user, changed))
}

/// A 412 unless `expected` is unset or is `user`'s version.
pub(super) fn check_version(user: &User, expected: Option<i64>) -> Result<(), Error> {
    match expected {
        Some(expected) if expected != user.version => Err(Error::VersionMismatch {
            expected,
            current: user.version,
        }),
        _ => Ok(()),
    }
}

/// The stored text of an event's changed fields: their names, comma-separated.
pub(super) fn changed_text(changed: &[Field]) -> String {
    changed
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Name;

    fn user() -> User {
        User {
            id: 7,
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            create_time: 1,
            update_time: 1,
            version: 3,
        }
    }

    fn update(first: &str, expected_version: Option<i64>) -> UserWrite {
        UserWrite::Update {
            id: 7,
            changes: Ok(Changes {
                first_name: Some(Name::parse(first).unwrap()),
                last_name: None,
            }),
            expected_version,
        }
    }

    #[test]
    fn an_update_bumps_the_version_only_when_a_value_changes() {
        let Ok(Step::Update(after, changed)) = decide(&update("Grace", Some(3)), Some(user()), 9)
        else {
            panic!("a change of name updates");
        };
        assert_eq!((after.version, after.update_time), (4, 9));
        assert_eq!(changed, vec![Field::FirstName]);
        assert!(matches!(
            decide(&update("Ada", None), Some(user()), 9),
            Ok(Step::Unchanged(u)) if u == user()
        ));
    }

    #[test]
    fn refusals_come_in_drf_order() {
        let invalid = |expected_version| UserWrite::Update {
            id: 7,
            changes: Err(vec![FieldViolation::new("first_name", "blank")]),
            expected_version,
        };
        assert!(matches!(
            decide(&invalid(Some(2)), None, 9),
            Err(Error::NotFound)
        ));
        assert!(matches!(
            decide(&invalid(Some(2)), Some(user()), 9),
            Err(Error::VersionMismatch {
                expected: 2,
                current: 3
            })
        ));
        assert!(matches!(
            decide(&invalid(Some(3)), Some(user()), 9),
            Err(Error::Invalid(_))
        ));
        let delete = UserWrite::Delete {
            id: 7,
            expected_version: Some(3),
        };
        assert!(matches!(decide(&delete, Some(user()), 9), Ok(Step::Delete(u)) if u == user()));
    }
}
