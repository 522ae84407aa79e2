//! The stored session record (`session::codec`): bytes from the store are
//! decoded on every request.
//!
//! Input: any bytes, as a store might return them. Checked: decoding never
//! panics or allocates beyond the input's size; a record that decodes
//! encodes to the binary form and reads back equal (the JSON form of earlier
//! versions included).
#![no_main]

use gatehouse::session::codec::{decode, encode, FORMAT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = decode(data) {
        let bytes = encode(&record);
        assert_eq!(bytes.first(), Some(&FORMAT));
        assert_eq!(decode(&bytes).as_ref(), Ok(&record));
        if data.first() == Some(&FORMAT) {
            // The binary form is canonical: what decoded re-encodes to itself.
            assert_eq!(bytes, data);
        }
    }
});
