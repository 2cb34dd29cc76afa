//! How long the end-to-end tests wait, in one place: long enough for a loaded CI
//! machine, short enough that a broken build fails in minutes, not hours.

use std::time::Duration;

/// How long a process may take to say it is listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test waits for any one expected frame or answer.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);
