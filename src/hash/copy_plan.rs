//! Copies to make while hashing. A download copies the aligned middle of each run of blocks
//! into the bounce buffer of its direct write, and hashes every block in piece order; a
//! `CopyPlan` lists the copies (source bytes in the receive buffers, destination in the bounce
//! buffers), the hashing passes each block's bytes through it, and the parts of a block that
//! have a destination are copied by the SHA-1 pass itself (`Sha1State::update_copying`).
//! Whatever was not hashed then (blocks held back for order, or left to be re-read) is copied
//! plainly by `copy_rest`.

use super::PieceHasher;

/// One copy: `src` is a slice of a receive buffer, `dst` as long, in a bounce buffer.
struct Part<'a> {
    src: &'a [u8],
    dst: &'a mut [u8],
    done: bool,
}

impl Part<'_> {
    fn start(&self) -> usize {
        self.src.as_ptr() as usize
    }
}

/// Copies keyed by the address of their source bytes.
#[derive(Default)]
pub struct CopyPlan<'a> {
    /// Sorted by source address once `seal`ed; sources never overlap.
    parts: Vec<Part<'a>>,
    sealed: bool,
}

impl<'a> CopyPlan<'a> {
    /// Plans to copy `src` to `dst` (of the same length).
    pub fn add(&mut self, src: &'a [u8], dst: &'a mut [u8]) {
        assert_eq!(src.len(), dst.len(), "a copy's two sides are as long");
        if !src.is_empty() {
            self.parts.push(Part {
                src,
                dst,
                done: false,
            });
            self.sealed = false;
        }
    }

    fn seal(&mut self) {
        if !self.sealed {
            self.parts.sort_unstable_by_key(Part::start);
            self.sealed = true;
        }
    }

    /// Hashes `bytes` into `h`; the planned copies whose source lies within `bytes` are made
    /// in the same pass. A planned source must lie wholly inside or wholly outside `bytes`
    /// (both are whole blocks or their parts, cut from the same receive buffers).
    pub fn hash_through(&mut self, bytes: &[u8], h: &mut PieceHasher) {
        self.seal();
        let base = bytes.as_ptr() as usize;
        let end = base + bytes.len();
        let first = self.parts.partition_point(|p| p.start() < base);
        let mut at = 0;
        for part in self.parts[first..].iter_mut() {
            if part.start() >= end {
                break;
            }
            let off = part.start() - base;
            if off + part.src.len() > bytes.len() {
                break; // straddles the end: cannot be part of these bytes, copied later
            }
            h.update(&bytes[at..off]);
            h.update_copying(part.src, part.dst);
            part.done = true;
            at = off + part.src.len();
        }
        h.update(&bytes[at..]);
    }

    /// Makes the planned copies the hashing did not.
    pub fn copy_rest(self) {
        for part in self.parts.into_iter().filter(|p| !p.done) {
            part.dst.copy_from_slice(part.src);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha1;

    /// Blocks hashed through the plan give the digest of the whole, each planned part lands in
    /// its destination whether or not it was hashed, and bytes with no destination are hashed
    /// all the same.
    #[test]
    fn hashing_through_a_plan_copies_the_planned_parts_and_copy_rest_the_others() {
        let receive: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut bounce = vec![0u8; 500];
        let (a, rest) = bounce.split_at_mut(300);
        let (b, c) = rest.split_at_mut(100);
        let mut plan = CopyPlan::default();
        plan.add(&receive[700..800], b); // planned first, lies last: order does not matter
        plan.add(&receive[100..400], a);
        plan.add(&receive[900..1000], c); // never hashed here: copy_rest makes it
        let mut h = PieceHasher::default();
        plan.hash_through(&receive[0..500], &mut h);
        plan.hash_through(&receive[500..900], &mut h);
        plan.copy_rest();
        assert_eq!(h.finish(), sha1(&receive[..900]));
        assert_eq!(&bounce[..300], &receive[100..400]);
        assert_eq!(&bounce[300..400], &receive[700..800]);
        assert_eq!(&bounce[400..], &receive[900..1000]);
    }
}
