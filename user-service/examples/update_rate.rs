//! Measures UpdateUser throughput and latency against a running user-service:
//! sequential (one writer) and concurrent (N writers on one connection each).
//!
//! cargo run --release -p user-service --example update_rate -- http://127.0.0.1:50051 16 2000

use std::time::{Duration, Instant};

use users_proto::v1::{self as pb, user_service_client::UserServiceClient};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let writers: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(16);
    let updates: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);

    let mut client = UserServiceClient::connect(url.clone()).await?;
    let user = client
        .create_user(pb::CreateUserRequest {
            user: Some(pb::User {
                first_name: Some("Bench".into()),
                last_name: Some("Mark".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();

    for (label, tasks) in [("sequential", 1), ("concurrent", writers)] {
        let per_task = updates / tasks;
        let started = Instant::now();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let mut client = UserServiceClient::connect(url.clone()).await?;
            handles.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task);
                for i in 0..per_task {
                    let request = pb::UpdateUserRequest {
                        user: Some(pb::User {
                            id: user.id,
                            first_name: Some(format!("{label}-{t}-{i}")),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["first_name".into()],
                        }),
                        ..Default::default()
                    };
                    let sent = Instant::now();
                    client.update_user(request).await?;
                    latencies.push(sent.elapsed());
                }
                Ok::<_, tonic::Status>(latencies)
            }));
        }
        let mut latencies: Vec<Duration> = Vec::new();
        for handle in handles {
            latencies.extend(handle.await??);
        }
        let elapsed = started.elapsed();
        latencies.sort();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "{label}: writers={tasks} updates={} elapsed={:.2}s rate={:.0}/s p50={:?} p99={:?} max={:?}",
            latencies.len(),
            elapsed.as_secs_f64(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            latencies.last().unwrap(),
        );
    }
    Ok(())
}
