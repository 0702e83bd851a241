//! Definition runs ⇄ protobuf.

use percy_proto::v1 as pb;
use percy_statemachine as sm;

fn status_to_proto(status: sm::IterationStatus) -> pb::IterationStatus {
    match status {
        sm::IterationStatus::Running => pb::IterationStatus::Running,
        sm::IterationStatus::Succeeded => pb::IterationStatus::Succeeded,
        sm::IterationStatus::Failed => pb::IterationStatus::Failed,
        sm::IterationStatus::Stopped => pb::IterationStatus::Stopped,
        sm::IterationStatus::Lost => pb::IterationStatus::Lost,
    }
}

pub fn steering_message_to_proto(m: &sm::SteeringMessage) -> pb::SteeringMessage {
    pb::SteeringMessage {
        id: m.id,
        from: m.from.clone(),
        body: m.body.clone(),
        sent_at_ms: m.sent_at_ms,
    }
}

fn report_to_proto(r: &sm::IterationReport) -> pb::IterationReport {
    pb::IterationReport {
        exit_code: r.exit_code,
        duration_ms: r.duration_ms,
        output_tail: r.output_tail.clone(),
        result_text: r.result_text.clone(),
        is_error: r.is_error,
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        cost_micros: r.cost_micros,
        stopped: r.stopped,
        timed_out: r.timed_out,
    }
}

pub fn iteration_report_from_proto(r: pb::IterationReport) -> sm::IterationReport {
    sm::IterationReport {
        exit_code: r.exit_code,
        duration_ms: r.duration_ms,
        output_tail: r.output_tail,
        result_text: r.result_text,
        is_error: r.is_error,
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        cost_micros: r.cost_micros,
        stopped: r.stopped,
        timed_out: r.timed_out,
    }
}

pub fn iteration_to_proto(i: &sm::Iteration) -> pb::Iteration {
    pb::Iteration {
        number: i.number,
        agent_id: i.agent_id,
        agent_name: i.agent_name.clone(),
        node: i.node.clone(),
        started_at_ms: i.started_at_ms,
        ended_at_ms: i.ended_at_ms.unwrap_or(0),
        status: status_to_proto(i.status).into(),
        prompt: i.prompt.clone(),
        messages: i.messages.iter().map(steering_message_to_proto).collect(),
        report: i.report.as_ref().map(report_to_proto),
    }
}

pub fn definition_run_to_proto(r: &sm::DefinitionRun) -> pb::DefinitionRun {
    pb::DefinitionRun {
        name: r.name.clone(),
        runner: r.runner.as_ref().map(|runner| pb::DefinitionRunner {
            agent_id: runner.agent_id,
            agent_name: runner.agent_name.clone(),
            node: runner.node.clone(),
            run_token: runner.run_token,
            claimed_at_ms: runner.claimed_at_ms,
        }),
        next_number: r.next_number,
        first_number_of_start: r.first_number_of_start,
        iterations: r.iterations.iter().map(iteration_to_proto).collect(),
        pending: r.pending.iter().map(steering_message_to_proto).collect(),
        revision: r.revision,
    }
}
