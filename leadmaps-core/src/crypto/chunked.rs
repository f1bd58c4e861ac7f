//! C2SP chunked encryption with HKDF-Expand-SHA-512 and AES-256-GCM ("Cobblestone-256").
//!
//! The construction (c2sp.org/chunked-encryption, v1) in brief:
//!
//! ```text
//! okm = HKDF-Expand-SHA-512(prk = key, info = LABEL || 0x00 || salt || context, 76)
//!     = aead_key(32) || base_nonce(12) || commitment(32)
//! ciphertext = salt(24) || commitment(32) || chunk_0 || ... || chunk_n
//! chunk_i = AES-256-GCM(aead_key, base_nonce XOR i (big-endian), aad = "", plaintext_i) || tag
//! ```
//!
//! Plaintext is cut into 16 KiB chunks and the final chunk is always shorter than 16 KiB (possibly
//! empty), so a truncated message never ends on a chunk the decryptor would accept as final. The
//! commitment is checked, in constant time, before any chunk is decrypted; that makes the
//! ciphertext key-committing, so a blob cannot be made to open under two different keys.
//!
//! This module is the primitive: [`super::envelope`] frames it as the v1 secret blob and
//! [`Encryptor`]/[`Decryptor`] stream it for large payloads such as backups.

use std::io::{self, Read, Write};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use hmac::{Hmac, Mac};
use sha2::Sha512;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// The HKDF `info` label of the construction, followed by a zero byte on the wire.
pub const LABEL: &[u8] = b"c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM";
/// Length of the random per-message salt.
pub const SALT_LEN: usize = 24;
/// Length of the key commitment.
pub const COMMITMENT_LEN: usize = 32;
/// Length of the header (salt and commitment) before the first chunk.
pub const HEADER_LEN: usize = SALT_LEN + COMMITMENT_LEN;
/// Plaintext bytes in every chunk but the last.
pub const CHUNK_LEN: usize = 16 * 1024;
/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Length of an input key.
pub const KEY_LEN: usize = 32;
const FULL_CHUNK_CT: usize = CHUNK_LEN + TAG_LEN;
const NONCE_LEN: usize = 12;

/// The only failure this module reports: the message does not decrypt under this key and
/// context. Deliberately carries no detail, so callers cannot build an oracle from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("decryption failed")]
pub struct Opaque;

/// An input key with its HMAC state precomputed, so every derivation skips the key schedule.
///
/// Zeroized on drop; `Debug` never shows key material.
#[derive(Clone)]
pub struct ChunkedKey {
    prk: Hmac<Sha512>,
}

impl std::fmt::Debug for ChunkedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkedKey([REDACTED])")
    }
}

impl ChunkedKey {
    /// Prepares a 32-byte input key. Any other length is refused.
    pub fn new(key: &[u8]) -> Result<Self, Opaque> {
        if key.len() != KEY_LEN {
            return Err(Opaque);
        }
        let prk = <Hmac<Sha512> as KeyInit>::new_from_slice(key).map_err(|_| Opaque)?;
        Ok(Self { prk })
    }

    /// HKDF-Expand (RFC 5869 section 2.3) for L = 76, as T(1) || T(2); the first 76 bytes are
    /// the AEAD key, the base nonce and the commitment. `context` is given in parts that are
    /// hashed as if concatenated, which spares callers an allocation.
    fn expand(&self, salt: &[u8; SALT_LEN], context: &[&[u8]]) -> Zeroizing<[u8; 128]> {
        let block = |previous: &[u8], counter: u8| {
            let mut mac = self.prk.clone();
            mac.update(previous);
            mac.update(LABEL);
            mac.update(&[0]);
            mac.update(salt);
            for part in context {
                mac.update(part);
            }
            mac.update(&[counter]);
            mac.finalize().into_bytes()
        };
        let mut okm = Zeroizing::new([0u8; 128]);
        okm[..64].copy_from_slice(&block(&[], 1));
        let t2 = block(&okm[..64], 2);
        okm[64..].copy_from_slice(&t2);
        okm
    }

