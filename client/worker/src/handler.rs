//! Tasks run by a function in the worker's own process instead of `sh -c <exec>`: for
//! programs that embed the worker and for `percyctl bench pipeline`, which measures the
//! claim → start → complete cycle without the cost of a fork and exec per task.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use percy_client::proto::Task;

/// The function's signature: the claimed task and the directory it would run in (its
/// worktree in git mode); `Ok(output)` completes the task with `output` as the result's
/// output (its last line the summary), `Err(error)` fails it.
type HandlerFn = dyn Fn(&Task, Option<&Path>) -> Result<String, String> + Send + Sync;

/// A task handler run on the worker's runtime thread: keep it short (it blocks that
/// thread), or hand long work to a thread of its own.
#[derive(Clone)]
pub struct TaskHandler(Arc<HandlerFn>);

impl TaskHandler {
    pub fn new(
        run: impl Fn(&Task, Option<&Path>) -> Result<String, String> + Send + Sync + 'static,
    ) -> TaskHandler {
        TaskHandler(Arc::new(run))
    }

    pub(crate) fn run(&self, task: &Task, workdir: Option<&Path>) -> Result<String, String> {
        (self.0)(task, workdir)
    }
}

impl fmt::Debug for TaskHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TaskHandler(..)")
    }
}

/// Two configurations are equal only if they share the very same handler.
impl PartialEq for TaskHandler {
    fn eq(&self, other: &TaskHandler) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for TaskHandler {}
