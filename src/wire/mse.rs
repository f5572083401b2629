//! Message Stream Encryption (MSE/PE, the "encrypted handshake" of libtorrent, Vuze, aria2,
//! qBittorrent and Transmission), the answering side, sans-IO.
//!
//! Many clients dial with MSE before they try a plain handshake, and some dial with nothing
//! else (libtorrent's `out_enc_policy` forced). The exchange, for the side that answers:
//!
//! 1. the dialler sends its Diffie-Hellman public key Ya (96 bytes) and 0-512 bytes of pad;
//! 2. we send ours, Yb, and a pad of our own;
//! 3. the dialler sends HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S) (SKEY is the
//!    info-hash: this is how it names the torrent without sending it in the clear), then,
//!    RC4-encrypted: 8 zero bytes (VC), the methods it offers, a pad, and its initial payload
//!    IA (usually its BitTorrent handshake);
//! 4. we send, RC4-encrypted: VC, the method we select, an empty pad.
//!
//! Dialling, spate plays the other side ([`Dial`]) with the roles swapped, offering only
//! plaintext after the exchange, for peers that refuse a plain handshake.
//!
//! spate selects plaintext whenever the dialler offers it (aria2, libtorrent, qBittorrent and
//! Transmission all do by default): after the exchange the stream is the ordinary peer wire,
//! so the zero-copy receive path and the uploads stay as they are. A dialler that offers only
//! RC4 is refused. [`Answer`] holds the state; the caller feeds it the bytes that arrived and
//! sends what it returns.

use crate::types::InfoHash;
use num_bigint::BigUint;
use rand::{Rng, RngCore};
use sha1::{Digest, Sha1};

/// Bytes in a public key and in the shared secret S.
pub const KEY_LEN: usize = 96;
/// The most pad either side may send in one place.
pub const MAX_PAD: usize = 512;
/// crypto_provide / crypto_select bits.
pub const CRYPTO_PLAINTEXT: u32 = 0x01;
pub const CRYPTO_RC4: u32 = 0x02;

/// The prime of the exchange: the 768-bit MODP group of RFC 2409 (Oakley group 1); G is 2.
const PRIME_HEX: &[u8] = b"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74\
020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E\
7EC6F44C42E9A63A36210000000000090563";
/// Bits of our private exponent: the specification asks for at least 128; 160 is customary.
const PRIVATE_KEY_BYTES: usize = 20;
/// Verification constant: eight zero bytes, encrypted, at the start of steps 3 and 4.
const VC: [u8; 8] = [0; 8];
/// Keystream bytes both RC4 ciphers throw away before their first use.
const RC4_DISCARD: usize = 1024;
/// Bytes of step 3 after the sync hash: the obfuscated SKEY hash, then VC, crypto_provide and
/// len(PadC).
const OFFER_HEAD: usize = 20 + 8 + 4 + 2;

/// The first bytes of a plain BitTorrent handshake.
const PLAIN_PREFIX: &[u8; 20] = b"\x13BitTorrent protocol";

/// Why an encrypted handshake was refused. Each means the dialler broke the protocol or asked
/// for what we do not serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MseError {
    #[error("MSE: public key out of range")]
    BadPublicKey,
    #[error("MSE: no sync hash within {MAX_PAD} bytes of pad")]
    NoSync,
    #[error("MSE: the obfuscated info-hash names no torrent we serve")]
    UnknownTorrent,
    #[error("MSE: verification constant is not zero")]
    BadVerification,
    #[error("MSE: pad of {0} bytes (at most {MAX_PAD})")]
    PadTooLong(usize),
    #[error("MSE: offers methods {0:#x}; spate speaks plaintext after the handshake, not RC4")]
    NoCommonMethod(u32),
}

/// Whether the first bytes a dialler sent can begin a plain handshake (the caller has at
/// least one byte; a full match needs 20). An MSE public key matches by chance with
/// probability 2^-160.
pub fn looks_plain(first: &[u8]) -> bool {
    let n = first.len().min(PLAIN_PREFIX.len());
    first[..n] == PLAIN_PREFIX[..n]
}

