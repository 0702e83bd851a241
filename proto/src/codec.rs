//! The protobuf codec of every generated service and client: prost's, except that a message
//! that does not decode is the caller's fault.
//!
//! tonic-prost answers an undecodable request with `INTERNAL`, which tells a client the server
//! broke and invites a retry of the same bytes. gRPC's own status table lists parse failures
//! under `INTERNAL` only for the server's side of a stream; a request whose bytes are not the
//! message the method takes is `INVALID_ARGUMENT`, and is never worth retrying.

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// prost's codec with decode failures answered as `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct StrictProstCodec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for StrictProstCodec<T, U> {
    fn default() -> Self {
        Self {
            inner: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for StrictProstCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = InvalidArgumentDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        InvalidArgumentDecoder {
            inner: self.inner.decoder(),
        }
    }
}

/// prost's decoder, with its `INTERNAL` for bytes that are not the expected message turned
/// into `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Default)]
pub struct InvalidArgumentDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: prost::Message + Default> Decoder for InvalidArgumentDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|status| {
            if status.code() == Code::Internal {
                Status::invalid_argument(format!("undecodable message: {}", status.message()))
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
