//! A running SHA-1 that can copy what it hashes. A download both hashes every block and copies
//! it into an aligned buffer for its O_DIRECT write; done apart, the copy is a second pass over
//! the bytes (6% of the leecher's samples at 2 GiB). With the SHA-NI instructions, hashing is
//! bound by the rounds, not by loading the message, so storing each 16-byte message word
//! to the destination as it is loaded makes the copy almost free. Without SHA-NI, the copy
//! and the hash are done one after the other (RustCrypto's portable compression).

/// SHA-1's initial state (FIPS 180-4, 5.3.1).
const INITIAL: [u32; 5] = [
    0x6745_2301,
    0xEFCD_AB89,
    0x98BA_DCFE,
    0x1032_5476,
    0xC3D2_E1F0,
];

const BLOCK: usize = 64;

/// A SHA-1 in progress.
#[derive(Clone)]
pub struct Sha1State {
    state: [u32; 5],
    /// Bytes of a block not yet compressed.
    pending: [u8; BLOCK],
    pending_len: usize,
    /// Bytes hashed in all.
    total: u64,
}

impl Default for Sha1State {
    fn default() -> Self {
        Sha1State {
            state: INITIAL,
            pending: [0; BLOCK],
            pending_len: 0,
            total: 0,
        }
    }
}

impl Sha1State {
    /// Hashes `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.absorb(bytes, None);
    }

    /// Hashes `src` and copies it to `dst` (of the same length) in the same pass.
    pub fn update_copying(&mut self, src: &[u8], dst: &mut [u8]) {
        assert_eq!(
            src.len(),
            dst.len(),
            "copy to a destination of the same length"
        );
        self.absorb(src, Some(dst));
    }

    fn absorb(&mut self, mut src: &[u8], mut dst: Option<&mut [u8]>) {
        self.total += src.len() as u64;
        if self.pending_len > 0 {
            let take = (BLOCK - self.pending_len).min(src.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&src[..take]);
            self.pending_len += take;
            dst = copy_prefix(dst, &src[..take]);
            src = &src[take..];
            if self.pending_len < BLOCK {
                return;
            }
            let block = self.pending;
            compress(&mut self.state, &block, None);
            self.pending_len = 0;
        }
        let whole = src.len() / BLOCK * BLOCK;
        let (blocks, rest) = src.split_at(whole);
        let dst = match dst {
            Some(d) => {
                let (head, tail) = d.split_at_mut(whole);
                compress(&mut self.state, blocks, Some(head));
                Some(tail)
            }
            None => {
                compress(&mut self.state, blocks, None);
                None
            }
        };
        copy_prefix(dst, rest);
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// The digest of everything hashed.
    pub fn finish(mut self) -> [u8; 20] {
        let bits = self.total.wrapping_mul(8);
        let mut tail = [0u8; 2 * BLOCK];
        let n = self.pending_len;
        tail[..n].copy_from_slice(&self.pending[..n]);
        tail[n] = 0x80;
        let len = if n < BLOCK - 8 { BLOCK } else { 2 * BLOCK };
        tail[len - 8..len].copy_from_slice(&bits.to_be_bytes());
        compress(&mut self.state, &tail[..len], None);
        let mut out = [0u8; 20];
        for (o, word) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

/// Copies `src` to the start of `dst`, if there is a `dst`; returns what is left of it.
fn copy_prefix<'a>(dst: Option<&'a mut [u8]>, src: &[u8]) -> Option<&'a mut [u8]> {
    let (head, tail) = dst?.split_at_mut(src.len());
    head.copy_from_slice(src);
    Some(tail)
}

/// Compresses whole 64-byte blocks into `state`, copying them to `dst` if given.
fn compress(state: &mut [u32; 5], blocks: &[u8], dst: Option<&mut [u8]>) {
    debug_assert_eq!(blocks.len() % BLOCK, 0);
    #[cfg(target_arch = "x86_64")]
    if shani::available() {
        // SAFETY: the CPU has the instructions `shani::compress` is compiled for.
        unsafe { shani::compress(state, blocks, dst) };
        return;
    }
    if let Some(d) = dst {
        d.copy_from_slice(blocks);
    }
    for block in blocks.chunks_exact(BLOCK) {
        let block = sha1::digest::generic_array::GenericArray::from_slice(block);
        sha1::compress(state, std::slice::from_ref(block));
    }
}