fn prime() -> BigUint {
    BigUint::parse_bytes(PRIME_HEX, 16).expect("the MSE prime is valid hex")
}

/// `value` as exactly `KEY_LEN` big-endian bytes (it is below the prime, so it fits).
fn to_key_bytes(value: &BigUint) -> [u8; KEY_LEN] {
    let bytes = value.to_bytes_be();
    let mut out = [0u8; KEY_LEN];
    out[KEY_LEN - bytes.len()..].copy_from_slice(&bytes);
    out
}

/// One side's Diffie-Hellman key pair.
pub struct DhKey {
    private: BigUint,
    public: [u8; KEY_LEN],
}

impl DhKey {
    pub fn generate(rng: &mut impl RngCore) -> DhKey {
        let mut private = [0u8; PRIVATE_KEY_BYTES];
        rng.fill_bytes(&mut private);
        let private = BigUint::from_bytes_be(&private);
        let public = to_key_bytes(&BigUint::from(2u32).modpow(&private, &prime()));
        DhKey { private, public }
    }

    pub fn public(&self) -> &[u8; KEY_LEN] {
        &self.public
    }

    /// What either side sends first: the public key, then 0-512 random bytes of pad.
    pub fn public_with_pad(&self, rng: &mut impl Rng) -> Vec<u8> {
        let mut out = self.public.to_vec();
        out.resize(KEY_LEN + rng.gen_range(0..=MAX_PAD), 0);
        rng.fill_bytes(&mut out[KEY_LEN..]);
        out
    }

    /// S from the other side's public key. Refuses 0, 1, P-1 and anything at or past P: with
    /// those, S would be known to anyone watching.
    pub fn shared_secret(&self, theirs: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN], MseError> {
        let p = prime();
        let y = BigUint::from_bytes_be(theirs);
        let one = BigUint::from(1u32);
        if y <= one || y >= &p - &one {
            return Err(MseError::BadPublicKey);
        }
        Ok(to_key_bytes(&y.modpow(&self.private, &p)))
    }
}

/// SHA-1 over the concatenation of `parts`.
fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HASH('req1', S): the dialler's sync marker in step 3.
pub fn sync_hash(secret: &[u8; KEY_LEN]) -> [u8; 20] {
    hash(&[b"req1", secret])
}

/// HASH('req2', SKEY): what [`Answer::offer`] asks its caller to find among its torrents.
pub fn torrent_key_hash(info_hash: &InfoHash) -> [u8; 20] {
    hash(&[b"req2", &info_hash.0])
}

/// HASH('req2', SKEY) xor HASH('req3', S): how step 3 names the torrent.
pub fn obfuscated_torrent(info_hash: &InfoHash, secret: &[u8; KEY_LEN]) -> [u8; 20] {
    xor20(torrent_key_hash(info_hash), hash(&[b"req3", secret]))
}

/// Where `marker` ends in `received`, the other side's pad (at most 512 bytes) coming
/// before it: `None` while it may still arrive, an error once the pad has run past 512.
fn after_marker(received: &[u8], marker: &[u8]) -> Result<Option<usize>, MseError> {
    let window = &received[..received.len().min(MAX_PAD + marker.len())];
    match window.windows(marker.len()).position(|w| w == marker) {
        Some(at) => Ok(Some(at + marker.len())),
        None if window.len() == MAX_PAD + marker.len() => Err(MseError::NoSync),
        None => Ok(None),
    }
}

fn xor20(mut a: [u8; 20], b: [u8; 20]) -> [u8; 20] {
    a.iter_mut().zip(b).for_each(|(x, y)| *x ^= y);
    a
}

