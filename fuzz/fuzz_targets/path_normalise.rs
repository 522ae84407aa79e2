//! Path normalisation (`access::normalise`): whatever the request path, the
//! normal form is plain ASCII, absolute, free of dot and empty segments, and a
//! fixed point, so the path the rules saw is the path forwarded upstream.
#![no_main]

use gatehouse::access::{normalise, PathPrefix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = normalise(raw) else {
        return;
    };
    let normal = path.as_str();
    assert!(normal.starts_with('/'), "{raw:?} -> {normal:?}");
    assert!(
        normal.bytes().all(|b| b.is_ascii_graphic()),
        "{raw:?} -> {normal:?} is not plain ASCII"
    );
    for bad in ['\\', ';', '#', '?'] {
        assert!(
            !normal.contains(bad),
            "{raw:?} -> {normal:?} contains {bad:?}"
        );
    }
    assert!(!normal.contains("//"), "{raw:?} -> {normal:?}");
    let segments: Vec<&str> = path.segments().collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        assert!(
            *segment != "." && *segment != "..",
            "{raw:?} -> {normal:?} keeps a dot segment"
        );
        assert!(
            !segment.is_empty() || i == last,
            "{raw:?} -> {normal:?} keeps an empty segment"
        );
        // Escapes left in place never spell an unreserved character or a separator.
        for (j, _) in segment.match_indices('%') {
            let hex = segment.get(j + 1..j + 3).unwrap_or_default();
            assert!(
                hex.len() == 2 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')),
                "{raw:?} -> {normal:?}: escape not in upper-case hex"
            );
            let value = u8::from_str_radix(hex, 16).unwrap_or_default();
            assert!(
                !(value.is_ascii_alphanumeric() || b"-._~/\\;".contains(&value)),
                "{raw:?} -> {normal:?}: %{hex} should have been decoded or refused"
            );
        }
    }
    // Idempotent: normalising what is forwarded changes nothing.
    match normalise(normal) {
        Ok(again) => assert_eq!(again.as_str(), normal, "not a fixed point: {raw:?}"),
        Err(e) => panic!("{raw:?} -> {normal:?} is refused on a second pass: {e}"),
    }
    // A normal path used as a configured prefix covers itself.
    if let Ok(prefix) = PathPrefix::parse(normal) {
        assert!(
            path.is_within(&prefix, false),
            "{normal:?} not within itself"
        );
        assert!(
            path.is_within(&prefix, true),
            "{normal:?} not within itself (ci)"
        );
    }
});
