//! Which programs the preload cannot reach: statically linked ELF files (no `PT_INTERP`, so no
//! dynamic loader to honour `LD_PRELOAD`) and Go programs (whose standard library makes its
//! system calls itself and speaks DNS itself, even when linked dynamically for cgo).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// What kind of program a file is, as far as interposition goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramKind {
    /// A dynamically linked ELF program (the preload reaches it).
    Dynamic,
    /// A statically linked ELF program.
    Static,
    /// A Go program (static or not).
    Go,
    /// A 32-bit ELF program: the 64-bit preload cannot be loaded into it (the loader skips it
    /// with "wrong ELF class") and the supervisor's filter refuses 32-bit system calls.
    Elf32,
    /// Not an ELF file (a script: its interpreter decides).
    Other,
}

impl ProgramKind {
    /// Does the preload miss this program?
    pub fn needs_supervisor(self) -> bool {
        matches!(self, ProgramKind::Static | ProgramKind::Go)
    }
}

/// The magic at the start of a Go binary's `.go.buildinfo` section.
const GO_BUILDINFO: &[u8] = b"\xff Go buildinf:";
/// Program header type of the interpreter (the dynamic loader's path).
const PT_INTERP: u32 = 3;
/// Most program headers looked at (real programs have a dozen).
const MAX_PHDRS: usize = 256;

/// Classifies the file at `path`.
pub fn classify(path: &Path) -> io::Result<ProgramKind> {
    let mut file = File::open(path)?;
    let mut head = vec![0u8; 64 + MAX_PHDRS * 56];
    let n = read_full(&mut file, &mut head)?;
    head.truncate(n);
    if head.len() >= 5 && &head[..4] == b"\x7fELF" && head[4] == 1 {
        return Ok(ProgramKind::Elf32);
    }
    let Some(interp) = has_interp(&head) else {
        return Ok(ProgramKind::Other);
    };
    let go = contains(&mut file, &head, GO_BUILDINFO)?;
    Ok(match (go, interp) {
        (true, _) => ProgramKind::Go,
        (false, true) => ProgramKind::Dynamic,
        (false, false) => ProgramKind::Static,
    })
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// For a 64-bit little-endian ELF header (with its program headers in `head`): is there a
/// `PT_INTERP`? `None` when `head` is not such a file.
fn has_interp(head: &[u8]) -> Option<bool> {
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(head[32..40].try_into().ok()?) as usize;
    let phentsize = u16_at(54);
    let phnum = u16_at(56).min(MAX_PHDRS);
    if phentsize < 4 {
        return None;
    }
    let mut interp = false;
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        // Headers beyond what was read: an unusual layout; treat as dynamic (the preload's
        // ordinary path) rather than guess.
        let Some(bytes) = head.get(at..at + 4) else {
            return Some(true);
        };
        if u32::from_le_bytes(bytes.try_into().ok()?) == PT_INTERP {
            interp = true;
        }
    }
    Some(interp)
}

/// Does the file contain `needle` (read in 1 MiB chunks, `head` being its start)?
fn contains(file: &mut File, head: &[u8], needle: &[u8]) -> io::Result<bool> {
    if find(head, needle) {
        return Ok(true);
    }
    let keep = needle.len() - 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut carried = keep.min(head.len());
    buf[..carried].copy_from_slice(&head[head.len() - carried..]);
    loop {
        let n = file.read(&mut buf[carried..])?;
        if n == 0 {
            return Ok(false);
        }
        let end = carried + n;
        if find(&buf[..end], needle) {
            return Ok(true);
        }
        let tail = keep.min(end);
        buf.copy_within(end - tail..end, 0);
        carried = tail;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_classified() {
        // This test binary is a dynamically linked ELF program.
        let me = std::env::current_exe().unwrap();
        assert_eq!(classify(&me).unwrap(), ProgramKind::Dynamic);
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert_eq!(classify(&script).unwrap(), ProgramKind::Other);
        // The same header as 32-bit (ELFCLASS32).
        let mut elf32 = std::fs::read(&me).unwrap();
        elf32[4] = 1;
        let old = dir.path().join("old");
        std::fs::write(&old, &elf32[..4096]).unwrap();
        assert_eq!(classify(&old).unwrap(), ProgramKind::Elf32);
        // A Go marker straddling the 1 MiB read boundary is still found.
        let mut fake = std::fs::read(&me).unwrap();
        let at = (1 << 20) + 64 * 1024 - 5;
        fake.resize(at, 0);
        fake.extend_from_slice(GO_BUILDINFO);
        let go = dir.path().join("go");
        std::fs::write(&go, &fake).unwrap();
        assert_eq!(classify(&go).unwrap(), ProgramKind::Go);
    }
}
