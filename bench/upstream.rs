//! The fast upstream of `bench/run`: a few fixed answers, as cheap as a
//! server can make them, so the benchmark measures the proxies in front.
//!
//!   GET  /small          1 KiB body
//!   GET  /big            100 KiB body
//!   GET  /stream?bytes=N N bytes, streamed in 64 KiB chunks (the 1 GiB download)
//!   POST /login          302 to / with an HttpOnly session cookie (gatehouse's
//!                        login interception signs the bench in through it);
//!                        the password `wrong` gets the form again (a failed
//!                        attempt, for `bench/soak`)
//!   GET  /logout         302 to /login, the session cookie cleared
//!
//! Usage: `bench_upstream 127.0.0.1:PORT` (plain HTTP/1.1, keep-alive).

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use tokio::net::TcpListener;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

const CHUNK: usize = 64 * 1024;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9900".to_string());
    let listener = TcpListener::bind(&addr).await?;
    println!("bench upstream listening on {}", listener.local_addr()?);
    let small = Bytes::from(vec![b's'; 1024]);
    let big = Bytes::from(vec![b'b'; 100 * 1024]);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (small, big) = (small.clone(), big.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (small, big) = (small.clone(), big.clone());
                async move {
                    if req.method() == hyper::Method::POST && req.uri().path() == "/login" {
                        return Ok::<_, Infallible>(login(req).await);
                    }
                    Ok(answer(req, small, big))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn answer(req: Request<Incoming>, small: Bytes, big: Bytes) -> Response<Body> {
    let full = |b: Bytes| Full::new(b).boxed();
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/small") => Response::new(full(small)),
        ("GET", "/big") => Response::new(full(big)),
        ("GET", "/stream") => {
            let bytes: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("bytes="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; CHUNK]);
            let chunks = futures_util::stream::unfold(bytes, move |left| {
                let chunk = chunk.clone();
                async move {
                    if left == 0 {
                        return None;
                    }
                    let n = left.min(CHUNK as u64);
                    let frame = Frame::data(chunk.slice(..n as usize));
                    Some((Ok::<_, Infallible>(frame), left - n))
                }
            });
            let mut resp = Response::new(StreamBody::new(chunks).boxed());
            if let Ok(v) = header::HeaderValue::from_str(&bytes.to_string()) {
                resp.headers_mut().insert(header::CONTENT_LENGTH, v);
            }
            resp
        }
        ("GET", "/logout") => redirect("/login", "APPSESSION=; Path=/; HttpOnly; Max-Age=0"),
        _ => {
            let mut resp = Response::new(full(Bytes::from_static(b"not found")));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            resp
        }
    }
}

/// Any password but `wrong` signs in.
async fn login(req: Request<Incoming>) -> Response<Body> {
    let form = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let wrong = form
        .split(|b| *b == b'&')
        .any(|field| field == b"password=wrong");
    if wrong {
        return Response::new(
            Full::new(Bytes::from_static(b"<form>wrong password</form>")).boxed(),
        );
    }
    redirect("/", "APPSESSION=bench; Path=/; HttpOnly")
}

fn redirect(to: &'static str, cookie: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()).boxed());
    *resp.status_mut() = StatusCode::FOUND;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, header::HeaderValue::from_static(to));
    h.insert(header::SET_COOKIE, header::HeaderValue::from_static(cookie));
    resp
}
