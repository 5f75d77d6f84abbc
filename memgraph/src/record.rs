//! Checksummed record values.
//!
//! Every value the graph stores as bytes — engrams, quota use, edges,
//! contexts, relation and owner names, and the chunks of the packed maps
//! (postings, edges, metadata and owners, see `packed`) — is its payload followed by a 4-byte
//! CRC-32 (little-endian) of the payload, started from a seed that hashes
//! the table and the record's key. It is checked on every read from the
//! file, before anything is decoded: a flipped byte, a truncated value, or
//! a value moved under another key or into another table is a
//! [`Corruption`] (surfaced as
//! [`GraphError::Corrupt`](crate::GraphError::Corrupt)), never data. A value
//! whose checksum holds but whose payload does not decode (one a buggy
//! writer produced) is a `Corruption` too.
//!
//! Why CRC-32 (`crc32fast`, hardware-folded with PCLMULQDQ where the CPU has
//! it): values are small (tens to hundreds of bytes) and the checksum runs
//! on every read, so it must cost little next to the read itself (about
//! 30–40 ns for a 400-byte posting block, against about 500 ns to decode
//! it; BLAKE3 took 8–13 times longer on inputs of 64–600 bytes). A CRC
//! detects *every* error confined to 32 consecutive bits — so every single
//! flipped byte or bit — and any other random damage with probability
//! 1 − 2⁻³²; a truncated cryptographic hash of the same size gives no such
//! guarantee for short errors. The seed changes the CRC by a term that
//! depends only on the seed and the length (a CRC is affine in its initial
//! value), so the guarantee for damage to the payload is that of the plain
//! CRC, and a value moved under another key or into another table verifies
//! there only if the two 32-bit seeds collide. Neither keyed nor
//! cryptographic: this detects damage (disk, copy, a stray write), not an
//! adversary who can write the file, who could recompute any unkeyed
//! checksum.
//!
//! The tables whose values are `()` or numbers (the mirrored link tables,
//! `meta` and `segments`) carry no checksum:
//! [`MemoryGraph::check_integrity`](crate::MemoryGraph::check_integrity)
//! checks each of them against the checksummed records they mirror.

use serde::de::DeserializeOwned;

/// Bytes of the checksum at the end of every value.
pub(crate) const CHECKSUM_BYTES: usize = 4;

/// The checksummed tables (names as in the database file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Engrams,
    Quota,
    Postings,
    EdgesOut,
    Contexts,
    EdgesIn,
    Metadata,
    Relations,
    Owners,
    OwnerNames,
}

impl Table {
    #[cfg(test)]
    pub(crate) const ALL: [Table; 10] = [
        Table::Engrams,
        Table::Quota,
        Table::Postings,
        Table::EdgesOut,
        Table::Contexts,
        Table::EdgesIn,
        Table::Metadata,
        Table::Relations,
        Table::Owners,
        Table::OwnerNames,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Engrams => "engrams",
            Table::Quota => "quota",
            Table::Postings => "postings",
            Table::EdgesOut => "edges_out",
            Table::Contexts => "contexts",
            Table::EdgesIn => "edges_in",
            Table::Metadata => "metadata",
            Table::Relations => "relations",
            Table::Owners => "owners",
            Table::OwnerNames => "owner_names",
        }
    }

    /// Mixed into the checksum, so that a value copied into another table
    /// does not verify there.
    fn tag(self) -> u8 {
        match self {
            Table::Engrams => 1,
            Table::Quota => 2,
            Table::Postings => 3,
            Table::EdgesOut => 4,
            Table::Contexts => 5,
            Table::EdgesIn => 6,
            Table::Metadata => 7,
            Table::Relations => 8,
            Table::Owners => 9,
            Table::OwnerNames => 10,
        }
    }
}

/// The checksum's seed: a hash of the table and the key, fed 64-bit words.
/// Each step is a bijection of the state for a given word (xor, an odd
/// multiplier, an xor-shift), so keys of the same shape that differ
/// anywhere end in different states; `finish` mixes the state fully
/// (the SplitMix64 finaliser) before folding it to 32 bits.
pub(crate) struct Seed(u64);

