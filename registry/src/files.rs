//! Reading files from folders that someone else may write (a registry, a
//! data dir, a workflow an operator names): only regular files, never more
//! than a stated number of bytes, and never blocking on a FIFO or a device.
//!
//! `std::fs::read` on such paths is a denial of service: a FIFO blocks the
//! reader forever, and a symlink to `/dev/zero` is read until memory runs
//! out. Every read of outside data in elex goes through [`read_regular`].

use std::io::Read;
use std::path::Path;

/// What to do with a symbolic link at the path itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Refuse it: for files elex wrote itself (blobs, cache artifacts, index
    /// lines), where no link is expected.
    Refuse,
    /// Follow it: for files an operator names on the command line. The
    /// target must still be a regular file within the size bound.
    Follow,
}

/// The contents of the regular file at `path`, at most `max_bytes` long.
///
/// Fails with `InvalidInput` when the path is not a regular file (a FIFO,
/// socket, device, directory, or a symlink under [`Links::Refuse`]) and with
/// `InvalidData` when it is larger than `max_bytes`. Opening never blocks
/// (`O_NONBLOCK`), so a FIFO is refused rather than waited on.
pub fn read_regular(path: &Path, max_bytes: u64, links: Links) -> std::io::Result<Vec<u8>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut flags = libc::O_NONBLOCK;
        if links == Links::Refuse {
            flags |= libc::O_NOFOLLOW;
        }
        options.custom_flags(flags);
    }
    let file = options.open(path).map_err(|e| {
        #[cfg(unix)]
        // ELOOP: O_NOFOLLOW met a symbolic link.
        if e.raw_os_error() == Some(libc::ELOOP) {
            return std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "is a symbolic link, where none is expected",
            );
        }
        e
    })?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is not a regular file (a {})", kind_of(&meta.file_type())),
        ));
    }
    if meta.len() > max_bytes {
        return Err(too_large(meta.len(), max_bytes));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow between the check and the read: read one byte more
    // than the bound to notice.
    file.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64, max_bytes));
    }
    Ok(bytes)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_text(path: &Path, max_bytes: u64, links: Links) -> std::io::Result<String> {
    String::from_utf8(read_regular(path, max_bytes, links)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "is not UTF-8 text"))
}

fn too_large(len: u64, max: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("is larger than the limit of {max} bytes (at least {len})"),
    )
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "FIFO";
        }
        if t.is_socket() {
            return "socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "device";
        }
    }
    if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_within_the_bound_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_regular(&p, 5, Links::Refuse).unwrap(), b"hello");
        let e = read_regular(&p, 4, Links::Refuse).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("limit of 4 bytes"), "{e}");
        assert!(read_regular(dir.path(), 100, Links::Follow).unwrap_err().to_string().contains("directory"));
    }

    #[cfg(unix)]
    #[test]
    fn fifos_devices_and_links_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        // Would block forever with std::fs::read.
        let e = read_regular(&fifo, 100, Links::Follow).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");

        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read_regular(&zero, 1 << 20, Links::Refuse).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = read_regular(&zero, 1 << 20, Links::Follow).unwrap_err();
        assert!(e.to_string().contains("device"), "{e}");

        let target = dir.path().join("t");
        std::fs::write(&target, b"x").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(read_regular(&link, 10, Links::Refuse).is_err());
        assert_eq!(read_regular(&link, 10, Links::Follow).unwrap(), b"x");
    }
}
