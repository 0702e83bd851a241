//! `percy.v1.WatchService`: the server stream of events (see `crate::watch` for the fan-out).

use std::sync::Arc;

use percy_proto::v1::watch_service_server::WatchService;
use percy_proto::v1::*;
use tonic::{Request, Response, Status};

use super::observe;
use crate::context::NodeContext;
use crate::watch::{open, WatchStream};

pub struct WatchApi {
    pub ctx: Arc<NodeContext>,
}

#[tonic::async_trait]
impl WatchService for WatchApi {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let ctx = &self.ctx;
        // Counted when the stream opens; its lifetime shows in the `watch_streams` gauge.
        observe(ctx, "WatchService/Watch", async {
            open(self.ctx.clone(), request.into_inner())
        })
        .await
    }
}
