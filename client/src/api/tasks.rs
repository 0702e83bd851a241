//! TaskService: submit, claim (a given task with CAS, or the next one), the claim-token
//! guarded transitions, and reads.

use percy_proto::v1::task_service_client::TaskServiceClient;
use percy_proto::v1::{
    CancelTaskRequest, ClaimTaskRequest, ClaimTaskResponse, CompleteTaskRequest, Consistency,
    FailTaskRequest, GetTaskRequest, GetTaskResponse, ListTasksRequest, ListTasksResponse,
    RequeueTaskRequest, StartTaskRequest, SubmitTaskRequest, SubmitTaskResponse, TaskResult,
    TaskSpec, TaskStatus, TaskUpdateResponse,
};

use percy_proto::paging::MAX_PAGE_SIZE;

use crate::{Client, ClientError};

/// Which tasks `list_tasks` returns; the default is all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub plan_id: Option<String>,
    pub assignee: Option<u64>,
    /// 0 = no limit.
    pub limit: u32,
}

impl Client {
    pub async fn submit_task(&self, spec: TaskSpec) -> Result<SubmitTaskResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = SubmitTaskRequest {
                header: Some(header),
                task: Some(spec.clone()),
            };
            async move { TaskServiceClient::new(channel).submit(request).await }
        })
        .await
    }

    /// Claims `task_id` for `agent_id`; with `expected_revision`, only if the task is still
    /// at that revision. A task already claimed by another agent is refused
    /// (`FailedPrecondition`).
    pub async fn claim_task(
        &self,
        agent_id: u64,
        task_id: &str,
        expected_revision: Option<u64>,
    ) -> Result<ClaimTaskResponse, ClientError> {
        self.claim(agent_id, task_id.to_owned(), expected_revision, false)
            .await
    }

    /// Claims the best task this agent can run (priority, then age). `task` is `None` in the
    /// response when nothing is claimable.
    pub async fn claim_next(&self, agent_id: u64) -> Result<ClaimTaskResponse, ClientError> {
        self.claim(agent_id, String::new(), None, false).await
    }

    /// [`Client::claim_next`], and the task is started too, in the same write: it comes back
    /// `Working`. A server older than this call answers with the task `Claimed`: start it
    /// then ([`Client::start_task`]) before running it.
    pub async fn claim_next_started(
        &self,
        agent_id: u64,
    ) -> Result<ClaimTaskResponse, ClientError> {
        self.claim(agent_id, String::new(), None, true).await
    }

    async fn claim(
        &self,
        agent_id: u64,
        task_id: String,
        expected_revision: Option<u64>,
        start: bool,
    ) -> Result<ClaimTaskResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = ClaimTaskRequest {
                header: Some(header),
                agent_id,
                task_id: task_id.clone(),
                expected_revision,
                start,
            };
            async move { TaskServiceClient::new(channel).claim(request).await }
        })
        .await
    }

    /// Marks a claimed task as working. `claim_token` must be the one from the claim.
    pub async fn start_task(
        &self,
        task_id: &str,
        agent_id: u64,
        claim_token: u64,
    ) -> Result<TaskUpdateResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = StartTaskRequest {
                header: Some(header),
                task_id: task_id.to_owned(),
                agent_id,
                claim_token,
            };
            async move { TaskServiceClient::new(channel).start(request).await }
        })
        .await
    }

    /// Completes a task; a stale `claim_token` is refused (`FailedPrecondition`).
    pub async fn complete_task(
        &self,
        task_id: &str,
        agent_id: u64,
        claim_token: u64,
        result: TaskResult,
    ) -> Result<TaskUpdateResponse, ClientError> {
        self.complete(task_id, agent_id, claim_token, result, false)
            .await
    }

    /// [`Client::complete_task`], then claims the next task this agent can run, already
    /// started, in the same write: it is `next` in the response (`None` when nothing is
    /// claimable, or from a server older than this call). A refused completion claims nothing.
    pub async fn complete_task_and_claim_next(
        &self,
        task_id: &str,
        agent_id: u64,
        claim_token: u64,
        result: TaskResult,
    ) -> Result<TaskUpdateResponse, ClientError> {
        self.complete(task_id, agent_id, claim_token, result, true)
            .await
    }

    async fn complete(
        &self,
        task_id: &str,
        agent_id: u64,
        claim_token: u64,
        result: TaskResult,
        claim_next: bool,
    ) -> Result<TaskUpdateResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = CompleteTaskRequest {
                header: Some(header),
                task_id: task_id.to_owned(),
                agent_id,
                claim_token,
                result: Some(result.clone()),
                claim_next,
            };
            async move { TaskServiceClient::new(channel).complete(request).await }
        })
        .await
    }

    /// Fails an attempt: the task is requeued while attempts remain, else it fails and its
    /// dependents are cancelled.
    pub async fn fail_task(
        &self,
        task_id: &str,
        agent_id: u64,
        claim_token: u64,
        error: &str,
    ) -> Result<TaskUpdateResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = FailTaskRequest {
                header: Some(header),
                task_id: task_id.to_owned(),
                agent_id,
                claim_token,
                error: error.to_owned(),
            };
            async move { TaskServiceClient::new(channel).fail(request).await }
        })
        .await
    }

    pub async fn cancel_task(
        &self,
        task_id: &str,
        reason: &str,
    ) -> Result<TaskUpdateResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = CancelTaskRequest {
                header: Some(header),
                task_id: task_id.to_owned(),
                reason: reason.to_owned(),
            };
            async move { TaskServiceClient::new(channel).cancel(request).await }
        })
        .await
    }

    /// Puts a claimed or working task back to ready (an operator's override).
    pub async fn requeue_task(
        &self,
        task_id: &str,
        reason: &str,
    ) -> Result<TaskUpdateResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = RequeueTaskRequest {
                header: Some(header),
                task_id: task_id.to_owned(),
                reason: reason.to_owned(),
            };
            async move { TaskServiceClient::new(channel).requeue(request).await }
        })
        .await
    }

    pub async fn get_task(
        &self,
        task_id: &str,
        consistency: Consistency,
    ) -> Result<GetTaskResponse, ClientError> {
        self.read(consistency, |channel, header| {
            let request = GetTaskRequest {
                header: Some(header),
                task_id: task_id.to_owned(),
            };
            async move { TaskServiceClient::new(channel).get(request).await }
        })
        .await
    }

    /// One page of the tasks `filter` selects (`filter.limit` ignored): up to `page_size`
    /// tasks (0: the server's default) from where `page_token` says (empty: the first), and
    /// the token of the next page (empty after the last). For a caller that pages itself,
    /// e.g. to process a listing too big to hold; [`Client::list_tasks`] follows every page.
    pub async fn list_tasks_page(
        &self,
        filter: &TaskFilter,
        page_size: u32,
        page_token: &str,
        consistency: Consistency,
    ) -> Result<ListTasksResponse, ClientError> {
        self.read(consistency, |channel, header| {
            let request = ListTasksRequest {
                header: Some(header),
                status: filter.status.unwrap_or(TaskStatus::Unspecified) as i32,
                plan_id: filter.plan_id.clone().unwrap_or_default(),
                assignee: filter.assignee.unwrap_or(0),
                limit: page_size,
                page_token: page_token.to_owned(),
            };
            async move { TaskServiceClient::new(channel).list(request).await }
        })
        .await
    }

    /// Every task `filter` selects (up to `filter.limit`), following the server's pages. Each
    /// page is its own read, so the list is not one snapshot: a task that changes meanwhile
    /// may be missed or listed twice by a status filter. The header is the last page's.
    pub async fn list_tasks(
        &self,
        filter: &TaskFilter,
        consistency: Consistency,
    ) -> Result<ListTasksResponse, ClientError> {
        let wanted = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit as usize
        };
        let mut listed = ListTasksResponse::default();
        loop {
            let remaining = wanted - listed.tasks.len();
            // 0 asks for the server's default page.
            let page_size = u32::try_from(remaining)
                .map(|n| n.min(MAX_PAGE_SIZE))
                .unwrap_or(0);
            let page_token = std::mem::take(&mut listed.next_page_token);
            let page = self
                .list_tasks_page(filter, page_size, &page_token, consistency)
                .await?;
            // A server that hands back the token it was given would page forever.
            if !page.next_page_token.is_empty() && page.next_page_token == page_token {
                return Err(ClientError::PageTokenRepeated(page_token));
            }
            listed.tasks.extend(page.tasks);
            listed.header = page.header;
            listed.next_page_token = page.next_page_token;
            if listed.next_page_token.is_empty() || listed.tasks.len() >= wanted {
                listed.tasks.truncate(wanted);
                listed.next_page_token.clear();
                return Ok(listed);
            }
        }
    }
}
