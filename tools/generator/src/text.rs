//! Output primitives for the hot path: fixed-size text values and a byte cursor.
//!
//! Generation writes hundreds of millions of short fields, where calls to `memcpy` for every
//! few bytes and per-field escaping scans dominate. So every text value is a [`Text`]: up to
//! [`TEXT_CAP`] bytes stored zero-padded in a fixed array and checked *at compile time* to need
//! neither CSV quoting nor JSON escaping. Writing one is a single fixed-size copy.

use std::fmt;

/// Longest text value, in bytes.
pub const TEXT_CAP: usize = 32;

/// A short text value that can be written verbatim into CSV fields and JSON strings.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Text {
    bytes: [u8; TEXT_CAP],
    len: u8,
}

impl Text {
    /// The empty text, for writing absent values without a branch.
    pub const EMPTY: Text = Text { bytes: [0; TEXT_CAP], len: 0 };

    /// Builds a value, failing the build if it is too long or would need quoting or escaping:
    /// no `,` `"` `\` or control characters, and no leading or trailing space.
    pub const fn new(s: &'static str) -> Text {
        let b = s.as_bytes();
        assert!(!b.is_empty() && b.len() <= TEXT_CAP, "text must be 1 to 32 bytes");
        assert!(b[0] != b' ' && b[b.len() - 1] != b' ', "text must not start or end with a space");
        let mut bytes = [0u8; TEXT_CAP];
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            assert!(c >= 0x20 && c != 0x7f, "text must not hold control characters");
            assert!(c != b',' && c != b'"' && c != b'\\', "text must not need quoting");
            bytes[i] = c;
            i += 1;
        }
        Text { bytes, len: b.len() as u8 }
    }

    /// The value of an all-digit text (for tables built at compile time).
    pub const fn digits_value(&self) -> u64 {
        let mut value = 0;
        let mut i = 0;
        while i < self.len as usize {
            let d = self.bytes[i];
            assert!(d.is_ascii_digit(), "not a digit string");
            value = value * 10 + (d - b'0') as u64;
            i += 1;
        }
        value
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn as_str(&self) -> &str {
        // Built from a `&str` cut at its full length, so always valid UTF-8.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const TEN_TO_16: u64 = 10_000_000_000_000_000;
const ASCII_ZEROS: u128 = u128::from_le_bytes([b'0'; 16]);

/// The eight decimal digits of `x` (below 10^8) as digit values, one per byte, the most
/// significant digit in the lowest byte. The digits are split out in SIMD-within-a-register
/// style: two 4-digit lanes, then four 2-digit lanes, then eight 1-digit lanes, a couple of
/// multiplications per step for all lanes at once.
#[inline(always)]
fn eight_digits(x: u32) -> u64 {
    let x = u64::from(x);
    let mut v = (x % 10_000) << 32 | (x / 10_000);
    // n / 100 for n < 10^4 is (n × 10486) >> 20; lanes cannot carry into each other.
    let q = ((v * 10_486) >> 20) & 0x0000_007f_0000_007f;
    v = (v - q * 100) << 16 | q;
    // n / 10 for n < 100 is (n × 103) >> 10.
    let q = ((v * 103) >> 10) & 0x000f_000f_000f_000f;
    (v - q * 10) << 8 | q
}

/// The sixteen decimal digits of `v` (below 10^16), one per byte, most significant first in
/// little-endian byte order.
#[inline(always)]
fn sixteen_digits(v: u64) -> u128 {
    let high = eight_digits((v / 100_000_000) as u32);
    let low = eight_digits((v % 100_000_000) as u32);
    u128::from(low) << 64 | u128::from(high)
}

const HEX_PAIRS: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [digits[i >> 4], digits[i & 15]];
        i += 1;
    }
    table
};

