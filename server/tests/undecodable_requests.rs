//! A request whose bytes are not the method's message is the caller's fault: INVALID_ARGUMENT
//! (never worth retrying), not INTERNAL (which says the server broke), and nothing changes.

mod common;

use std::marker::PhantomData;

use common::{channel, peers_of, slots, start, SETTLE};
use percy_proto::v1::task_service_client::TaskServiceClient;
use percy_proto::v1::{ListTasksRequest, SubmitTaskResponse};
use prost::bytes::BufMut;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::{Code, Status};

/// Field 1 (the request header) as a length-delimited field whose varint length never ends.
const GARBAGE: &[u8] = &[
    0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
];

/// Sends its bytes as they are; decodes the answer as `R`.
struct RawCodec<R>(PhantomData<R>);

impl<R: prost::Message + Default + Send + 'static> Codec for RawCodec<R> {
    type Encode = Vec<u8>;
    type Decode = R;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<R>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_request_is_invalid_argument_and_changes_nothing() {
    let mut slots = slots(&[1]).await;
    let peers = peers_of(&slots);
    let node = start(&mut slots[0], &peers).await;
    node.wait_for_leader(SETTLE).await.unwrap();
    let addr = node.addr().to_string();

    let mut grpc = tonic::client::Grpc::new(channel(&addr).await);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/percy.v1.TaskService/Submit");
    let status = grpc
        .unary(
            tonic::Request::new(GARBAGE.to_vec()),
            path,
            RawCodec::<SubmitTaskResponse>(PhantomData),
        )
        .await
        .expect_err("garbage was accepted as a task");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("undecodable"), "{status:?}");

    let tasks = TaskServiceClient::new(channel(&addr).await)
        .list(ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(tasks.tasks.is_empty(), "{tasks:?}");
    node.shutdown().await;
}
