//! The pure parts of the end-to-end benchmark suite (`nsbench-suite`, run by `bench/run.sh`):
//! statistics, parsing what the programs and the kernel print, the outage split from engine
//! logs, the markdown table, the plots' CSV and gnuplot scripts, and the README's benchmark
//! section made from the results.
//! Everything here is deterministic and unit-tested; the drivers (`main.rs`, `bin/`) do the I/O.

pub mod parse;
pub mod plot;
pub mod readme;
pub mod stats;
pub mod table;

/// Raise this process's open-file limit to `want` (or the hard limit if that is lower and we
/// may not raise it); returns the soft limit now in force. Children inherit it.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct that we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: want.max(lim.rlim_max),
    };
    // SAFETY: setrlimit reads one rlimit struct that we own. Root may raise the hard limit
    // (up to fs.nr_open); otherwise it fails and we fall back to the hard limit below.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return want;
    }
    let capped = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } == 0 {
        capped.rlim_cur
    } else {
        lim.rlim_cur
    }
}
