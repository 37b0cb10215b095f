//! libnamesock.so (hooks being built: see issue 5).
