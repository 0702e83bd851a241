//! The cockpit's terminal loop: a crossterm terminal (raw mode, alternate screen, restored on
//! exit and on panic by `ratatui::init`/`restore`), keys from a reader thread, the cluster
//! from one watch (its initial state, then every change, so new iterations and messages show
//! up without a key press), and the Raft status polled in the background (it is not an
//! entity of the watch). A watch that gives up shows a banner and is reopened with backoff.

use std::time::Duration;

use anyhow::Context;
use futures::{FutureExt, StreamExt};
use percy_client::{Client, Consistency, EntityKind, EventStream, WatchOptions};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyEventKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::app::{Action, App};
use super::model::Model;
use super::render::draw;

/// First pause before reopening a watch that gave up; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often the Raft status (nodes, leader) is asked for.
const STATUS_INTERVAL: Duration = Duration::from_secs(2);
/// Events applied per redraw at most (the initial state of a big cluster comes at once).
const EVENTS_PER_DRAW: usize = 4_096;

/// What background tasks tell the loop.
enum Note {
    Status(Result<percy_client::proto::ClusterStatusResponse, String>),
    Sent(Result<String, String>),
}

fn open_watch(client: &Client) -> EventStream {
    client.watch(WatchOptions {
        kinds: vec![
            EntityKind::Definition,
            EntityKind::DefinitionRun,
            EntityKind::Agent,
            EntityKind::Task,
            EntityKind::Lock,
        ],
        initial_state: true,
        ..WatchOptions::default()
    })
}

pub async fn run(client: Client, sender: String) -> anyhow::Result<()> {
    // Like every other command: a clear error (exit 2) when no node answers, before the
    // terminal is taken over.
    let status = client
        .cluster_status(Consistency::Serializable)
        .await
        .context("steer: cluster status")?;
    let mut app = App::new(Model {
        cluster: Some(status),
        ..Model::default()
    });

    let mut terminal = ratatui::init();
    let result = event_loop(&client, &sender, &mut terminal, &mut app).await;
    ratatui::restore();
    result
}

async fn event_loop(
    client: &Client,
    sender: &str,
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
) -> anyhow::Result<()> {
    let (key_tx, mut keys) = mpsc::unbounded_channel();
    // crossterm's reader blocks; it lives on its own thread and stops when the loop is gone.
    std::thread::spawn(move || loop {
        match event::poll(Duration::from_millis(200)) {
            Ok(true) => match event::read() {
                Ok(ev) => {
                    if key_tx.send(ev).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
            Ok(false) if key_tx.is_closed() => return,
            Ok(false) => {}
            Err(_) => return,
        }
    });
    let (note_tx, mut notes) = mpsc::unbounded_channel();
    let status_client = client.clone();
    let status_tx = note_tx.clone();
    let poller = tokio::spawn(async move {
        loop {
            tokio::time::sleep(STATUS_INTERVAL).await;
            let status = status_client
                .cluster_status(Consistency::Serializable)
                .await
                .map_err(|e| e.to_string());
            if status_tx.send(Note::Status(status)).is_err() {
                return;
            }
        }
    });

    let mut stream = open_watch(client);
    let mut backoff = FIRST_BACKOFF;
    let mut reopen_at: Option<Instant> = None;
    let result = loop {
        if let Err(err) = terminal.draw(|frame| draw(frame, app)) {
            break Err(anyhow::Error::from(err).context("drawing the terminal"));
        }
        tokio::select! {
            key = keys.recv() => match key {
                Some(TermEvent::Key(key)) if key.kind == KeyEventKind::Press => match app.on_key(key) {
                    Action::Quit => break Ok(()),
                    Action::Inject { name, text } => {
                        app.status = format!("sending to {name}…");
                        let client = client.clone();
                        let sender = sender.to_owned();
                        let tx = note_tx.clone();
                        tokio::spawn(async move {
                            let sent = client
                                .steer(&name, &sender, &text)
                                .await
                                .map(|m| format!(
                                    "message {} queued for {name}'s next iteration",
                                    m.message.map_or(0, |m| m.id)
                                ))
                                .map_err(|e| format!("not sent to {name}: {e}"));
                            let _ = tx.send(Note::Sent(sent));
                        });
                    }
                    Action::None => {}
                },
                // A resize only needs the redraw at the top of the loop.
                Some(_) => {}
                None => break Ok(()),
            },
            Some(note) = notes.recv() => match note {
                Note::Status(Ok(status)) => {
                    app.model.cluster = Some(status);
                    if reopen_at.is_none() {
                        app.banner = None;
                    }
                }
                Note::Status(Err(err)) => {
                    app.banner = Some(format!(" connection lost: {err} — reconnecting "));
                }
                Note::Sent(Ok(line)) | Note::Sent(Err(line)) => app.status = line,
            },
            item = stream.next(), if reopen_at.is_none() => match item {
                Some(Ok(first)) => {
                    app.model.apply(&first);
                    // Apply what else is already there before drawing again.
                    for _ in 0..EVENTS_PER_DRAW {
                        match stream.next().now_or_never() {
                            Some(Some(Ok(event))) => app.model.apply(&event),
                            _ => break,
                        }
                    }
                    backoff = FIRST_BACKOFF;
                }
                Some(Err(err)) => {
                    app.banner = Some(format!(
                        " connection lost: {err} — reconnecting in {:.1}s ",
                        backoff.as_secs_f64()
                    ));
                    reopen_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                None => {
                    reopen_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            },
            () = sleep_until(reopen_at), if reopen_at.is_some() => {
                reopen_at = None;
                let cluster = app.model.cluster.take();
                app.model = Model { cluster, ..Model::default() };
                stream = open_watch(client);
            }
        }
    };
    poller.abort();
    result
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
