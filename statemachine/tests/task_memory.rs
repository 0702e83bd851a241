//! A size guard, not a timing test: the heap a ready task costs the state machine, counted by
//! a global allocator that tracks the bytes live. Issue 23 asks for at most 300 bytes of
//! resident memory per task on a node holding a million ready tasks; the state's own share
//! must stay well below that, since the allocator and the rest of the node add to it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use percy_statemachine::{Command, Op, StateMachine, TaskSpec};

/// Bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes per ready task the state machine may hold: tasks shaped like
/// `percyctl bench restart`'s (an id, a title, submitted in plans), with every index.
/// Measured: 590 with the layout of public fields and id-copying indexes, 231 with the
/// compact task (a 160-byte `Task`, its id and title, 10 bytes of id index, ~17 of ready
/// index, 4 of plan index).
const MAX_HEAP_BYTES_PER_READY_TASK: usize = 240;

/// A power of two, so that the task vector is full rather than up to half empty (a vector
/// doubles; at a million tasks its slack is 5 %, and untouched capacity is not resident).
const TASKS: usize = 1 << 17;
const PLAN_TASKS: usize = 1 << 10;

#[test]
fn a_ready_task_costs_at_most_the_named_heap_bytes() {
    let mut sm = StateMachine::new();
    let before = LIVE.load(Ordering::Relaxed);
    for (plan, revision) in (0..TASKS / PLAN_TASKS).zip(1..) {
        let tasks = (0..PLAN_TASKS)
            .map(|t| {
                let n = plan * PLAN_TASKS + t;
                TaskSpec {
                    id: Some(format!("b4f2a9c-t{n:07}")),
                    title: format!("bench task {n}"),
                    ..TaskSpec::default()
                }
            })
            .collect();
        let applied = sm.apply_without_events(
            revision,
            1_000,
            Command::new(Op::SubmitPlan {
                plan_id: Some(format!("b4f2a9c-p{plan:05}")),
                tasks,
            }),
        );
        assert!(applied.response.is_ok(), "{:?}", applied.response);
    }
    let per_task = (LIVE.load(Ordering::Relaxed) - before) as usize / TASKS;
    assert_eq!(sm.entity_count(), TASKS);
    assert!(
        per_task <= MAX_HEAP_BYTES_PER_READY_TASK,
        "a ready task costs {per_task} heap bytes (limit {MAX_HEAP_BYTES_PER_READY_TASK})"
    );
    eprintln!("a ready task costs {per_task} heap bytes");
}
