//! A size check of each `.npy` member of an `.npz` archive, made before the array is read.
//!
//! The `.npy` reader allocates the whole array from the shape in the member's header before
//! reading any data, so a corrupt or hostile header such as `'shape': (10**15, 5)` would
//! abort the process on a failed allocation. This module reads only the header and compares
//! the size it declares with the data the archive actually stores.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use zip::{CompressionMethod, ZipArchive};

/// Largest ratio of uncompressed to compressed size that deflate can reach, about 1032:1,
/// rounded up.
const MAX_DEFLATE_RATIO: u64 = 1100;

/// Checks that the member `{name}.npy` of the archive at `path` stores at least as many data
/// bytes as its header declares. Returns `Ok` when the member is missing or its header
/// cannot be parsed, because the `.npy` reader then reports a clearer error without
/// allocating.
pub fn check_declared_size(path: &Path, name: &str) -> Result<(), String> {
    let Ok(file) = File::open(path) else {
        return Ok(());
    };
    let Ok(mut archive) = ZipArchive::new(BufReader::new(file)) else {
        return Ok(());
    };
    let Ok(mut member) = archive.by_name(&format!("{name}.npy")) else {
        return Ok(());
    };
    let stored = stored_bytes(
        member.compression(),
        member.size(),
        member.compressed_size(),
    );
    let Some(header) = read_header(&mut member) else {
        return Ok(());
    };
    let Some((shape, element_size)) = parse_header(&header.text) else {
        return Ok(());
    };

    let data_bytes = stored.saturating_sub(header.length);
    let declared = shape
        .iter()
        .try_fold(element_size, |bytes, &len| bytes.checked_mul(len));
    match declared {
        Some(bytes) if bytes <= data_bytes => Ok(()),
        _ => Err(format!(
            "array `{name}` declares shape {shape:?} of {element_size}-byte entries, but the \
             file stores only {data_bytes} bytes of data for it; the file is truncated or \
             corrupt, so write it again"
        )),
    }
}

/// Upper bound on the uncompressed bytes of a member: its declared size, capped by what
/// its compressed size can expand to.
fn stored_bytes(method: CompressionMethod, size: u64, compressed: u64) -> u64 {
    let expandable = match method {
        CompressionMethod::Stored => compressed,
        _ => compressed
            .saturating_mul(MAX_DEFLATE_RATIO)
            .saturating_add(1 << 16),
    };
    size.min(expandable)
}

/// Header text of a `.npy` file and the byte length of everything before the data.
struct Header {
    text: String,
    length: u64,
}

/// Reads the magic string, version and header of a `.npy` stream (format versions 1 to 3).
fn read_header(reader: &mut impl Read) -> Option<Header> {
    let mut prefix = [0u8; 8];
    reader.read_exact(&mut prefix).ok()?;
    if &prefix[..6] != b"\x93NUMPY" {
        return None;
    }
    let (text_len, prefix_len) = match prefix[6] {
        1 => {
            let mut len = [0u8; 2];
            reader.read_exact(&mut len).ok()?;
            (u64::from(u16::from_le_bytes(len)), 10)
        }
        2 | 3 => {
            let mut len = [0u8; 4];
            reader.read_exact(&mut len).ok()?;
            (u64::from(u32::from_le_bytes(len)), 12)
        }
        _ => return None,
    };
    // Real headers are a few hundred bytes; a longer one is left to the `.npy` reader.
    if text_len > 1 << 16 {
        return None;
    }
    let mut text = vec![0u8; text_len as usize];
    reader.read_exact(&mut text).ok()?;
    Some(Header {
        text: String::from_utf8_lossy(&text).into_owned(),
        length: prefix_len + text_len,
    })
}

/// Parses the shape and the entry size in bytes from a header such as
/// `{'descr': '<f8', 'fortran_order': False, 'shape': (24, 5), }`.
fn parse_header(text: &str) -> Option<(Vec<u64>, u64)> {
    let after_descr = &text[text.find("'descr'")? + "'descr'".len()..];
    let descr = after_descr.split('\'').nth(1)?;
    let digits: String = descr.chars().filter(char::is_ascii_digit).collect();
    let element_size: u64 = digits.parse().ok()?;

    let after_shape = &text[text.find("'shape'")? + "'shape'".len()..];
    let open = after_shape.find('(')?;
    let close = after_shape.find(')')?;
    let shape = after_shape
        .get(open + 1..close)?
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| part.trim_end_matches('L').parse::<u64>().ok())
        .collect::<Option<Vec<u64>>>()?;
    Some((shape, element_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_shape_and_entry_size() {
        let text = "{'descr': '<f8', 'fortran_order': False, 'shape': (24, 5), }";
        assert_eq!(parse_header(text), Some((vec![24, 5], 8)));
        let scalar = "{'descr': '|u1', 'fortran_order': False, 'shape': (), }";
        assert_eq!(parse_header(scalar), Some((vec![], 1)));
        let vector = "{'descr': '<i4', 'fortran_order': False, 'shape': (7,), }";
        assert_eq!(parse_header(vector), Some((vec![7], 4)));
        assert_eq!(parse_header("{'descr': '<f8'}"), None);
    }

    #[test]
    fn stored_bytes_capped_by_compression() {
        assert_eq!(stored_bytes(CompressionMethod::Stored, 1 << 40, 100), 100);
        assert_eq!(
            stored_bytes(CompressionMethod::Deflated, 1 << 40, 100),
            100 * MAX_DEFLATE_RATIO + (1 << 16)
        );
        assert_eq!(stored_bytes(CompressionMethod::Deflated, 500, 100), 500);
    }
}
