//! How many connections a process may hold without running out of file
//! descriptors: `accept` must never meet EMFILE, or every new client (probes
//! included) is turned away while the process still has work it could do.

/// Descriptors always kept back from connections: the listener, outgoing
/// connections (the user-service, Redis, the database), probes, files and the
/// runtime's own.
pub const MIN_HEADROOM: u64 = 256;

/// The connection cap when none is configured: the open-file limit (raised to
/// its hard value first) less a headroom of a tenth, at least [`MIN_HEADROOM`],
/// and never less than half the limit.
pub fn default_connection_cap() -> usize {
    let limit = raise_open_file_limit();
    let headroom = (limit / 10).max(MIN_HEADROOM);
    usize::try_from(limit.saturating_sub(headroom).max(limit / 2)).unwrap_or(usize::MAX)
}

/// Raises the soft open-file limit to the hard one (as Go's runtime does), and
/// returns the limit now in force.
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    // RLIM_INFINITY, or a huge hard limit: what the kernel really allows.
    limit.rlim_cur.min(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_descriptors_to_spare() {
        let cap = default_connection_cap() as u64;
        let limit = raise_open_file_limit();
        assert!(cap > 0 && cap + MIN_HEADROOM.min(limit / 2) <= limit);
    }
}