/// The RC4 stream each side encrypts with: `dialler` true for the dialler's (keyA), false
/// for the answerer's (keyB). The first 1024 bytes of keystream are already spent.
pub fn stream_cipher(secret: &[u8; KEY_LEN], info_hash: &InfoHash, dialler: bool) -> Rc4 {
    let name: &[u8] = if dialler { b"keyA" } else { b"keyB" };
    let mut rc4 = Rc4::new(&hash(&[name, secret, &info_hash.0]));
    rc4.skip(RC4_DISCARD);
    rc4
}

/// The RC4 stream cipher (only MSE's handshake uses it here).
#[derive(Clone)]
pub struct Rc4 {
    state: [u8; 256],
    i: u8,
    j: u8,
}

impl Rc4 {
    /// `key` is 1 to 256 bytes (MSE's are 20).
    pub fn new(key: &[u8]) -> Rc4 {
        debug_assert!(!key.is_empty() && key.len() <= 256);
        let mut state = [0u8; 256];
        for (i, s) in state.iter_mut().enumerate() {
            *s = i as u8;
        }
        let mut j = 0u8;
        for i in 0..256 {
            j = j.wrapping_add(state[i]).wrapping_add(key[i % key.len()]);
            state.swap(i, usize::from(j));
        }
        Rc4 { state, i: 0, j: 0 }
    }

    fn next(&mut self) -> u8 {
        self.i = self.i.wrapping_add(1);
        let si = self.state[usize::from(self.i)];
        self.j = self.j.wrapping_add(si);
        self.state.swap(usize::from(self.i), usize::from(self.j));
        self.state[usize::from(si.wrapping_add(self.state[usize::from(self.i)]))]
    }

    /// Encrypts or decrypts `data` in place.
    pub fn apply(&mut self, data: &mut [u8]) {
        for b in data {
            *b ^= self.next();
        }
    }

    fn skip(&mut self, n: usize) {
        for _ in 0..n {
            self.next();
        }
    }
}

/// Step 3 as a dialler sends it: the sync hash, the obfuscated torrent, then, encrypted with
/// `outbound` (the dialler's stream): VC, `provide`, a zero pad of `pad_c` bytes and `ia`.
fn offer_bytes(
    secret: &[u8; KEY_LEN],
    info_hash: &InfoHash,
    outbound: &mut Rc4,
    provide: u32,
    pad_c: usize,
    ia: &[u8],
) -> Vec<u8> {
    let mut out = sync_hash(secret).to_vec();
    out.extend_from_slice(&obfuscated_torrent(info_hash, secret));
    let start = out.len();
    out.extend_from_slice(&VC);
    out.extend_from_slice(&provide.to_be_bytes());
    out.extend_from_slice(&(pad_c as u16).to_be_bytes());
    out.resize(out.len() + pad_c, 0);
    out.extend_from_slice(&(ia.len() as u16).to_be_bytes());
    out.extend_from_slice(ia);
    outbound.apply(&mut out[start..]);
    out
}

/// Where the answerer's step 4 stands after the bytes seen so far (dialling side).
#[derive(Debug, PartialEq, Eq)]
pub enum Selected {
    /// Not all of it is here; read more (never more than [`Dial::MAX_REPLY`] in all).
    Incomplete,
    /// The answerer selected plaintext; these bytes after its step 4 are the peer wire.
    Plaintext(Vec<u8>),
}

/// The dialling side of one encrypted handshake, offering plaintext only.
pub struct Dial {
    key: DhKey,
    info_hash: InfoHash,
    secret: Option<[u8; KEY_LEN]>,
}

impl Dial {
    /// PadB, then step 4 (VC, crypto_select, len(PadD), PadD) at their largest.
    pub const MAX_REPLY: usize = MAX_PAD + 8 + 4 + 2 + MAX_PAD;

    pub fn new(info_hash: InfoHash, rng: &mut impl RngCore) -> Dial {
        Dial {
            key: DhKey::generate(rng),
            info_hash,
            secret: None,
        }
    }

    /// Step 1: our public key and a pad.
    pub fn public_key(&self, rng: &mut impl Rng) -> Vec<u8> {
        self.key.public_with_pad(rng)
    }

