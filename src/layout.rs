//! Layout: where a torrent's bytes live. Maps a (piece, offset, length) range of the
//! torrent's concatenated data onto the files that hold it, for any mix of file sizes
//! (zero-length files and padding files included, a short last piece), and back from a file
//! to the pieces that touch it. Pure arithmetic: no files are opened here.

use crate::metainfo::Info;
use crate::types::{BlockRef, PieceIndex, BLOCK_SIZE};
use std::ops::Range;

/// One file's place in the concatenated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpan {
    pub offset: u64,
    pub length: u64,
    /// Padding (BEP 47): reads as zeros, never written.
    pub pad: bool,
}

impl FileSpan {
    fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// The part of a byte range that falls in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub file: usize,
    /// Where in the file the segment starts.
    pub file_offset: u64,
    /// Where in the requested range the segment starts.
    pub range_offset: u32,
    pub len: u32,
    pub pad: bool,
}

/// Piece geometry plus the file map of one torrent.
#[derive(Debug, Clone)]
pub struct Layout {
    piece_length: u32,
    total_length: u64,
    files: Vec<FileSpan>,
}

impl Layout {
    pub fn new(info: &Info) -> Layout {
        let files = info
            .files
            .iter()
            .map(|f| FileSpan {
                offset: f.offset,
                length: f.length,
                pad: f.pad,
            })
            .collect();
        Layout::from_spans(info.piece_length, files)
    }

    /// Builds a layout of files of the given lengths laid end to end (no padding files).
    pub fn from_lengths(piece_length: u32, lengths: impl IntoIterator<Item = u64>) -> Layout {
        let mut offset = 0;
        let spans = lengths
            .into_iter()
            .map(|length| {
                let span = FileSpan {
                    offset,
                    length,
                    pad: false,
                };
                offset += length;
                span
            })
            .collect();
        Layout::from_spans(piece_length, spans)
    }

    /// Builds a layout from file spans laid end to end in order.
    pub fn from_spans(piece_length: u32, files: Vec<FileSpan>) -> Layout {
        assert!(piece_length > 0, "metainfo refuses a zero piece length");
        let total_length = files.last().map_or(0, FileSpan::end);
        Layout {
            piece_length,
            total_length,
            files,
        }
    }

    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    pub fn files(&self) -> &[FileSpan] {
        &self.files
    }

    pub fn piece_count(&self) -> u32 {
        self.total_length.div_ceil(u64::from(self.piece_length)) as u32
    }

    /// Byte offset of a piece's first byte in the concatenated data.
    pub fn piece_offset(&self, piece: PieceIndex) -> u64 {
        u64::from(piece.0) * u64::from(self.piece_length)
    }

    /// Length of a piece: `piece_length`, or less for the last one; 0 past the end.
    pub fn piece_len(&self, piece: PieceIndex) -> u32 {
        let start = self.piece_offset(piece);
        let end = (start + u64::from(self.piece_length)).min(self.total_length);
        end.saturating_sub(start) as u32
    }

    /// True if `offset..offset+len` lies inside piece `piece`.
    pub fn contains(&self, piece: PieceIndex, offset: u32, len: u32) -> bool {
        piece.0 < self.piece_count()
            && u64::from(offset) + u64::from(len) <= u64::from(self.piece_len(piece))
    }

    /// The 16 KiB blocks that `range` (a request or answer covering several) holds: cut
    /// every `BLOCK_SIZE` bytes from its offset, the last one shorter where the range ends.
    /// A range that is not inside its piece comes back whole.
    pub fn blocks_within(&self, range: BlockRef) -> impl Iterator<Item = BlockRef> {
        let (start, end) = if self.contains(range.piece, range.offset, range.len) {
            (range.offset, range.offset + range.len)
        } else {
            (0, 0)
        };
        let whole = (start == end).then_some(range);
        let cut = (start..end)
            .step_by(BLOCK_SIZE as usize)
            .map(move |offset| BlockRef {
                piece: range.piece,
                offset,
                len: BLOCK_SIZE.min(end - offset),
            });
        whole.into_iter().chain(cut)
    }

