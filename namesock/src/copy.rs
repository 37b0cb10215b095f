//! Bulk copies in 2 KiB pieces.
//!
//! glibc's `memcpy` moves 4 KiB or more with `rep movsb`, and on the AMD EPYC machines this
//! project runs on that instruction is ten times slower when the destination lies 1 to 31
//! bytes past the source modulo 4 KiB: 32 KiB copies at 2.8 GB/s against 25-35 GB/s at other
//! distances. A DATA payload sits 21 bytes behind its frame header and buffers advance in
//! lockstep, so a bulk transfer meets that distance all the time. Pieces of 2 KiB take
//! glibc's vector loop at any distance (27 GB/s). See "The data path" in
//! docs/architecture.md.

use std::collections::VecDeque;

/// The largest piece glibc copies without `rep movsb` here.
const PIECE: usize = 2048;

/// `out.extend_from_slice(src)`.
pub fn extend_vec(out: &mut Vec<u8>, src: &[u8]) {
    out.reserve(src.len());
    for piece in src.chunks(PIECE) {
        out.extend_from_slice(piece);
    }
}

/// `out.extend(src)`.
pub fn extend_deque(out: &mut VecDeque<u8>, src: &[u8]) {
    out.reserve(src.len());
    for piece in src.chunks(PIECE) {
        out.extend(piece);
    }
}

/// `dst.copy_from_slice(src)`.
pub fn copy(dst: &mut [u8], src: &[u8]) {
    assert_eq!(
        dst.len(),
        src.len(),
        "copy between slices of different lengths"
    );
    for (d, s) in dst.chunks_mut(PIECE).zip(src.chunks(PIECE)) {
        d.copy_from_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn vec_extends_match_plain_extends() {
        for start in [0, 21, 5000] {
            for n in [0, 1, PIECE - 1, PIECE, PIECE + 1, 32 * 1024 + 7] {
                let mut out = pattern(start);
                extend_vec(&mut out, &pattern(n));
                assert_eq!(out, [pattern(start), pattern(n)].concat(), "{start}+{n}");
            }
        }
    }

    #[test]
    fn deque_extends_match_plain_extends_across_the_wrap() {
        let mut plain: VecDeque<u8> = VecDeque::new();
        let mut pieces: VecDeque<u8> = VecDeque::new();
        for (i, n) in [5000, 33_000, 7, 40_000, 2048, 65_536]
            .into_iter()
            .enumerate()
        {
            let src = pattern(n);
            plain.extend(&src);
            extend_deque(&mut pieces, &src);
            let drop = plain.len() / (i + 2);
            plain.drain(..drop);
            pieces.drain(..drop);
            assert_eq!(plain, pieces);
        }
    }

    #[test]
    fn slice_copies_match() {
        let src = pattern(70_001);
        let mut dst = vec![0; 70_022];
        copy(&mut dst[21..], &src);
        assert_eq!(&dst[21..], &src[..]);
        assert!(dst[..21].iter().all(|&b| b == 0));
    }
}
