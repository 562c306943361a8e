//! What Pingora asks of a client stream besides reading and writing (its shutdown, id, TLS
//! state, digests, peeking), passed on by a wrapper to the stream it holds.

/// Implements Pingora's stream traits other than [`tokio::io::AsyncRead`] and
/// [`tokio::io::AsyncWrite`] for `$wrapper`, whose field `inner` is the client's
/// [`pingora::protocols::Stream`]: every call goes to that stream.
macro_rules! forward_stream_traits {
    ($wrapper:ty) => {
        #[async_trait::async_trait]
        impl pingora::protocols::Shutdown for $wrapper {
            async fn shutdown(&mut self) {
                pingora::protocols::Shutdown::shutdown(&mut *self.inner).await;
            }
        }

        impl pingora::protocols::UniqueID for $wrapper {
            fn id(&self) -> pingora::protocols::UniqueIDType {
                pingora::protocols::UniqueID::id(&*self.inner)
            }
        }

        impl pingora::protocols::Ssl for $wrapper {
            fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
                pingora::protocols::Ssl::get_ssl(&*self.inner)
            }

            fn get_ssl_digest(&self) -> Option<std::sync::Arc<pingora::protocols::tls::SslDigest>> {
                pingora::protocols::Ssl::get_ssl_digest(&*self.inner)
            }

            fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
                pingora::protocols::Ssl::selected_alpn_proto(&*self.inner)
            }
        }

        impl pingora::protocols::GetTimingDigest for $wrapper {
            fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
                pingora::protocols::GetTimingDigest::get_timing_digest(&*self.inner)
            }

            fn get_read_pending_time(&self) -> std::time::Duration {
                pingora::protocols::GetTimingDigest::get_read_pending_time(&*self.inner)
            }

            fn get_write_pending_time(&self) -> std::time::Duration {
                pingora::protocols::GetTimingDigest::get_write_pending_time(&*self.inner)
            }
        }

        impl pingora::protocols::GetProxyDigest for $wrapper {
            fn get_proxy_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora::protocols::raw_connect::ProxyDigest>> {
                pingora::protocols::GetProxyDigest::get_proxy_digest(&*self.inner)
            }

            fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
                pingora::protocols::GetProxyDigest::set_proxy_digest(&mut *self.inner, digest);
            }
        }

        impl pingora::protocols::GetSocketDigest for $wrapper {
            fn get_socket_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora::protocols::SocketDigest>> {
                pingora::protocols::GetSocketDigest::get_socket_digest(&*self.inner)
            }

            fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
                pingora::protocols::GetSocketDigest::set_socket_digest(&mut *self.inner, digest);
            }
        }

        #[async_trait::async_trait]
        impl pingora::protocols::Peek for $wrapper {
            async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
                pingora::protocols::Peek::try_peek(&mut *self.inner, buf).await
            }
        }
    };
}

pub(crate) use forward_stream_traits;
