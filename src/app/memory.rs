//! Lets go of the pages of runbot's own code that only start-up used.
//!
//! Most of an idle runbot's resident memory is its executable, not its heap: start-up runs
//! code from all over the binary (settings, Cedar's parser, migrations, the router), and the
//! kernel maps each page touched together with its neighbours (fault-around, large readahead
//! folios). Once started, runbot unmaps those clean, file-backed pages from itself
//! (`MADV_DONTNEED`). They stay in the kernel's page cache, so whatever the running server
//! executes again costs a minor fault, never a disk read (`MADV_PAGEOUT` would evict them
//! and make the first requests after start wait for the disk). Nothing written is touched:
//! the heap, the stacks and the relocated data stay.

use std::path::Path;

/// The executable's clean mappings (code and read-only data) as `(start, length)`, read from
/// `/proc/self/maps`. Writable mappings and the relocated read-only data (mapped from a
/// non-zero offset as `r--p` after relocation) are left out: their pages are no longer the
/// file's.
fn clean_mappings(maps: &str, exe: &Path) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for line in maps.lines() {
        // "start-end perms offset dev inode path"
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms), Some(offset), Some(_dev), Some(_inode), Some(path)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        if Path::new(path) != exe {
            continue;
        }
        let clean =
            perms == "r-xp" || (perms == "r--p" && offset.trim_start_matches('0').is_empty());
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        if clean && end > start {
            out.push((start, end - start));
        }
    }
    out
}

/// Unmaps the executable's clean pages from this process; returns how many bytes of mappings
/// it let go of (0 where the platform cannot).
pub fn release_startup_code() -> usize {
    #[cfg(target_os = "linux")]
    {
        let (Ok(exe), Ok(maps)) = (
            std::fs::read_link("/proc/self/exe"),
            std::fs::read_to_string("/proc/self/maps"),
        ) else {
            return 0;
        };
        let mut asked = 0;
        for (start, len) in clean_mappings(&maps, &exe) {
            // SAFETY: the range is one of this process's own file-backed, read-only mappings,
            // page-aligned as /proc/self/maps gives it, that nothing ever wrote: for such a
            // private mapping MADV_DONTNEED changes nothing the memory reads as, a page is
            // mapped again from the file (the page cache) on next use.
            let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
            if rc == 0 {
                asked += len;
            } else {
                // Nothing lost: RSS stays as it was.
                tracing::debug!(
                    error = %std::io::Error::last_os_error(),
                    "could not hand start-up code pages back"
                );
                return asked;
            }
        }
        asked
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
5555a000-5555b000 r--p 00000000 fe:01 42 /usr/bin/runbot
5555b000-5555f000 r-xp 00001000 fe:01 42 /usr/bin/runbot
5555f000-55560000 r--p 00005000 fe:01 42 /usr/bin/runbot
55560000-55561000 rw-p 00006000 fe:01 42 /usr/bin/runbot
55561000-55562000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000001000 r-xp 00000000 fe:01 7 /usr/lib/x86_64-linux-gnu/libc.so.6
";

    #[test]
    fn only_the_executables_clean_mappings_are_released() {
        let got = clean_mappings(MAPS, Path::new("/usr/bin/runbot"));
        assert_eq!(got, vec![(0x5555a000, 0x1000), (0x5555b000, 0x4000)]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_running_test_binary_releases_its_code_and_keeps_running() {
        let asked = release_startup_code();
        assert!(asked > 0, "no mapping of the test binary was released");
        // Code paged out is read back on use.
        assert_eq!(clean_mappings(MAPS, Path::new("/nowhere")), vec![]);
    }
}
