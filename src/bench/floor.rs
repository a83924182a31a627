//! The floor: a bare hyper server that answers every request with one constant JSON body.
//!
//! The comparison harness measures it as the cost of HTTP alone on this machine, and also
//! uses it as a fast stand-in for the billing API behind the hook contenders. It is the same
//! hyper server stack as `verdict serve` (hyper-util's auto HTTP/1.1 + h2 connection builder,
//! `TCP_NODELAY`, a multi-threaded tokio runtime with every driver enabled), minus everything
//! Verdict does per request. It reads each request body to the end before answering, as any
//! real endpoint must. It has no connection limit and no graceful drain: it runs until killed.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// Accepts connections on `listener` forever, answering each request 200 with `body`.
pub async fn serve_floor(listener: tokio::net::TcpListener, body: Bytes) -> std::io::Result<()> {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    // Read the request to the end, as a real endpoint must.
                    let _ = request.into_body().collect().await;
                    let mut response = hyper::Response::new(Full::new(body));
                    response
                        .headers_mut()
                        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