/// Writes into a byte slice that the caller has made large enough for one whole event.
///
/// Writers keep their cursor in a local variable and everything on the hot path is inlined,
/// so the position lives in a register instead of being stored after every byte.
/// Running past the end is a bug in the size bounds (checked by tests), not something input
/// can cause; slice indexing still stops it safely.
pub struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.pos
    }

    pub fn as_written(&self) -> &[u8] {
        &self.buf[..self.pos]
    }

    /// The unwritten rest, for encoders that fill a slice; follow with [`Cursor::advance`].
    pub fn rest(&mut self) -> &mut [u8] {
        &mut self.buf[self.pos..]
    }

    pub fn advance(&mut self, n: usize) {
        self.pos += n;
    }

    /// Moves the end back by `n` bytes, dropping them.
    #[inline(always)]
    pub fn unwrite(&mut self, n: usize) {
        self.pos -= n;
    }

    #[inline(always)]
    pub fn byte(&mut self, b: u8) {
        self.buf[self.pos] = b;
        self.pos += 1;
    }

    #[inline(always)]
    pub fn bytes(&mut self, s: &[u8]) {
        self.buf[self.pos..self.pos + s.len()].copy_from_slice(s);
        self.pos += s.len();
    }

    /// Copies a fixed-size array; the constant length lets the copy be inlined.
    #[inline(always)]
    pub fn array<const N: usize>(&mut self, s: &[u8; N]) {
        self.buf[self.pos..self.pos + N].copy_from_slice(s);
        self.pos += N;
    }

    /// Copies the whole padded array and keeps only the text's length of it.
    #[inline(always)]
    pub fn text(&mut self, t: &Text) {
        self.buf[self.pos..self.pos + TEXT_CAP].copy_from_slice(&t.bytes);
        self.pos += usize::from(t.len);
    }

    /// `v` in decimal.
    #[inline(always)]
    pub fn u64(&mut self, v: u64) {
        if v < 100_000_000 {
            // Up to eight digits fit one 64-bit lane set: half the work of the general case.
            let digits = eight_digits(v as u32);
            let len = (8 - (digits.trailing_zeros() / 8) as usize).max(1);
            let ascii = (digits | ASCII_ZEROS as u64) >> (8 * (8 - len));
            self.buf[self.pos..self.pos + 8].copy_from_slice(&ascii.to_le_bytes());
            self.pos += len;
            return;
        }
        if v >= TEN_TO_16 {
            return self.u64_padded(v, v.ilog10() as usize + 1);
        }
        let digits = sixteen_digits(v);
        // Leading zero digits are the low zero bytes; at least one digit is always written.
        let len = (16 - (digits.trailing_zeros() / 8) as usize).max(1);
        self.digits(digits, len);
    }

    /// Writes the first `len` (1 to 8) of the digit values packed one per byte in `digits`,
    /// first digit in the lowest byte.
    #[inline(always)]
    pub fn digit_bytes(&mut self, digits: u64, len: usize) {
        let ascii = digits | ASCII_ZEROS as u64;
        self.buf[self.pos..self.pos + 8].copy_from_slice(&ascii.to_le_bytes());
        self.pos += len.min(8);
    }

    /// `v` as exactly `width` digits (at most 20), zero-padded; larger values keep their low
    /// digits.
    #[inline(always)]
    pub fn u64_padded(&mut self, v: u64, width: usize) {
        if width <= 8 {
            let ascii = (eight_digits((v % 100_000_000) as u32) | ASCII_ZEROS as u64) >> (8 * (8 - width));
            self.buf[self.pos..self.pos + 8].copy_from_slice(&ascii.to_le_bytes());
            self.pos += width;
        } else if width <= 16 {
            self.digits(sixteen_digits(v % TEN_TO_16), width);
        } else {
            let out = &mut self.buf[self.pos..self.pos + width];
            let mut v = v;
            for slot in out.iter_mut().rev() {
                *slot = b'0' + (v % 10) as u8;
                v /= 10;
            }
            self.pos += width;
        }
    }

    /// Writes the last `len` (1 to 16) of the digits packed in `digits` with one 16-byte store.
    #[inline(always)]
    fn digits(&mut self, digits: u128, len: usize) {
        let ascii = (digits | ASCII_ZEROS) >> (8 * (16 - len));
        self.buf[self.pos..self.pos + 16].copy_from_slice(&ascii.to_le_bytes());
        self.pos += len;
    }

    /// The low `digits` hex digits of `v`, most significant first (1 to 16).
    #[inline(always)]
    pub fn hex(&mut self, v: u64, digits: usize) {
        let digits = digits.clamp(1, 16);
        let shifted = v << (64 - 4 * digits as u32);
        let mut all = [0u8; 16];
        for (i, pair) in all.chunks_exact_mut(2).enumerate() {
            pair.copy_from_slice(&HEX_PAIRS[(shifted >> (56 - 8 * i)) as u8 as usize]);
        }
        self.buf[self.pos..self.pos + 16].copy_from_slice(&all);
        self.pos += digits;
    }

    /// A UUID as 36 lowercase characters, `8-4-4-4-12`.
    #[inline(always)]
    pub fn uuid(&mut self, value: u128) {
        let bytes = value.to_be_bytes();
        let mut text = [b'-'; 36];
        let mut at = 0;
        for (i, b) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                at += 1;
            }
            text[at..at + 2].copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
            at += 2;
        }
        self.array(&text);
    }
}