    /// Splits `len` bytes at `offset` within `piece` at file boundaries. Zero-length files
    /// yield nothing. The caller checks the range with [`Layout::contains`] first.
    pub fn segments(&self, piece: PieceIndex, offset: u32, len: u32) -> Segments<'_> {
        let start = self.piece_offset(piece) + u64::from(offset);
        self.segments_at(start, len)
    }

    /// Splits the `len` bytes starting at global offset `start` at file boundaries.
    pub fn segments_at(&self, start: u64, len: u32) -> Segments<'_> {
        let first = self.files.partition_point(|f| f.end() <= start);
        Segments {
            layout: self,
            file: first,
            pos: start,
            end: start + u64::from(len),
            range_start: start,
        }
    }

    /// The pieces that hold at least one byte of file `file` (empty for an empty file).
    pub fn pieces_of_file(&self, file: usize) -> Range<u32> {
        let span = self.files[file];
        if span.length == 0 {
            return 0..0;
        }
        let pl = u64::from(self.piece_length);
        (span.offset / pl) as u32..span.end().div_ceil(pl) as u32
    }
}

/// Iterator over the file segments of a byte range.
pub struct Segments<'a> {
    layout: &'a Layout,
    file: usize,
    pos: u64,
    end: u64,
    range_start: u64,
}

impl Iterator for Segments<'_> {
    type Item = Segment;

    fn next(&mut self) -> Option<Segment> {
        while self.pos < self.end {
            let span = *self.layout.files.get(self.file)?;
            self.file += 1;
            if span.end() <= self.pos {
                continue; // a zero-length file at this position
            }
            let seg_end = span.end().min(self.end);
            let seg = Segment {
                file: self.file - 1,
                file_offset: self.pos - span.offset,
                range_offset: (self.pos - self.range_start) as u32,
                len: (seg_end - self.pos) as u32,
                pad: span.pad,
            };
            self.pos = seg_end;
            return Some(seg);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(piece: u32, sizes: &[u64]) -> Layout {
        Layout::from_lengths(piece, sizes.iter().copied())
    }

    fn segs(l: &Layout, piece: u32, off: u32, len: u32) -> Vec<(usize, u64, u32, u32)> {
        l.segments(PieceIndex(piece), off, len)
            .map(|s| (s.file, s.file_offset, s.range_offset, s.len))
            .collect()
    }

    #[test]
    fn single_file_short_last_piece() {
        let l = layout(16, &[40]);
        assert_eq!(l.piece_count(), 3);
        assert_eq!(l.piece_len(PieceIndex(2)), 8);
        assert_eq!(l.piece_len(PieceIndex(3)), 0);
        assert!(l.contains(PieceIndex(2), 0, 8));
        assert!(!l.contains(PieceIndex(2), 1, 8));
        assert!(!l.contains(PieceIndex(3), 0, 0));
        assert_eq!(segs(&l, 2, 0, 8), vec![(0, 32, 0, 8)]);
    }

    #[test]
    fn block_straddling_files_and_empty_files_is_split() {
        let l = layout(16, &[10, 0, 0, 3, 20]);
        assert_eq!(
            segs(&l, 0, 4, 12),
            vec![(0, 4, 0, 6), (3, 0, 6, 3), (4, 0, 9, 3)]
        );
        assert_eq!(segs(&l, 1, 0, 16), vec![(4, 3, 0, 16)]);
        assert_eq!(segs(&l, 2, 0, 1), vec![(4, 19, 0, 1)]);
    }

    #[test]
    fn pieces_of_file() {
        let l = layout(16, &[10, 0, 3, 20, 1]);
        assert_eq!(l.pieces_of_file(0), 0..1);
        assert_eq!(l.pieces_of_file(1), 0..0);
        assert_eq!(l.pieces_of_file(2), 0..1);
        assert_eq!(l.pieces_of_file(3), 0..3);
        assert_eq!(l.pieces_of_file(4), 2..3);
    }

    proptest::proptest! {
        #[test]
        fn segments_cover_the_range_exactly(
            sizes in proptest::collection::vec(0u64..50, 1..8),
            piece in 1u32..40,
            start_frac in 0.0f64..1.0,
            len in 0u32..60,
        ) {
            let l = layout(piece, &sizes);
            let total = l.total_length();
            let start = ((total as f64) * start_frac) as u64;
            let len = len.min((total - start) as u32);
            let mut expect = start;
            let mut covered = 0;
            for s in l.segments_at(start, len) {
                let f = l.files()[s.file];
                proptest::prop_assert_eq!(f.offset + s.file_offset, expect);
                proptest::prop_assert_eq!(s.range_offset, covered);
                proptest::prop_assert!(s.len > 0 && s.file_offset + u64::from(s.len) <= f.length);
                expect += u64::from(s.len);
                covered += s.len;
            }
            proptest::prop_assert_eq!(covered, len);
        }
    }
}
