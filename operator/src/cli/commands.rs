//! Each subcommand: read or patch the release, then print. The only module with API calls.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};

use super::args::{Cli, Command, Output};
use super::connect::{Connection, connect};
use super::controls::{self, Request};
use super::error::{CliError, Result};
use super::render::{self, IncidentView, ReleaseView};
use super::wait::{self, Verdict};
use crate::api::ShortenerRelease;

const RELEASES: &str = "shortenerreleases.shortener.dev";
const CONFIGMAPS: &str = "configmaps";

pub async fn run(cli: Cli) -> Result<()> {
    let conn = connect(&cli).await?;
    let out = cli.output;
    match cli.command {
        Command::Status {
            name: Some(name),
            wait: true,
            timeout,
            ..
        } => wait(&conn, &name, timeout, out).await,
        Command::Status {
            name, watch: false, ..
        } => status(&conn, name.as_deref(), out).await,
        Command::Status {
            name, watch: true, ..
        } => watch(&conn, name.as_deref(), out).await,
        Command::History { name } => {
            let sr = get(&conn, &name).await?;
            let history = sr.status.map(|s| s.history).unwrap_or_default();
            print(&match out {
                Output::Table => render::history(&history),
                _ => render::structured(&history, out)?,
            })
        }
        Command::Incidents { name } => incidents(&conn, &name, out).await,
        Command::Budget { name } => {
            let sr = get(&conn, &name).await?;
            let budget = sr.status.and_then(|s| s.budget);
            print(&match out {
                Output::Table => render::budget(&name, budget.as_ref()),
                _ => render::structured(&budget, out)?,
            })
        }
        Command::Pause { name } => request(&conn, &name, controls::pause()).await,
        Command::Resume { name } => request(&conn, &name, controls::resume()).await,
        Command::Retry { name } => {
            // Nanoseconds since the epoch: never a value the operator has already acted on.
            let unique = jiff::Timestamp::now().as_nanosecond().to_string();
            request(&conn, &name, controls::retry(&unique)).await
        }
        Command::Promote { name } => request(&conn, &name, controls::promote()).await,
        Command::Abort { name } => request(&conn, &name, controls::abort()).await,
        Command::Rollback { name, to_revision } => {
            let sr = get(&conn, &name).await?;
            let req = controls::rollback(sr.status.as_ref(), to_revision)
                .map_err(CliError::NothingToRollBack)?;
            request(&conn, &name, req).await
        }
    }
}

fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a message.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    Ok(())
}

fn releases(conn: &Connection) -> Api<ShortenerRelease> {
    Api::namespaced(conn.client.clone(), &conn.namespace)
}

fn no_such(conn: &Connection, name: &str) -> CliError {
    CliError::NoSuchRelease {
        name: name.into(),
        namespace: conn.namespace.clone(),
    }
}

async fn get(conn: &Connection, name: &str) -> Result<ShortenerRelease> {
    releases(conn)
        .get_opt(name)
        .await
        .map_err(|e| conn.error("get", RELEASES, e))?
        .ok_or_else(|| no_such(conn, name))
}

fn render_views(views: &[ReleaseView], single: bool, out: Output) -> Result<String> {
    match (out, single, views) {
        (Output::Table, true, [v]) => Ok(render::status_detail(v)),
        (Output::Table, _, _) => Ok(render::status_list(views)),
        (_, true, [v]) => render::structured(v, out),
        _ => render::structured(&views, out),
    }
}

async fn status(conn: &Connection, name: Option<&str>, out: Output) -> Result<()> {
    let views = match name {
        Some(name) => vec![ReleaseView::of(&get(conn, name).await?)],
        None => releases(conn)
            .list(&ListParams::default())
            .await
            .map_err(|e| conn.error("list", RELEASES, e))?
            .items
            .iter()
            .map(ReleaseView::of)
            .collect(),
    };
    print(&render_views(&views, name.is_some(), out)?)
}

/// Re-renders on every change the watch reports, until Ctrl-C.
async fn watch(conn: &Connection, name: Option<&str>, out: Output) -> Result<()> {
    // A first read turns a missing release or a 403 into the usual one-line error.
    status(conn, name, out).await?;
    let mut config = watcher::Config::default();
    if let Some(name) = name {
        config = config.fields(&format!("metadata.name={name}"));
    }
    let mut stream = watcher::watcher(releases(conn), config)
        .default_backoff()
        .boxed();
    let mut current: BTreeMap<String, ReleaseView> = BTreeMap::new();
    let mut listing: BTreeMap<String, ReleaseView> = BTreeMap::new();
    let clear = std::io::stdout().is_terminal() && out == Output::Table;
    let mut last = String::new();
    loop {
        let event = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            event = stream.next() => event,
        };
        let Some(event) = event else {
            return Err(CliError::Watch("the watch ended".into()));
        };
        match event {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(sr)) => {
                listing.insert(sr.name_any(), ReleaseView::of(&sr));
                continue;
            }
            Ok(Event::InitDone) => current = std::mem::take(&mut listing),
            Ok(Event::Apply(sr)) => {
                current.insert(sr.name_any(), ReleaseView::of(&sr));
            }
            Ok(Event::Delete(sr)) => {
                current.remove(&sr.name_any());
            }
            Err(e) => {
                eprintln!("watch interrupted, retrying: {e}");
                continue;
            }
        }
        let views: Vec<ReleaseView> = current.values().cloned().collect();
        let text = match (name, views.is_empty()) {
            (Some(name), true) => format!(
                "ShortenerRelease {name:?} in namespace {:?} was deleted\n",
                conn.namespace
            ),
            _ => render_views(&views, name.is_some(), out)?,
        };
        // Status writes that change nothing shown (e.g. a resourceVersion bump) print nothing.
        if text == last {
            continue;
        }
        if clear {
            print("\x1b[2J\x1b[H")?;
        } else {
            print("---\n")?;
        }
        print(&text)?;
        last = text;
    }
}