    /// A 32-byte subkey for `label`: HKDF-Expand(key, info = `label`, L = 32) (RFC 5869). The
    /// labels are distinct from the chunked-encryption info, which always starts with [`LABEL`].
    pub(crate) fn subkey(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        debug_assert!(!label.starts_with(LABEL));
        let mut mac = self.prk.clone();
        mac.update(label);
        mac.update(&[1]);
        let block = mac.finalize().into_bytes();
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&block[..32]);
        out
    }

    /// The derived AEAD key, base nonce and commitment, for checking the KDF against published
    /// vectors. Not for production use.
    #[doc(hidden)]
    pub fn derive_raw(&self, salt: &[u8; SALT_LEN], context: &[u8]) -> Zeroizing<[u8; 76]> {
        let okm = self.expand(salt, &[context]);
        let mut out = Zeroizing::new([0u8; 76]);
        out.copy_from_slice(&okm[..76]);
        out
    }

    fn derive(&self, salt: &[u8; SALT_LEN], context: &[&[u8]]) -> Derived {
        let okm = self.expand(salt, context);
        let aead = Aes256Gcm::new_from_slice(&okm[..32]).expect("32-byte AES-256 key");
        let mut base_nonce = [0u8; NONCE_LEN];
        base_nonce.copy_from_slice(&okm[32..44]);
        let mut commitment = [0u8; COMMITMENT_LEN];
        commitment.copy_from_slice(&okm[44..76]);
        Derived {
            aead,
            base_nonce,
            commitment,
        }
    }

    /// Encrypts `plaintext` in one go, appending `salt || commitment || chunks` to `out`.
    pub fn seal_into(
        &self,
        salt: &[u8; SALT_LEN],
        context: &[&[u8]],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) {
        let derived = self.derive(salt, context);
        out.reserve(sealed_len(plaintext.len()));
        out.extend_from_slice(salt);
        out.extend_from_slice(&derived.commitment);
        let full = plaintext.len() / CHUNK_LEN;
        let (whole, last) = plaintext.split_at(full * CHUNK_LEN);
        for (index, chunk) in whole.chunks_exact(CHUNK_LEN).enumerate() {
            derived.seal_chunk(index as u64, chunk, out);
        }
        // The final chunk is always shorter than CHUNK_LEN, and empty when the plaintext fills
        // its last chunk exactly.
        derived.seal_chunk(full as u64, last, out);
    }

    /// Decrypts a whole message. Fails on a wrong key or context, any modified byte, truncation,
    /// trailing data or a final chunk that is not short.
    pub fn open(&self, context: &[&[u8]], message: &[u8]) -> Result<Zeroizing<Vec<u8>>, Opaque> {
        let (derived, mut body) = self.open_header(context, message)?;
        let mut out = Zeroizing::new(Vec::with_capacity(body.len()));
        let mut index = 0u64;
        loop {
            // More than one full chunk's worth left means this chunk cannot be the final one.
            if body.len() > FULL_CHUNK_CT {
                let (chunk, rest) = body.split_at(FULL_CHUNK_CT);
                derived.open_chunk(index, chunk, &mut out)?;
                body = rest;
                index = index.checked_add(1).ok_or(Opaque)?;
            } else {
                if body.len() < TAG_LEN || body.len() - TAG_LEN >= CHUNK_LEN {
                    return Err(Opaque);
                }
                derived.open_chunk(index, body, &mut out)?;
                return Ok(out);
            }
        }
    }

    fn open_header<'m>(
        &self,
        context: &[&[u8]],
        message: &'m [u8],
    ) -> Result<(Derived, &'m [u8]), Opaque> {
        if message.len() < HEADER_LEN + TAG_LEN {
            return Err(Opaque);
        }
        let (header, body) = message.split_at(HEADER_LEN);
        let salt: &[u8; SALT_LEN] = header[..SALT_LEN].try_into().expect("salt length");
        let derived = self.derive(salt, context);
        if derived.commitment.ct_eq(&header[SALT_LEN..]).into() {
            Ok((derived, body))
        } else {
            Err(Opaque)
        }
    }
}

