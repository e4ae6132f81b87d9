//! The load generator's HTTP client: one HTTP/1.1 keep-alive connection on
//! hyper's connection API, driven on the task that sends the requests.
//!
//! A general client (a pool per host, the URL parsed for every request,
//! the connection driven on a task of its own) cost about a third of a
//! Tokio worker's time during `spread`, CPU the server under test could not
//! use. Here the target is parsed once, request paths are prepared once per
//! phase, and the request and the connection are polled together, so an
//! exchange wakes no other task.

use std::net::SocketAddr;
use std::pin::Pin;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Body = Full<Bytes>;
type Driver = Pin<Box<http1::Connection<TokioIo<TcpStream>, Body>>>;

/// Where the connections go: an `http://host:port[/prefix]` base URL,
/// parsed once.
#[derive(Clone, Debug)]
pub struct Origin {
    addr: SocketAddr,
    host: HeaderValue,
    prefix: String,
}

impl Origin {
    /// Parses `base` (as `scrip bench --url` takes it). Only plain HTTP:
    /// the load generator measures the server, not a TLS stack.
    pub fn parse(base: &str) -> anyhow::Result<Origin> {
        let uri: Uri = base
            .parse()
            .with_context(|| format!("{base} is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("the load generator speaks plain HTTP: {base} is not an http:// URL");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("{base} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .with_context(|| format!("cannot resolve {host}"))?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        Ok(Origin {
            addr,
            host: HeaderValue::from_str(authority.as_str())?,
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The request target for `path` (which starts with `/`) under this
    /// base URL.
    pub fn uri(&self, path: &str) -> anyhow::Result<Uri> {
        format!("{}{path}", self.prefix)
            .parse()
            .with_context(|| format!("{path} is not a request path"))
    }
}

/// Why an exchange got no answer.
#[derive(Debug)]
pub struct Unanswered;

/// One keep-alive connection. After a failure it reconnects at the next
/// request, as a browser or an SDK would.
pub struct Wire {
    origin: Origin,
    open: Option<(SendRequest<Body>, Driver)>,
}

impl Wire {
    pub fn new(origin: Origin) -> Wire {
        Wire { origin, open: None }
    }

    async fn connect(&self) -> Result<(SendRequest<Body>, Driver), Unanswered> {
        let stream = TcpStream::connect(self.origin.addr)
            .await
            .map_err(|_| Unanswered)?;
        stream.set_nodelay(true).map_err(|_| Unanswered)?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Unanswered)?;
        Ok((sender, Box::pin(driver)))
    }

    /// A connection ready for a request: the open one if the server has
    /// not closed it, otherwise a new one. Nothing has been sent on a
    /// connection that is not ready, so moving to a new one is safe.
    async fn ready(&mut self) -> Result<(SendRequest<Body>, Driver), Unanswered> {
        if let Some((mut sender, mut driver)) = self.open.take() {
            let ready = tokio::select! {
                biased;
                ready = sender.ready() => ready.is_ok(),
                _ = &mut driver => false,
            };
            if ready {
                return Ok((sender, driver));
            }
        }
        self.connect().await
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        uri: &Uri,
        auth: Option<&HeaderValue>,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), Unanswered> {
        let (mut sender, mut driver) = self.ready().await?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri.clone())
            .header(HOST, self.origin.host.clone());
        if let Some(auth) = auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|_| Unanswered)?;
        let exchange = async {
            let response = sender.send_request(request).await.map_err(|_| Unanswered)?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|_| Unanswered)?
                .to_bytes();
            Ok::<_, Unanswered>((status, bytes))
        };
        // The connection makes progress only while polled: poll it beside
        // the exchange. It finishing first means the server closed it.
        let answer = tokio::select! {
            biased;
            answer = exchange => answer,
            _ = &mut driver => Err(Unanswered),
        };
        if answer.is_ok() && !sender.is_closed() {
            self.open = Some((sender, driver));
        }
        answer
    }
}
