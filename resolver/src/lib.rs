//! The namesock GNS (being built: see issue 3).
