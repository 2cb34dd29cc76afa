//! Which users a filtered socket follows (`?users=`, `subscribe`,
//! `unsubscribe`): a small sorted set, cheap to hold per socket, with the
//! contract's bounds and wording for bad input.

use serde_json::Value;

/// Most users one socket may follow.
pub const MAX_USERS: usize = 1000;

/// A sorted, duplicate-free set of positive user ids, at most [`MAX_USERS`]. A
/// sorted `Vec` rather than a tree: most sockets follow one user, and one `i64`
/// on the heap is all that costs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserSet(Vec<i64>);

impl UserSet {
    /// Reads `?users=`: comma-separated positive integer ids; empty is the empty
    /// set (a filtered socket that follows nobody yet).
    pub fn parse_query(text: &str) -> Result<UserSet, String> {
        let ids = text
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(|part| match part.trim().parse::<i64>() {
                Ok(id) if id > 0 => Ok(id),
                _ => Err(format!(
                    "users must be comma-separated positive integer ids, not {part:?}."
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        UserSet::default().with(&ids)
    }

    /// The ids of a message's `"users"`: a JSON array of positive integers.
    pub fn ids_of(value: Option<&Value>) -> Result<Vec<i64>, String> {
        const SHAPE: &str = "\"users\" must be a list of positive integer ids.";
        let items = value.and_then(Value::as_array).ok_or(SHAPE)?;
        if items.len() > MAX_USERS {
            return Err(too_many(items.len()));
        }
        items
            .iter()
            .map(|item| match item.as_i64() {
                Some(id) if id > 0 => Ok(id),
                _ => Err(SHAPE.to_owned()),
            })
            .collect()
    }

    /// This set with `ids` added, or why not (more than [`MAX_USERS`]).
    pub fn with(&self, ids: &[i64]) -> Result<UserSet, String> {
        let mut all = self.0.clone();
        all.extend_from_slice(ids);
        all.sort_unstable();
        all.dedup();
        if all.len() > MAX_USERS {
            return Err(too_many(all.len()));
        }
        all.shrink_to_fit();
        Ok(UserSet(all))
    }

    /// This set with `ids` removed.
    pub fn without(&self, ids: &[i64]) -> UserSet {
        let mut left: Vec<i64> = self
            .0
            .iter()
            .copied()
            .filter(|id| !ids.contains(id))
            .collect();
        left.shrink_to_fit();
        UserSet(left)
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: i64) -> bool {
        self.0.binary_search(&id).is_ok()
    }

    /// The ids, ascending.
    pub fn ids(&self) -> &[i64] {
        &self.0
    }
}

fn too_many(count: usize) -> String {
    format!("A socket may follow at most {MAX_USERS} users, not {count}.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_query_is_a_sorted_set_of_positive_ids() {
        assert_eq!(UserSet::parse_query("3,1,2,3").unwrap().ids(), [1, 2, 3]);
        assert_eq!(UserSet::parse_query("").unwrap().ids(), [] as [i64; 0]);
        assert_eq!(UserSet::parse_query(" 7 ").unwrap().ids(), [7]);
        for bad in ["0", "-1", "a", "1,x", "1.5", "99999999999999999999"] {
            let error = UserSet::parse_query(bad).unwrap_err();
            assert!(error.contains("positive integer ids"), "{bad}: {error}");
        }
        let many: Vec<String> = (1..=1001).map(|i| i.to_string()).collect();
        assert!(
            UserSet::parse_query(&many.join(","))
                .unwrap_err()
                .contains("at most 1000")
        );
        assert_eq!(
            UserSet::parse_query(&many[..1000].join(","))
                .unwrap()
                .ids()
                .len(),
            1000
        );
    }

    #[test]
    fn messages_name_ids_as_a_list_of_positive_integers() {
        assert_eq!(UserSet::ids_of(Some(&json!([4, 5]))).unwrap(), [4, 5]);
        for bad in [
            json!(4),
            json!(["4"]),
            json!([0]),
            json!([1.5]),
            json!(null),
        ] {
            assert!(UserSet::ids_of(Some(&bad)).is_err(), "{bad}");
        }
        assert!(UserSet::ids_of(None).is_err());
    }

    #[test]
    fn adding_and_removing_keep_the_set_sorted_and_bounded() {
        let set = UserSet::parse_query("5,1").unwrap();
        assert_eq!(set.with(&[3, 1]).unwrap().ids(), [1, 3, 5]);
        assert_eq!(set.without(&[5, 9]).ids(), [1]);
        assert!(set.contains(5) && !set.contains(2));
        let full = UserSet::default()
            .with(&(1..=1000).collect::<Vec<_>>())
            .unwrap();
        assert!(full.with(&[1001]).unwrap_err().contains("not 1001"));
        assert_eq!(full.with(&[1]).unwrap().ids().len(), 1000);
    }
}
