//! `cache.size`: `parse_size` never panics, reads every plain decimal that
//! fits in a `u64`, and never reads a negative or fractional number.

#![no_main]

use libfuzzer_sys::fuzz_target;

/// White space that JSON allows around a value.
const JSON_WS: &[u8] = b" \t\n\r";

fuzz_target!(|data: &[u8]| {
    check(data);

    // Random bytes are rarely a number, so also build one from the input:
    // a u64 (reaching the edges near u64::MAX) wrapped in white space.
    if let Some((head, rest)) = data.split_first_chunk::<8>() {
        let n = u64::from_le_bytes(*head);
        let ws: Vec<u8> = rest
            .iter()
            .take(4)
            .map(|b| JSON_WS[usize::from(*b) % JSON_WS.len()])
            .collect();
        let (before, after) = ws.split_at(ws.len() / 2);
        let text = [before, n.to_string().as_bytes(), after].concat();
        assert_eq!(fscache::parse_size(&text), Some(n), "{:?}", show(&text));
    }
});

fn check(data: &[u8]) {
    let got = fscache::parse_size(data);
    if data.iter().any(|b| *b == b'-' || *b == b'.') {
        assert_eq!(got, None, "{:?} has a sign or a fraction", show(data));
    }
    if let Some(n) = plain_decimal(data) {
        assert_eq!(got, Some(n), "{:?}", show(data));
    }
}

/// The value of `data` if it is ASCII digits, without leading zeros,
/// fitting in a u64, with nothing around them but JSON white space.
fn plain_decimal(data: &[u8]) -> Option<u64> {
    let start = data.iter().position(|b| !JSON_WS.contains(b))?;
    let end = data.iter().rposition(|b| !JSON_WS.contains(b))? + 1;
    let digits = &data[start..end];
    if !digits.iter().all(u8::is_ascii_digit) || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse::<u64>().ok()
}

fn show(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}
