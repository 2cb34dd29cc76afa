//! What a REST request may do: the permission its method needs (403), its rate
//! limit (429), and for writes, each field it changes. Runs before the body is
//! read and before the user-service is asked, so a refused request changes
//! nothing and sends nothing it may not.

use std::net::SocketAddr;

use crate::{
    error::Error,
    http::fields::NameFields,
    security::{
        auth::Caller,
        limits::{self, Class, Limits},
    },
};

/// What a request needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// `users:read`.
    Read,
    /// `users:write` for at least one field (which fields is checked on the body).
    SomeWrite,
    /// `users:write` on every field: create and delete.
    FullWrite,
}

/// Checks the caller may do what the request needs (403), then spends from its
/// rate limit (429): DRF's order.
pub fn permit(
    limits: &Limits,
    caller: &Caller,
    client: Option<SocketAddr>,
    need: Need,
) -> Result<(), Error> {
    let allowed = match need {
        Need::Read => caller.read,
        Need::SomeWrite => caller.write && !caller.fields.is_empty(),
        Need::FullWrite => caller.may_write_all(),
    };
    if !allowed {
        return Err(Error::Forbidden);
    }
    let class = if need == Need::Read {
        Class::Read
    } else {
        Class::Write
    };
    limits
        .check(class, &limits::identity(caller, client))
        .map_err(|wait| Error::Throttled(limits::wait_seconds(wait)))
}

/// 403 unless the caller may write every field the body (PATCH) or the method
/// (PUT: both) changes. Runs before the user-service is asked, so nothing changes.
pub fn permit_fields(caller: &Caller, fields: &NameFields, partial: bool) -> Result<(), Error> {
    let written = [
        ("first_name", fields.first_name.is_some()),
        ("last_name", fields.last_name.is_some()),
    ];
    for (field, sent) in written {
        if (sent || !partial) && !caller.may_write(field) {
            return Err(Error::Forbidden);
        }
    }
    Ok(())
}
