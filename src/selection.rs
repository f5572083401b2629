//! File selection: which of a torrent's files a download fetches (`download --only 0,2,4-6`,
//! or a magnet link's `so=`, BEP 53), and which pieces that takes. Indices are positions in
//! the info dictionary's file list (padding files count, as in libtorrent; selecting one
//! selects nothing). A piece is wanted when it holds a byte of a selected file. Pieces are
//! fetched and verified whole, so a piece shared with an unselected neighbour writes that
//! neighbour's bytes too (as Transmission does); such a file is left sparse. Pure.

use crate::layout::Layout;
use bitvec::prelude::{BitVec, Msb0};
use std::ops::RangeInclusive;

/// Items one list may hold (a magnet link is untrusted input).
pub const MAX_ITEMS: usize = 200;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectionError {
    #[error("{0:?} is not a list of file indices and ranges (like 0,2,4-6)")]
    Malformed(String),
    #[error("file {index} does not exist: the torrent has {count} files (0-{})", count.saturating_sub(1))]
    NoSuchFile { index: u32, count: usize },
}

/// Reads a list of file indices and inclusive ranges, `0,2,4-6`; at most `MAX_ITEMS` items
/// are read, the rest ignored.
pub fn parse_ranges(text: &str) -> Result<Vec<RangeInclusive<u32>>, SelectionError> {
    let bad = || SelectionError::Malformed(text.to_string());
    let mut ranges = Vec::new();
    for item in text.split(',').take(MAX_ITEMS) {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        let lo: u32 = lo.parse().map_err(|_| bad())?;
        let hi: u32 = hi.parse().map_err(|_| bad())?;
        if lo > hi {
            return Err(bad());
        }
        ranges.push(lo..=hi);
    }
    Ok(ranges)
}

/// The selected files of one torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    files: Vec<bool>,
}

impl Selection {
    /// Every file.
    pub fn all(file_count: usize) -> Selection {
        Selection {
            files: vec![true; file_count],
        }
    }

    /// The files named by `ranges`, of a torrent with `file_count` files. Naming a file past
    /// the end is an error (a range that starts inside and runs past the end too).
    pub fn from_ranges(
        ranges: &[RangeInclusive<u32>],
        file_count: usize,
    ) -> Result<Selection, SelectionError> {
        let mut files = vec![false; file_count];
        for r in ranges {
            let end = *r.end();
            if end as usize >= file_count {
                return Err(SelectionError::NoSuchFile {
                    index: end,
                    count: file_count,
                });
            }
            files[*r.start() as usize..=end as usize].fill(true);
        }
        Ok(Selection { files })
    }

    pub fn wants_file(&self, file: usize) -> bool {
        self.files.get(file).copied().unwrap_or(false)
    }

    /// Per file of the layout: selected, and not padding (so worth reserving space for).
    pub fn files_to_keep(&self, layout: &Layout) -> Vec<bool> {
        (layout.files().iter().enumerate())
            .map(|(i, span)| self.wants_file(i) && !span.pad)
            .collect()
    }

    /// The pieces holding at least one byte of a selected, non-padding file.
    pub fn wanted_pieces(&self, layout: &Layout) -> BitVec<u8, Msb0> {
        let mut wanted = BitVec::repeat(false, layout.piece_count() as usize);
        for (i, span) in layout.files().iter().enumerate() {
            if self.wants_file(i) && !span.pad {
                for p in layout.pieces_of_file(i) {
                    wanted.set(p as usize, true);
                }
            }
        }
        wanted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::FileSpan;

    #[test]
    fn parses_lists_and_ranges() {
        assert_eq!(parse_ranges("0,2,4-6"), Ok(vec![0..=0, 2..=2, 4..=6]));
        for bad in ["", "a", "1-", "-1", "3-2", "1,,2", "1-2-3", "99999999999"] {
            assert!(parse_ranges(bad).is_err(), "{bad:?}");
        }
        let long = vec!["1"; 500].join(",");
        assert_eq!(parse_ranges(&long).unwrap().len(), MAX_ITEMS);
    }

    /// Files of 100, 0, 300 and 50 bytes in 128-byte pieces: piece 0 holds file 0 and the
    /// start of file 2, pieces 1-2 the rest of file 2, piece 3 its end and file 3.
    fn layout() -> Layout {
        Layout::from_lengths(128, [100, 0, 300, 50])
    }

    #[test]
    fn a_file_wants_every_piece_it_touches_and_nothing_else() {
        let l = layout();
        let only = |r: &[RangeInclusive<u32>]| Selection::from_ranges(r, 4).unwrap();
        let bits = |s: Selection| s.wanted_pieces(&l).iter().map(|b| *b).collect::<Vec<_>>();
        assert_eq!(bits(only(&[0..=0])), [true, false, false, false]);
        assert_eq!(bits(only(&[3..=3])), [false, false, false, true]);
        assert_eq!(bits(only(&[2..=2])), [true, true, true, true]);
        assert_eq!(
            bits(only(&[1..=1])),
            [false; 4],
            "an empty file needs no piece"
        );
        assert_eq!(bits(Selection::all(4)), [true; 4]);
        assert_eq!(
            only(&[0..=1, 3..=3]).files_to_keep(&l),
            [true, true, false, true]
        );
    }

    #[test]
    fn padding_files_are_never_wanted() {
        let spans = vec![
            FileSpan {
                offset: 0,
                length: 100,
                pad: false,
            },
            FileSpan {
                offset: 100,
                length: 28,
                pad: true,
            },
            FileSpan {
                offset: 128,
                length: 128,
                pad: false,
            },
        ];
        let l = Layout::from_spans(128, spans);
        let pad_only = Selection::from_ranges(&[1..=1], 3).unwrap();
        assert!(pad_only.wanted_pieces(&l).not_any());
        assert_eq!(pad_only.files_to_keep(&l), [false, false, false]);
    }

    #[test]
    fn a_file_past_the_end_is_an_error() {
        let err = Selection::from_ranges(&[0..=0, 3..=9], 5).unwrap_err();
        assert_eq!(err, SelectionError::NoSuchFile { index: 9, count: 5 });
        assert_eq!(
            err.to_string(),
            "file 9 does not exist: the torrent has 5 files (0-4)"
        );
    }
}
