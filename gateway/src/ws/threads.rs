//! The threads that run the WebSocket tasks: a tokio runtime of their own, at a
//! lower OS priority than the rest of the gateway.
//!
//! One event for thousands of sockets wakes thousands of socket tasks at once. On
//! a runtime shared with requests, a PATCH, its gRPC reply and the next event
//! from the user-service would wait behind all of them, task after task, and on a
//! busy machine the kernel gives the gateway's threads no preference over the
//! rest. On threads of their own with a higher nice value, the sockets still get
//! every cycle nobody else wants, but the request path and the event intake run
//! first whenever they wake (BENCHMARKS.md measures the difference).

use std::io;

use tokio::runtime::{Builder, Handle, Runtime};

/// Where socket tasks run; shut down when dropped.
pub struct SocketThreads {
    /// `None` when sockets share the caller's runtime.
    runtime: Option<Runtime>,
    handle: Handle,
}

impl SocketThreads {
    /// Starts `threads` worker threads at nice value `nice` (0–19: lowering a
    /// thread's priority needs no privilege); `threads == 0` keeps socket tasks
    /// on the current runtime. Must be called inside a tokio runtime.
    pub fn start(threads: usize, nice: i32) -> io::Result<SocketThreads> {
        if threads == 0 {
            return Ok(SocketThreads {
                runtime: None,
                handle: Handle::current(),
            });
        }
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("gateway-sockets")
            .enable_all()
            .on_thread_start(move || {
                if let Err(error) = lower_priority(nice) {
                    tracing::warn!(%error, nice, "could not lower a socket thread's priority");
                }
            })
            .build()?;
        Ok(SocketThreads {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// The runtime socket tasks are spawned on.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for SocketThreads {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which is refused inside
        // another runtime; by now its sockets have closed or been given up on.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Sets the calling thread's nice value (on Linux a thread has its own).
#[cfg(target_os = "linux")]
fn lower_priority(nice: i32) -> io::Result<()> {
    // SAFETY: gettid has no preconditions; setpriority only reads its arguments.
    let done = unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, nice)
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_nice: i32) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The calling thread's nice value.
    fn own_nice() -> i32 {
        // SAFETY: as in `lower_priority`; errno is cleared first because -1 is
        // also a valid nice value.
        unsafe {
            *libc::__errno_location() = 0;
            let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, thread)
        }
    }

    #[tokio::test]
    async fn socket_tasks_run_on_their_own_threads_at_the_given_nice_value() {
        let before = own_nice();
        let threads = SocketThreads::start(1, 7).unwrap();
        let (name, nice) = threads
            .handle()
            .spawn(async { (std::thread::current().name().map(str::to_owned), own_nice()) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("gateway-sockets"));
        assert_eq!(nice, 7.max(before));
        // The caller's thread keeps its priority.
        assert_eq!(own_nice(), before);
        drop(threads);
    }

    #[tokio::test]
    async fn zero_threads_keep_sockets_on_the_current_runtime() {
        let threads = SocketThreads::start(0, 10).unwrap();
        let on = threads
            .handle()
            .spawn(async { std::thread::current().id() })
            .await
            .unwrap();
        // A current-thread test runtime runs everything on this thread.
        assert_eq!(on, std::thread::current().id());
    }
}
