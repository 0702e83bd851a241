//! Tying a task's command to the worker's life, so that `kill -9` of the worker cannot leave an
//! agent editing files in the name of a task the cluster has already handed to someone else.
//!
//! # The choice
//!
//! The command (`sh -c …`) runs in a process group of its own, so the worker can kill the
//! whole tree at once (timeout, kill switch, after it exits). That covers every exit path the
//! worker controls, but not SIGKILL of the worker itself. Linux offers `PR_SET_PDEATHSIG`: a
//! signal the kernel sends a process when its parent dies. Set on `sh` alone it would kill
//! only `sh`: the grandchildren (`sh -c 'sleep 60; …'`, an LLM CLI's helpers) are separate
//! processes that do not get the signal and are reparented away, still running.
//!
//! So the group leader is a tiny **supervisor**: the process the worker forks for the
//! command does not exec `sh` itself but forks once more — the inner child execs `sh` and
//! stays in the supervisor's group — and itself only waits, with only system calls (it is
//! a fork of a multi-threaded program, so nothing that could take a lock). It has
//! `PR_SET_PDEATHSIG = SIGTERM`, blocks that signal and `SIGCHLD` and takes them with
//! `sigtimedwait`:
//! - when the worker dies (the death signal, or its parent pid no longer being the
//!   worker's, checked every [`PARENT_CHECK_SECS`] too — the death signal is only sent when
//!   the *thread* that forked exits, which is also why a signal alone is not trusted), it
//!   kills its whole group, itself included: the command and every grandchild;
//! - when the command ends, it ends the same way (same exit code, or the same signal), so the
//!   worker sees exactly what it would have seen without it; the worker then kills the rest of
//!   the group as before.
//!
//! The alternative, `PR_SET_PDEATHSIG` on `sh` plus the worker killing the group on every exit
//! path, leaves grandchildren running after a SIGKILL until a restarted worker reaps them;
//! that restart may never come. The supervisor costs one small process per running task.
//! A crash record of each running group (`running`) still lets a restarted worker reap what
//! the supervisor could not (the supervisor itself SIGKILLed, a reboot of the worker between
//! the command's exit and the group kill).
//!
//! The supervisor closes every file descriptor it inherited: it never execs, so the worker's
//! close-on-exec descriptors — other tasks' output pipes, the spawn error pipe — would stay
//! open in it and keep other readers from seeing end-of-file.
//!
//! # Other systems
//!
//! macOS and the BSDs have no `PR_SET_PDEATHSIG`; there the command is not supervised: a
//! worker killed with SIGKILL leaves its command running (a clean shutdown, a timeout or an
//! expiry still kill the whole group). A supervisor polling `getppid()` would work there too,
//! but Percy is tested on Linux only, so it is not offered untested.

/// How often the supervisor checks its parent pid besides waiting for the death signal.
pub const PARENT_CHECK_SECS: libc::time_t = 1;

/// Makes `command` run under a supervisor (Linux), see the module documentation.
#[cfg(target_os = "linux")]
pub fn supervise(command: &mut tokio::process::Command) {
    // The worker's pid, read here in the worker: after the fork, `getppid()` compared with
    // it says whether the worker is still there.
    let worker = libc::pid_t::try_from(std::process::id()).unwrap_or(libc::pid_t::MAX);
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe system
    // calls (see `linux::split`).
    unsafe {
        command.pre_exec(move || linux::split(worker));
    }
}

/// Not supervised on this system; see the module documentation.
#[cfg(not(target_os = "linux"))]
pub fn supervise(_command: &mut tokio::process::Command) {}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;

    use super::PARENT_CHECK_SECS;

    /// Exit code of a supervisor whose command could not be waited for (cannot happen: it
    /// is the supervisor's only child).
    const LOST_COMMAND_EXIT: libc::c_int = 125;
    /// Exit code of a supervisor that found the worker gone before it started the command.
    const WORKER_GONE_EXIT: libc::c_int = 126;

    /// In the forked child: returns `Ok` in the process that goes on to exec the command;
    /// the supervisor never returns.
    ///
    /// # Safety
    /// Only between fork and exec (a `pre_exec` closure).
    pub unsafe fn split(worker: libc::pid_t) -> io::Result<()> {
        let mut watched: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut watched);
        libc::sigaddset(&mut watched, libc::SIGTERM);
        libc::sigaddset(&mut watched, libc::SIGCHLD);
        let mut previous: libc::sigset_t = std::mem::zeroed();
        if libc::sigprocmask(libc::SIG_BLOCK, &watched, &mut previous) != 0 {
            return Err(io::Error::last_os_error());
        }
        // Armed before the parent check, so a worker dying in between is seen by the check.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::getppid() != worker {
            libc::_exit(WORKER_GONE_EXIT);
        }
        let supervisor = libc::getpid();
        match libc::fork() {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                // The command: it must not outlive its supervisor either (the death signal is
                // not inherited across fork).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                    || libc::getppid() != supervisor
                {
                    libc::_exit(WORKER_GONE_EXIT);
                }
                if libc::sigprocmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }
            command => watch(worker, command, &watched),
        }
    }

    /// The supervisor's life: see the module documentation.
    unsafe fn watch(worker: libc::pid_t, command: libc::pid_t, watched: &libc::sigset_t) -> ! {
        close_inherited_descriptors();
        let poll = libc::timespec {
            tv_sec: PARENT_CHECK_SECS,
            tv_nsec: 0,
        };
        loop {
            // A signal, a timeout or an interruption: whichever, look at the world again.
            libc::sigtimedwait(watched, std::ptr::null_mut(), &poll);
            if libc::getppid() != worker {
                // The worker is gone: the group (this process, the command, every process it
                // started that stayed in the group) goes with it.
                libc::killpg(0, libc::SIGKILL);
            }
            let mut status: libc::c_int = 0;
            match libc::waitpid(command, &mut status, libc::WNOHANG) {
                0 => {}
                reaped if reaped == command => end_like(status),
                _ => libc::_exit(LOST_COMMAND_EXIT),
            }
        }
    }

    /// Ends the supervisor the way the command ended.
    unsafe fn end_like(status: libc::c_int) -> ! {
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            // No core dump of the supervisor for the command's crash.
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::signal(signal, libc::SIG_DFL);
            let mut only: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut only);
            libc::sigaddset(&mut only, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
            libc::kill(libc::getpid(), signal);
            // A signal whose default is to be ignored cannot have ended the command.
            libc::_exit(128 + signal);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }

    /// Closes every descriptor (see the module documentation): `close_range` where the
    /// kernel has it (5.9+), one by one otherwise.
    unsafe fn close_inherited_descriptors() {
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) == 0 {
            return;
        }
        /// Upper bound of the one-by-one fallback.
        const MAX_FALLBACK_FD: libc::c_long = 65_536;
        let limit = libc::sysconf(libc::_SC_OPEN_MAX).clamp(0, MAX_FALLBACK_FD);
        for fd in 0..limit {
            libc::close(fd as libc::c_int);
        }
    }
}
