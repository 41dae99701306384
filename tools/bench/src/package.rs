//! A function's deployment package: its `bootstrap` zipped as `sam package` and `sam deploy`
//! zip a code folder (Python's `zipfile`: deflate by the system's zlib at its default level).

use std::io::{self, Cursor, Write};
use std::path::Path;

use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

/// Bytes of the zip holding `bootstrap` alone.
pub fn zipped_size(bootstrap: &Path) -> io::Result<u64> {
    let binary = std::fs::read(bootstrap)?;
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(6))
        .unix_permissions(0o755);
    zip.start_file("bootstrap", options).map_err(io::Error::other)?;
    zip.write_all(&binary)?;
    let archive = zip.finish().map_err(io::Error::other)?;
    Ok(archive.into_inner().len() as u64)
}

/// The CPU architecture an ELF executable is built for, from its header.
pub fn architecture(binary: &Path) -> io::Result<&'static str> {
    let mut header = [0u8; 20];
    io::Read::read_exact(&mut std::fs::File::open(binary)?, &mut header)?;
    if &header[..4] != b"\x7fELF" {
        return Err(io::Error::other(format!("{} is not an ELF executable", binary.display())));
    }
    Ok(match u16::from_le_bytes([header[18], header[19]]) {
        0x3e => "x86_64",
        0xb7 => "arm64",
        _ => "other",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compressible_file_zips_small() {
        let path = std::env::temp_dir().join(format!("zipped-size-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 64 * 1024]).unwrap();
        let size = zipped_size(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(size > 100 && size < 2 * 1024, "{size} bytes");
    }

    #[test]
    fn the_size_is_that_of_the_zip_sam_deploys() {
        // SAM's own packaging, from the virtual environment `make test` installs.
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
        assert!(python.exists(), "{} is missing: `make test` installs it", python.display());
        let folder = std::env::temp_dir().join(format!("zipped-size-sam-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        // Machine code, like a bootstrap: the start of this test's own executable.
        let mut code = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        code.truncate(4 << 20);
        std::fs::write(folder.join("bootstrap"), &code).unwrap();
        let zip_base = folder.with_extension("sam");
        let zipped = std::process::Command::new(&python)
            .args(["-c", "import sys; from samcli.lib.package.utils import make_zip; make_zip(*sys.argv[1:])"])
            .arg(&zip_base)
            .arg(&folder)
            .status()
            .unwrap();
        assert!(zipped.success());
        let sam_zip = zip_base.with_extension("sam.zip");
        let sam_size = std::fs::metadata(&sam_zip).unwrap().len();
        let size = zipped_size(&folder.join("bootstrap")).unwrap();
        std::fs::remove_dir_all(&folder).unwrap();
        std::fs::remove_file(&sam_zip).unwrap();
        assert_eq!(size, sam_size, "{} bytes of code", code.len());
    }

    #[test]
    fn this_test_is_an_elf_executable_for_this_machine() {
        let expected = if cfg!(target_arch = "x86_64") { "x86_64" } else { "arm64" };
        assert_eq!(architecture(&std::env::current_exe().unwrap()).unwrap(), expected);
    }
}