#[cfg(target_arch = "x86_64")]
mod shani {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    pub fn available() -> bool {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("sha")
                && is_x86_feature_detected!("ssse3")
                && is_x86_feature_detected!("sse4.1")
        })
    }

    /// Four rounds: `$abcd` advances with the message words (plus E) in `$e`, using the
    /// round function `$f` (0-3, one per 20 rounds).
    macro_rules! rounds {
        ($abcd:ident, $e:expr, $f:literal) => {
            $abcd = _mm_sha1rnds4_epu32($abcd, $e, $f)
        };
    }

    /// The SHA-1 compression of `blocks` (whole 64-byte blocks) with the SHA extensions, the
    /// message schedule kept in four registers `w` that each hold four words; each 16-byte
    /// load of the message is also stored to `dst` when there is one.
    ///
    /// # Safety
    /// The CPU must have SHA, SSSE3 and SSE4.1 (`available`).
    #[target_feature(enable = "sha,ssse3,sse4.1")]
    pub unsafe fn compress(state: &mut [u32; 5], blocks: &[u8], dst: Option<&mut [u8]>) {
        // Words are big-endian in the message and kept with word 0 in the top lane.
        let reverse = _mm_set_epi64x(0x0001_0203_0405_0607, 0x0809_0a0b_0c0d_0e0f);
        let mut abcd = _mm_shuffle_epi32(_mm_loadu_si128(state.as_ptr().cast()), 0x1B);
        let mut e0 = _mm_set_epi32(state[4] as i32, 0, 0, 0);
        let out = dst.map_or(std::ptr::null_mut(), |d| {
            debug_assert_eq!(d.len(), blocks.len());
            d.as_mut_ptr()
        });
        for (i, block) in blocks.chunks_exact(64).enumerate() {
            let p = block.as_ptr();
            let raw = [
                _mm_loadu_si128(p.cast::<__m128i>()),
                _mm_loadu_si128(p.add(16).cast::<__m128i>()),
                _mm_loadu_si128(p.add(32).cast::<__m128i>()),
                _mm_loadu_si128(p.add(48).cast::<__m128i>()),
            ];
            if !out.is_null() {
                let q = out.add(i * 64);
                for (k, r) in raw.iter().enumerate() {
                    _mm_storeu_si128(q.add(16 * k).cast::<__m128i>(), *r);
                }
            }
            let (abcd_saved, e_saved) = (abcd, e0);
            let mut w = raw.map(|r| _mm_shuffle_epi8(r, reverse));
            // Rounds 0-3 add E to the first words by hand; after that `sha1nexte` derives E
            // from A of four rounds back and adds it to the next words.
            let mut e = _mm_add_epi32(e0, w[0]);
            let mut prev = abcd;
            macro_rules! group {
                ($g:literal, $f:literal) => {{
                    // w[$g % 4] holds words 4g..4g+3; from group 4 on they are computed
                    // from the four groups before (W[t] = rotl1(W[t-3]^W[t-8]^W[t-14]^W[t-16]));
                    // slot (g+k) % 4 holds group g-4+k's words.
                    if $g >= 4 {
                        let m = _mm_xor_si128(
                            _mm_sha1msg1_epu32(w[$g % 4], w[($g + 1) % 4]),
                            w[($g + 2) % 4],
                        );
                        w[$g % 4] = _mm_sha1msg2_epu32(m, w[($g + 3) % 4]);
                    }
                    if $g > 0 {
                        e = _mm_sha1nexte_epu32(prev, w[$g % 4]);
                    }
                    prev = abcd;
                    rounds!(abcd, e, $f);
                }};
            }
            group!(0, 0);
            group!(1, 0);
            group!(2, 0);
            group!(3, 0);
            group!(4, 0);
            group!(5, 1);
            group!(6, 1);
            group!(7, 1);
            group!(8, 1);
            group!(9, 1);
            group!(10, 2);
            group!(11, 2);
            group!(12, 2);
            group!(13, 2);
            group!(14, 2);
            group!(15, 3);
            group!(16, 3);
            group!(17, 3);
            group!(18, 3);
            group!(19, 3);
            e0 = _mm_sha1nexte_epu32(prev, e_saved);
            abcd = _mm_add_epi32(abcd, abcd_saved);
        }
        _mm_storeu_si128(
            state.as_mut_ptr().cast::<__m128i>(),
            _mm_shuffle_epi32(abcd, 0x1B),
        );
        state[4] = _mm_extract_epi32(e0, 3) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::{Digest, Sha1};

    fn reference(data: &[u8]) -> [u8; 20] {
        Sha1::digest(data).into()
    }

    /// Bytes that look random enough for a hash: bits 13-20 of a multiplicative hash.
    fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| ((i ^ seed).wrapping_mul(0x9E37_79B9) >> 13) as u8)
            .collect()
    }

    #[test]
    fn digests_match_the_reference_at_every_length_around_the_block_edges() {
        for len in (0..300).chain([1000, 16 << 10, (16 << 10) + 13, 1 << 20]) {
            let data = pseudo_random(len, len as u32);
            let mut h = Sha1State::default();
            h.update(&data);
            assert_eq!(h.finish(), reference(&data), "length {len}");
        }
    }

    /// Fed in uneven pieces, some copied and some not, the digest is that of the whole and
    /// every copied piece lands byte for byte in its destination.
    #[test]
    fn copying_updates_hash_and_copy_whatever_the_split() {
        let data = pseudo_random(70_000, 7);
        for cut in [1usize, 13, 63, 64, 65, 127, 4096, 16_397] {
            let mut h = Sha1State::default();
            let mut copy = vec![0u8; data.len()];
            for (i, (src, dst)) in data.chunks(cut).zip(copy.chunks_mut(cut)).enumerate() {
                if i % 3 == 2 {
                    h.update(src);
                    dst.copy_from_slice(src);
                } else {
                    h.update_copying(src, dst);
                }
            }
            assert_eq!(h.finish(), reference(&data), "pieces of {cut}");
            assert!(copy == data, "the copy of pieces of {cut}");
        }
    }

    #[test]
    fn the_portable_path_agrees_with_the_accelerated_one() {
        let data = pseudo_random(5 * 64, 3);
        let (mut fast, mut portable) = ([1u32, 2, 3, 4, 5], [1u32, 2, 3, 4, 5]);
        let mut copy = vec![0u8; data.len()];
        compress(&mut fast, &data, Some(&mut copy));
        for block in data.chunks_exact(BLOCK) {
            let block = sha1::digest::generic_array::GenericArray::from_slice(block);
            sha1::compress(&mut portable, std::slice::from_ref(block));
        }
        assert_eq!(fast, portable);
        assert_eq!(copy, data);
    }
}