/// Length of the sealed form (header and chunks) of a plaintext of `len` bytes.
pub const fn sealed_len(len: usize) -> usize {
    HEADER_LEN + len + (len / CHUNK_LEN + 1) * TAG_LEN
}

struct Derived {
    aead: Aes256Gcm,
    base_nonce: [u8; NONCE_LEN],
    commitment: [u8; COMMITMENT_LEN],
}

impl Drop for Derived {
    fn drop(&mut self) {
        self.base_nonce.zeroize();
        self.commitment.zeroize();
    }
}

impl Derived {
    fn nonce(&self, index: u64) -> Nonce<aes_gcm::aead::consts::U12> {
        let mut nonce = self.base_nonce;
        for (byte, counter) in nonce[4..].iter_mut().zip(index.to_be_bytes()) {
            *byte ^= counter;
        }
        nonce.into()
    }

    fn seal_chunk(&self, index: u64, plaintext: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .aead
            .encrypt_inout_detached(&self.nonce(index), &[], (&mut out[start..]).into())
            .expect("chunk within AES-GCM length limits");
        out.extend_from_slice(&tag);
    }

    fn open_chunk(&self, index: u64, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), Opaque> {
        let (ciphertext, tag) = chunk.split_at(chunk.len() - TAG_LEN);
        let tag = Tag::<aes_gcm::aead::consts::U16>::try_from(tag).map_err(|_| Opaque)?;
        let start = out.len();
        out.extend_from_slice(ciphertext);
        let opened = self.aead.decrypt_inout_detached(
            &self.nonce(index),
            &[],
            (&mut out[start..]).into(),
            &tag,
        );
        if opened.is_err() {
            // Never leave unauthenticated plaintext in the output.
            out[start..].zeroize();
            out.truncate(start);
            return Err(Opaque);
        }
        Ok(())
    }
}

/// Streaming encryptor: write plaintext, call [`Encryptor::finish`] to write the final chunk.
///
/// Dropping an `Encryptor` without `finish` leaves a truncated message that every decryptor
/// rejects, never a shorter valid one.
pub struct Encryptor<W: Write> {
    inner: W,
    derived: Derived,
    buffer: Zeroizing<Vec<u8>>,
    out: Vec<u8>,
    index: u64,
}

impl<W: Write> Encryptor<W> {
    /// Starts a message: writes the header to `inner`.
    pub fn new(
        key: &ChunkedKey,
        salt: &[u8; SALT_LEN],
        context: &[&[u8]],
        mut inner: W,
    ) -> io::Result<Self> {
        let derived = key.derive(salt, context);
        inner.write_all(salt)?;
        inner.write_all(&derived.commitment)?;
        Ok(Self {
            inner,
            derived,
            buffer: Zeroizing::new(Vec::with_capacity(CHUNK_LEN)),
            out: Vec::with_capacity(FULL_CHUNK_CT),
            index: 0,
        })
    }

    fn emit(&mut self) -> io::Result<()> {
        self.out.clear();
        self.derived
            .seal_chunk(self.index, &self.buffer, &mut self.out);
        self.buffer.zeroize();
        self.buffer.clear();
        self.index = self
            .index
            .checked_add(1)
            .ok_or_else(|| io::Error::other("message too long"))?;
        self.inner.write_all(&self.out)
    }

    /// Writes the final (short, possibly empty) chunk and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.buffer.len() == CHUNK_LEN {
            self.emit()?;
        }
        self.emit()?;
        self.inner.flush()?;
        let Self { inner, .. } = self;
        Ok(inner)
    }
}