    /// Step 3, from the answerer's public key: our offer (plaintext only) with `ia`, our
    /// BitTorrent handshake, as the initial payload.
    pub fn offer(&mut self, theirs: &[u8; KEY_LEN], ia: &[u8]) -> Result<Vec<u8>, MseError> {
        let secret = self.key.shared_secret(theirs)?;
        self.secret = Some(secret);
        let mut outbound = stream_cipher(&secret, &self.info_hash, true);
        Ok(offer_bytes(
            &secret,
            &self.info_hash,
            &mut outbound,
            CRYPTO_PLAINTEXT,
            0,
            ia,
        ))
    }

    /// Step 4: `received` is everything the answerer sent after its public key, so far.
    /// Call again with the longer buffer while it answers [`Selected::Incomplete`].
    pub fn selected(&self, received: &[u8]) -> Result<Selected, MseError> {
        let secret = self
            .secret
            .expect("offer() comes before selected(): the caller's order");
        let mut inbound = stream_cipher(&secret, &self.info_hash, false);
        let mut marker = VC;
        inbound.apply(&mut marker);
        let Some(end) = after_marker(received, &marker)? else {
            return Ok(Selected::Incomplete);
        };
        let rest = &received[end..];
        let Some((head, after)) = rest.split_first_chunk::<6>() else {
            return Ok(Selected::Incomplete);
        };
        let mut head = *head;
        inbound.apply(&mut head);
        let select = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if select != CRYPTO_PLAINTEXT {
            return Err(MseError::NoCommonMethod(select));
        }
        let pad_len = usize::from(u16::from_be_bytes([head[4], head[5]]));
        if pad_len > MAX_PAD {
            return Err(MseError::PadTooLong(pad_len));
        }
        match after.get(pad_len..) {
            Some(plaintext) => Ok(Selected::Plaintext(plaintext.to_vec())),
            None => Ok(Selected::Incomplete),
        }
    }
}

/// What the dialler's step 3 came to, once all of it is in.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The torrent the dialler named.
    pub info_hash: InfoHash,
    /// Our step 4, to send before anything else.
    pub reply: Vec<u8>,
    /// Bytes of step 3 and what follows that belong to the peer wire: the decrypted initial
    /// payload, then the plaintext that came after it.
    pub plaintext: Vec<u8>,
}

/// Where step 3 stands after the bytes seen so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Not all of it is here; read more (never more than [`Answer::MAX_OFFER`] in all).
    Incomplete,
    Complete(Accepted),
}

/// The answering side of one encrypted handshake.
pub struct Answer {
    key: DhKey,
    secret: Option<[u8; KEY_LEN]>,
    /// Found from the obfuscated hash on the first call that had it; kept for the next.
    torrent: Option<InfoHash>,
}

impl Answer {
    /// Step 3 and the initial payload can be no longer than this (sync pad, hashes, header,
    /// PadC, len(IA) and IA at their largest); a dialler that sends more without completing
    /// has broken the protocol before then.
    pub const MAX_OFFER: usize = MAX_PAD + 20 + OFFER_HEAD + MAX_PAD + 2 + u16::MAX as usize;

    pub fn new(rng: &mut impl RngCore) -> Answer {
        Answer {
            key: DhKey::generate(rng),
            secret: None,
            torrent: None,
        }
    }

    /// Step 2: takes the dialler's public key, returns ours and a pad to send.
    pub fn public_key(
        &mut self,
        theirs: &[u8; KEY_LEN],
        rng: &mut impl Rng,
    ) -> Result<Vec<u8>, MseError> {
        self.secret = Some(self.key.shared_secret(theirs)?);
        Ok(self.key.public_with_pad(rng))
    }

