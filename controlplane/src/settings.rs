//! Command line and environment. Every flag can also come from a `ZCPROXY_…` variable, as
//! Kubernetes deployments expect; `DATABASE_URL` works too.

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "zcproxy-control",
    version,
    about = "zcproxy control plane: users and ACLs over an API-key-protected HTTP API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Database {
    /// PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/zcproxy
    #[arg(long, env = "ZCPROXY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Connections in the pool.
    #[arg(long, env = "ZCPROXY_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,
}

impl Database {
    pub fn url(&self) -> Result<String, String> {
        self.database_url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok())
            .ok_or_else(|| {
                "no database URL: --database-url, ZCPROXY_DATABASE_URL or DATABASE_URL".into()
            })
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply migrations, then serve the API and publish changes.
    Serve {
        #[command(flatten)]
        db: Database,
        #[arg(long, env = "ZCPROXY_LISTEN", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        #[arg(
            long,
            env = "ZCPROXY_NATS_URL",
            default_value = "nats://127.0.0.1:4222"
        )]
        nats_url: String,
        /// An admin API key to create if absent (e.g. from a Kubernetes secret).
        #[arg(long, env = "ZCPROXY_BOOTSTRAP_API_KEY", hide_env_values = true)]
        bootstrap_api_key: Option<String>,
        /// HTTP worker threads (default: CPUs).
        #[arg(long, env = "ZCPROXY_WORKERS")]
        workers: Option<usize>,
        #[arg(long, env = "ZCPROXY_LOG_FORMAT", default_value = "text")]
        log_format: String,
    },
    /// Apply migrations and exit.
    Migrate {
        #[command(flatten)]
        db: Database,
    },
    /// Create an API key and print it (shown once).
    CreateApiKey {
        #[command(flatten)]
        db: Database,
        #[arg(long, default_value = "admin")]
        name: String,
        #[arg(long, value_parser = ["admin", "reader"], default_value = "admin")]
        role: String,
    },
}
