//! Helpers shared by the end-to-end tests (being built: see issue 7).