    /// Steps 3 and 4: `received` is everything the dialler sent after its public key, so far.
    /// `torrent_named` maps HASH('req2', SKEY) to the info-hash we serve under it, if any.
    /// Call again with the longer buffer while it answers [`Offer::Incomplete`].
    pub fn offer(
        &mut self,
        received: &[u8],
        torrent_named: impl Fn(&[u8; 20]) -> Option<InfoHash>,
    ) -> Result<Offer, MseError> {
        let secret = self
            .secret
            .expect("public_key() comes before offer(): the caller's order");
        let Some(end) = after_marker(received, &sync_hash(&secret))? else {
            return Ok(Offer::Incomplete);
        };
        let rest = &received[end..];
        let Some((head, after)) = rest.split_first_chunk::<OFFER_HEAD>() else {
            return Ok(Offer::Incomplete);
        };
        let info_hash = match self.torrent {
            Some(t) => t,
            None => {
                let req2 = xor20(
                    head[..20].try_into().expect("20 bytes"),
                    hash(&[b"req3", &secret]),
                );
                let t = torrent_named(&req2).ok_or(MseError::UnknownTorrent)?;
                self.torrent = Some(t);
                t
            }
        };
        // Decrypt on copies: a later call starts again from the top with more bytes.
        let mut inbound = stream_cipher(&secret, &info_hash, true);
        let mut fixed = [0u8; OFFER_HEAD - 20];
        fixed.copy_from_slice(&head[20..]);
        inbound.apply(&mut fixed);
        if fixed[..8] != VC {
            return Err(MseError::BadVerification);
        }
        let provide = u32::from_be_bytes(fixed[8..12].try_into().expect("4 bytes"));
        let pad_len = usize::from(u16::from_be_bytes([fixed[12], fixed[13]]));
        if pad_len > MAX_PAD {
            return Err(MseError::PadTooLong(pad_len));
        }
        if provide & CRYPTO_PLAINTEXT == 0 {
            return Err(MseError::NoCommonMethod(provide));
        }
        let Some((pad_and_len, after_len)) = after.split_at_checked(pad_len + 2) else {
            return Ok(Offer::Incomplete);
        };
        let mut pad_and_len = pad_and_len.to_vec();
        inbound.apply(&mut pad_and_len);
        let ia_len = usize::from(u16::from_be_bytes([
            pad_and_len[pad_len],
            pad_and_len[pad_len + 1],
        ]));
        let Some((ia, plain_after)) = after_len.split_at_checked(ia_len) else {
            return Ok(Offer::Incomplete);
        };
        let mut plaintext = Vec::with_capacity(ia.len() + plain_after.len());
        plaintext.extend_from_slice(ia);
        inbound.apply(&mut plaintext);
        plaintext.extend_from_slice(plain_after);

        let mut reply = Vec::with_capacity(8 + 4 + 2);
        reply.extend_from_slice(&VC);
        reply.extend_from_slice(&CRYPTO_PLAINTEXT.to_be_bytes());
        reply.extend_from_slice(&0u16.to_be_bytes());
        stream_cipher(&secret, &info_hash, false).apply(&mut reply);
        Ok(Offer::Complete(Accepted {
            info_hash,
            reply,
            plaintext,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const TORRENT: InfoHash = InfoHash([0x5A; 20]);

    fn served(req2: &[u8; 20]) -> Option<InfoHash> {
        (*req2 == torrent_key_hash(&TORRENT)).then_some(TORRENT)
    }

    /// A dialler's side, written from the specification, as aria2 and libtorrent send it.
    struct Dialler {
        key: DhKey,
        pad_a: usize,
    }

    impl Dialler {
        fn new(rng: &mut SmallRng, pad_a: usize) -> Dialler {
            Dialler {
                key: DhKey::generate(rng),
                pad_a,
            }
        }

        fn step1(&self) -> Vec<u8> {
            let mut out = self.key.public().to_vec();
            out.resize(KEY_LEN + self.pad_a, 0xEE);
            out
        }

        /// Step 3 for `info_hash`, with the given offer, PadC length and initial payload.
        fn step3(
            &self,
            their_public: &[u8],
            info_hash: &InfoHash,
            provide: u32,
            pad_c: usize,
            ia: &[u8],
        ) -> (Vec<u8>, Rc4) {
            let theirs: [u8; KEY_LEN] = their_public[..KEY_LEN].try_into().unwrap();
            let s = self.key.shared_secret(&theirs).unwrap();
            let mut outbound = stream_cipher(&s, info_hash, true);
            let out = offer_bytes(&s, info_hash, &mut outbound, provide, pad_c, ia);
            (out, stream_cipher(&s, info_hash, false))
        }
    }

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(7)
    }

    /// spate dialling spate: our `Dial` against our `Answer`, every byte boundary.
    #[test]
    fn dial_and_answer_agree() {
        let mut r = rng();
        let mut dial = Dial::new(TORRENT, &mut r);
        let mut answer = Answer::new(&mut r);
        let step1 = dial.public_key(&mut r);
        let step2 = answer
            .public_key(step1[..KEY_LEN].try_into().unwrap(), &mut r)
            .unwrap();
        let step3 = dial
            .offer(step2[..KEY_LEN].try_into().unwrap(), b"HELLO")
            .unwrap();
        let mut received = step1[KEY_LEN..].to_vec();
        received.extend_from_slice(&step3);
        let Ok(Offer::Complete(acc)) = answer.offer(&received, served) else {
            panic!("offer not complete");
        };
        assert_eq!(acc.plaintext, b"HELLO");
        let mut reply = step2[KEY_LEN..].to_vec();
        reply.extend_from_slice(&acc.reply);
        reply.extend_from_slice(b"WIRE");
        let whole = reply.len();
        for cut in 0..whole {
            match dial.selected(&reply[..cut]).unwrap() {
                Selected::Incomplete => {}
                Selected::Plaintext(p) => assert_eq!(p, &b"WIRE"[..cut + 4 - whole]),
            }
        }
        assert_eq!(
            dial.selected(&reply),
            Ok(Selected::Plaintext(b"WIRE".to_vec()))
        );
        // An answer that selects RC4, or never sends its marker, is refused.
        let mut rc4 = step2[KEY_LEN..].to_vec();
        let mut enc = [0u8; 14];
        enc[8..12].copy_from_slice(&CRYPTO_RC4.to_be_bytes());
        let mut theirs = stream_cipher(dial.secret.as_ref().unwrap(), &TORRENT, false);
        theirs.apply(&mut enc);
        rc4.extend_from_slice(&enc);
        assert_eq!(
            dial.selected(&rc4),
            Err(MseError::NoCommonMethod(CRYPTO_RC4))
        );
        assert_eq!(dial.selected(&[0u8; 520]), Err(MseError::NoSync));
    }

    #[test]
    fn rc4_matches_the_published_test_vectors() {
        let mut data = *b"Plaintext";
        Rc4::new(b"Key").apply(&mut data);
        assert_eq!(data, [0xBB, 0xF3, 0x16, 0xE8, 0xD9, 0x40, 0xAF, 0x0A, 0xD3]);
        let mut data = *b"Attack at dawn";
        Rc4::new(b"Secret").apply(&mut data);
        let want = [
            0x45, 0xA0, 0x1F, 0x64, 0x5F, 0xC3, 0x5B, 0x38, 0x35, 0x52, 0x54, 0x4B, 0x9B, 0xF5,
        ];
        assert_eq!(data, want);
    }

    #[test]
    fn both_sides_reach_the_same_secret() {
        let mut r = rng();
        let (a, b) = (DhKey::generate(&mut r), DhKey::generate(&mut r));
        let s = a.shared_secret(b.public()).unwrap();
        assert_eq!(Ok(s), b.shared_secret(a.public()));
        assert_ne!(s, [0; KEY_LEN]);
        assert_eq!(prime().to_bytes_be().len(), KEY_LEN);
    }

    #[test]
    fn degenerate_public_keys_are_refused() {
        let key = DhKey::generate(&mut rng());
        let p = prime();
        for bad in [
            BigUint::from(0u32),
            BigUint::from(1u32),
            &p - 1u32,
            p.clone(),
        ] {
            let mut y = [0u8; KEY_LEN];
            let b = bad.to_bytes_be();
            y[KEY_LEN - b.len()..].copy_from_slice(&b);
            assert_eq!(key.shared_secret(&y), Err(MseError::BadPublicKey));
        }
        assert_eq!(
            key.shared_secret(&[0xFF; KEY_LEN]),
            Err(MseError::BadPublicKey)
        );
    }

    /// Runs a whole exchange; step 3 and the plaintext after it arrive in pieces of `chunk`.
    /// The plaintext returned includes what came after the point the answer completed.
    fn exchange(pad_a: usize, pad_c: usize, ia: &[u8], after: &[u8], chunk: usize) -> Accepted {
        let mut r = rng();
        let dialler = Dialler::new(&mut r, pad_a);
        let mut answer = Answer::new(&mut r);
        let step1 = dialler.step1();
        let step2 = answer
            .public_key(step1[..KEY_LEN].try_into().unwrap(), &mut r)
            .unwrap();
        assert!(step2.len() >= KEY_LEN && step2.len() <= KEY_LEN + MAX_PAD);
        let (step3, mut their_outbound) =
            dialler.step3(&step2, &TORRENT, CRYPTO_PLAINTEXT | CRYPTO_RC4, pad_c, ia);
        let mut received = step1[KEY_LEN..].to_vec();
        let mut stream = step3.clone();
        stream.extend_from_slice(after);
        let mut fed = 0;
        loop {
            let more = chunk.min(stream.len() - fed);
            received.extend_from_slice(&stream[fed..fed + more]);
            fed += more;
            match answer.offer(&received, served).unwrap() {
                Offer::Incomplete => assert!(fed < stream.len(), "all sent, still incomplete"),
                Offer::Complete(mut acc) => {
                    // The dialler reads our step 4 with the answerer's keystream.
                    let mut reply = acc.reply.clone();
                    their_outbound.apply(&mut reply);
                    assert_eq!(&reply[..8], &VC);
                    assert_eq!(reply[8..12], CRYPTO_PLAINTEXT.to_be_bytes());
                    assert_eq!(reply[12..14], [0, 0]);
                    // What was not fed yet the caller reads from the socket next.
                    acc.plaintext.extend_from_slice(&stream[fed..]);
                    return acc;
                }
            }
        }
    }

    #[test]
    fn a_whole_exchange_yields_the_torrent_and_the_plain_stream() {
        let ia = b"\x13BitTorrent protocol and the rest of a handshake";
        for (pad_a, pad_c, chunk) in [(0, 0, 1), (512, 512, 7), (33, 100, 1000), (5, 0, 3)] {
            let acc = exchange(pad_a, pad_c, ia, b"PLAIN", chunk);
            assert_eq!(acc.info_hash, TORRENT);
            let mut want = ia.to_vec();
            want.extend_from_slice(b"PLAIN");
            assert_eq!(acc.plaintext, want, "pads {pad_a}/{pad_c}, chunk {chunk}");
        }
        // An empty initial payload: the handshake comes after, in the clear.
        let acc = exchange(10, 0, b"", b"\x13BitTorrent protocol", 4);
        assert_eq!(acc.plaintext, b"\x13BitTorrent protocol");
    }

    /// Sets up an answer that has sent step 2; returns it and the secret the dialler holds.
    fn answered(r: &mut SmallRng) -> (Answer, Dialler, Vec<u8>) {
        let dialler = Dialler::new(r, 0);
        let mut answer = Answer::new(r);
        let step2 = answer
            .public_key(dialler.step1()[..KEY_LEN].try_into().unwrap(), r)
            .unwrap();
        (answer, dialler, step2)
    }

    #[test]
    fn hostile_offers_are_refused() {
        let mut r = rng();
        // No sync hash in the first 512 + 20 bytes: refused as soon as that much is in.
        let (mut answer, _, _) = answered(&mut r);
        assert_eq!(answer.offer(&[0xAB; 531], served), Ok(Offer::Incomplete));
        assert_eq!(answer.offer(&[0xAB; 532], served), Err(MseError::NoSync));
        assert_eq!(answer.offer(&[0xAB; 5000], served), Err(MseError::NoSync));

        // A torrent we do not serve.
        let (mut answer, dialler, step2) = answered(&mut r);
        let other = InfoHash([1; 20]);
        let (step3, _) = dialler.step3(&step2, &other, CRYPTO_PLAINTEXT, 0, b"");
        assert_eq!(answer.offer(&step3, served), Err(MseError::UnknownTorrent));

        // RC4 only.
        let (mut answer, dialler, step2) = answered(&mut r);
        let (step3, _) = dialler.step3(&step2, &TORRENT, CRYPTO_RC4, 0, b"");
        assert_eq!(
            answer.offer(&step3, served),
            Err(MseError::NoCommonMethod(CRYPTO_RC4))
        );

        // PadC past 512.
        let (mut answer, dialler, step2) = answered(&mut r);
        let (step3, _) = dialler.step3(&step2, &TORRENT, CRYPTO_PLAINTEXT, 513, b"");
        assert_eq!(answer.offer(&step3, served), Err(MseError::PadTooLong(513)));

        // A wrong verification constant (the encrypted VC flipped).
        let (mut answer, dialler, step2) = answered(&mut r);
        let (mut step3, _) = dialler.step3(&step2, &TORRENT, CRYPTO_PLAINTEXT, 0, b"");
        step3[40] ^= 1;
        assert_eq!(answer.offer(&step3, served), Err(MseError::BadVerification));
    }

    #[test]
    fn plain_handshakes_are_told_apart() {
        assert!(looks_plain(b"\x13BitTorrent protocol\0\0\0"));
        assert!(looks_plain(b"\x13Bit"));
        assert!(!looks_plain(b"\x13BitTorrent protocoL"));
        assert!(!looks_plain(&[0x7F; 96]));
    }

    proptest::proptest! {
        /// A genuine step 3 with any offer, pad and payload, maybe with one byte changed:
        /// never a panic; unchanged and well-formed, it completes with the payload intact.
        #[test]
        fn any_offer_is_answered_or_refused(
            provide in proptest::prelude::any::<u32>(),
            pad_c in 0usize..600,
            ia in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            flip in proptest::option::of((0usize..2000, 1u8..=255)),
            seed in 0u64..1000,
        ) {
            let mut r = SmallRng::seed_from_u64(seed);
            let (mut answer, dialler, step2) = answered(&mut r);
            let (mut step3, _) = dialler.step3(&step2, &TORRENT, provide, pad_c, &ia);
            let flipped = flip.filter(|(at, _)| *at < step3.len());
            if let Some((at, x)) = flipped {
                step3[at] ^= x;
            }
            let result = answer.offer(&step3, served);
            let well_formed = provide & CRYPTO_PLAINTEXT != 0 && pad_c <= MAX_PAD;
            if flipped.is_none() && well_formed {
                match result {
                    Ok(Offer::Complete(acc)) => proptest::prop_assert_eq!(acc.plaintext, ia),
                    other => proptest::prop_assert!(false, "refused: {:?}", other),
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
            seed in 0u64..1000,
        ) {
            let mut r = SmallRng::seed_from_u64(seed);
            let (mut answer, _, _) = answered(&mut r);
            match answer.offer(&bytes, |_| Some(TORRENT)) {
                Ok(Offer::Complete(acc)) => proptest::prop_assert!(acc.plaintext.len() <= bytes.len()),
                Ok(Offer::Incomplete) => proptest::prop_assert!(bytes.len() < Answer::MAX_OFFER),
                Err(_) => {}
            }
        }
    }
}
