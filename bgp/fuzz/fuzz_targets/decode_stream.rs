//! A byte stream as the session reader sees it: framing, then decoding, frame after frame.
#![no_main]

use ferrolb_bgp::packet::{frame_len, DecodeContext, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ctx = DecodeContext {
        four_octet_asn: true,
        extended_messages: true,
        ibgp: false,
    };
    let mut rest = data;
    loop {
        match frame_len(rest, &ctx) {
            Ok(Some(len)) if len <= rest.len() => {
                let (frame, tail) = rest.split_at(len);
                if Message::decode(frame, &ctx).is_err() {
                    return;
                }
                rest = tail;
            }
            _ => return,
        }
    }
});
