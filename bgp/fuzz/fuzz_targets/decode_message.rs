//! One message: the first byte picks the session flavour, the rest is the frame.
#![no_main]

use ferrolb_bgp::packet::{DecodeContext, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, frame)) = data.split_first() else {
        return;
    };
    let ctx = DecodeContext {
        four_octet_asn: flags & 1 != 0,
        extended_messages: flags & 2 != 0,
        ibgp: flags & 4 != 0,
    };
    if let Ok(msg) = Message::decode(frame, &ctx) {
        // Whatever we accept we can encode again, and the NOTIFICATION path never panics.
        let _ = msg.to_bytes(&ctx);
    } else if let Err(e) = Message::decode(frame, &ctx) {
        let _ = Message::Notification(e.to_notification()).to_bytes(&ctx);
    }
});
