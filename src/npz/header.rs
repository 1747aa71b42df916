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
    let Some(shape) = parse_shape(&header.text) else {
        return Ok(());
    };
    let shape = shape.map_err(|text| {
        format!(
            "array `{name}` has the shape `{text}` in its header, which is not a tuple of \
             integers; the file is corrupt, so write it again"
        )
    })?;
    let element_size = parse_entry_size(&header.text);

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

/// Parses the shape from a header such as
/// `{'descr': '<f8', 'fortran_order': False, 'shape': (24, 5), }`.
///
/// Returns `None` when the header has no shape entry, and the shape text as an error when it
/// is not a tuple of plain integers. numpy never writes anything else, but the `.npy` reader
/// evaluates Python literals, so it would read `(15004+0287440196, 20)` as a sum.
fn parse_shape(text: &str) -> Option<Result<Vec<u64>, String>> {
    let after_shape = &text[text.find("'shape'")? + "'shape'".len()..];
    let open = after_shape.find('(')?;
    let close = after_shape.find(')')?;
    let inner = after_shape.get(open + 1..close)?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let plain = part.bytes().all(|b| b.is_ascii_digit());
            if plain {
                part.parse::<u64>().ok()
            } else {
                None
            }
        })
        .collect::<Option<Vec<u64>>>();
    Some(shape.ok_or_else(|| format!("({inner})")))
}

/// Parses the entry size in bytes from the dtype, such as 8 for `'<f8'`. Falls back to 1,
/// the smallest size, so that the check stays a lower bound on the declared bytes.
fn parse_entry_size(text: &str) -> u64 {
    let size = || {
        let after_descr = &text[text.find("'descr'")? + "'descr'".len()..];
        let descr = after_descr.split('\'').nth(1)?;
        let digits: String = descr.chars().filter(char::is_ascii_digit).collect();
        digits.parse::<u64>().ok()
    };
    size().filter(|&bytes| bytes > 0).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_shape_and_entry_size() {
        let text = "{'descr': '<f8', 'fortran_order': False, 'shape': (24, 5), }";
        assert_eq!(parse_shape(text), Some(Ok(vec![24, 5])));
        assert_eq!(parse_entry_size(text), 8);
        let scalar = "{'descr': '|u1', 'fortran_order': False, 'shape': (), }";
        assert_eq!(parse_shape(scalar), Some(Ok(vec![])));
        assert_eq!(parse_entry_size(scalar), 1);
        let vector = "{'descr': '<i4', 'fortran_order': False, 'shape': (7,), }";
        assert_eq!(parse_shape(vector), Some(Ok(vec![7])));
        assert_eq!(parse_entry_size(vector), 4);
        assert_eq!(parse_shape("{'descr': '<f8'}"), None);
        assert_eq!(parse_entry_size("{'shape': (3,)}"), 1);
    }

    #[test]
    fn shape_expressions_rejected() {
        // Found by the .npz fuzzer: the .npy reader evaluated this sum and allocated 46 GB.
        let text = "{'descr': '<f8', 'fortran_order': False, 'shape': (15004+0287440196, 20)}";
        assert_eq!(
            parse_shape(text),
            Some(Err("(15004+0287440196, 20)".to_string()))
        );
        let signed = "{'descr': '<f8', 'fortran_order': False, 'shape': (+5, 2)}";
        assert_eq!(parse_shape(signed), Some(Err("(+5, 2)".to_string())));
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
