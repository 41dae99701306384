//! What the template sets, as the emulator created it, against what the code assumes.

mod common;

use std::time::Duration;

use common::stack;
use eventline_model::aws::{SDK_ATTEMPT_TIMEOUT, SDK_OPERATION_TIMEOUT};
use eventline_model::retry::MIN_ATTEMPT_TIME;

/// API Gateway's integration timeout for HTTP APIs.
const HTTP_API_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_timeouts_leave_room_for_every_retry_budget() {
    let stack = stack(&[]).await;
    let timeout = |name: &str| Duration::from_secs(stack.manifest.functions[name].timeout_seconds);

    for name in ["ingest", "metrics"] {
        assert!(timeout(name) < HTTP_API_TIMEOUT, "{name} must answer before API Gateway gives up");
        assert!(SDK_OPERATION_TIMEOUT < timeout(name) && SDK_ATTEMPT_TIMEOUT < SDK_OPERATION_TIMEOUT);
    }
    // Each retry loop starts no try after its budget and gives the last one at least
    // MIN_ATTEMPT_TIME beyond it.
    let ingest_worst = ingest::PUT_BUDGET + ingest::COUNT_BUDGET + 2 * MIN_ATTEMPT_TIME;
    assert!(ingest_worst < timeout("ingest"), "{ingest_worst:?} of retries in a {:?} function", timeout("ingest"));

    // One commit group can spend its whole budget (a failing group ends the batch), then
    // publishing and two rounds of dead-lettering.
    let transform_worst = transform::COMMIT_BUDGET
        + SDK_OPERATION_TIMEOUT
        + transform::PUBLISH_BUDGET
        + MIN_ATTEMPT_TIME
        + 2 * (transform::DEAD_LETTER_BUDGET + SDK_OPERATION_TIMEOUT);
    assert!(transform_worst < timeout("transform"), "{transform_worst:?} in a {:?} function", timeout("transform"));
}
