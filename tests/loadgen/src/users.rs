//! `create-users`: creates N users through `POST /api/users/` over C
//! keep-alive connections at once, and reports the ids they got, so
//! `subscribers` and `presence` can follow a range of real users
//! (`--first-user`). On a database nobody else writes to, the ids are
//! consecutive; the summary says whether they were.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use crate::{
    http::Conn,
    report,
    target::{Target, TargetArgs},
};

/// Options of `create-users`.
#[derive(clap::Args, Clone, Debug)]
pub struct CreateUsersArgs {
    /// Where the deployment is.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Users to create.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub count: u64,
    /// Requests in flight (one keep-alive connection each).
    #[arg(long, short = 'c', default_value_t = 32)]
    pub concurrency: usize,
}

/// The outcome of a `create-users` run.
#[derive(Debug)]
pub struct CreateUsersReport {
    /// Options of the run.
    pub params: Value,
    /// The target's URL.
    pub target: String,
    /// The ids created, in increasing order.
    pub ids: Vec<i64>,
    /// Failed requests by status or error.
    pub errors: BTreeMap<String, u64>,
    /// How long it took.
    pub elapsed: Duration,
}

impl CreateUsersReport {
    /// Whether the ids form one range without gaps.
    pub fn contiguous(&self) -> bool {
        contiguous(&self.ids)
    }

    /// The human-readable report.
    pub fn human(&self) -> String {
        let range = match (self.ids.first(), self.ids.last()) {
            (Some(first), Some(last)) => format!(
                "ids {first}..={last}{}",
                if self.contiguous() {
                    format!(" (consecutive: --first-user {first})")
                } else {
                    " (NOT consecutive: another writer created users meanwhile)".into()
                }
            ),
            _ => "no user created".into(),
        };
        format!(
            "create-users {}  {} created in {:.2} s ({:.0}/s), {range}{}\n",
            self.target,
            self.ids.len(),
            self.elapsed.as_secs_f64(),
            self.ids.len() as f64 / self.elapsed.as_secs_f64().max(1e-9),
            if self.errors.is_empty() {
                String::new()
            } else {
                format!("; errors {:?}", self.errors)
            }
        )
    }

    /// The machine-readable summary line.
    pub fn summary(&self) -> String {
        let results = json!({
            "created": self.ids.len(),
            "first_id": self.ids.first(),
            "last_id": self.ids.last(),
            "contiguous": self.contiguous(),
            "errors": report::counts_json(&self.errors),
            "elapsed_s": report::round3(self.elapsed.as_secs_f64()),
        });
        report::summary_line("create-users", &self.target, self.params.clone(), results)
    }
}

/// Whether sorted `ids` are consecutive (an empty list is).
pub fn contiguous(ids: &[i64]) -> bool {
    ids.windows(2).all(|w| w[1] == w[0] + 1)
}

/// Runs the scenario.
pub async fn run(args: &CreateUsersArgs) -> anyhow::Result<CreateUsersReport> {
    if args.count == 0 || args.concurrency == 0 {
        bail!("--count and --concurrency must be positive");
    }
    let target = Arc::new(Target::from_args(&args.target).await?);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.min(args.count as usize))
        .map(|_| {
            let (target, next, count) = (target.clone(), next.clone(), args.count);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                let mut errors = BTreeMap::<String, u64>::new();
                let mut conn = None;
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= count {
                        break;
                    }
                    if conn.is_none() {
                        match Conn::open(&target).await {
                            Ok(c) => conn = Some(c),
                            Err(error) => {
                                *errors.entry(format!("connect: {error}")).or_insert(0) += 1;
                                continue;
                            }
                        }
                    }
                    let body = Bytes::from(format!(r#"{{"first_name":"sub","last_name":"u{k}"}}"#));
                    let answer = conn
                        .as_mut()
                        .expect("connected above")
                        .send(Method::POST, &target.users_path(), Some(body))
                        .await;
                    match answer {
                        Ok((status, body)) if status.is_success() => {
                            match serde_json::from_slice::<Value>(&body)
                                .ok()
                                .and_then(|user| user["id"].as_i64())
                            {
                                Some(id) => ids.push(id),
                                None => *errors.entry("answer without id".into()).or_insert(0) += 1,
                            }
                        }
                        Ok((status, _)) => {
                            *errors.entry(status.as_u16().to_string()).or_insert(0) += 1;
                        }
                        Err(error) => {
                            *errors.entry(format!("io: {error}")).or_insert(0) += 1;
                            conn = None;
                        }
                    }
                }
                (ids, errors)
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(args.count as usize);
    let mut errors = BTreeMap::new();
    for worker in workers {
        let (some, failed) = worker.await?;
        ids.extend(some);
        for (k, v) in failed {
            *errors.entry(k).or_insert(0) += v;
        }
    }
    ids.sort_unstable();
    Ok(CreateUsersReport {
        params: json!({"count": args.count, "concurrency": args.concurrency}),
        target: target.url.clone(),
        ids,
        errors,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids() {
        assert!(contiguous(&[]));
        assert!(contiguous(&[5]));
        assert!(contiguous(&[5, 6, 7]));
        assert!(!contiguous(&[5, 7]));
        assert!(!contiguous(&[5, 5]));
    }
}
