//! A file's bytes as fixed-size chunks shared copy-on-write, so that making a file durable (a
//! copy of its current content) costs a vector of pointers, and the next append copies one
//! chunk, not the whole file. Chunks never written read as zeros (holes, preallocated space).

use std::sync::Arc;

/// Bytes per chunk: big enough that a log file has few, small enough that the copy an append
/// after a sync makes is cheap.
const CHUNK_BYTES: usize = 64 << 10;

/// The bytes of one regular file.
#[derive(Debug, Clone, Default)]
pub struct Content {
    /// `None` is a chunk of zeros.
    chunks: Vec<Option<Arc<Vec<u8>>>>,
    size: u64,
}

impl Content {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes actually held (for statistics and the blocks attribute).
    pub fn allocated_bytes(&self) -> u64 {
        self.chunks.iter().flatten().count() as u64 * CHUNK_BYTES as u64
    }

    /// Up to `len` bytes from `offset`, fewer at the end of the file.
    pub fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        if offset >= self.size {
            return Vec::new();
        }
        let end = self.size.min(offset.saturating_add(len as u64));
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut at = offset;
        while at < end {
            let chunk = (at / CHUNK_BYTES as u64) as usize;
            let within = (at % CHUNK_BYTES as u64) as usize;
            let take = ((CHUNK_BYTES - within) as u64).min(end - at) as usize;
            match self.chunks.get(chunk).and_then(Option::as_ref) {
                Some(bytes) => out.extend_from_slice(&bytes[within..within + take]),
                None => out.resize(out.len() + take, 0),
            }
            at += take as u64;
        }
        out
    }

    /// Writes `data` at `offset`, growing the file as needed.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        self.reserve_chunks(end);
        let mut written = 0usize;
        while written < data.len() {
            let at = offset + written as u64;
            let chunk = (at / CHUNK_BYTES as u64) as usize;
            let within = (at % CHUNK_BYTES as u64) as usize;
            let take = (CHUNK_BYTES - within).min(data.len() - written);
            let slot = &mut self.chunks[chunk];
            let bytes = Arc::make_mut(slot.get_or_insert_with(|| Arc::new(vec![0; CHUNK_BYTES])));
            bytes[within..within + take].copy_from_slice(&data[written..written + take]);
            written += take;
        }
        self.size = self.size.max(end);
    }

    /// Sets the size: bytes past it are gone (a later growth reads zeros there).
    pub fn set_size(&mut self, size: u64) {
        if size < self.size {
            let keep = size.div_ceil(CHUNK_BYTES as u64) as usize;
            self.chunks.truncate(keep);
            let within = (size % CHUNK_BYTES as u64) as usize;
            if within != 0 {
                if let Some(Some(last)) = self.chunks.last_mut() {
                    Arc::make_mut(last)[within..].fill(0);
                }
            }
        } else {
            self.reserve_chunks(size);
        }
        self.size = size;
    }

    fn reserve_chunks(&mut self, end: u64) {
        let needed = end.div_ceil(CHUNK_BYTES as u64) as usize;
        if self.chunks.len() < needed {
            self.chunks.resize(needed, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_across_chunks_read_back_and_holes_are_zeros() {
        let mut content = Content::default();
        let data: Vec<u8> = (0..(CHUNK_BYTES + 100)).map(|i| (i % 251) as u8).collect();
        content.write(10, &data);
        assert_eq!(content.size(), 10 + data.len() as u64);
        assert_eq!(content.read(10, data.len()), data);
        assert_eq!(content.read(0, 10), vec![0; 10]);
        assert!(content.read(content.size(), 5).is_empty());
    }

    #[test]
    fn shrinking_then_growing_reads_zeros_past_the_cut() {
        let mut content = Content::default();
        content.write(0, &[7; 100]);
        content.set_size(50);
        content.set_size(100);
        assert_eq!(content.read(0, 100)[..50], [7; 50]);
        assert_eq!(content.read(0, 100)[50..], [0; 50]);
    }

    #[test]
    fn a_copy_does_not_see_later_writes() {
        let mut content = Content::default();
        content.write(0, b"before");
        let copy = content.clone();
        content.write(0, b"AFTER!");
        assert_eq!(copy.read(0, 6), b"before");
        assert_eq!(content.read(0, 6), b"AFTER!");
    }
}