/// Runs `write` against a scratch buffer and returns what it wrote as a `String`.
pub fn render(write: impl FnOnce(&mut Cursor<'_>)) -> String {
    let mut buf = [0u8; 1024];
    let mut cursor = Cursor::new(&mut buf);
    write(&mut cursor);
    String::from_utf8_lossy(cursor.as_written()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_keeps_utf8_and_its_length() {
        const CITY: Text = Text::new("München");
        assert_eq!(CITY.as_str(), "München");
        assert_eq!(CITY.as_bytes().len(), 8);
        assert_eq!(render(|c| c.text(&CITY)), "München");
    }

    #[test]
    #[should_panic(expected = "must not need quoting")]
    fn text_that_would_need_quoting_is_refused() {
        let _ = Text::new("a,b");
    }

    #[test]
    #[should_panic(expected = "control characters")]
    fn text_with_a_line_break_is_refused() {
        let _ = Text::new("two\nlines");
    }

    #[test]
    fn integers_match_std_formatting() {
        let mut values = vec![0u64, 7, 10, 99, 100, 12_345, 491_511_234_567, u64::MAX];
        for p in 0..20 {
            let power = 10u64.pow(p);
            values.extend([power - 1, power, power + 1]);
        }
        for v in values {
            assert_eq!(render(|c| c.u64(v)), v.to_string());
        }
        assert_eq!(render(|c| c.u64_padded(42, 5)), "00042");
        assert_eq!(render(|c| c.u64_padded(123_456, 4)), "3456");
        assert_eq!(render(|c| c.u64_padded(7, 20)), "00000000000000000007");
        assert_eq!(render(|c| c.u64_padded(123_456_789_012, 12)), "123456789012");
        assert_eq!(render(|c| c.u64_padded(0, 1)), "0");
    }

    #[test]
    fn integers_match_std_formatting_across_many_values() {
        let mut rng = crate::rng::WyRand::new(5);
        for _ in 0..200_000 {
            let v = rng.next_u64() >> rng.below(64);
            assert_eq!(render(|c| c.u64(v)), v.to_string());
        }
        for v in 0..100_000u64 {
            assert_eq!(render(|c| c.u64(v)), v.to_string());
        }
    }

    #[test]
    fn digit_bytes_are_written_in_order() {
        assert_eq!(render(|c| c.digit_bytes(0x0009_0807_0000_0201, 6)), "120078");
    }

    #[test]
    fn hex_writes_the_low_digits() {
        assert_eq!(render(|c| c.hex(0x0123_4567_89ab_cdef, 16)), "0123456789abcdef");
        assert_eq!(render(|c| c.hex(0x0123_4567_89ab_cdef, 9)), "789abcdef");
        assert_eq!(render(|c| c.hex(0xf, 1)), "f");
    }

    #[test]
    fn uuid_text_has_hyphens_in_the_standard_places() {
        assert_eq!(
            render(|c| c.uuid(0x0123_4567_89ab_cdef_0011_2233_4455_6677)),
            "01234567-89ab-cdef-0011-223344556677"
        );
    }

    #[test]
    fn unwrite_and_advance_move_the_end() {
        let text = render(|c| {
            c.bytes(b"abc");
            c.unwrite(1);
            c.rest()[0] = b'z';
            c.advance(1);
        });
        assert_eq!(text, "abz");
    }
}
