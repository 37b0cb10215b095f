//! Logging: off unless `NAMESOCK_LOG` is set (a tracing filter such as `debug` or
//! `namesock::engine=trace`); to stderr, or appended to `NAMESOCK_LOG_FILE`. Never stdout:
//! the program's stdout is its own.

use std::fs::OpenOptions;
use std::sync::{Mutex, Once};

use tracing_subscriber::EnvFilter;

use crate::config::Config;

static INIT: Once = Once::new();

/// Installs the subscriber once per process according to `cfg`. Does nothing when logging
/// is off or when the program already installed a global subscriber of its own.
pub fn init(cfg: &Config) {
    INIT.call_once(|| {
        let Some(filter) = cfg.log.as_deref() else {
            return;
        };
        let Ok(filter) = EnvFilter::try_new(filter) else {
            return;
        };
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_thread_names(true);
        let file = cfg
            .log_file
            .as_ref()
            .and_then(|p| OpenOptions::new().create(true).append(true).open(p).ok());
        // try_init: an already installed subscriber wins.
        let _ = match file {
            Some(f) => builder.with_writer(Mutex::new(f)).try_init(),
            None => builder.with_writer(std::io::stderr).try_init(),
        };
    });
}

/// Reads the configuration and installs the subscriber (for binaries and the preload).
pub fn init_from_env() {
    if let Ok(cfg) = Config::load() {
        init(&cfg);
    }
}
