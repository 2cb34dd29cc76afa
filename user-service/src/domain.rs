//! The rules about a user, as Django REST Framework's `CharField(max_length=100)`
//! applies them, so the gateway can pass our messages through to POC clients
//! word for word.

use std::fmt;

/// The most characters (Unicode scalar values, as Python counts them) a name holds.
pub const MAX_NAME_CHARS: usize = 100;

/// DRF's message for a field that was not sent.
pub const MSG_REQUIRED: &str = "This field is required.";
/// DRF's message for an empty or all-whitespace value.
pub const MSG_BLANK: &str = "This field may not be blank.";
/// DRF's message for a value over `MAX_NAME_CHARS`.
pub const MSG_TOO_LONG: &str = "Ensure this field has no more than 100 characters.";
/// DRF's message for a value holding U+0000.
pub const MSG_NUL: &str = "Null characters are not allowed.";

/// A user's editable fields: the only paths an update may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `first_name` on every wire.
    FirstName,
    /// `last_name` on every wire.
    LastName,
}

impl Field {
    /// Both editable fields, in the order they are reported.
    pub const ALL: [Field; 2] = [Field::FirstName, Field::LastName];

    /// The field's name on every wire (proto, JSON, field-mask paths).
    pub fn as_str(self) -> &'static str {
        match self {
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
        }
    }

    /// The field a wire name refers to, if any.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One broken rule on one field, worded as DRF words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's wire name (or a request field, such as `page_size`), as
    /// google.rpc.BadRequest names it.
    pub field: String,
    /// DRF's wording, which the gateway passes on to REST clients as it is.
    pub description: String,
}

impl FieldViolation {
    /// Takes anything string-like, so callers pass constants and formatted
    /// text alike.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// A name that has passed every rule: trimmed, 1..=100 characters, no NUL.
/// Holding one is proof it may be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    /// Trims and checks `raw`, returning every message DRF would give for it: a blank
    /// value stops at "blank"; otherwise the length and NUL rules are both checked.
    pub fn parse(raw: &str) -> Result<Name, Vec<&'static str>> {
        let trimmed = raw.trim_matches(is_python_whitespace);
        if trimmed.is_empty() {
            return Err(vec![MSG_BLANK]);
        }
        let mut messages = Vec::new();
        if trimmed.chars().count() > MAX_NAME_CHARS {
            messages.push(MSG_TOO_LONG);
        }
        if trimmed.contains('\0') {
            messages.push(MSG_NUL);
        }
        if messages.is_empty() {
            Ok(Name(trimmed.to_owned()))
        } else {
            Err(messages)
        }
    }

    /// The valid name, borrowed, to compare with what is stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The valid name, for the store to keep without a copy.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Python's `str.isspace`, which DRF's trimming uses: Unicode whitespace plus the
/// ASCII information separators U+001C..U+001F, which Rust does not count.
fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Checks an optional incoming value for `field`: absent is "required", present
/// must parse as a [`Name`]. Violations are appended to `violations`.
pub fn require_name(
    field: Field,
    raw: Option<&str>,
    violations: &mut Vec<FieldViolation>,
) -> Option<Name> {
    let Some(raw) = raw else {
        violations.push(FieldViolation::new(field.as_str(), MSG_REQUIRED));
        return None;
    };
    match Name::parse(raw) {
        Ok(name) => Some(name),
        Err(messages) => {
            violations.extend(
                messages
                    .into_iter()
                    .map(|m| FieldViolation::new(field.as_str(), m)),
            );
            None
        }
    }
}

/// A stored user, as the store reads it back.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    /// Assigned by SQLite and never reused, so an old event's id never names
    /// another user.
    pub id: i64,
    /// A valid [`Name`] when written; plain text here, as every stored value
    /// has passed the rules.
    pub first_name: String,
    /// As `first_name`.
    pub last_name: String,
    /// Microseconds since the Unix epoch, UTC.
    pub create_time: i64,
    /// Microseconds since the Unix epoch, UTC.
    pub update_time: i64,
    /// 1 on create, plus one per change that altered a value: what an
    /// `expected_version` is checked against.
    pub version: i64,
}

impl User {
    /// The current value of an editable field.
    pub fn get(&self, field: Field) -> &str {
        match field {
            Field::FirstName => &self.first_name,
            Field::LastName => &self.last_name,
        }
    }