impl Seed {
    fn word(&mut self, w: u64) {
        let x = (self.0 ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 32);
    }

    /// Length first, so that tuple keys are unambiguous.
    fn bytes(&mut self, b: &[u8]) {
        self.word(b.len() as u64);
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(w));
        }
    }

    fn finish(&self) -> u32 {
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        (x ^ (x >> 32)) as u32
    }
}

/// A record key as the checksum's seed sees it and as an error names it.
pub(crate) trait RecordKey {
    fn feed(&self, s: &mut Seed);
    fn show(&self) -> String;
}

impl RecordKey for u64 {
    fn feed(&self, s: &mut Seed) {
        s.word(*self);
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl RecordKey for str {
    fn feed(&self, s: &mut Seed) {
        s.bytes(self.as_bytes());
    }
    fn show(&self) -> String {
        format!("{self:?}")
    }
}

impl RecordKey for [u8] {
    fn feed(&self, s: &mut Seed) {
        s.bytes(self);
    }
    fn show(&self) -> String {
        format!("{:?}", String::from_utf8_lossy(self))
    }
}

impl RecordKey for &str {
    fn feed(&self, s: &mut Seed) {
        (**self).feed(s);
    }
    fn show(&self) -> String {
        (**self).show()
    }
}

impl RecordKey for (&str, u64) {
    fn feed(&self, s: &mut Seed) {
        self.0.feed(s);
        self.1.feed(s);
    }
    fn show(&self) -> String {
        format!("({:?}, {})", self.0, self.1)
    }
}

impl RecordKey for (u64, u64, &str) {
    fn feed(&self, s: &mut Seed) {
        self.0.feed(s);
        self.1.feed(s);
        self.2.feed(s);
    }
    fn show(&self) -> String {
        format!("({}, {}, {:?})", self.0, self.1, self.2)
    }
}

/// A stored record that failed its checksum or does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Corruption {
    pub table: &'static str,
    pub key: String,
    pub detail: String,
}

impl Corruption {
    pub(crate) fn new<K: RecordKey + ?Sized>(table: Table, key: &K, detail: impl Into<String>) -> Corruption {
        Corruption { table: table.name(), key: key.show(), detail: detail.into() }
    }
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} record {} is corrupt: {}", self.table, self.key, self.detail)
    }
}

/// A failure below the graph's own errors: of the database, or a corrupt
/// record.
#[derive(Debug)]
pub(crate) enum Fault {
    Storage(String),
    Corrupt(Corruption),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Storage(e) => f.write_str(e),
            Fault::Corrupt(c) => c.fmt(f),
        }
    }
}

impl From<Corruption> for Fault {
    fn from(c: Corruption) -> Fault {
        Fault::Corrupt(c)
    }
}

/// A database failure as a [`Fault`].
pub(crate) fn storage(e: impl std::fmt::Display) -> Fault {
    Fault::Storage(e.to_string())
}

fn checksum<K: RecordKey + ?Sized>(table: Table, key: &K, payload: &[u8]) -> u32 {
    let mut seed = Seed(table.tag() as u64);
    key.feed(&mut seed);
    let mut h = crc32fast::Hasher::new_with_initial(seed.finish());
    h.update(payload);
    h.finalize()
}

/// `payload` with its checksum appended: the value to store under `key`.
pub(crate) fn seal<K: RecordKey + ?Sized>(table: Table, key: &K, mut payload: Vec<u8>) -> Vec<u8> {
    let sum = checksum(table, key, &payload);
    payload.extend_from_slice(&sum.to_le_bytes());
    payload
}

/// The payload of a value read from `table` under `key`, if its checksum
/// holds.
pub(crate) fn open<'v, K: RecordKey + ?Sized>(
    table: Table,
    key: &K,
    value: &'v [u8],
) -> Result<&'v [u8], Corruption> {
    let Some((payload, stored)) = value.split_last_chunk::<CHECKSUM_BYTES>() else {
        return Err(Corruption::new(table, key, format!("{} bytes, shorter than its checksum", value.len())));
    };
    let stored = u32::from_le_bytes(*stored);
    let actual = checksum(table, key, payload);
    if stored == actual {
        Ok(payload)
    } else {
        Err(Corruption::new(
            table,
            key,
            format!("checksum mismatch (stored {stored:08x}, computed {actual:08x})"),
        ))
    }
}

