//! The tower layer that authenticates every gRPC call before any handler
//! runs. It is applied around the whole Flight service, so there is no
//! per-handler check to forget: a call either carries a verified principal in
//! its extensions or is answered here with `Unauthenticated`.

use futures::future::BoxFuture;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::transport::server::TcpConnectInfo;

use super::status::to_status;
use crate::auth::authenticator::Authenticator;
use crate::model::identity::ClientInfo;

#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

fn client_info<B>(req: &http::Request<B>) -> ClientInfo {
    let address = req
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(|c| c.remote_addr())
        .or_else(|| {
            req.extensions()
                .get::<tonic::transport::server::TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|c| c.get_ref().remote_addr())
        })
        .map(|a| a.to_string())
        .unwrap_or_default();
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(200).collect())
        .unwrap_or_default();
    ClientInfo {
        address,
        user_agent,
    }
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The ready service goes into the future; a fresh clone stays.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = Arc::clone(&self.auth);
        Box::pin(async move {
            let header = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str().map(str::to_string));
            let header = match header {
                None => None,
                Some(Ok(s)) => Some(s),
                Some(Err(_)) => Some(String::new()),
            };
            match auth
                .authenticate(header.as_deref(), client_info(&req))
                .await
            {
                Ok(authenticated) => {
                    req.extensions_mut()
                        .insert(Arc::clone(&authenticated.principal));
                    req.extensions_mut().insert(authenticated);
                    inner.call(req).await
                }
                Err(e) => Ok(to_status(&e).into_http()),
            }
        })
    }
}
