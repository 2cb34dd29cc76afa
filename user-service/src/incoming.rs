//! The gRPC port's connections, bounded as the gateway's are: a connection must
//! send its first bytes within a deadline (a silent one is closed), and at most
//! so many are open at once, below the process's open-file limit; beyond, a new
//! connection is closed at once, counted, and logged at most every 10 s.

use std::{io, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use service_runtime::{held::Held, log_limit::LogLimit};
use tokio::{net::TcpStream, sync::Semaphore};
use tonic::transport::server::TcpIncoming;

/// Connections refused over the cap, logged at most once per 10 s.
static REFUSALS: LogLimit = LogLimit::new(Duration::from_secs(10));

/// Accepted connections, at most `cap` open at once, each closed unless it sends
/// something within `first_bytes`.
pub fn bounded(
    incoming: TcpIncoming,
    cap: usize,
    first_bytes: Duration,
) -> impl Stream<Item = io::Result<Held<TcpStream>>> {
    let places = Arc::new(Semaphore::new(cap));
    incoming.filter_map(move |accepted| {
        let admitted = match accepted {
            Err(error) => Some(Err(error)),
            Ok(stream) => match places.clone().try_acquire_owned() {
                Ok(place) => Some(Ok(
                    Held::new(stream, place).with_first_bytes_within(first_bytes)
                )),
                Err(_) => {
                    drop(stream);
                    ::metrics::counter!(crate::metrics::CONNECTIONS_REFUSED).increment(1);
                    if let Some(refused) = REFUSALS.hit() {
                        tracing::warn!(
                            refused,
                            cap,
                            "connections refused: as many are open as --max-connections allows"
                        );
                    }
                    None
                }
            },
        };
        std::future::ready(admitted)
    })
}