    /// Replaces an editable field's value.
    pub fn set(&mut self, field: Field, value: String) {
        match field {
            Field::FirstName => self.first_name = value,
            Field::LastName => self.last_name = value,
        }
    }
}

/// New values for some of a user's fields, every one already valid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// `None`: left as it is.
    pub first_name: Option<Name>,
    /// `None`: left as it is.
    pub last_name: Option<Name>,
}

impl Changes {
    /// The new value for `field`, if this change sets it.
    pub fn get(&self, field: Field) -> Option<&Name> {
        match field {
            Field::FirstName => self.first_name.as_ref(),
            Field::LastName => self.last_name.as_ref(),
        }
    }

    /// Sets on `user` every value that differs from its own, and says which
    /// fields changed: none means the update is a no-op (no new version, no event).
    pub fn apply_to(&self, user: &mut User) -> Vec<Field> {
        let changed: Vec<Field> = Field::ALL
            .into_iter()
            .filter(|&f| self.get(f).is_some_and(|v| v.as_str() != user.get(f)))
            .collect();
        for &field in &changed {
            if let Some(value) = self.get(field) {
                user.set(field, value.as_str().to_owned());
            }
        }
        changed
    }
}

/// What an event did to its user; the numbers are the proto enum's and the
/// `events.action` column's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The user was created.
    Create = 1,
    /// Some of the user's values changed.
    Update = 2,
    /// The user was deleted.
    Delete = 3,
}

impl Action {
    /// The action stored as `code`; `None` for a code this service never
    /// writes, which the store reports as an internal error rather than guess.
    pub fn from_code(code: i64) -> Option<Action> {
        match code {
            1 => Some(Action::Create),
            2 => Some(Action::Update),
            3 => Some(Action::Delete),
            _ => None,
        }
    }
}

/// One committed change: a row of the `events` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The event's place in the log: increasing with no gaps but pruned ones,
    /// so a reader that sees a jump knows events were pruned.
    pub seq: u64,
    /// What the change did.
    pub action: Action,
    /// The user after the change; for a delete, as it was before.
    pub user: User,
    /// The fields whose value changed.
    pub changed: Vec<Field>,
    /// Microseconds since the Unix epoch, UTC.
    pub commit_time: i64,
}

/// Now, in microseconds since the Unix epoch: the precision of every stored
/// time, which a protobuf Timestamp carries exactly.
pub fn now_micros() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    since.as_micros() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_trimmed_of_python_whitespace() {
        let name = Name::parse(" \t\u{1f}Ada\u{a0}\n").unwrap();
        assert_eq!(name.as_str(), "Ada");
    }

    #[test]
    fn an_empty_or_all_space_name_is_blank() {
        assert_eq!(Name::parse(""), Err(vec![MSG_BLANK]));
        assert_eq!(Name::parse("   \u{3000}"), Err(vec![MSG_BLANK]));
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        let hundred = "é".repeat(100);
        assert_eq!(Name::parse(&hundred).unwrap().as_str(), hundred);
        assert_eq!(Name::parse(&"é".repeat(101)), Err(vec![MSG_TOO_LONG]));
    }

    #[test]
    fn surrounding_spaces_do_not_count_towards_the_length() {
        let padded = format!("  {}  ", "x".repeat(100));
        assert!(Name::parse(&padded).is_ok());
    }

    #[test]
    fn a_nul_character_is_refused() {
        assert_eq!(Name::parse("a\0b"), Err(vec![MSG_NUL]));
    }

    #[test]
    fn a_long_name_with_a_nul_gets_both_messages_in_drf_order() {
        let raw = format!("{}\0", "x".repeat(100));
        assert_eq!(Name::parse(&raw), Err(vec![MSG_TOO_LONG, MSG_NUL]));
    }

    #[test]
    fn an_absent_value_is_required() {
        let mut violations = Vec::new();
        assert_eq!(require_name(Field::LastName, None, &mut violations), None);
        assert_eq!(
            violations,
            vec![FieldViolation::new("last_name", MSG_REQUIRED)]
        );
    }

    #[test]
    fn field_names_round_trip() {
        for field in Field::ALL {
            assert_eq!(Field::from_name(field.as_str()), Some(field));
        }
        assert_eq!(Field::from_name("id"), None);
    }
}