/// Waits until the rollout of the release's current generation has an outcome
/// ([`wait::verdict`]), printing each phase it passes through; then the status, and an
/// error with the outcome's exit code unless it is Healthy.
async fn wait(conn: &Connection, name: &str, timeout: Duration, out: Output) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    // A first read turns a missing release or a 403 into the usual one-line error.
    let mut sr = get(conn, name).await?;
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher::watcher(releases(conn), config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut last = String::new();
    loop {
        let seen = progress_line(&sr);
        if seen != last {
            eprintln!("{seen}");
            last = seen;
        }
        if let Some(verdict) = wait::verdict(sr.metadata.generation, sr.status.as_ref()) {
            print(&render_views(&[ReleaseView::of(&sr)], true, out)?)?;
            return match verdict {
                Verdict::Healthy => Ok(()),
                _ => {
                    let status = sr.status.unwrap_or_default();
                    Err(CliError::NotHealthy {
                        name: name.into(),
                        phase: status.phase.as_str(),
                        message: status.message,
                        verdict,
                    })
                }
            };
        }
        let next = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => None,
            event = stream.next() => Some(event),
        };
        match next {
            None => {
                return Err(CliError::Timeout {
                    name: name.into(),
                    secs: timeout.as_secs(),
                    generation: sr.metadata.generation.unwrap_or_default(),
                    last,
                });
            }
            Some(None) => return Err(CliError::Watch("the watch ended".into())),
            Some(Some(Ok(obj))) => sr = obj,
            Some(Some(Err(e))) => eprintln!("watch interrupted, retrying: {e}"),
        }
    }
}

/// One line per change while waiting: generation, observed generation, phase, message.
fn progress_line(sr: &ShortenerRelease) -> String {
    let status = sr.status.clone().unwrap_or_default();
    format!(
        "{}: generation {}, observed {}: {} {}",
        sr.name_any(),
        sr.metadata.generation.unwrap_or_default(),
        status
            .observed_generation
            .map_or_else(|| "none".to_string(), |g| g.to_string()),
        status.phase.as_str(),
        status.message
    )
}

async fn incidents(conn: &Connection, name: &str, out: Output) -> Result<()> {
    let sr = get(conn, name).await?;
    let status = sr.status.unwrap_or_default();
    let incident = status.last_incident.ok_or_else(|| CliError::NoIncident {
        name: name.into(),
        namespace: conn.namespace.clone(),
    })?;
    let excerpt = match &incident.log_excerpt_ref {
        Some(cm) => Api::<ConfigMap>::namespaced(conn.client.clone(), &conn.namespace)
            .get_opt(cm)
            .await
            .map_err(|e| conn.error("get", CONFIGMAPS, e))?
            .and_then(|cm| cm.data)
            .and_then(|mut d| d.remove("excerpt")),
        None => None,
    };
    let view = IncidentView {
        name: name.into(),
        namespace: conn.namespace.clone(),
        revision: status
            .history
            .iter()
            .find(|r| r.revision == incident.revision)
            .cloned(),
        incident,
        excerpt,
    };
    print(&match out {
        Output::Table => render::incident(&view),
        _ => render::structured(&view, out)?,
    })
}

/// Writes one annotation by JSON merge patch and says what the operator will do with it.
async fn request(conn: &Connection, name: &str, req: Request) -> Result<()> {
    let patched = releases(conn)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(req.merge_patch()),
        )
        .await;
    match patched {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Err(no_such(conn, name)),
        Err(e) => return Err(conn.error("patch", RELEASES, e)),
    }
    let written = match &req.value {
        Some(v) => format!("{}={v}", req.annotation),
        None => format!("{} removed", req.annotation),
    };
    print(&format!(
        "Requested {} for {name} in namespace {} ({written}).\nThe operator acts on it at its next reconcile; follow with: kubectl shortener -n {} status {name} --watch\n",
        req.summary, conn.namespace, conn.namespace
    ))
}
