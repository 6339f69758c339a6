//! How long an object is once padded: what the server may learn of a length.
//!
//! Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and
//! Communication with PURBs", PETS 2019): a length L of E+1 bits keeps only
//! its top floor(log2 E) + 1 bits, the rest rounded up. The overhead is below
//! 2^-(floor(log2 E) + 1): under 6.25% from 4 KiB, under 3.125% from 64 KiB
//! (a pack), under 1.6% from 4 GiB; a padded length leaks O(log log L) bits. Nothing is shorter than
//! [`MIN_PADDED_LEN`]: small objects (a day's tree pack, an index file, a
//! snapshot) then all look the same.

/// The smallest padded length: every padded object is at least this long.
pub const MIN_PADDED_LEN: u64 = 4096;

/// The Padmé length of `len`, at least [`MIN_PADDED_LEN`].
pub const fn padded_len(len: u64) -> u64 {
    if len <= MIN_PADDED_LEN {
        return MIN_PADDED_LEN;
    }
    let e = len.ilog2();
    let s = e.ilog2() + 1;
    let low_bits = e - s;
    let mask = (1u64 << low_bits) - 1;
    len.saturating_add(mask) & !mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_objects_all_take_the_minimum() {
        for len in [0, 1, 600, 4095, 4096] {
            assert_eq!(padded_len(len), MIN_PADDED_LEN);
        }
        assert_eq!(padded_len(4097), 4352);
        // 1,000,000 and 1,000,123 bytes (and their packs' overheads) share
        // one padded length.
        assert_eq!(padded_len(1_000_100), 1_015_808);
        assert_eq!(padded_len(1_000_300), 1_015_808);
    }

    proptest! {
        #[test]
        fn padding_never_shrinks_and_costs_little(len in 0u64..(1 << 40)) {
            let padded = padded_len(len);
            prop_assert!(padded >= len);
            prop_assert_eq!(padded_len(padded), padded);
            if len >= MIN_PADDED_LEN {
                prop_assert!((padded - len) * 16 < len, "{} -> {}", len, padded);
            }
            if len >= 1 << 16 {
                prop_assert!((padded - len) * 32 < len, "{} -> {}", len, padded);
            }
        }

        #[test]
        fn padding_is_monotonic(a in 0u64..(1 << 40), b in 0u64..(1 << 40)) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(padded_len(lo) <= padded_len(hi));
        }
    }
}
