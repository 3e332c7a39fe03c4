//! `zcproxy-control`: serve, migrate, create-api-key.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::Service;
use actix_web::{web, App, HttpServer};
use clap::Parser;
use controlplane::api::{self, AppState};
use controlplane::db::{self, keys};
use controlplane::metrics::{Metrics, RequestLabels, RouteLabels};
use controlplane::publisher;
use controlplane::settings::{self, Cli, Command, FileConfig};
use futures_util::FutureExt;
use tokio::sync::Notify;

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(
    pool: deadpool_postgres::Pool,
    listen: std::net::SocketAddr,
    nats_url: String,
    bootstrap: [(keys::Role, Option<String>); 2],
    workers: Option<usize>,
) -> Result<(), String> {
    for (role, secret) in bootstrap {
        if let Some(secret) = secret {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            keys::ensure_bootstrap(&**client, &secret, role)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let metrics = Arc::new(Metrics::default());
    let wake = Arc::new(Notify::new());
    tokio::spawn(publisher::run(
        pool.clone(),
        nats_url,
        wake.clone(),
        metrics.clone(),
    ));
    let state = web::Data::new(AppState {
        pool,
        publisher: wake,
        metrics: metrics.clone(),
    });
    let mut server = HttpServer::new(move || {
        let metrics = metrics.clone();
        App::new()
            .app_data(state.clone())
            .wrap_fn(move |req, srv| {
                let started = Instant::now();
                let method = req.method().to_string();
                let metrics = metrics.clone();
                srv.call(req).map(move |res| {
                    if let Ok(res) = &res {
                        let route = res
                            .request()
                            .match_pattern()
                            .unwrap_or_else(|| "unmatched".into());
                        metrics
                            .requests
                            .get_or_create(&RequestLabels {
                                method,
                                route: route.clone(),
                                status: res.status().as_u16(),
                            })
                            .inc();
                        metrics
                            .latency
                            .get_or_create(&RouteLabels { route })
                            .observe(started.elapsed().as_secs_f64());
                    }
                    res
                })
            })
            .configure(api::configure)
    })
    .bind(listen)
    .map_err(|e| format!("listen {listen}: {e}"))?;
    if let Some(w) = workers {
        server = server.workers(w);
    }
    tracing::info!(%listen, "zcproxy-control serving");
    server.run().await.map_err(|e| e.to_string())
}

async fn migrate(pool: &deadpool_postgres::Pool) -> Result<(), String> {
    let applied = db::migrate::run(pool).await?;
    tracing::info!(?applied, "migrations applied");
    Ok(())
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        command @ Command::Serve { .. } => {
            let s = settings::serve_settings(command)?;
            init_logging(&s.log_format);
            let pool = db::pool(&s.db.url, s.db.pool_size)?;
            migrate(&pool).await?;
            let bootstrap = [
                (keys::Role::Admin, s.bootstrap_api_key),
                (keys::Role::Reader, s.bootstrap_reader_key),
            ];
            serve(pool, s.listen, s.nats_url, bootstrap, s.workers).await
        }
        Command::Migrate { db } => {
            init_logging("text");
            let file = FileConfig::load(db.config.as_deref())?;
            let pool = db::pool(&db.resolve(&file)?.url, 2)?;
            migrate(&pool).await
        }
        Command::Probe { .. } => Ok(()),
        Command::CreateApiKey { db, name, role } => {
            let file = FileConfig::load(db.config.as_deref())?;
            let pool = db::pool(&db.resolve(&file)?.url, 2)?;
            migrate(&pool).await?;
            let role = if role == "reader" {
                keys::Role::Reader
            } else {
                keys::Role::Admin
            };
            let secret = keys::generate();
            let client = pool.get().await.map_err(|e| e.to_string())?;
            keys::insert(&**client, &name, role, &secret)
                .await
                .map_err(|e| e.to_string())?;
            println!("{secret}");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Probe { url } = &cli.command {
        return match ureq::get(url).call() {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("zcproxy-control: {url}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zcproxy-control: {e}");
            return ExitCode::FAILURE;
        }
    };
    // actix-web needs a LocalSet-aware system; run it inside actix's runtime.
    let result = actix_web::rt::System::with_tokio_rt(move || rt).block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zcproxy-control: {e}");
            ExitCode::FAILURE
        }
    }
}
