//! How much a server holds at most. Past a limit the endpoint refuses the newcomer (or
//! evicts a session that never proved its keys); live sessions are never touched.

/// The server's limits (environment: `NAMESOCK_MAX_SESSIONS`,
/// `NAMESOCK_MAX_SESSIONS_PER_PEER`, `NAMESOCK_BUFFER_BUDGET`,
/// `NAMESOCK_MAX_PREAUTH_PER_SOURCE`; see `Config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Server sessions at once, lingering ones included.
    pub sessions: usize,
    /// Server sessions one peer GUID holds at once.
    pub sessions_per_peer: usize,
    /// Bytes of replay and receive buffers all server sessions may hold together. A
    /// session counts at its receive window's cap (what the peer was promised, so what a
    /// hostile peer can make it hold) plus its replay buffer's start size: the replay buffer
    /// grows past that only for a path that confirms a full buffer within two round trips,
    /// up to its own cap (`SessionConfig::budgeted_buffers`).
    pub buffer_budget: usize,
    /// Paths not yet attached, and sessions not yet proven, per source address (an IPv4
    /// address or an IPv6 /64).
    pub preauth_per_source: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            sessions: 4096,
            sessions_per_peer: 64,
            buffer_budget: 2 << 30,
            preauth_per_source: 32,
        }
    }
}

impl Limits {
    /// Sessions at once: the session limit, or what the budget pays for when each session
    /// may hold `buffers_per_session` bytes, whichever is lower (at least one).
    pub fn max_sessions(&self, buffers_per_session: usize) -> usize {
        let by_budget = self
            .buffer_budget
            .checked_div(buffers_per_session)
            .unwrap_or(usize::MAX);
        self.sessions.min(by_budget).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_caps_sessions_at_what_each_is_counted() {
        let l = Limits::default();
        // 64 KiB replay to start + 4 MiB receive per session: 2 GiB pays for 504.
        let per = crate::session::SessionConfig::default().budgeted_buffers();
        assert_eq!(per, (64 << 10) + (4 << 20));
        assert_eq!(l.max_sessions(per), 504);
        // At their largest (4 MiB each way): 256.
        assert_eq!(l.max_sessions(8 << 20), 256);
        // Small buffers: the session limit rules.
        assert_eq!(l.max_sessions(64 << 10), 4096);
        let tiny = Limits {
            buffer_budget: 1,
            ..l
        };
        assert_eq!(tiny.max_sessions(8 << 20), 1);
        assert_eq!(l.max_sessions(0), 4096);
    }
}