impl<W: Write> Write for Encryptor<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // A full buffer is flushed only when more data arrives: a message that ends exactly on a
        // chunk boundary still needs its empty final chunk, which `finish` writes.
        if self.buffer.len() == CHUNK_LEN && !data.is_empty() {
            self.emit()?;
        }
        let take = data.len().min(CHUNK_LEN - self.buffer.len());
        self.buffer.extend_from_slice(&data[..take]);
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Streaming decryptor. Every chunk is authenticated before its plaintext is returned; a
/// truncated or extended stream fails at its end, so treat the output as provisional until
/// `read` has returned `Ok(0)`.
pub struct Decryptor<R: Read> {
    inner: R,
    derived: Derived,
    /// Ciphertext read ahead; one byte beyond a full chunk tells whether that chunk is final.
    pending: Vec<u8>,
    plain: Zeroizing<Vec<u8>>,
    offset: usize,
    index: u64,
    state: DecryptState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DecryptState {
    Chunks,
    Done,
    Failed,
}

impl<R: Read> Decryptor<R> {
    /// Reads and checks the header. A wrong key or context fails here, before any chunk.
    pub fn new(key: &ChunkedKey, context: &[&[u8]], mut inner: R) -> Result<Self, Opaque> {
        let mut header = [0u8; HEADER_LEN];
        inner.read_exact(&mut header).map_err(|_| Opaque)?;
        let salt: &[u8; SALT_LEN] = header[..SALT_LEN].try_into().expect("salt length");
        let derived = key.derive(salt, context);
        if !bool::from(derived.commitment.ct_eq(&header[SALT_LEN..])) {
            return Err(Opaque);
        }
        Ok(Self {
            inner,
            derived,
            pending: Vec::with_capacity(FULL_CHUNK_CT + 1),
            plain: Zeroizing::new(Vec::with_capacity(CHUNK_LEN)),
            offset: 0,
            index: 0,
            state: DecryptState::Chunks,
        })
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        while self.pending.len() < FULL_CHUNK_CT + 1 {
            let start = self.pending.len();
            self.pending.resize(FULL_CHUNK_CT + 1, 0);
            let read = match self.inner.read(&mut self.pending[start..]) {
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    self.pending.truncate(start);
                    return Err(e);
                }
            };
            self.pending.truncate(start + read);
            if read == 0 {
                break;
            }
        }
        self.plain.zeroize();
        self.plain.clear();
        self.offset = 0;
        let last = self.pending.len() <= FULL_CHUNK_CT;
        let chunk_len = if last {
            let len = self.pending.len();
            if len < TAG_LEN || len - TAG_LEN >= CHUNK_LEN {
                return Err(self.fail());
            }
            len
        } else {
            FULL_CHUNK_CT
        };
        if self
            .derived
            .open_chunk(self.index, &self.pending[..chunk_len], &mut self.plain)
            .is_err()
        {
            return Err(self.fail());
        }
        self.pending.drain(..chunk_len);
        if last {
            self.state = DecryptState::Done;
        } else {
            self.index = self.index.checked_add(1).ok_or_else(|| self.fail())?;
        }
        Ok(())
    }

    fn fail(&mut self) -> io::Error {
        self.state = DecryptState::Failed;
        io::Error::new(io::ErrorKind::InvalidData, Opaque)
    }
}

impl<R: Read> Read for Decryptor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.offset < self.plain.len() {
                let n = buf.len().min(self.plain.len() - self.offset);
                buf[..n].copy_from_slice(&self.plain[self.offset..self.offset + n]);
                self.offset += n;
                return Ok(n);
            }
            match self.state {
                DecryptState::Done => return Ok(0),
                DecryptState::Failed => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, Opaque));
                }
                DecryptState::Chunks => self.next_chunk()?,
            }
        }
    }
}
