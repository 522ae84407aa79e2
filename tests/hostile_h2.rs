//! Hostile HTTP/2 framing from ../shared/SECURITY-TESTS.md (items 25, 29),
//! written frame by frame (tests/support/h2raw.rs), since a real client
//! library refuses to send any of it. Each test asserts gatehouse's answer
//! (stream reset, GOAWAY), what the recording upstream received, and that
//! the gateway still serves a normal request afterwards.

mod support;

use std::time::{Duration, Instant};
use support::gateway::{Config, TestGateway};
use support::h2raw::{self, frame, hpack, Outcome, RawH2};
use support::h2raw::{CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, RST_STREAM, SETTINGS};
use support::upstream::Recorder;

/// `/pub/` is public on the recording upstream; 2FA off.
fn config() -> Config {
    Config::default()
        .rest("[two_factor]\nmode = \"off\"\n[login]\nanonymous_paths = [\"/login\", \"/pub/\"]")
}

async fn setup() -> (Recorder, TestGateway) {
    let up = Recorder::start().await;
    let gw = TestGateway::start(&config(), &up.url()).await;
    (up, gw)
}

/// A normal GET on `h2` (or on a new connection) is answered by the upstream.
async fn still_serves(gw: &TestGateway, up: &Recorder, h2: Option<&mut RawH2>) {
    up.clear();
    let mut fresh;
    let h2 = match h2 {
        Some(h2) => h2,
        None => {
            fresh = RawH2::open(gw).await;
            &mut fresh
        }
    };
    let o = h2.request(&h2raw::get(b"/pub/after", &[]), None).await;
    assert_eq!(o.status(), Some(200), "{o:?}");
    // A request cut off just before may still be logged by the upstream
    // after `clear`: it is logged when its body ends, and the gateway drops
    // the upstream exchange in its own time. It must be incomplete, though.
    let seen = up.seen();
    let after = seen.iter().filter(|s| s.target == "/pub/after").count();
    assert_eq!(after, 1, "upstream saw {seen:?}");
    assert!(
        seen.iter()
            .filter(|s| s.target != "/pub/after")
            .all(|s| !s.complete),
        "upstream saw {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn item_25_connection_specific_headers_are_a_stream_error() {
    let (up, gw) = setup().await;
    let mut h2 = RawH2::open(&gw).await;
    // RFC 9113 §8.2.2: connection-specific fields make a request malformed;
    // `te` may only be "trailers".
    let bad: [(&[u8], &[u8]); 7] = [
        (b"transfer-encoding", b"chunked"),
        (b"connection", b"keep-alive"),
        (b"connection", b"close, x-forwarded-for"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-connection", b"keep-alive"),
        (b"upgrade", b"websocket"),
        (b"te", b"gzip"),
    ];
    for (name, value) in bad {
        for method in [&b"GET"[..], b"POST"] {
            let fields = h2raw::method(method, b"/pub/x", &[(name, value)]);
            let body = (method == b"POST").then_some(&b"0\r\n\r\n"[..]);
            let o = h2.request(&fields, body).await;
            assert_eq!(
                o,
                Outcome::Reset(h2raw::PROTOCOL_ERROR),
                "{}: {}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value)
            );
        }
    }
    assert!(up.seen().is_empty(), "upstream saw {:?}", up.seen());
    // Only the streams were reset: the same connection still works.
    still_serves(&gw, &up, Some(&mut h2)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn item_25_content_length_that_disagrees_with_data_is_a_stream_error() {
    let (up, gw) = setup().await;
    let mut h2 = RawH2::open(&gw).await;
    for (declared, sent) in [
        (&b"10"[..], &b"12345"[..]),
        (b"3", b"1234567890"),
        (b"0", b"x"),
        (b"5", b""),
    ] {
        let fields = h2raw::method(b"POST", b"/pub/echo", &[(b"content-length", declared)]);
        let o = h2.request(&fields, Some(sent)).await;
        assert_eq!(
            o,
            Outcome::Reset(h2raw::PROTOCOL_ERROR),
            "content-length {} with {} bytes",
            String::from_utf8_lossy(declared),
            sent.len()
        );
    }
    // Two different content-lengths.
    let fields = h2raw::method(
        b"POST",
        b"/pub/echo",
        &[(b"content-length", b"5"), (b"content-length", b"6")],
    );
    let o = h2.request(&fields, Some(b"12345")).await;
    assert!(matches!(o, Outcome::Reset(_)), "{o:?}");
    // Whatever reached the upstream before the mismatch showed was cut off:
    // never a whole request with a body other than the one declared.
    for s in up.seen() {
        let declared: Option<usize> = s
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        assert!(
            !s.complete || declared == Some(s.body.len()),
            "the upstream got a whole request with a mismatched body: {s:?}"
        );
        assert!(
            !s.complete,
            "a request with a lying content-length was completed upstream: {s:?}"
        );
    }
    still_serves(&gw, &up, Some(&mut h2)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn item_29_rapid_reset_gets_goaway_and_bounded_work() {
    let (up, gw) = setup().await;
    let mut h2 = RawH2::open(&gw).await;
    // CVE-2023-44487: open a stream and cancel it at once, thousands of times.
    let mut burst = Vec::new();
    let block = hpack(&h2raw::get(b"/pub/rapid", &[]));
    let streams = 5_000;
    for _ in 0..streams {
        let id = h2.new_stream();
        burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
        burst.extend(frame(RST_STREAM, 0, id, &h2raw::CANCEL.to_be_bytes()));
    }
    let _ = h2.write(&burst).await;
    let (goaway, closed) = h2.goaway_then_close(Duration::from_secs(20)).await;
    assert_eq!(
        goaway,
        Some(h2raw::ENHANCE_YOUR_CALM),
        "{:?}",
        h2.log.last()
    );
    assert!(closed, "the connection stayed open after GOAWAY");
    // Only a bounded part of the burst was ever worked on.
    let forwarded = up.seen().len();
    assert!(
        forwarded < streams / 10,
        "{forwarded} of {streams} reset streams reached the upstream"
    );
    still_serves(&gw, &up, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn item_29_continuation_without_end_headers_gets_goaway() {
    let (up, gw) = setup().await;
    let mut h2 = RawH2::open(&gw).await;
    let id = h2.new_stream();
    let block = hpack(&h2raw::get(b"/pub/continued", &[]));
    let _ = h2.send(HEADERS, END_STREAM, id, &block).await;
    // CVE-2024-27316 and kin: CONTINUATION frames that never end the block,
    // first with header bytes, then empty ones.
    let filler = hpack(&[(b"x-filler", &[b'a'; 1000][..])]);
    let mut sent = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let mut chunk = Vec::new();
        for i in 0..100 {
            let payload: &[u8] = if sent + i < 1_000 { &filler } else { &[] };
            chunk.extend(frame(CONTINUATION, 0, id, payload));
        }
        sent += 100;
        if h2.write(&chunk).await.is_err() {
            break;
        }
        if sent >= 200_000 {
            break;
        }
    }
    let (goaway, closed) = h2.goaway_then_close(Duration::from_secs(10)).await;
    assert!(
        goaway.is_some(),
        "no GOAWAY after {sent} CONTINUATION frames"
    );
    assert!(closed, "the connection stayed open");
    assert!(up.seen().is_empty(), "upstream saw {:?}", up.seen());
    still_serves(&gw, &up, None).await;

    // Empty CONTINUATION frames alone are refused the same way.
    up.clear();
    let mut h2 = RawH2::open(&gw).await;
    let id = h2.new_stream();
    let _ = h2.send(HEADERS, END_STREAM, id, &block).await;
    let mut flood = Vec::new();
    for _ in 0..100_000 {
        flood.extend(frame(CONTINUATION, 0, id, &[]));
    }
    let _ = h2.write(&flood).await;
    let (goaway, closed) = h2.goaway_then_close(Duration::from_secs(10)).await;
    assert!(
        goaway.is_some() && closed,
        "empty CONTINUATION flood: {goaway:?}"
    );
    assert!(up.seen().is_empty());
}

/// Floods of frames that do nothing: the connection gets GOAWAY and is
/// closed, the flood never reaches the upstream, and the gateway serves
/// others meanwhile.
async fn assert_flood_is_cut_off(gw: &TestGateway, up: &Recorder, prelude: Vec<u8>, unit: Vec<u8>) {
    let mut h2 = RawH2::open(gw).await;
    let _ = h2.write(&prelude).await;
    let chunk: Vec<u8> = unit
        .iter()
        .copied()
        .cycle()
        .take(unit.len() * 1000)
        .collect();
    let started = Instant::now();
    let mut frames = 0usize;
    // Write until the gateway stops reading (or 30 s pass): a peer that is
    // cut off sees its writes fail or stall.
    while started.elapsed() < Duration::from_secs(30) {
        match tokio::time::timeout(Duration::from_secs(3), h2.write(&chunk)).await {
            Ok(Ok(())) => frames += 1000,
            _ => break,
        }
    }
    let (goaway, closed) = h2.goaway_then_close(Duration::from_secs(10)).await;
    // h2 answers some floods itself (ENHANCE_YOUR_CALM); gatehouse's frame
    // watch ends the others with hyper's graceful GOAWAY (NO_ERROR).
    assert!(goaway.is_some(), "no GOAWAY after {frames} frames");
    assert!(closed, "the connection stayed open after {frames} frames");
    assert!(
        up.seen().iter().all(|s| !s.complete),
        "upstream saw {:?}",
        up.seen()
    );
    still_serves(gw, up, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn item_29_a_flood_of_empty_data_frames_gets_goaway() {
    let (up, gw) = setup().await;
    // CVE-2019-9518: a request whose body never comes, only empty DATA frames.
    let id = 1;
    let prelude = frame(
        HEADERS,
        END_HEADERS,
        id,
        &hpack(&h2raw::method(b"POST", b"/pub/upload", &[])),
    );
    assert_flood_is_cut_off(&gw, &up, prelude, frame(DATA, 0, id, &[])).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn item_29_a_flood_of_settings_frames_gets_goaway() {
    let (up, gw) = setup().await;
    // CVE-2019-9515: SETTINGS frames, each demanding an ACK, never reading them.
    assert_flood_is_cut_off(
        &gw,
        &up,
        Vec::new(),
        frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn item_29_a_flood_of_pings_gets_goaway() {
    let (up, gw) = setup().await;
    // CVE-2019-9512: PINGs, each demanding an answer.
    assert_flood_is_cut_off(&gw, &up, Vec::new(), frame(h2raw::PING, 0, 0, &[0; 8])).await;
}