/// A postcard record, sealed.
pub(crate) fn encode<T: serde::Serialize, K: RecordKey + ?Sized>(
    table: Table,
    key: &K,
    value: &T,
    size_hint: usize,
) -> Result<Vec<u8>, Fault> {
    let payload = postcard::to_extend(value, Vec::with_capacity(size_hint + CHECKSUM_BYTES))
        .map_err(|e| storage(format!("{} record {} does not encode: {e}", table.name(), key.show())))?;
    Ok(seal(table, key, payload))
}

/// A postcard record: checksum checked, then decoded whole (trailing bytes
/// are corruption too).
pub(crate) fn decode<T: DeserializeOwned, K: RecordKey + ?Sized>(
    table: Table,
    key: &K,
    value: &[u8],
) -> Result<T, Corruption> {
    decode_payload(table, key, open(table, key, value)?)
}

/// A postcard record stored without a checksum of its own (in a chunk that
/// has one), decoded whole.
pub(crate) fn decode_payload<T: DeserializeOwned, K: RecordKey + ?Sized>(
    table: Table,
    key: &K,
    payload: &[u8],
) -> Result<T, Corruption> {
    match postcard::take_from_bytes(payload) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(Corruption::new(table, key, format!("{} bytes after the record", rest.len()))),
        Err(e) => Err(Corruption::new(table, key, format!("does not decode: {e}"))),
    }
}

/// The first fields of a postcard record (`T` a prefix of the stored
/// struct), checksum checked.
pub(crate) fn decode_prefix<T: DeserializeOwned, K: RecordKey + ?Sized>(
    table: Table,
    key: &K,
    value: &[u8],
) -> Result<T, Corruption> {
    let payload = open(table, key, value)?;
    postcard::from_bytes(payload).map_err(|e| Corruption::new(table, key, format!("does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_sealed_value_opens_only_under_its_table_and_key() {
        let v = seal(Table::Engrams, &7u64, b"hello".to_vec());
        assert_eq!(v.len(), 5 + CHECKSUM_BYTES);
        assert_eq!(open(Table::Engrams, &7u64, &v).unwrap(), b"hello");
        assert!(open(Table::Engrams, &8u64, &v).is_err(), "another key");
        assert!(open(Table::Contexts, &7u64, &v).is_err(), "another table");
        assert!(open(Table::Engrams, &7u64, &v[..v.len() - 1]).is_err(), "truncated");
        let e = open(Table::Engrams, &7u64, b"abc").unwrap_err();
        assert_eq!((e.table, e.key.as_str()), ("engrams", "7"));
        assert!(e.detail.contains("shorter"), "{e}");
        // Tuple keys are length-prefixed: ("ab", 1) and ("a", ...) differ.
        let p = seal(Table::Postings, &("ab", 1), vec![1, 2, 3]);
        assert!(open(Table::Postings, &("ab", 1), &p).is_ok());
        assert!(open(Table::Postings, &("a", 1), &p).is_err());
        let e = open(Table::EdgesOut, &(1, 2, "x"), &p).unwrap_err();
        assert_eq!(e.to_string(), format!("edges_out record (1, 2, \"x\") is corrupt: {}", e.detail));
    }

    proptest! {
        /// Any damage confined to one byte of a sealed value — payload or
        /// checksum — is caught (a CRC-32 detects every burst of up to 32
        /// bits).
        #[test]
        fn every_flipped_byte_is_caught(
            payload in proptest::collection::vec(any::<u8>(), 0..600),
            key in any::<u64>(),
            at in any::<proptest::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut v = seal(Table::Engrams, &key, payload);
            let i = at.index(v.len());
            v[i] ^= flip;
            prop_assert!(open(Table::Engrams, &key, &v).is_err());
        }
    }
}
