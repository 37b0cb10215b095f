//! `Frame::decode` on arbitrary bytes: never panics, and whatever it accepts re-encodes to
//! exactly the bytes it consumed (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use namesock::wire::{Frame, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((frame, used))) = Frame::decode(rest) {
        assert!(used <= rest.len() && used <= MAX_FRAME);
        let mut again = Vec::new();
        frame.encode(&mut again);
        assert_eq!(again, &rest[..used]);
        rest = &rest[used..];
    }
});
